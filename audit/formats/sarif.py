"""`--format sarif`: SARIF 2.1.0, for the code-scanning views of GitHub and Azure DevOps and any
SARIF viewer.

One SARIF run. ``tool.driver.rules`` has every rule of the policy, then the rule ids only
findings name (``schema:...``, ``secrets.logged``), each with its title, the provisions it serves
(ids, citations, links in ``help``), the fix and a default level. One result per finding:
``level`` error, warning or note (info); a logical location naming experiment, run and the JSON
Pointer into the run's evidence record (``experiment/run (run id)/pointer``); a
``partialFingerprints`` entry, the sha256 of rule id, run id and pointer, so a code-scanning
service tracks the same gap across audits; the run id and evidence digest as properties. A
waived finding carries an accepted external suppression with the waiver's reason, approver,
expiry and origin: viewers list it as suppressed, not as an alert. The invocation says the audit
completed (the gate's verdict is in the run's properties) and carries each expired or unused
waiver as a warning notification.

**Outcomes other than a gap are not results.** GitHub code scanning turns every result into an
alert whatever its SARIF ``kind`` (pass, notApplicable, review), so the rules that pass, do not
apply or cannot be decided on a run are listed in the SARIF run's ``properties.outcomes``: per
audited run, the rule ids of each outcome (with the reason of each not-applicable and unknown
one in the rule's ``properties``), the same outcomes every other format shows.

**GitHub code scanning needs a file.** It refuses results whose locations are only logical
("expected a physical location"). Pass ``artifact_uri`` (a path relative to the repository root,
e.g. the training script or the pipeline definition the gate guards) and every result also
points at that file, line 1; without it the SARIF file is complete and valid, for viewers that
read logical locations.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from audit.formats.markdown import md
from audit.formats.rows import experiment_label, run_label
from audit.formats.text import one_line
from audit.policy import Rule
from audit.provisions import load_catalog
from audit.result import SCOPE_NOTE, AuditResult, Finding, RunResult
from audit.waivers import WaiverUse

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI = "https://github.com/mlflow-audit/mlflow-audit"
FINGERPRINT = "mlflowAuditFinding/v1"
_LEVEL: dict[str, str] = {"error": "error", "warning": "warning", "info": "note"}
_NOTIFICATIONS = {
    "expired": ("waiver-expired", "A waiver is past its expiry date and no longer applies."),
    "unused": ("waiver-unused", "A waiver matched no finding."),
}


def render_sarif(result: AuditResult, *, artifact_uri: str | None = None) -> str:
    rules = list(result.all_rules())
    index = {rule.id: position for position, rule in enumerate(rules)}
    log = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "mlflow-audit",
                        "version": result.tool_version,
                        "informationUri": INFORMATION_URI,
                        "rules": [_rule(rule) for rule in rules],
                        "notifications": [
                            {"id": notification_id, "shortDescription": {"text": text}}
                            for notification_id, text in _NOTIFICATIONS.values()
                        ],
                    }
                },
                "invocations": [_invocation(result, index)],
                "results": [
                    _result(run, finding, index, artifact_uri)
                    for run in result.runs
                    for finding in run.findings
                ],
                "properties": {
                    "policy": dict(result.policy),
                    "store": result.store,
                    "generated_at": result.generated_at,
                    "scope": SCOPE_NOTE,
                    "summary": result.summary(),
                    "outcomes": [_outcomes(result, run) for run in result.runs],
                },
            }
        ],
    }
    return json.dumps(log, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _rule(rule: Rule) -> dict[str, Any]:
    catalog = load_catalog()
    provisions = [catalog[p] for p in rule.provisions if p in catalog]
    citations = [p.citation for p in provisions]
    full = rule.title + (f". Relevant to: {', '.join(citations)}." if citations else ".")
    help_text = f"Fix: {rule.remediation}"
    help_markdown = f"**Fix:** {md(rule.remediation)}"
    if provisions:
        help_text += "\n\nRelevant provisions:\n" + "\n".join(
            f"- {p.citation}: {p.title} ({p.link})" for p in provisions
        )
        help_markdown += "\n\n**Relevant provisions:**\n\n" + "\n".join(
            f"- [{md(p.citation)}]({p.link}): {md(p.title)}" for p in provisions
        )
    return {
        "id": rule.id,
        "name": _pascal(rule.id),
        "shortDescription": {"text": rule.title},
        "fullDescription": {"text": full},
        "help": {"text": help_text, "markdown": help_markdown},
        "helpUri": INFORMATION_URI,
        "defaultConfiguration": {"level": _LEVEL[rule.severity]},
        "properties": {
            "category": rule.category,
            "severity": rule.severity,
            "provisions": list(rule.provisions),
            "citations": citations,
            "gap": rule.gap_text,
            "not_applicable": rule.not_applicable,
            "unknown": rule.unknown,
            "tags": list(dict.fromkeys(["mlflow-audit", rule.category, *_frameworks(rule)])),
        },
    }


def _outcomes(result: AuditResult, run: RunResult) -> dict[str, Any]:
    """The rule ids of each outcome on one run."""
    grouped = run.outcomes(rule.id for rule in result.rules)
    return {"run_id": run.run_id, **{str(outcome): ids for outcome, ids in grouped.items()}}


def _frameworks(rule: Rule) -> list[str]:
    return [provision.split("/", 1)[0] for provision in rule.provisions]


def _pascal(rule_id: str) -> str:
    """``data.training-dataset`` -> ``DataTrainingDataset``: SARIF's ``name`` is an identifier."""
    words = "".join(c if c.isalnum() else " " for c in rule_id).split()
    return "".join(word[:1].upper() + word[1:] for word in words) or "Rule"


