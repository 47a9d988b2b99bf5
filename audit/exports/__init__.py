"""Exports: the audit's facts in the formats other tools read.

- ``cyclonedx``: a CycloneDX 1.6 ML-BOM per subject (SBOM platforms: Dependency-Track,
  sbom-tools);
- ``spdx``: an SPDX 3.0.1 document with the AI and Dataset profiles per subject (JSON-LD);
- ``oscal``: one OSCAL 1.1.3 assessment-results document for the whole audit (GRC tools);
- ``model-card``: a Hugging Face model card (README.md with YAML metadata) per subject.

A subject is a run, or a model version with its lineage. Each export is a pure function of
the subjects (their evidence records, already redacted, and their results under the policy)
and `ExportSettings`: nothing here reads a store, and the same records, policy and date give
the same bytes. The per-subject formats are written while the audit runs, in the processes that
build the records (`audit.exports.writer`), so that a large audit never holds its records.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from audit.describe import escape, unescape
from audit.policy import Outcome, Policy, Rule
from audit.result import AuditResult, Finding, RuleOutcome, RunResult

ExportFormat = Literal["cyclonedx", "spdx", "oscal", "model-card"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("cyclonedx", "spdx", "oscal", "model-card")
#: Formats that write one document per subject; the others one document for the audit.
PER_SUBJECT: frozenset[str] = frozenset({"cyclonedx", "spdx", "model-card"})

#: The namespace of every UUID an export derives (RFC 9562 version 5): the same subject, rule
#: and settings give the same identifiers in every export.
UUID_NAMESPACE = uuid.UUID("6f1c2a8e-3b7d-5e4f-9a10-2c3d4e5f6a7b")


@dataclass(frozen=True)
class ExportSettings:
    """What an export says besides its subjects: when (``--date``, else the audit's time), by
    which tool, under which policy (`Policy.to_dict`), from which store (credentials already
    redacted), and in which version of a format that has several."""

    generated_at: str
    tool_version: str
    policy: Mapping[str, Any]
    store: str
    #: The CycloneDX specification a BOM declares: "1.6", or "1.7" (the same document is valid
    #: under both).
    cyclonedx_version: str = "1.6"

    def uuid(self, *parts: str) -> str:
        """A UUID determined by `parts` and the policy: stable across exports of the same
        facts, distinct between policies."""
        name = "\x1f".join((str(self.policy.get("sha256", "")), *parts))
        return str(uuid.uuid5(UUID_NAMESPACE, name))


@dataclass(frozen=True)
class Subject:
    """One run or model version: its evidence record, its result, and the rules asked of it
    (a run is not asked the rules about model versions)."""

    record: Mapping[str, Any]
    run: RunResult
    rules: tuple[Rule, ...]

    @property
    def lineage(self) -> Mapping[str, Any] | None:
        lineage = self.record.get("lineage")
        return lineage if isinstance(lineage, Mapping) else None

    @property
    def is_version(self) -> bool:
        return self.lineage is not None

    @property
    def key(self) -> str:
        """What identifies the subject in derived identifiers: ``models:/NAME/VERSION`` or
        the run id."""
        lineage = self.lineage
        if lineage is not None:
            return f"models:/{lineage['model']['name']}/{lineage['version']['version']}"
        return str(self.run.run_id)

    @property
    def name(self) -> str:
        """The model's name: the registered model's, else the run's name, else its id."""
        lineage = self.lineage
        if lineage is not None:
            return str(lineage["model"]["name"])
        return self.run.run_name or self.run.run_id

    @property
    def version(self) -> str | None:
        """The registered model version, when the subject is one."""
        lineage = self.lineage
        return None if lineage is None else str(lineage["version"]["version"])

    @property
    def label(self) -> str:
        """``churn-classifier v3``, or ``run NAME (ID)``."""
        if self.version is not None:
            return f"{self.name} v{self.version}"
        named = f"{self.run.run_name} " if self.run.run_name else ""
        return f"run {named}({self.run.run_id})"

    def decided(self) -> list[tuple[Rule, Outcome, tuple[Finding, ...]]]:
        """Every rule asked of the subject, in the policy's order, then the rules only its
        findings name (a schema constraint without annotation, the built-in secrets check):
        each with its outcome and its findings, as `RuleOutcome` decides them, without making
        one per rule (an export of 100,000 runs asks this of each)."""
        run = self.run
        by_rule: dict[str, list[Finding]] = {}
        for finding in run.findings:
            by_rule.setdefault(finding.rule_id, []).append(finding)
        not_applicable, unknown = run.not_applicable, run.unknown
        decided: list[tuple[Rule, Outcome, tuple[Finding, ...]]] = []
        for rule in self.rules:
            findings = by_rule.pop(rule.id, None)
            if rule.id in not_applicable:
                decided.append((rule, "not_applicable", tuple(findings or ())))
            elif rule.id in unknown:
                decided.append((rule, "unknown", tuple(findings or ())))
            elif findings:
                decided.append((rule, _failed(findings), tuple(findings)))
            else:
                decided.append((rule, "pass", ()))
        for findings in by_rule.values():
            decided.append((findings[0].as_rule(), _failed(findings), tuple(findings)))
        return decided

    def statuses(self) -> dict[str, Outcome]:
        """Each rule's outcome on the subject, by rule id."""
        return {rule.id: status for rule, status, _ in self.decided()}

    def outcomes(self) -> list[RuleOutcome]:
        """`decided`, as a `RuleOutcome` per rule."""
        return [RuleOutcome(self.run, rule, findings) for rule, _, findings in self.decided()]


def _failed(findings: list[Finding]) -> Outcome:
    return "fail" if any(finding.waiver is None for finding in findings) else "waived"


def subject_rules(
    rules: tuple[Rule, ...], version_rule_ids: frozenset[str], record: Mapping[str, Any]
) -> tuple[Rule, ...]:
    """The rules asked of a record: all of them of a model version, the rules about runs of a
    run (as `Policy.rules_for` decides for an audit)."""
    if "lineage" in record or not version_rule_ids:
        return rules
    return tuple(rule for rule in rules if rule.id not in version_rule_ids)


def evidence_places(record: Mapping[str, Any], rule: Rule) -> tuple[str, ...]:
    """The places in the record (JSON Pointers) where `rule` looks and something is there:
    its locations with each ``*`` expanded over the record. What an export points at as the
    evidence of a rule that passes (cheap: no second validation)."""
    return tuple(evidence_at(record, rule))


def evidence_at(record: Mapping[str, Any], rule: Rule, limit: int | None = None) -> dict[str, Any]:
    """`evidence_places` with what is at each place; with `limit`, the first places only, and
    one more when there are more (a rule over every requirement of a run finds hundreds)."""
    found: dict[str, Any] = {}
    most = limit + 1 if limit is not None else None
    for location in rule.locations:
        prefix, star, suffix = _compiled(location)
        if star is None:  # one place: a plain walk
            node = _walk(record, prefix)
            if node is not None and node != [] and node != {}:
                found[location] = node
        elif star:  # one ``*``: every entry of one list or mapping
            _each(_walk(record, prefix), star, suffix, found, most)
        else:
            _expand(record, prefix, 0, "", found)
        if most is not None and len(found) >= most:
            return dict(list(found.items())[:most])
    return found


@functools.lru_cache(maxsize=1024)
def _compiled(location: str) -> tuple[tuple[str, ...], str | None, tuple[str, ...]]:
    """A location as (the parts before its ``*``, the pointer to them, the parts after): no
    ``*`` gives (parts, None, ()); anything else than one ``*`` and plain keys, (parts, "",
    ()), for `_expand`."""
    parts = tuple(location.split("/")[1:])
    if "~" in location or parts.count("*") > 1:
        return parts, "", ()
    if "*" not in parts:
        return parts, None, ()
    at = parts.index("*")
    return parts[:at], "/" + "/".join(parts[:at]), parts[at + 1 :]


def _walk(node: Any, parts: tuple[str, ...]) -> Any:
    for part in parts:  # records are plain dicts: checked first, the ABCs only for the rest
        if type(node) is dict or isinstance(node, Mapping):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
        if node is None:
            return None
    return node


def _each(
    node: Any, at: str, suffix: tuple[str, ...], found: dict[str, Any], most: int | None
) -> None:
    tail = "".join(f"/{part}" for part in suffix)
    if isinstance(node, list):
        entries: Any = enumerate(node)
    elif isinstance(node, Mapping):
        entries = ((escape(str(key)), item) for key, item in node.items())
    else:
        return
    for key, item in entries:
        value = _walk(item, suffix) if suffix else item
        if value is not None and value != [] and value != {}:
            found[f"{at}/{key}{tail}"] = value
            if most is not None and len(found) >= most:
                return


def _expand(node: Any, parts: tuple[str, ...], depth: int, at: str, found: dict[str, Any]) -> None:
    # Walks down without recursing but at a ``*``; records are plain dicts and lists, checked
    # by type before the slower ABCs.
    for index in range(depth, len(parts)):
        head = parts[index]
        if type(node) is dict or (type(node) is not list and isinstance(node, Mapping)):
            if head == "*":
                for key, item in node.items():
                    _expand(item, parts, index + 1, f"{at}/{escape(str(key))}", found)
                return
            key = unescape(head) if "~" in head else head
            if key not in node:
                return
            node = node[key]
        elif type(node) is list or isinstance(node, list):
            if head == "*":
                for position, item in enumerate(node):
                    _expand(item, parts, index + 1, f"{at}/{position}", found)
                return
            if not head.isdigit() or int(head) >= len(node):
                return
            node = node[int(head)]
        else:
            return
        at = f"{at}/{head}"
    if node is not None and node != [] and node != {}:
        found[at or "/"] = node


#: An exact pin: ``==1.2.3`` or ``===1.2.3`` (no wildcard, no second clause).
_PINNED = re.compile(r"===?\s*([^\s,;*]+)")
_DISTRIBUTION_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")


def pinned_version(requirement: Mapping[str, Any]) -> str | None:
    """The version a requirement of the record pins exactly, else None."""
    pinned = _PINNED.fullmatch(str(requirement.get("specifier") or "").strip())
    return pinned.group(1) if pinned and requirement.get("pinned") else None


def pypi_purl(name: str, version: str | None) -> str | None:
    """The package URL of a PyPI distribution (the purl spec's pypi type: the name in lower
    case with ``_`` as ``-``; the version when pinned), or None for a name that is not a
    distribution name."""
    if not _DISTRIBUTION_NAME.fullmatch(name):
        return None
    purl = "pkg:pypi/" + name.lower().replace("_", "-")
    return f"{purl}@{quote(version, safe='')}" if version else purl


def subjects_of(result: AuditResult, policy: Policy) -> Iterator[Subject]:
    """The subjects of an audit that kept its records (`keep_records=True`)."""
    if result.records is None:
        raise ValueError("the audit did not keep its records")
    for run in result.runs:
        record = result.records[run.run_id]
        yield Subject(record, run, subject_rules(policy.rules, policy.version_rule_ids, record))


def settings_of(result: AuditResult, generated_at: str | None = None) -> ExportSettings:
    """The settings of an export of `result`: dated `generated_at` (``--date``) or when the
    audit ran."""
    return ExportSettings(
        generated_at=generated_at or result.generated_at,
        tool_version=result.tool_version,
        policy=result.policy,
        store=result.store,
    )
