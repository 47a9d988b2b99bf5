"""Writing exports: one document per subject as the audit evaluates it, or one for the audit.

A per-subject document is rendered and written where the subject's record is built (in the
worker processes of a large SQL audit): an export of 100,000 runs never holds their records, and
the rendering shares the audit's processes. The documents go into a staging folder and are moved
into place together once the audit has completed (`audit.staging`): an export that fails leaves
the target as it was.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from audit.errors import AuditError
from audit.exports import ExportSettings, Subject, subject_rules
from audit.policy import Rule
from audit.result import RunResult

#: The module rendering each format.
_MODULES = {
    "cyclonedx": "audit.exports.cyclonedx",
    "spdx": "audit.exports.spdx",
    "model-card": "audit.exports.model_card",
    "oscal": "audit.exports.oscal",
}
#: The file of a one-document export written into a folder (`-o DIR`).
AUDIT_DOCUMENT = {"oscal": "assessment-results.oscal.json"}


def renderer(format_name: str) -> ModuleType:
    return importlib.import_module(_MODULES[format_name])


def document_name(format_name: str, subject: Subject) -> str:
    """Where a subject's document goes in an export folder: named after the model version
    (``churn-classifier-v3``) or the run id (unique, unlike run names); a model card as the
    ``README.md`` of a folder of its own, as a model repository on the Hugging Face Hub has it."""
    if subject.is_version:
        from audit.report.document import slug

        stem = f"{slug(subject.name) or 'model'}-v{subject.version}"
    else:
        stem = subject.run.run_id
    if format_name == "model-card":
        return f"{stem}/README.md"
    suffix: str = renderer(format_name).SUFFIX
    return stem + suffix


@dataclass(frozen=True)
class SubjectWriter:
    """Renders each evaluated subject in `format_name` into `folder` (picklable: a source may
    call it in its worker processes)."""

    format_name: str
    folder: Path
    #: The folder as the user named it, for messages (`folder` is a staging folder in it).
    shown_as: str
    settings: ExportSettings
    rules: tuple[Rule, ...]
    version_rule_ids: frozenset[str]

    @functools.cached_property
    def run_rules(self) -> tuple[Rule, ...]:
        # One tuple for every run: exports cache what they derive from a set of rules by the
        # tuple's identity.
        return subject_rules(self.rules, self.version_rule_ids, {})

    @functools.cached_property
    def render(self) -> Callable[[Subject, ExportSettings], bytes]:
        render: Callable[[Subject, ExportSettings], bytes] = renderer(self.format_name).render
        return render

    def __call__(self, record: Mapping[str, Any], run: RunResult) -> None:
        rules = self.rules if "lineage" in record else self.run_rules
        subject = Subject(record, run, rules)
        data = self.render(subject, self.settings)
        name = document_name(self.format_name, subject)
        try:
            _write_new(self.folder, name, data, fallback=f"{run.run_id}-{name.replace('/', '-')}")
        except OSError as error:
            # An AuditError: a source reports any other error as one reading the store.
            raise AuditError(
                f"cannot write the export into {self.shown_as}: {error.strerror or error}"
            ) from None


def _write_new(folder: Path, name: str, data: bytes, *, fallback: str) -> str:
    """Write `data` as `name` in `folder`, never over another subject's document: two model
    names that differ only in characters a file name cannot hold take the fallback name."""
    for candidate in (name, fallback):
        path = f"{folder}/{candidate}"  # a string: a Path costs more than the write
        if "/" in candidate:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view) :]
        finally:
            os.close(descriptor)
        return candidate
    raise FileExistsError(f"two subjects would both be written as {folder / fallback}")


def written(folder: Path) -> list[str]:
    """The documents written into `folder` (POSIX paths relative to it), sorted."""
    names: list[str] = []
    for parent, _, files in os.walk(folder):
        base = Path(parent).relative_to(folder).as_posix()
        names.extend(files if base == "." else (f"{base}/{name}" for name in files))
    return sorted(names)
