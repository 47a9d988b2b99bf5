"""What a report shows: the documents' contents, computed from an audit result and its evidence
records, before any template sees them.

Templates receive these dataclasses plus the raw evidence record, so a user's template can show
any field; everything here is plain data, and autoescaping in the templates does the escaping.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Literal

from audit.policy import CATEGORIES, SEVERITIES, SEVERITY_RANK, Outcome, Rule
from audit.provisions import Provision, load_catalog
from audit.report.charts import Chart, Series, line_chart
from audit.result import SCOPE_NOTE, AuditResult, Finding, RunResult
from audit.waivers import WaiverUse

Status = Literal["pass", "warn", "fail", "info", "waived", "not_applicable", "unknown"]
PageSize = Literal["A4", "letter"]

#: Rows per table in the summary document: long run lists stay navigable on screen and print.
RUNS_PER_TABLE = 100
#: Characters of a value shown in a table cell; the full value is in evidence.json.
CELL_LIMIT = 400

_CATEGORY_TITLES = {
    "data": "Data",
    "hyperparameters": "Hyperparameters",
    "metrics": "Metrics",
    "environment": "Environment",
    "source": "Source code",
    "model": "Model",
    "run": "Run",
    "declared": "Declared (system card)",
}
_SEVERITY_STATUS: dict[str, Status] = {"error": "fail", "warning": "warn", "info": "info"}
#: What an audit of MLflow training runs cannot evidence: the documents list these provisions
#: as outside the audit (their text is in the catalog).
OUTSIDE_THE_AUDIT = (
    "eu-ai-act/art-9/1",  # risk management
    "eu-ai-act/annex-iv/5",
    "eu-ai-act/art-14/1",  # human oversight
    "eu-ai-act/annex-iv/2/e",
    "eu-ai-act/annex-iv/7",  # standards applied
    "eu-ai-act/art-47",  # declaration of conformity
    "eu-ai-act/annex-iv/8",
    "eu-ai-act/art-43",  # conformity assessment
    "eu-ai-act/art-72/1",  # post-market monitoring
    "eu-ai-act/annex-iv/9",
    "eu-ai-act/art-12/1",  # logs of the deployed system
    "eu-ai-act/art-12/2",
    "eu-ai-act/art-19/1",
    "eu-ai-act/art-10/3",  # data quality criteria, which a row count does not show
    "eu-ai-act/annex-iv/4",  # why the metrics are appropriate, a description
)


@dataclass(frozen=True)
class ReportSettings:
    """How documents are made; everything here is printed in them or shapes them."""

    date: datetime
    organisation: str | None = None
    author: str | None = None
    page_size: PageSize = "A4"

    @property
    def date_text(self) -> str:
        return self.date.strftime("%Y-%m-%d")

    @property
    def timestamp(self) -> str:
        return self.date.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_date(text: str | None) -> datetime:
    """`--date`: YYYY-MM-DD or an ISO 8601 time (UTC when no offset); default now."""
    if text is None:
        return datetime.now(timezone.utc).replace(microsecond=0)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--date {text!r} is not YYYY-MM-DD or an ISO 8601 time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc).replace(microsecond=0)


# --------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class RuleCheck:
    """One policy rule on one run: its outcome (a failure by its worst open finding's
    severity), and the evidence it passed on, the findings, or why it was not decided."""

    rule: Rule
    status: Status
    evidence: str
    findings: tuple[Finding, ...] = ()


@dataclass(frozen=True)
class MatrixRow:
    citation: str
    requirement: str
    link: str
    checks: tuple[RuleCheck, ...]

    @property
    def status(self) -> Status:
        return _worst(check.status for check in self.checks)


@dataclass(frozen=True)
class MatrixGroup:
    heading: str
    rows: tuple[MatrixRow, ...]

    @property
    def status(self) -> Status:
        return _worst(row.status for row in self.rows)


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    required: str


@dataclass(frozen=True)
class ModelView:
    record: Mapping[str, Any]
    inputs: tuple[Column, ...]
    outputs: tuple[Column, ...]
    params: tuple[Column, ...]


@dataclass(frozen=True)
class Cover:
    title: str
    subtitle: str
    facts: tuple[tuple[str, str], ...]
    status: Status
    counts: Mapping[str, int]
    #: Rule evaluations by outcome (pass, fail, waived, unknown, not_applicable).
    outcomes: Mapping[Outcome, int] = field(default_factory=dict)
    scope: str = SCOPE_NOTE

    @property
    def verdict(self) -> str:
        """What the evidence shows, in words that claim no more: a gap breaches nothing by
        itself, and rules that were not decided are said to be so."""
        if self.status == "fail":
            return "Gaps in the evidence"
        if self.status == "warn":
            return "Evidence with weak points"
        if self.outcomes.get("unknown"):
            return "No gaps found; some rules unknown"
        return "No gaps found in the evidence checked"


@dataclass(frozen=True)
class RunDocument:
    """One run's model documentation."""

    name: str
    cover: Cover
    run: RunResult
    record: Mapping[str, Any]
    checks: tuple[RuleCheck, ...]
    matrix: tuple[MatrixGroup, ...]
    charts: tuple[Chart, ...]
    models: tuple[ModelView, ...]
    appendix: tuple[tuple[str, str], ...]
    #: Provisions an audit of MLflow runs cannot evidence, listed as outside the audit.
    outside: tuple[Provision, ...] = ()

    @property
    def passed(self) -> tuple[RuleCheck, ...]:
        """The rules that pass, each with the evidence it passed on."""
        return tuple(check for check in self.checks if check.status == "pass")

    @property
    def missing(self) -> tuple[RuleCheck, ...]:
        """The rules that fail or are waived, worst first."""
        return tuple(check for check in self.checks if check.status not in _UNDECIDED_OR_PASS)

    @property
    def unknown(self) -> tuple[RuleCheck, ...]:
        return tuple(check for check in self.checks if check.status == "unknown")

    @property
    def not_applicable(self) -> tuple[RuleCheck, ...]:
        return tuple(check for check in self.checks if check.status == "not_applicable")

    @property
    def title(self) -> str:
        return f"{self.cover.title}: model documentation"

    @property
    def keywords(self) -> tuple[str, ...]:
        return (self.run.run_id,)

    def findings_in(self, category: str) -> tuple[Finding, ...]:
        return tuple(f for f in self.run.findings if f.category == category)


