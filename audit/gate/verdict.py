"""A model version's audit verdict, as model-version tags in MLflow's registry.

The gate (`mlflow-audit serve`) writes them after it audits a version; `verify-deploy` reads
them back and checks them against the store. Tags are the registry's own place for such facts:
every MLflow client and UI shows them, and they travel with the version.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from audit.evidence import sha256_hex
from audit.result import AuditResult

#: The tags the gate writes on a version (its own: left out of the evidence it digests).
PREFIX = "audit."
STATUS, SCORE, POLICY = "audit.status", "audit.score", "audit.policy"
POLICY_SHA256, RESULT_SHA256 = "audit.policy_sha256", "audit.result_sha256"
EVIDENCE_SHA256, CHECKED_AT = "audit.evidence_sha256", "audit.checked_at"
TAGS = (STATUS, SCORE, POLICY, POLICY_SHA256, RESULT_SHA256, EVIDENCE_SHA256, CHECKED_AT)

_STATUSES = frozenset({"pass", "warn", "fail"})
_HEX = re.compile(r"^[0-9a-f]{64}$")
_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@dataclass(frozen=True)
class Verdict:
    """What an audit of one model version concluded, and what it was made from."""

    #: pass, warn or fail: the version's status under the policy (`RunResult.status`).
    status: str
    #: Percentage of the applicable rule evaluations that pass.
    score: float
    #: The policy's name and version, e.g. ``eu-ai-act-high-risk 1.1.0``.
    policy: str
    policy_sha256: str
    #: sha256 of the audit result (result.json) the verdict comes from.
    result_sha256: str
    #: sha256 of the version's evidence record without the gate's own tags (`evidence_digest`).
    evidence_sha256: str
    checked_at: str

    def tags(self) -> dict[str, str]:
        return {
            STATUS: self.status,
            SCORE: f"{self.score:g}",
            POLICY: self.policy,
            POLICY_SHA256: self.policy_sha256,
            RESULT_SHA256: self.result_sha256,
            EVIDENCE_SHA256: self.evidence_sha256,
            CHECKED_AT: self.checked_at,
        }


def verdict_of(result: AuditResult, record: Mapping[str, Any], result_json: bytes) -> Verdict:
    """The verdict of an audit of one model version (`record` its evidence record,
    `result_json` the result as written to result.json)."""
    (run,) = result.runs
    policy = result.policy
    version = f" {policy['version']}" if policy.get("version") else ""
    return Verdict(
        status=run.status,
        score=result.score,
        policy=f"{policy['name']}{version}",
        policy_sha256=str(policy.get("sha256", "")),
        result_sha256=hashlib.sha256(result_json).hexdigest(),
        evidence_sha256=evidence_digest(record),
        checked_at=result.generated_at,
    )


def read_verdict(tags: Mapping[str, str]) -> Verdict | None:
    """The verdict a version's tags hold; None when they hold none, or one that is not whole
    and well formed (tags anyone with write access may set: a malformed one is no verdict)."""
    if not all(tag in tags for tag in TAGS):
        return None
    try:
        score = float(tags[SCORE])
    except ValueError:
        return None
    if (
        tags[STATUS] not in _STATUSES
        or not 0 <= score <= 100
        or not all(_HEX.match(tags[tag]) for tag in (POLICY_SHA256, RESULT_SHA256, EVIDENCE_SHA256))
        or not _TIME.match(tags[CHECKED_AT])
    ):
        return None
    return Verdict(
        status=tags[STATUS],
        score=score,
        policy=tags[POLICY][:256],
        policy_sha256=tags[POLICY_SHA256],
        result_sha256=tags[RESULT_SHA256],
        evidence_sha256=tags[EVIDENCE_SHA256],
        checked_at=tags[CHECKED_AT],
    )


def evidence_digest(record: Mapping[str, Any]) -> str:
    """The sha256 of a version's evidence record as it was before the gate tagged it: the
    registry's `audit.*` version tags left out wherever the record lists them, since writing a
    verdict must not change the evidence it was about."""
    return sha256_hex(without_verdict_tags(record))


def without_verdict_tags(record: Mapping[str, Any]) -> dict[str, Any]:
    copied: dict[str, Any] = copy.deepcopy(dict(record))
    for model in copied.get("models") or []:
        for version in model.get("registered_versions") or []:
            _strip(version)
    lineage = copied.get("lineage")
    if isinstance(lineage, dict):
        _strip(lineage.get("version"))
        for version in lineage.get("versions") or []:
            _strip(version)
    return copied


def _strip(version: Any) -> None:
    if isinstance(version, dict) and isinstance(version.get("tags"), dict):
        version["tags"] = {k: v for k, v in version["tags"].items() if not k.startswith(PREFIX)}