def _result(
    run: RunResult, finding: Finding, index: dict[str, int], artifact_uri: str | None
) -> dict[str, Any]:
    pointer = finding.pointer
    # Names read on one line in every viewer; the properties keep them as MLflow has them.
    run_name, experiment = one_line(run_label(run)), one_line(experiment_label(run))
    name = f"{experiment}/{run_name} ({run.run_id})"
    location: dict[str, Any] = {
        "logicalLocations": [
            {
                "name": pointer or "/",
                "fullyQualifiedName": f"{name}{pointer or '/'}",
                # the whole evidence record is an object; a pointer into it names a member
                "kind": "member" if pointer else "object",
            }
        ]
    }
    if artifact_uri:
        location["physicalLocation"] = {
            "artifactLocation": {"uri": artifact_uri},
            "region": {"startLine": 1},
        }
    fingerprint = hashlib.sha256(
        "\0".join((finding.rule_id, run.run_id, pointer)).encode("utf-8")
    ).hexdigest()
    entry: dict[str, Any] = {
        "ruleId": finding.rule_id,
        "ruleIndex": index[finding.rule_id],
        "kind": "fail",
        "level": _LEVEL[finding.severity],
        "message": {
            "text": f"{finding.message} (run {run_name} {run.run_id}, experiment {experiment})"
        },
        "locations": [location],
        "partialFingerprints": {FINGERPRINT: fingerprint},
        "properties": {
            "run_id": run.run_id,
            "run_name": run.run_name,
            "experiment_id": run.experiment_id,
            "experiment_name": run.experiment_name,
            "pointer": pointer,
            "evidence_sha256": run.evidence_sha256,
            "severity": finding.severity,
            "provisions": list(finding.provisions),
            "citations": finding.citations,
        },
    }
    waiver = finding.waiver
    if waiver is not None:
        entry["suppressions"] = [
            {
                "kind": "external",
                "status": "accepted",
                "justification": waiver.reason,
                "properties": {
                    "approved_by": waiver.approved_by,
                    "expires": waiver.expires.isoformat(),
                    "scope": waiver.scope_text,
                    "origin": waiver.origin,
                },
            }
        ]
    return entry


def _invocation(result: AuditResult, index: dict[str, int]) -> dict[str, Any]:
    invocation: dict[str, Any] = {
        # The audit ran to the end; whether the gate passed is not the tool's success.
        # The gate's verdict is in the run's properties (summary.gate).
        "executionSuccessful": True,
    }
    notifications = [_notification(use, index) for use in result.waivers if use.state != "applied"]
    if notifications:
        invocation["toolExecutionNotifications"] = notifications
    return invocation


def _notification(use: WaiverUse, index: dict[str, int]) -> dict[str, Any]:
    descriptor_id = _NOTIFICATIONS[use.state][0]
    rule: dict[str, Any] = {"id": use.waiver.rule_id}
    if use.waiver.rule_id in index:
        rule["index"] = index[use.waiver.rule_id]
    return {
        "level": "warning",
        "message": {"text": use.message},
        "descriptor": {"id": descriptor_id, "index": list(_NOTIFICATIONS).index(use.state)},
        "associatedRule": rule,
        "properties": use.to_dict(),
    }