@dataclass(frozen=True)
class RunRow:
    name: str
    document: str
    run: RunResult
    categories: Mapping[str, Status]


@dataclass(frozen=True)
class WorstGap:
    rule_id: str
    title: str
    gap: str
    severity: str
    citations: tuple[str, ...]
    remediation: str
    runs: int


@dataclass(frozen=True)
class SummaryDocument:
    """Many runs at a glance: a runs x categories matrix, counts, the worst gaps first."""

    name: str
    cover: Cover
    categories: tuple[tuple[str, str], ...]
    row_pages: tuple[tuple[RunRow, ...], ...]
    category_counts: tuple[tuple[str, Mapping[str, int]], ...]
    provisions: tuple[Mapping[str, Any], ...]
    worst_gaps: tuple[WorstGap, ...]
    appendix: tuple[tuple[str, str], ...]
    run_count: int
    keywords: tuple[str, ...] = field(default=())
    waivers: tuple[WaiverUse, ...] = field(default=())
    outside: tuple[Provision, ...] = field(default=())

    @property
    def title(self) -> str:
        return f"{self.cover.title}: audit summary"


# --------------------------------------------------------------------------- builders


def run_document(
    result: AuditResult,
    run: RunResult,
    record: Mapping[str, Any],
    histories: Mapping[str, Sequence[tuple[float, float]]],
    settings: ReportSettings,
    name: str,
) -> RunDocument:
    checks = rule_checks(result, run, record)
    return RunDocument(
        name=name,
        cover=_run_cover(result, run, record, settings),
        run=run,
        record=record,
        checks=checks,
        matrix=provision_matrix(checks),
        charts=tuple(
            line_chart(key, [Series(key, points)], width=320, height=200)
            for key, points in sorted(histories.items())
        ),
        models=tuple(_model_view(model) for model in record.get("models", [])),
        appendix=appendix_facts(
            result, settings, ((f"Evidence sha256 ({run.run_id})", run.evidence_sha256),)
        ),
        outside=outside_the_audit(),
    )


