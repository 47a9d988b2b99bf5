"""The result as flat rows: rule evaluations (run x rule) and findings, shared by the formats.

A *rule outcome* is one rule evaluated on one run: every rule of the policy on every run, plus
the rule ids that only findings name (an unannotated ``schema:...`` constraint, the built-in
``secrets.logged``). JUnit makes a test case of each, `AuditResult.to_pandas` a row; CSV has a
row per finding. The counting follows `AuditResult.rule_evaluations`, so the formats agree with
the score.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from audit.result import AuditResult, Finding, RuleOutcome, RunResult
from audit.waivers import Waiver

FINDING_COLUMNS = (
    "run_id",
    "run_name",
    "experiment_id",
    "experiment_name",
    "rule_id",
    "title",
    "category",
    "severity",
    "status",
    "pointer",
    "message",
    "provisions",
    "citations",
    "remediation",
    "waiver_reason",
    "waiver_approved_by",
    "waiver_expires",
)

RULE_COLUMNS = (
    "run_id",
    "run_name",
    "experiment_id",
    "experiment_name",
    "rule_id",
    "title",
    "category",
    "severity",
    "status",
    "findings",
    "provisions",
    "citations",
    "message",
)


def run_label(run: RunResult) -> str:
    return run.run_name or run.run_id


def experiment_label(run: RunResult) -> str:
    return run.experiment_name or run.experiment_id


def located(finding: Finding) -> str:
    """The finding's message, led by its JSON Pointer (messages usually start with it)."""
    where = finding.pointer or "/"
    return finding.message if finding.message.startswith(where) else f"{where}: {finding.message}"


def waiver_text(waiver: Waiver) -> str:
    return (
        f"{waiver.reason} (approved by {waiver.approved_by}, expires {waiver.expires.isoformat()})"
    )


def rule_outcomes(result: AuditResult) -> Iterator[RuleOutcome]:
    for run in result.runs:
        yield from result.outcomes(run)


def _run_columns(run: RunResult) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "run_name": run.run_name or "",
        "experiment_id": run.experiment_id,
        "experiment_name": run.experiment_name or "",
    }


def rule_rows(result: AuditResult) -> list[dict[str, Any]]:
    """One row per run x rule (`RULE_COLUMNS`), as `AuditResult.to_pandas` shows them."""
    return [
        {
            **_run_columns(outcome.run),
            "rule_id": outcome.rule_id,
            "title": outcome.title,
            "category": outcome.category,
            "severity": outcome.severity,
            "status": outcome.status,
            "findings": len(outcome.findings),
            "provisions": outcome.provisions,
            "citations": outcome.citations,
            "message": "; ".join(f.message for f in outcome.findings),
        }
        for outcome in rule_outcomes(result)
    ]


def finding_rows(result: AuditResult) -> list[dict[str, str]]:
    """One row per finding (`FINDING_COLUMNS`), every value a string, as CSV writes them."""
    rows = []
    for run in result.runs:
        for finding in run.findings:
            waiver = finding.waiver
            rows.append(
                {
                    **_run_columns(run),
                    "rule_id": finding.rule_id,
                    "title": finding.title,
                    "category": finding.category,
                    "severity": finding.severity,
                    "status": "open" if waiver is None else "waived",
                    "pointer": finding.pointer,
                    "message": finding.message,
                    "provisions": " ".join(finding.provisions),
                    "citations": "; ".join(finding.citations),
                    "remediation": finding.remediation,
                    "waiver_reason": "" if waiver is None else waiver.reason,
                    "waiver_approved_by": "" if waiver is None else waiver.approved_by,
                    "waiver_expires": "" if waiver is None else waiver.expires.isoformat(),
                }
            )
    return rows
