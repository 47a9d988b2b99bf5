"""The result as flat rows: rule evaluations (run x rule) and findings, shared by the formats.

A *rule outcome* is one rule evaluated on one run: every rule of the policy on every run, plus
the rule ids that only findings name (an unannotated ``schema:...`` constraint, the built-in
``secrets.logged``). JUnit makes a test case of each, `AuditResult.to_pandas` a row; CSV has a
row per finding. The counting follows `AuditResult.rule_evaluations`, so the formats agree with
the score.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from audit.policy import SEVERITY_RANK, Severity
from audit.provisions import load_catalog
from audit.result import AuditResult, FailOn, Finding, RunResult
from audit.waivers import Waiver

OutcomeStatus = Literal["pass", "fail", "waived"]

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


@dataclass(frozen=True)
class RuleOutcome:
    """One rule on one run, with the findings it raised there (open and waived)."""

    run: RunResult
    rule_id: str
    title: str
    category: str
    severity: Severity
    provisions: tuple[str, ...]
    remediation: str
    findings: tuple[Finding, ...]

    @property
    def open_findings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.waiver is None)

    @property
    def waived_findings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.waiver is not None)

    @property
    def status(self) -> OutcomeStatus:
        """fail: an open finding; waived: findings, all of them waived; pass: no finding."""
        if self.open_findings:
            return "fail"
        return "waived" if self.findings else "pass"

    @property
    def citations(self) -> tuple[str, ...]:
        return citations_of(self.provisions)

    def gate_findings(self, fail_on: FailOn) -> tuple[Finding, ...]:
        """The open findings that fail the gate at `fail_on`."""
        return tuple(f for f in self.findings if fails_gate(f, fail_on))


def fails_gate(finding: Finding, fail_on: FailOn) -> bool:
    """Whether this finding alone fails the gate, as `RunResult.worst_at_or_above` decides."""
    if finding.waiver is not None or fail_on == "never":
        return False
    return SEVERITY_RANK[finding.severity] >= SEVERITY_RANK[fail_on]


def citations_of(provisions: tuple[str, ...]) -> tuple[str, ...]:
    catalog = load_catalog()
    return tuple(catalog[p].citation for p in provisions if p in catalog)


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


def outcomes_of(result: AuditResult, run: RunResult) -> list[RuleOutcome]:
    """Every rule of the policy in its order, then the rules only findings name, in the order
    the findings have (most severe first)."""
    by_rule: dict[str, list[Finding]] = {}
    for finding in run.findings:
        by_rule.setdefault(finding.rule_id, []).append(finding)
    outcomes = [
        RuleOutcome(
            run=run,
            rule_id=rule.id,
            title=rule.title,
            category=rule.category,
            severity=rule.severity,
            provisions=rule.provisions,
            remediation=rule.remediation,
            findings=tuple(by_rule.pop(rule.id, ())),
        )
        for rule in result.rules
    ]
    for rule_id, findings in by_rule.items():
        first = findings[0]
        outcomes.append(
            RuleOutcome(
                run=run,
                rule_id=rule_id,
                title=first.title,
                category=first.category,
                severity=first.severity,
                provisions=first.provisions,
                remediation=first.remediation,
                findings=tuple(findings),
            )
        )
    return outcomes


def rule_outcomes(result: AuditResult) -> Iterator[RuleOutcome]:
    for run in result.runs:
        yield from outcomes_of(result, run)


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