def summary_document(
    result: AuditResult, names: Mapping[str, str], settings: ReportSettings
) -> SummaryDocument:
    # In the result's order: worst first, as every output lists runs.
    rules = {rule.id: rule for rule in result.rules}
    rows = [
        RunRow(
            name=_display_name(run),
            document=names[run.run_id],
            run=run,
            categories=_category_status(run, rules),
        )
        for run in result.runs
    ]
    counts = Counter((f.category, f.severity) for run in result.runs for f in run.open_findings)
    categories = _categories(result)
    return SummaryDocument(
        name="summary",
        cover=_summary_cover(result, settings),
        categories=categories,
        row_pages=tuple(
            tuple(rows[start : start + RUNS_PER_TABLE])
            for start in range(0, len(rows), RUNS_PER_TABLE)
        ),
        category_counts=tuple(
            (title, {s: counts.get((key, s), 0) for s in SEVERITIES}) for key, title in categories
        ),
        provisions=tuple(result.provisions_matrix()),
        worst_gaps=_worst_gaps(result),
        appendix=appendix_facts(result, settings, ()),
        run_count=len(result.runs),
        keywords=tuple(run.run_id for run in result.runs),
        waivers=result.waivers,
        outside=outside_the_audit(),
    )


def outside_the_audit() -> tuple[Provision, ...]:
    catalog = load_catalog()
    return tuple(catalog[p] for p in OUTSIDE_THE_AUDIT if p in catalog)


def single_run_result(result: AuditResult, run: RunResult) -> AuditResult:
    """The result restricted to one run: what a run's PDF carries inside it."""
    return replace(result, runs=[run], records=None)


def document_names(result: AuditResult) -> dict[str, str]:
    """A file name (without extension) per run: the registered model version when the run was
    selected through one, else the run name; unique, safe on every file system."""
    names: dict[str, str] = {}
    taken: set[str] = {"summary", "evidence", "result"}
    for run in result.runs:
        base = (
            slug(run.model_versions[0].split(" ")[0].replace("/", "-v"))
            if run.model_versions
            else ""
        )
        base = base or slug(run.run_name or "") or "run"
        name = base if base not in taken else f"{base}-{run.run_id[:8]}"
        while name in taken:
            name = f"{name}-{run.run_id}"
        taken.add(name)
        names[run.run_id] = name
    return names


# --------------------------------------------------------------------------- helpers

_STATUS_RANK = {
    "not_applicable": 0,
    "pass": 1,
    "waived": 2,
    "info": 3,
    "unknown": 4,
    "warn": 5,
    "fail": 6,
}
_UNDECIDED_OR_PASS = frozenset({"pass", "not_applicable", "unknown"})


def _worst(statuses: Iterable[Status]) -> Status:
    return max(statuses, key=_STATUS_RANK.__getitem__, default="pass")


def slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9._-]+", "-", ascii_text.lower()).strip("-._")[:60]


def _display_name(run: RunResult) -> str:
    if run.model_versions:
        return run.model_versions[0]
    return run.run_name or run.run_id


def rule_checks(
    result: AuditResult, run: RunResult, record: Mapping[str, Any]
) -> tuple[RuleCheck, ...]:
    """Every rule evaluated on the run with its outcome and evidence, failures first."""
    checks = []
    for outcome in result.outcomes(run):
        status: Outcome = outcome.status
        if status in ("fail", "waived"):
            shown: Status = _findings_status(outcome.findings)
            text = "; ".join(f.message for f in outcome.findings)
        elif status == "pass":
            shown = "pass"
            evidence = outcome.evidence
            text = evidence.text if evidence else "no evidence located where the rule looks"
        else:
            shown = status
            text = outcome.reason or ""
        checks.append(RuleCheck(outcome.rule, shown, text, outcome.findings))
    return tuple(
        sorted(
            checks,
            key=lambda c: (-_STATUS_RANK[c.status], -SEVERITY_RANK[c.rule.severity]),
        )
    )


