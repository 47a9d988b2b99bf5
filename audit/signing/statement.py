"""The in-toto Statement v1 a report bundle is signed as.

https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md: the subjects are every
file of the report folder with its SHA-256; the predicate (ours, `PREDICATE_TYPE`, described in
schemas/attestation-predicate.schema.json and docs/signing.md) says what was audited, against
which policy, and who signed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = (
    "https://github.com/mlflow-audit/mlflow-audit/blob/main/docs/signing.md#predicate-v1"
)

#: The envelope's own file in a report folder; everything else in the folder is a subject.
ENVELOPE_FILE = "audit.intoto.jsonl"


class StatementError(ValueError):
    """The payload is not a statement of ours."""


@dataclass(frozen=True)
class Subject:
    name: str
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "digest": {"sha256": self.sha256}}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_files(folder: Path) -> list[str]:
    """Every regular file under `folder` but the envelope, as sorted POSIX paths relative to it.
    Symbolic links are refused: signing one would sign whatever it points at today."""
    names: list[str] = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if path.is_symlink():
            raise OSError(f"{relative} is a symbolic link; refusing to sign or trust it")
        if path.is_file() and relative != ENVELOPE_FILE:
            names.append(relative)
    return names


def statement(subjects: Sequence[Subject], predicate: Mapping[str, Any]) -> bytes:
    document = {
        "_type": STATEMENT_TYPE,
        "subject": [subject.to_dict() for subject in subjects],
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    }
    return json.dumps(document, indent=None, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Statement:
    subjects: tuple[Subject, ...]
    predicate: Mapping[str, Any]

    @classmethod
    def parse(cls, payload: bytes) -> Statement:
        try:
            document = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as error:
            raise StatementError(f"the signed payload is not JSON ({error})") from None
        if not isinstance(document, Mapping) or document.get("_type") != STATEMENT_TYPE:
            raise StatementError("the signed payload is not an in-toto Statement v1")
        if document.get("predicateType") != PREDICATE_TYPE:
            raise StatementError(
                f"the statement's predicateType is {document.get('predicateType')!r}, not an "
                "mlflow-audit report"
            )
        subjects = []
        for entry in document.get("subject") or []:
            name = entry.get("name") if isinstance(entry, Mapping) else None
            digest = entry.get("digest", {}).get("sha256") if isinstance(entry, Mapping) else None
            if not isinstance(name, str) or not isinstance(digest, str) or _escapes(name):
                raise StatementError(f"the statement has a malformed subject: {entry!r:.200}")
            subjects.append(Subject(name, digest.lower()))
        predicate = document.get("predicate")
        if not isinstance(predicate, Mapping):
            raise StatementError("the statement has no predicate")
        return cls(tuple(subjects), predicate)

    def run_digests(self) -> dict[str, str]:
        return {
            str(run.get("run_id")): str(run.get("evidence_sha256"))
            for run in self.predicate.get("runs") or []
            if isinstance(run, Mapping)
        }


def _escapes(name: str) -> bool:
    """A subject name that would point outside the folder it is checked in."""
    parts = Path(name).parts
    return not parts or Path(name).is_absolute() or ".." in parts or "\\" in name
