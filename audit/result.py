"""The audit result: findings per run, counts, score and the provisions matrix.

Every output format is a pure function of an `AuditResult`; its JSON form is published as
`schemas/audit-result.schema.json`.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from audit.policy import CATEGORIES, SEVERITIES, SEVERITY_RANK, Rule, Severity
from audit.provisions import load_catalog
from audit.waivers import Waiver, WaiverUse

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped,unused-ignore]

SCHEMA_VERSION = "1.0"
FailOn = Literal["error", "warning", "info", "never"]
FAIL_ON_CHOICES: tuple[FailOn, ...] = ("error", "warning", "info", "never")
RunStatus = Literal["pass", "warn", "fail"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One gap in one run: which rule, where in the evidence record, and how to fix it.
    (Slots: an audit of 100,000 runs holds half a million of them.)"""

    rule_id: str
    title: str
    category: str
    severity: Severity
    pointer: str
    message: str
    provisions: tuple[str, ...]
    remediation: str
    #: The waiver that accepts this gap: still reported, no longer failing the gate.
    waiver: Waiver | None = None

    def __reduce__(self) -> tuple[type[Finding], tuple[Any, ...]]:
        # As a tuple of arguments: the dataclass default for slots sets each field in a Python
        # loop, and worker processes send back half a million findings for 100,000 runs.
        return (
            Finding,
            (
                self.rule_id, self.title, self.category, self.severity, self.pointer,
                self.message, self.provisions, self.remediation, self.waiver,
            ),
        )  # fmt: skip

    @property
    def waived(self) -> bool:
        return self.waiver is not None

    def fails_gate(self, fail_on: FailOn) -> bool:
        """Whether this finding fails the gate at `fail_on`: open, and severe enough."""
        if self.waiver is not None or fail_on == "never":
            return False
        return SEVERITY_RANK[self.severity] >= SEVERITY_RANK[fail_on]

    @property
    def citations(self) -> list[str]:
        return list(_citations(self.provisions))

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "title": self.title,
            "category": self.category,
            "severity": self.severity,
            "pointer": self.pointer,
            "message": self.message,
            "provisions": list(self.provisions),
            "citations": self.citations,
            "remediation": self.remediation,
            "waiver": None if self.waiver is None else self.waiver.to_dict(),
        }


@dataclass(frozen=True)
class RunResult:
    run_id: str
    run_name: str | None
    experiment_id: str
    experiment_name: str | None
    evidence_sha256: str
    findings: tuple[Finding, ...]
    selected_by: tuple[str, ...] = ()
    model_versions: tuple[str, ...] = ()

    @functools.cached_property
    def open_findings(self) -> tuple[Finding, ...]:
        """The findings no waiver accepts: what the status and the gate go by. Cached: the
        summary, the matrix and every format ask for it, once per run each."""
        if all(f.waiver is None for f in self.findings):
            return self.findings
        return tuple(f for f in self.findings if f.waiver is None)

    @property
    def waived_findings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.waiver is not None)

    @property
    def status(self) -> RunStatus:
        severities = {f.severity for f in self.open_findings}
        if "error" in severities:
            return "fail"
        return "warn" if "warning" in severities else "pass"

    @property
    def failed_rule_ids(self) -> set[str]:
        return {f.rule_id for f in self.open_findings}

    def worst_at_or_above(self, fail_on: FailOn) -> bool:
        return any(f.fails_gate(fail_on) for f in self.findings)

    def to_dict(self, finding: Callable[[Finding], Any] = Finding.to_dict) -> dict[str, Any]:
        """The run as published; `finding` writes each finding (the JSON format passes one that
        encodes a finding shared by many runs once)."""
        return {
            "run_id": self.run_id,
            "run_name": self.run_name,
            "experiment_id": self.experiment_id,
            "experiment_name": self.experiment_name,
            "status": self.status,
            "evidence_sha256": self.evidence_sha256,
            "selected_by": list(self.selected_by),
            "model_versions": list(self.model_versions),
            "findings": [finding(f) for f in self.findings],
        }


@dataclass(frozen=True)
class RuleOutcome:
    """One rule on one run, with the findings it raised there (open and waived)."""

    run: RunResult
    rule: Rule
    findings: tuple[Finding, ...]

    @property
    def rule_id(self) -> str:
        return self.rule.id

    @property
    def title(self) -> str:
        return self.rule.title

    @property
    def category(self) -> str:
        return self.rule.category

    @property
    def severity(self) -> Severity:
        return self.rule.severity

    @property
    def provisions(self) -> tuple[str, ...]:
        return self.rule.provisions

    @property
    def remediation(self) -> str:
        return self.rule.remediation

    @property
    def open_findings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.waiver is None)

    @property
    def waived_findings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.waiver is not None)

    @property
    def status(self) -> Literal["pass", "fail", "waived"]:
        """fail: an open finding; waived: findings, all of them waived; pass: no finding."""
        if self.open_findings:
            return "fail"
        return "waived" if self.findings else "pass"

    @property
    def citations(self) -> tuple[str, ...]:
        catalog = load_catalog()
        return tuple(catalog[p].citation for p in self.provisions if p in catalog)

    def gate_findings(self, fail_on: FailOn) -> tuple[Finding, ...]:
        """The findings of this rule that fail the gate at `fail_on`."""
        return tuple(f for f in self.findings if f.fails_gate(fail_on))


