"""`verify-deploy`: may the version an alias points to now be served?

Yes only when that version carries a verdict the gate recorded (or a signed report folder
documents it) that passes, under the policy given, and whose evidence still matches the store:
the check a deployment job runs before it serves a model.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit.errors import AuditError, SelectionError
from audit.gate.verdict import Verdict, evidence_digest, read_verdict
from audit.policy import Policy, load_policy

if TYPE_CHECKING:
    from cryptography import x509

    from audit.systemcard import SystemCard

#: The verdict statuses that pass the gate at each --fail-on.
_PASSING = {
    "error": frozenset({"pass", "warn"}),
    "warning": frozenset({"pass"}),
    "info": frozenset({"pass"}),
    "never": frozenset({"pass", "warn", "fail"}),
}


@dataclass(frozen=True)
class DeployCheck:
    """The answer for one alias: the version it points to, the verdict found, and every reason
    not to deploy it (none: deploy)."""

    spec: str
    version: str
    verdict: Verdict | None
    problems: tuple[str, ...]
    #: Where the verdict came from: the version's tags, or a signed report folder.
    source: str

    @property
    def deployable(self) -> bool:
        return not self.problems


def check_deploy(
    spec: str,
    tracking_uri: str | None = None,
    *,
    policy: str | Path | Policy | None = None,
    fail_on: str = "error",
    report: Path | None = None,
    trusted: Sequence[x509.Certificate] = (),
    source: str = "auto",
    timeout: int | None = None,
    allow_artifact_locations: str | Iterable[str] | None = None,
    system_card: str | Path | SystemCard | None = None,
) -> DeployCheck:
    """Audit the version `spec` (NAME@ALIAS, NAME/VERSION) points to now and compare it with
    the verdict recorded on it, or with the signed report folder `report` (checked against
    `trusted` certificates and against the store). Raises `AuditError` when it cannot check."""
    from audit.api import audit_subject, read_system_card

    if fail_on not in _PASSING:
        raise AuditError(f"--fail-on {fail_on!r}: choose from {', '.join(_PASSING)}")
    if "@" not in spec and "/" not in spec:
        raise SelectionError(f"{spec!r} is not a model version: give NAME@ALIAS or NAME/VERSION")
    loaded = policy if isinstance(policy, Policy) else load_policy(policy)
    subject = audit_subject(
        spec,
        tracking_uri,
        loaded,
        source=source,
        timeout=timeout,
        allow_artifact_locations=allow_artifact_locations,
        system_card=read_system_card(system_card),
    )
    lineage = subject.record["lineage"]
    version = f"{lineage['model']['name']}/{lineage['version']['version']}"
    if report is not None:
        return _from_report(spec, version, subject.record, report, trusted, fail_on, source)
    verdict = read_verdict(lineage["version"]["tags"])
    problems: list[str] = []
    if verdict is None:
        problems.append(f"{version} carries no verdict of mlflow-audit serve (audit.* tags)")
    else:
        if verdict.status not in _PASSING[fail_on]:
            problems.append(
                f"the verdict recorded at {verdict.checked_at} is {verdict.status} "
                f"(--fail-on {fail_on})"
            )
        if verdict.policy_sha256 != loaded.sha256:
            problems.append(
                f"the verdict was reached under policy {verdict.policy} "
                f"(sha256 {verdict.policy_sha256[:12]}), not the policy given "
                f"({loaded.name}, sha256 {loaded.sha256[:12]})"
            )
        if verdict.evidence_sha256 != evidence_digest(subject.record):
            problems.append(
                f"the evidence of {version} changed in MLflow since the verdict of "
                f"{verdict.checked_at}: audit it again"
            )
    return DeployCheck(spec, version, verdict, tuple(problems), "model version tags")


def _from_report(
    spec: str,
    version: str,
    record: Any,
    folder: Path,
    trusted: Sequence[x509.Certificate],
    fail_on: str,
    source: str,
) -> DeployCheck:
    """The verdict of a signed report folder that documents the version, verified offline
    and against the store today."""
    from audit.reportfolder import EVIDENCE_FILE, RESULT_FILE
    from audit.signing.verify import verify

    if not trusted:
        raise AuditError("--report needs --cert: the certificate the folder must be signed with")
    outcome = verify(folder, trusted, against_store=True, source=source)
    problems = [f"{folder}: {problem}" for problem in outcome.problems]
    problems += [
        f"{folder}: {run.run_id} changed in MLflow: {change}"
        for run in outcome.drift
        for change in run.changes
    ]
    documented = _documented(folder / EVIDENCE_FILE, folder / RESULT_FILE, version)
    if documented is None:
        problems.append(f"{folder} does not document {version}")
    elif documented not in _PASSING[fail_on]:
        problems.append(f"{folder} documents {version} as {documented} (--fail-on {fail_on})")
    return DeployCheck(spec, version, None, tuple(problems), f"signed report folder {folder}")


def _documented(evidence: Path, result: Path, version: str) -> str | None:
    """The status the folder's result gives `version`, when its evidence documents it."""
    try:
        records = json.loads(evidence.read_bytes())["records"]
        runs = json.loads(result.read_bytes())["runs"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    for record, run in zip(records, runs, strict=False):
        lineage = record.get("lineage") if isinstance(record, dict) else None
        if not isinstance(lineage, dict):
            continue
        name = f"{lineage['model']['name']}/{lineage['version']['version']}"
        if name == version and isinstance(run, dict):
            status = run.get("status")
            return status if isinstance(status, str) else None
    return None
