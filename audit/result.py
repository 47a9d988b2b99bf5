"""The audit result: findings per run, counts, score and the provisions matrix.

Every output format is a pure function of an `AuditResult`; its JSON form is published as
`schemas/audit-result.schema.json`.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from audit.policy import CATEGORIES, OUTCOMES, SEVERITIES, SEVERITY_RANK, Outcome, Rule, Severity
from audit.provisions import load_catalog
from audit.waivers import Waiver, WaiverUse

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped,unused-ignore]

SCHEMA_VERSION = "2.0"
FailOn = Literal["error", "warning", "info", "never"]
FAIL_ON_CHOICES: tuple[FailOn, ...] = ("error", "warning", "info", "never")
RunStatus = Literal["pass", "warn", "fail"]
#: What the scope of an audit is, said wherever its verdicts are summed up.
SCOPE_NOTE = (
    "This shows which evidence MLflow holds for which provisions. It is not a conformity "
    "assessment (Art. 43) nor an EU declaration of conformity (Art. 47), and it does not "
    "classify systems: whether an AI system is high-risk follows from the rules of Art. 6 (a "
    "provider who considers an Annex III system not high-risk documents that assessment, Art. "
    "6(4))."
)


class Evidence(NamedTuple):
    """What satisfied a rule that passes: the places in the evidence record (JSON Pointers)
    and them in words."""

    text: str
    pointers: tuple[str, ...]


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
    #: The rule's title worded as this gap ("No Python version recorded").
    gap: str = ""

    def __reduce__(self) -> tuple[type[Finding], tuple[Any, ...]]:
        # As a tuple of arguments: the dataclass default for slots sets each field in a Python
        # loop, and worker processes send back half a million findings for 100,000 runs.
        return (
            Finding,
            (
                self.rule_id, self.title, self.category, self.severity, self.pointer,
                self.message, self.provisions, self.remediation, self.waiver, self.gap,
            ),
        )  # fmt: skip

    @property
    def gap_text(self) -> str:
        return self.gap or f"Not met: {self.title}"

    @property
    def waived(self) -> bool:
        return self.waiver is not None

    def as_rule(self) -> Rule:
        """The rule of a finding whose rule the policy does not declare (an unannotated
        schema constraint, the built-in secrets.logged), as the finding describes it."""
        return Rule(
            id=self.rule_id,
            category=self.category,
            severity=self.severity,
            provisions=self.provisions,
            title=self.title,
            remediation=self.remediation,
            annotated=False,
        )

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
            "gap": self.gap_text,
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
    #: Rules of the policy that do not apply to the run (their subject is absent).
    not_applicable: tuple[str, ...] = ()
    #: Rules that apply but whose answer MLflow's record cannot show either way.
    unknown: tuple[str, ...] = ()
    #: What satisfied each rule that passes, by rule id, when the audit looked (reports do; a
    #: gate does not, it costs ten times the validation): None when it did not look.
    evidence: Mapping[str, Evidence] | None = None

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

    @property
    def waived_rule_ids(self) -> set[str]:
        """Rules whose findings on the run are all waived."""
        waived = {f.rule_id for f in self.findings if f.waiver is not None}
        return waived - self.failed_rule_ids if waived else waived

    def outcome_of(self, rule_id: str) -> Outcome:
        if rule_id in self.not_applicable:
            return "not_applicable"
        if rule_id in self.unknown:
            return "unknown"
        if rule_id in self.failed_rule_ids:
            return "fail"
        return "waived" if rule_id in self.waived_rule_ids else "pass"

    def severity_counts(self) -> dict[str, int]:
        counts: dict[str, int] = dict.fromkeys(SEVERITIES, 0)
        for finding in self.open_findings:
            counts[finding.severity] += 1
        return counts

    def worst_at_or_above(self, fail_on: FailOn) -> bool:
        return any(f.fails_gate(fail_on) for f in self.findings)

    def outcomes(self, rule_ids: Iterable[str]) -> dict[Outcome, list[str]]:
        """The rule ids of each outcome on the run, in the order given (the policy's), then
        the rule ids only findings name."""
        failed, waived = self.failed_rule_ids, self.waived_rule_ids
        grouped: dict[Outcome, list[str]] = {outcome: [] for outcome in OUTCOMES}
        listed = set()
        for rule_id in (*rule_ids, *(f.rule_id for f in self.findings)):
            if rule_id in listed:
                continue
            listed.add(rule_id)
            if rule_id in self.not_applicable:
                grouped["not_applicable"].append(rule_id)
            elif rule_id in self.unknown:
                grouped["unknown"].append(rule_id)
            elif rule_id in failed:
                grouped["fail"].append(rule_id)
            else:
                grouped["waived" if rule_id in waived else "pass"].append(rule_id)
        return grouped

    @property
    def outcomes_key(self) -> tuple[Any, ...]:
        """What the run's lists of outcomes depend on besides the policy: runs with the same
        key share them."""
        return (
            self.not_applicable,
            self.unknown,
            *[f.rule_id if f.waiver is None else (f.rule_id,) for f in self.findings],
        )

    def to_dict(
        self,
        finding: Callable[[Finding], Any] = Finding.to_dict,
        rules: Iterable[Rule] = (),
        outcomes: Callable[[RunResult], Any] | None = None,
    ) -> dict[str, Any]:
        """The run as published; `finding` writes each finding (the JSON format passes one that
        encodes a finding shared by many runs once); `rules`: the policy's, whose outcome on
        the run is listed (`AuditResult.to_dict` passes them); `outcomes`, when given, writes
        those lists instead (the JSON format encodes lists many runs share once)."""
        return {
            "run_id": self.run_id,
            "run_name": self.run_name,
            "experiment_id": self.experiment_id,
            "experiment_name": self.experiment_name,
            "status": self.status,
            "evidence_sha256": self.evidence_sha256,
            "selected_by": list(self.selected_by),
            "model_versions": list(self.model_versions),
            "outcomes": outcomes(self) if outcomes else self.outcomes(r.id for r in rules),
            "evidence": None
            if self.evidence is None
            else {
                rule_id: {"text": found.text, "pointers": list(found.pointers)}
                for rule_id, found in self.evidence.items()
            },
            "findings": [finding(f) for f in self.findings],
        }


def worst_first(runs: Iterable[RunResult]) -> list[RunResult]:
    """Runs in the one order every output lists them: most open errors first, then warnings,
    then unknown outcomes and information, then by experiment, name and id."""

    def key(run: RunResult) -> tuple[Any, ...]:
        counts = run.severity_counts()
        return (
            -counts["error"],
            -counts["warning"],
            -len(run.unknown),
            -counts["info"],
            run.experiment_name or run.experiment_id,
            run.run_name or "",
            run.run_id,
        )

    return sorted(runs, key=key)


@dataclass(frozen=True)
class RuleOutcome:
    """One rule on one run: its outcome, with the findings it raised there (open and waived),
    the reason it was not decided, or the evidence it passed on."""

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
        return self.findings[0].remediation if self.findings else self.rule.remediation

    @property
    def open_findings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.waiver is None)

    @property
    def waived_findings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.waiver is not None)

    @property
    def status(self) -> Outcome:
        """not_applicable or unknown as the policy decided; fail: an open finding; waived:
        findings, all of them waived; pass: no finding."""
        if self.rule.id in self.run.not_applicable:
            return "not_applicable"
        if self.rule.id in self.run.unknown:
            return "unknown"
        if self.open_findings:
            return "fail"
        return "waived" if self.findings else "pass"

    @property
    def reason(self) -> str | None:
        """Why the rule was not decided on the run (not applicable, unknown)."""
        status = self.status
        if status == "not_applicable":
            return self.rule.not_applicable
        if status == "unknown":
            return self.rule.unknown
        return None

    @property
    def evidence(self) -> Evidence | None:
        """What satisfied the rule, when it passes and the audit looked."""
        if self.run.evidence is None or self.status != "pass":
            return None
        return self.run.evidence.get(self.rule.id)

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
    _tallied: tuple[Any, dict[Outcome, Counter[str]]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

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
                    rules.append(finding.as_rule())
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

    def outcome_counts(self) -> dict[Outcome, int]:
        """Rule evaluations by outcome: every policy rule on every run, plus the rule ids only
        findings name (an unannotated constraint, secrets.logged) where they do."""
        counts: dict[Outcome, int] = dict.fromkeys(OUTCOMES, 0)
        for outcome, by_rule in self._tally().items():
            counts[outcome] = sum(by_rule.values())
        return counts

    def _tally(self) -> dict[Outcome, Counter[str]]:
        """Runs by outcome and rule, in one pass over the runs; kept while the runs are the
        same (the summary, the score, the gate and the matrix all ask)."""
        key = (id(self.runs), len(self.runs), tuple(rule.id for rule in self.rules))
        held = self._tallied
        if held is not None and held[0] == key:
            return held[1]
        undecided: Counter[tuple[str, ...]] = Counter()
        unknown: Counter[tuple[str, ...]] = Counter()
        failed: Counter[str] = Counter()
        waived: Counter[str] = Counter()
        for run in self.runs:
            # Runs share their tuples of undecided rules: counted by tuple, then by rule.
            if run.not_applicable:
                undecided[run.not_applicable] += 1
            if run.unknown:
                unknown[run.unknown] += 1
            if run.findings:
                failed.update(run.failed_rule_ids)
                if run.open_findings is not run.findings:  # some are waived
                    waived.update(run.waived_rule_ids)
        tally: dict[Outcome, Counter[str]] = {
            "fail": failed,
            "waived": waived,
            "not_applicable": _expand(undecided),
            "unknown": _expand(unknown),
        }
        policy_rules = [rule.id for rule in self.rules]
        extra = (set(failed) | set(waived)) - set(policy_rules)
        runs = len(self.runs)
        tally["pass"] = Counter(
            {
                rule_id: runs - sum(tally[outcome][rule_id] for outcome in tally)
                for rule_id in policy_rules
            }
        )
        for rule_id in extra:
            # A rule only findings name is evaluated where it has findings: no pass.
            tally["pass"][rule_id] = 0
        self._tallied = (key, tally)
        return tally

    def rule_evaluations(self) -> tuple[int, int]:
        """(evaluations, passes) the score counts: the rule evaluations that apply (not
        applicable ones left out; unknown ones count as not passed), and those that pass or
        whose findings are all waived."""
        counts = self.outcome_counts()
        applicable = sum(counts.values()) - counts["not_applicable"]
        return applicable, counts["pass"] + counts["waived"]

    @property
    def score(self) -> float:
        """Percentage of the applicable rule evaluations that pass (or are waived); unknown
        ones count as not passed, not applicable ones not at all."""
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
        """provision -> rules -> outcomes over the runs: evidence mapped to provisions, not a
        verdict on them. Runs are listed where a rule fails; `status` is the worst outcome of
        the provision's rules (fail, warn, info by the failing rule's severity; then unknown,
        pass, not_applicable)."""
        catalog = load_catalog()
        tally = self._tally()
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
                counts = {outcome: tally[outcome][rule.id] for outcome in OUTCOMES}
                if counts["fail"]:
                    worst = max(worst, 2 + SEVERITY_RANK[rule.severity])
                elif counts["unknown"]:
                    worst = max(worst, 2)
                elif counts["pass"] or counts["waived"]:
                    worst = max(worst, 1)
                entries.append(
                    {
                        "rule_id": rule.id,
                        "severity": rule.severity,
                        "passed": counts["pass"],
                        "failed": counts["fail"],
                        "waived": counts["waived"],
                        "not_applicable": counts["not_applicable"],
                        "unknown": counts["unknown"],
                        "failing_runs": failing.get(rule.id, []),
                    }
                )
            matrix.append(
                {
                    "id": provision.id,
                    "framework": provision.framework,
                    "citation": provision.citation,
                    "title": provision.title,
                    "status": _MATRIX_STATUS[worst],
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
            "outcomes": dict(self.outcome_counts()),
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
            key: [run.to_dict(rules=self.rules) for run in self.runs] if value is None else value
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
            ("scope", SCOPE_NOTE),
            ("generated_at", self.generated_at),
            ("store", self.store),
            ("source", self.source),
            ("selection", dict(self.selection)),
            ("policy", dict(self.policy)),
            ("summary", self.summary()),
            ("rules", [rule.to_dict() for rule in self.rules]),
            ("runs", None),
            ("provisions", [p.to_dict() for p in catalog.ordered(used)]),
            ("frameworks", [f.to_dict() for f in catalog.frameworks_of(used)]),
            ("matrix", self.provisions_matrix()),
            ("waivers", [use.to_dict() for use in self.waivers]),
        ]

    def to_pandas(self) -> pd.DataFrame:
        """One row per run x rule: every rule of the policy on every run, plus the rule ids only
        findings name. Columns: run_id, run_name, experiment_id, experiment_name, rule_id,
        title, category, severity, status (``pass``; ``fail``: an open finding; ``waived``:
        findings, all waived; ``not_applicable``; ``unknown``), findings (count), provisions
        and citations (tuples), message (the findings' messages, ``; ``-joined; empty unless
        the rule fails or is waived), reason (why it is not applicable or unknown), evidence
        (what satisfied a rule that passes, when the audit looked: reports do).

        Needs pandas, imported here only: ``mlflow-audit check`` never loads it.
        """
        import pandas as pd  # type: ignore[import-untyped,unused-ignore]

        return pd.DataFrame(rule_rows(self), columns=list(RULE_COLUMNS))


_MATRIX_STATUS = {0: "not_applicable", 1: "pass", 2: "unknown", 3: "info", 4: "warn", 5: "fail"}


def _expand(by_tuple: Counter[tuple[str, ...]]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for rule_ids, runs in by_tuple.items():
        for rule_id in rule_ids:
            counts[rule_id] += runs
    return counts


# --------------------------------------------------------------------------- as rows

#: The columns that say which run a row is about, first in every table of rows.
RUN_COLUMNS = ("run_id", "run_name", "experiment_id", "experiment_name")
RULE_COLUMNS = (
    *RUN_COLUMNS,
    "rule_id",
    "title",
    "category",
    "severity",
    "status",
    "findings",
    "provisions",
    "citations",
    "message",
    "reason",
    "evidence",
)


def rule_outcomes(result: AuditResult) -> Iterator[RuleOutcome]:
    """Every rule evaluation of the result, run by run: what JUnit makes a test case of and
    `to_pandas` a row."""
    for run in result.runs:
        yield from result.outcomes(run)


def run_columns(run: RunResult) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "run_name": run.run_name or "",
        "experiment_id": run.experiment_id,
        "experiment_name": run.experiment_name or "",
    }


def rule_rows(result: AuditResult) -> list[dict[str, Any]]:
    """One row per run x rule (`RULE_COLUMNS`), as `AuditResult.to_pandas` shows them."""
    rows = []
    for outcome in rule_outcomes(result):
        evidence = outcome.evidence
        rows.append(
            {
                **run_columns(outcome.run),
                "rule_id": outcome.rule_id,
                "title": outcome.title,
                "category": outcome.category,
                "severity": outcome.severity,
                "status": outcome.status,
                "findings": len(outcome.findings),
                "provisions": outcome.provisions,
                "citations": outcome.citations,
                "message": "; ".join(f.message for f in outcome.findings),
                "reason": outcome.reason or "",
                "evidence": evidence.text if evidence else "",
            }
        )
    return rows


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