@dataclass
class AuditResult:
    tool_version: str
    generated_at: str
    store: str
    source: str
    selection: Mapping[str, Any]
    policy: Mapping[str, Any]
    rules: tuple[Rule, ...]
    runs: list[RunResult]
    fail_on: FailOn = "error"
    #: Fail the gate when fewer than this percentage of rule evaluations pass.
    min_score: float | None = None
    truncated: bool = False
    #: How each waiver of the audit fared (applied, expired, unused).
    waivers: tuple[WaiverUse, ...] = ()
    #: Evidence records by run id, kept only when asked for (they can be large).
    records: dict[str, Mapping[str, Any]] | None = field(default=None, repr=False)

    # ----------------------------------------------------------------- rules

    def all_rules(self) -> tuple[Rule, ...]:
        """The policy's rules, then one for each rule id only findings name (an unannotated
        schema constraint, the built-in secrets.logged), as its first finding describes it."""
        rules = list(self.rules)
        known = {rule.id for rule in rules}
        for run in self.runs:
            for finding in run.findings:
                if finding.rule_id not in known:
                    known.add(finding.rule_id)
                    rules.append(
                        Rule(
                            id=finding.rule_id,
                            category=finding.category,
                            severity=finding.severity,
                            provisions=finding.provisions,
                            title=finding.title,
                            remediation=finding.remediation,
                            annotated=False,
                        )
                    )
        return tuple(rules)

    def outcomes(self, run: RunResult) -> list[RuleOutcome]:
        """Every rule evaluated on a run: the policy's, in its order, then those only this run's
        findings name. The same evaluations `rule_evaluations` counts."""
        by_rule: dict[str, list[Finding]] = {}
        for finding in run.findings:
            by_rule.setdefault(finding.rule_id, []).append(finding)
        declared = {rule.id for rule in self.rules}
        return [
            RuleOutcome(run, rule, tuple(by_rule.get(rule.id, ())))
            for rule in self.all_rules()
            if rule.id in declared or rule.id in by_rule
        ]

    # ----------------------------------------------------------------- counts

    def severity_counts(self) -> dict[str, int]:
        counts = Counter(f.severity for run in self.runs for f in run.open_findings)
        return {severity: counts.get(severity, 0) for severity in SEVERITIES}

    def category_counts(self) -> dict[str, int]:
        counts = Counter(f.category for run in self.runs for f in run.open_findings)
        return {
            category: counts.get(category, 0)
            for category in (*CATEGORIES, *sorted(set(counts) - set(CATEGORIES)))
        }

    def status_counts(self) -> dict[str, int]:
        counts = Counter(run.status for run in self.runs)
        return {status: counts.get(status, 0) for status in ("pass", "warn", "fail")}

    def rule_evaluations(self) -> tuple[int, int]:
        """(evaluations, passes): every policy rule on every run, plus unannotated failures."""
        policy_rules = {rule.id for rule in self.rules}
        evaluations = passes = 0
        for run in self.runs:
            failed = run.failed_rule_ids
            evaluations += len(policy_rules | failed)
            passes += len(policy_rules - failed)
        return evaluations, passes

    @property
    def score(self) -> float:
        """Percentage of rule evaluations that pass, across the audited runs."""
        evaluations, passes = self.rule_evaluations()
        return round(100.0 * passes / evaluations, 1) if evaluations else 100.0

    def failing_runs(self, fail_on: FailOn | None = None) -> list[RunResult]:
        threshold = self.fail_on if fail_on is None else fail_on
        return [run for run in self.runs if run.worst_at_or_above(threshold)]

    @property
    def score_too_low(self) -> bool:
        return self.min_score is not None and self.score < self.min_score

    @property
    def gate_failed(self) -> bool:
        return bool(self.failing_runs()) or self.score_too_low

    @property
    def exit_code(self) -> int:
        """0: no open finding at or above --fail-on and the score reaches --min-score; 1: not."""
        return 1 if self.gate_failed else 0

    # ----------------------------------------------------------------- matrix

    def provisions_matrix(self) -> list[dict[str, Any]]:
        """provision -> rules -> pass/fail per run. Runs are listed where a rule fails; a run
        not listed under a rule passes it."""
        catalog = load_catalog()
        failing: dict[str, list[str]] = {}
        for run in self.runs:
            for rule_id in sorted(run.failed_rule_ids):
                failing.setdefault(rule_id, []).append(run.run_id)
        rules_by_provision: dict[str, list[Rule]] = {}
        for rule in self.rules:
            for provision_id in rule.provisions:
                rules_by_provision.setdefault(provision_id, []).append(rule)
        matrix = []
        for provision in catalog.ordered(set(rules_by_provision)):
            entries = []
            worst = 0
            for rule in rules_by_provision[provision.id]:
                failed_runs = failing.get(rule.id, [])
                if failed_runs:
                    worst = max(worst, SEVERITY_RANK[rule.severity])
                entries.append(
                    {
                        "rule_id": rule.id,
                        "severity": rule.severity,
                        "passed": len(self.runs) - len(failed_runs),
                        "failed": len(failed_runs),
                        "failing_runs": failed_runs,
                    }
                )
            matrix.append(
                {
                    "id": provision.id,
                    "framework": provision.framework,
                    "citation": provision.citation,
                    "title": provision.title,
                    "status": {3: "fail", 2: "warn", 1: "info", 0: "pass"}[worst],
                    "rules": entries,
                }
            )
        return matrix

    def summary(self) -> dict[str, Any]:
        evaluations, passes = self.rule_evaluations()
        by_rule = Counter(rule_id for run in self.runs for rule_id in run.failed_rule_ids)
        return {
            "runs": len(self.runs),
            "runs_by_status": self.status_counts(),
            "findings": sum(len(run.open_findings) for run in self.runs),
            "waived": sum(len(run.waived_findings) for run in self.runs),
            "by_severity": self.severity_counts(),
            "by_category": self.category_counts(),
            "runs_failing_rule": dict(sorted(by_rule.items())),
            "rule_evaluations": evaluations,
            "rule_passes": passes,
            "score": self.score,
            "truncated": self.truncated,
            "gate": {
                "fail_on": self.fail_on,
                "min_score": self.min_score,
                "failed": self.gate_failed,
                "failing_runs": len(self.failing_runs()),
                "score_too_low": self.score_too_low,
            },
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            key: [run.to_dict() for run in self.runs] if value is None else value
            for key, value in self.sections()
        }

    def sections(self) -> list[tuple[str, Any]]:
        """The top-level members of `to_dict`, in order, with None for ``runs``: its entries
        are each run's `RunResult.to_dict`, left to the caller to build one at a time (a
        100,000-run result does not fit in memory as one document)."""
        catalog = load_catalog()
        used = {p for rule in self.rules for p in rule.provisions} | {
            p for run in self.runs for f in run.findings for p in f.provisions
        }
        return [
            ("schema_version", SCHEMA_VERSION),
            ("tool", {"name": "mlflow-audit", "version": self.tool_version}),
            ("generated_at", self.generated_at),
            ("store", self.store),
            ("source", self.source),
            ("selection", dict(self.selection)),
            ("policy", dict(self.policy)),
            ("summary", self.summary()),
            ("rules", [rule.to_dict() for rule in self.rules]),
            ("runs", None),
            ("provisions", [p.to_dict() for p in catalog.ordered(used)]),
            ("matrix", self.provisions_matrix()),
            ("waivers", [use.to_dict() for use in self.waivers]),
        ]

    def to_pandas(self) -> pd.DataFrame:
        """One row per run x rule: every rule of the policy on every run, plus the rule ids only
        findings name. Columns: run_id, run_name, experiment_id, experiment_name, rule_id,
        title, category, severity, status (``pass``; ``fail``: an open finding; ``waived``:
        findings, all waived), findings (count), provisions and citations (tuples), message
        (the findings' messages, ``; ``-joined; empty when the rule passes).

        Needs pandas, imported here only: ``mlflow-audit check`` never loads it.
        """
        import pandas as pd  # type: ignore[import-untyped,unused-ignore]

        from audit.formats.rows import RULE_COLUMNS, rule_rows

        return pd.DataFrame(rule_rows(self), columns=list(RULE_COLUMNS))


@functools.lru_cache(maxsize=1024)  # a rule's provisions: the same tuple for all its findings
def _citations(provisions: tuple[str, ...]) -> tuple[str, ...]:
    catalog = load_catalog()
    return tuple(catalog[p].citation for p in provisions if p in catalog)


def sort_findings(
    findings: Iterable[Finding], rule_order: Mapping[str, int] | None = None
) -> tuple[Finding, ...]:
    """Highest severity first, then by category, by the rule's place in the policy, and by
    place in the record."""
    rules = rule_order or {}
    return tuple(
        sorted(
            findings,
            key=lambda f: (
                -SEVERITY_RANK[f.severity],
                _CATEGORY_ORDER.get(f.category, len(_CATEGORY_ORDER)),
                rules.get(f.rule_id, len(rules)),
                f.rule_id,
                _pointer_key(f.pointer),
            ),
        )
    )


_CATEGORY_ORDER = {category: index for index, category in enumerate(CATEGORIES)}


@functools.lru_cache(maxsize=4096)  # the places a policy fails at recur run after run
def _pointer_key(pointer: str) -> tuple[tuple[int, int, str], ...]:
    """Sort /requirements/2 before /requirements/10."""
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in pointer.split("/")
    )