def _findings_status(findings: Sequence[Finding]) -> Status:
    """A rule's outcome on a run: by its open findings; waived when a waiver accepts them all."""
    open_findings = [f for f in findings if f.waiver is None]
    if not open_findings:
        return "waived"
    return _worst(_SEVERITY_STATUS[f.severity] for f in open_findings)


def provision_matrix(checks: Sequence[RuleCheck]) -> tuple[MatrixGroup, ...]:
    catalog = load_catalog()
    by_provision: dict[str, list[RuleCheck]] = {}
    for check in checks:
        for provision_id in check.rule.provisions:
            by_provision.setdefault(provision_id, []).append(check)
    groups: dict[str, tuple[str, list[MatrixRow]]] = {}
    for provision in catalog.ordered(set(by_provision)):
        group = catalog.group_of(provision.id)
        groups.setdefault(group.id, (group.heading, []))[1].append(
            MatrixRow(
                citation=provision.citation,
                requirement=provision.title,
                link=provision.link,
                checks=tuple(by_provision[provision.id]),
            )
        )
    return tuple(MatrixGroup(heading, tuple(rows)) for heading, rows in groups.values())


def _category_status(run: RunResult, rules: Mapping[str, Rule]) -> dict[str, Status]:
    """The worst outcome in each category of rules on the run; categories whose rules all
    pass (or do not apply) are left out."""
    worst: dict[str, Status] = {}
    for finding in run.open_findings:
        status = _SEVERITY_STATUS[finding.severity]
        worst[finding.category] = _worst((worst.get(finding.category, "pass"), status))
    for rule_id in run.unknown:
        if rule_id in rules:
            category = rules[rule_id].category
            worst[category] = _worst((worst.get(category, "pass"), "unknown"))
    return worst


def _categories(result: AuditResult) -> tuple[tuple[str, str], ...]:
    used = {rule.category for rule in result.rules} | {
        f.category for run in result.runs for f in run.findings
    }
    ordered = [c for c in CATEGORIES if c in used] + sorted(used - set(CATEGORIES))
    return tuple((c, _CATEGORY_TITLES.get(c, c.capitalize())) for c in ordered)


def _worst_gaps(result: AuditResult) -> tuple[WorstGap, ...]:
    runs_by_rule: Counter[str] = Counter()
    example: dict[str, Finding] = {}
    for run in result.runs:
        for finding in run.open_findings:
            example.setdefault(finding.rule_id, finding)
        runs_by_rule.update(run.failed_rule_ids)
    gaps = [
        WorstGap(
            rule_id=rule_id,
            title=finding.title,
            gap=finding.gap_text,
            severity=finding.severity,
            citations=tuple(finding.citations),
            remediation=finding.remediation,
            runs=runs_by_rule[rule_id],
        )
        for rule_id, finding in example.items()
    ]
    return tuple(sorted(gaps, key=lambda g: (-SEVERITY_RANK[g.severity], -g.runs, g.rule_id)))


def severity_counts(runs: Iterable[RunResult]) -> dict[str, int]:
    """Open findings by severity, and the waived ones."""
    runs = list(runs)
    counts = Counter(f.severity for run in runs for f in run.open_findings)
    return {
        **{severity: counts.get(severity, 0) for severity in SEVERITIES},
        "waived": sum(len(run.waived_findings) for run in runs),
    }


def policy_text(result: AuditResult) -> str:
    policy = result.policy
    version = f" {policy['version']}" if policy.get("version") else ""
    return f"{policy['name']}{version}"


def people_facts(settings: ReportSettings) -> tuple[tuple[str, str], ...]:
    facts = []
    if settings.organisation:
        facts.append(("Organisation", settings.organisation))
    if settings.author:
        facts.append(("Author", settings.author))
    return tuple(facts)


