"""The result as flat rows of findings, and the labels the formats share.

The rows of rule evaluations (run x rule, what JUnit makes a test case of and
`AuditResult.to_pandas` a row) are `audit.result.rule_rows`; CSV has a row per finding.
"""

from __future__ import annotations

from audit.result import RUN_COLUMNS, AuditResult, Finding, RunResult, run_columns
from audit.waivers import Waiver

FINDING_COLUMNS = (
    *RUN_COLUMNS,
    "rule_id",
    "title",
    "gap",
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


def finding_rows(result: AuditResult) -> list[dict[str, str]]:
    """One row per finding (`FINDING_COLUMNS`), every value a string, as CSV writes them."""
    rows = []
    for run in result.runs:
        for finding in run.findings:
            waiver = finding.waiver
            rows.append(
                {
                    **run_columns(run),
                    "rule_id": finding.rule_id,
                    "title": finding.title,
                    "gap": finding.gap_text,
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