def _run_cover(
    result: AuditResult, run: RunResult, record: Mapping[str, Any], settings: ReportSettings
) -> Cover:
    versions = [
        f"{version['name']} v{version['version']}"
        + (
            " (" + ", ".join(f"@{alias}" for alias in version["aliases"]) + ")"
            if version["aliases"]
            else ""
        )
        for model in record.get("models", [])
        for version in model.get("registered_versions", [])
    ]
    title = run.model_versions[0] if run.model_versions else run.run_name or run.run_id
    facts = [
        ("Run", f"{run.run_name or '(unnamed)'} ({run.run_id})"),
        ("Experiment", f"{run.experiment_name or '(unknown)'} ({run.experiment_id})"),
    ]
    if versions:
        facts.append(("Registered as", ", ".join(versions)))
    facts += [
        *people_facts(settings),
        ("Date", settings.date_text),
        ("Policy", policy_text(result)),
    ]
    return Cover(
        title=title,
        subtitle="Model documentation and provenance evidence",
        facts=tuple(facts),
        status=run.status,
        counts=severity_counts([run]),
        outcomes=single_run_result(result, run).outcome_counts(),
    )


def _summary_cover(result: AuditResult, settings: ReportSettings) -> Cover:
    experiments = sorted({run.experiment_name or run.experiment_id for run in result.runs})
    selection = result.selection
    models = list(selection.get("models") or [])
    title = ", ".join(models) if models else ", ".join(experiments[:3])
    if not models and len(experiments) > 3:
        title += f" and {len(experiments) - 3} more"
    statuses = result.status_counts()
    facts = [
        (
            "Runs",
            f"{len(result.runs)}: {statuses['pass']} pass, {statuses['warn']} with "
            f"warnings, {statuses['fail']} fail",
        ),
        ("Experiments", ", ".join(experiments)),
        *people_facts(settings),
        ("Date", settings.date_text),
        ("Policy", policy_text(result)),
        (
            "Score",
            f"{result.score:g}% of the applicable rule evaluations pass (unknown ones count as "
            "not passed)",
        ),
    ]
    worst = _worst(run.status for run in result.runs)
    return Cover(
        title=title or "Audit",
        subtitle="Evidence summary across runs",
        facts=tuple(facts),
        status=worst,
        counts=severity_counts(result.runs),
        outcomes=result.outcome_counts(),
    )


def appendix_facts(
    result: AuditResult, settings: ReportSettings, extra: tuple[tuple[str, str], ...]
) -> tuple[tuple[str, str], ...]:
    policy = result.policy
    catalog = load_catalog()
    provisions = {p for rule in result.rules for p in rule.provisions}
    return (
        ("Tool", f"mlflow-audit {result.tool_version}"),
        ("Policy", f"{policy_text(result)} ({policy.get('origin', '')})"),
        ("Policy sha256", str(policy.get("sha256", ""))),
        *extra,
        ("Tracking store", result.store),
        ("Read through", result.source),
        ("Generated", settings.timestamp),
        *((f"Text of {f.title}", f.text_version) for f in catalog.frameworks_of(provisions)),
    )


def _model_view(model: Mapping[str, Any]) -> ModelView:
    signature = model.get("signature") or {}
    return ModelView(
        record=model,
        inputs=_columns(signature.get("inputs")),
        outputs=_columns(signature.get("outputs")),
        params=_columns(signature.get("params")),
    )


def _columns(spec: Any) -> tuple[Column, ...]:
    """An MLflow signature's column or tensor specs as table rows."""
    if not isinstance(spec, list):
        return ()
    columns = []
    for entry in spec:
        if not isinstance(entry, Mapping):
            continue
        kind = str(entry.get("type", ""))
        tensor = entry.get("tensor-spec")
        if isinstance(tensor, Mapping):
            shape = tensor.get("shape")
            shape_text = (
                "(" + ", ".join(str(d) for d in shape) + ")" if isinstance(shape, list) else ""
            )
            kind = f"tensor {tensor.get('dtype', '')} {shape_text}".strip()
        elif "default" in entry:
            kind = f"{kind}, default {entry['default']}"
        required = entry.get("required")
        columns.append(
            Column(
                name=str(entry.get("name") or "(unnamed)"),
                type=kind,
                required="" if required is None else ("yes" if required else "no"),
            )
        )
    return tuple(columns)
