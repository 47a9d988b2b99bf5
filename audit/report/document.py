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

from audit.evaluation import item_label
from audit.policy import CATEGORIES, SEVERITIES, SEVERITY_RANK, Rule
from audit.provisions import load_catalog
from audit.report.charts import Chart, Series, line_chart
from audit.result import AuditResult, Finding, RunResult
from audit.waivers import WaiverUse

Status = Literal["pass", "warn", "fail", "info", "waived"]
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
}
_SEVERITY_STATUS: dict[str, Status] = {"error": "fail", "warning": "warn", "info": "info"}


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
    """One policy rule on one run: passed, or failed with its findings."""

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

    @property
    def passed(self) -> tuple[RuleCheck, ...]:
        return tuple(check for check in self.checks if check.status == "pass")

    @property
    def missing(self) -> tuple[RuleCheck, ...]:
        return tuple(check for check in self.checks if check.status != "pass")

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
    checks = _rule_checks(result, run, record)
    return RunDocument(
        name=name,
        cover=_run_cover(result, run, record, settings),
        run=run,
        record=record,
        checks=checks,
        matrix=_matrix(checks),
        charts=tuple(
            line_chart(key, [Series(key, points)], width=320, height=200)
            for key, points in sorted(histories.items())
        ),
        models=tuple(_model_view(model) for model in record.get("models", [])),
        appendix=_appendix(
            result, settings, ((f"Evidence sha256 ({run.run_id})", run.evidence_sha256),)
        ),
    )


def summary_document(
    result: AuditResult, names: Mapping[str, str], settings: ReportSettings
) -> SummaryDocument:
    rows = [
        RunRow(
            name=_display_name(run),
            document=names[run.run_id],
            run=run,
            categories=_category_status(run),
        )
        for run in sorted(
            result.runs,
            key=lambda r: (-_STATUS_RANK[r.status], r.experiment_name or "", r.run_name or ""),
        )
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
        appendix=_appendix(result, settings, ()),
        run_count=len(result.runs),
        keywords=tuple(run.run_id for run in result.runs),
        waivers=result.waivers,
    )


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
            _slug(run.model_versions[0].split(" ")[0].replace("/", "-v"))
            if run.model_versions
            else ""
        )
        base = base or _slug(run.run_name or "") or "run"
        name = base if base not in taken else f"{base}-{run.run_id[:8]}"
        while name in taken:
            name = f"{name}-{run.run_id}"
        taken.add(name)
        names[run.run_id] = name
    return names


# --------------------------------------------------------------------------- helpers

_STATUS_RANK = {"pass": 0, "waived": 1, "info": 2, "warn": 3, "fail": 4}


def _worst(statuses: Iterable[Status]) -> Status:
    return max(statuses, key=_STATUS_RANK.__getitem__, default="pass")


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9._-]+", "-", ascii_text.lower()).strip("-._")[:60]


def _display_name(run: RunResult) -> str:
    if run.model_versions:
        return run.model_versions[0]
    return run.run_name or run.run_id


def _rule_checks(
    result: AuditResult, run: RunResult, record: Mapping[str, Any]
) -> tuple[RuleCheck, ...]:
    """Every rule evaluated on the run with its outcome and evidence, failures first."""
    checks = [
        RuleCheck(
            outcome.rule,
            _findings_status(outcome.findings) if outcome.findings else "pass",
            "; ".join(f.message for f in outcome.findings)
            if outcome.findings
            else rule_evidence(record, outcome.rule),
            outcome.findings,
        )
        for outcome in result.outcomes(run)
    ]
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


def _matrix(checks: Sequence[RuleCheck]) -> tuple[MatrixGroup, ...]:
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


def _category_status(run: RunResult) -> dict[str, Status]:
    worst: dict[str, Status] = {}
    for finding in run.open_findings:
        status = _SEVERITY_STATUS[finding.severity]
        worst[finding.category] = _worst((worst.get(finding.category, "pass"), status))
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
            severity=finding.severity,
            citations=tuple(finding.citations),
            remediation=finding.remediation,
            runs=runs_by_rule[rule_id],
        )
        for rule_id, finding in example.items()
    ]
    return tuple(sorted(gaps, key=lambda g: (-SEVERITY_RANK[g.severity], -g.runs, g.rule_id)))


def _counts(runs: Iterable[RunResult]) -> dict[str, int]:
    """Open findings by severity, and the waived ones."""
    runs = list(runs)
    counts = Counter(f.severity for run in runs for f in run.open_findings)
    return {
        **{severity: counts.get(severity, 0) for severity in SEVERITIES},
        "waived": sum(len(run.waived_findings) for run in runs),
    }


def _policy_text(result: AuditResult) -> str:
    policy = result.policy
    version = f" {policy['version']}" if policy.get("version") else ""
    return f"{policy['name']}{version}"


def _people(settings: ReportSettings) -> tuple[tuple[str, str], ...]:
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
        *_people(settings),
        ("Date", settings.date_text),
        ("Policy", _policy_text(result)),
    ]
    return Cover(
        title=title,
        subtitle="Model documentation and provenance audit",
        facts=tuple(facts),
        status=run.status,
        counts=_counts([run]),
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
        *_people(settings),
        ("Date", settings.date_text),
        ("Policy", _policy_text(result)),
        ("Rules passed", f"{result.score}% of rule evaluations"),
    ]
    worst = _worst(run.status for run in result.runs)
    return Cover(
        title=title or "Audit",
        subtitle="Audit summary across runs",
        facts=tuple(facts),
        status=worst,
        counts=_counts(result.runs),
    )


def _appendix(
    result: AuditResult, settings: ReportSettings, extra: tuple[tuple[str, str], ...]
) -> tuple[tuple[str, str], ...]:
    policy = result.policy
    return (
        ("Tool", f"mlflow-audit {result.tool_version}"),
        ("Policy", f"{_policy_text(result)} ({policy.get('origin', '')})"),
        ("Policy sha256", str(policy.get("sha256", ""))),
        *extra,
        ("Tracking store", result.store),
        ("Read through", result.source),
        ("Generated", settings.timestamp),
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


def rule_evidence(record: Mapping[str, Any], rule: Rule, limit: int = 3) -> str:
    """The values found where a rule looks, e.g. ``breast-cancer-train: 9e0490cb``; the
    category's summary when the policy does not say where its rule looks."""
    found = [
        (pointer, value)
        for location in rule.locations
        for pointer, value in _expand(record, location.split("/")[1:], "")
    ]
    if not found:
        if not rule.locations:
            return evidence_summary(record, rule.category)
        # A rule over every item of an empty list passes without anything to look at.
        return "nothing to check" if all("*" in loc for loc in rule.locations) else "not recorded"
    shown = []
    for pointer, value in found[:limit]:
        label = item_label(record, pointer)
        shown.append(f"{label}: {_brief(value)}" if label else _brief(value))
    more = f" (+{len(found) - limit} more)" if len(found) > limit else ""
    return "; ".join(shown) + more


def _expand(node: Any, parts: Sequence[str], pointer: str) -> Iterable[tuple[str, Any]]:
    """(pointer, value) for every place a location with ``*`` wildcards matches."""
    if not parts:
        yield pointer, node
        return
    head, rest = parts[0], parts[1:]
    if head == "*":
        if isinstance(node, list):
            for index, item in enumerate(node):
                yield from _expand(item, rest, f"{pointer}/{index}")
        elif isinstance(node, Mapping):
            for key, item in node.items():
                yield from _expand(item, rest, f"{pointer}/{_escape(str(key))}")
        return
    key = head.replace("~1", "/").replace("~0", "~")
    if isinstance(node, Mapping) and key in node:
        yield from _expand(node[key], rest, f"{pointer}/{head}")
    elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
        yield from _expand(node[int(key)], rest, f"{pointer}/{head}")


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _brief(value: Any) -> str:
    if value is None:
        return "not recorded"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return _number(value)
    if isinstance(value, str):
        return value if len(value) <= 80 else value[:79] + "…"
    if isinstance(value, list):
        labels = [
            str(next((item[k] for k in ("name", "key", "line") if item.get(k)), ""))
            for item in value[:3]
            if isinstance(item, Mapping)
        ]
        names = ", ".join(label for label in labels if label)
        return f"{len(value)} recorded" + (f": {names}" if names else "")
    if isinstance(value, Mapping):
        entries = ", ".join(f"{k}={_brief(v)}" for k, v in list(value.items())[:4])
        more = ", …" if len(value) > 4 else ""
        return f"{len(value)} recorded: {entries}{more}" if value else "none recorded"
    return str(value)


def evidence_summary(record: Mapping[str, Any], category: str) -> str:
    """What the record holds for a category, in one line with values a reviewer can check."""
    if category == "data":
        datasets = [
            f"{d.get('context') or 'other'}: {d.get('name') or '(unnamed)'} "
            f"digest {d.get('digest') or '-'}"
            for part in ("training", "evaluation", "other")
            for d in record["data"][part]
        ]
        return "; ".join(datasets) or "no datasets logged"
    if category == "hyperparameters":
        params = record["hyperparameters"]
        shown = ", ".join(f"{k}={v}" for k, v in list(params.items())[:6])
        more = f" and {len(params) - 6} more" if len(params) > 6 else ""
        return f"{len(params)} logged: {shown}{more}" if params else "none logged"
    if category == "metrics":
        metrics = record["metrics"]
        shown = ", ".join(
            f"{m['key']}={_number(m['value'])}"
            + (f" on {m['dataset']['name']}" if m.get("dataset") else "")
            for m in metrics[:4]
        )
        more = f" and {len(metrics) - 4} more" if len(metrics) > 4 else ""
        return f"{shown}{more}" if metrics else "none logged"
    if category == "environment":
        env = record["environment"]
        requirements = env.get("requirements") or []
        pinned = sum(1 for r in requirements if r.get("pinned"))
        return (
            f"Python {env.get('python_version') or '?'}, MLflow {env.get('mlflow_version') or '?'}"
            f", {len(requirements)} requirements ({pinned} pinned)"
        )
    if category == "source":
        source = record["source"]
        commit = source.get("git_commit")
        where = source.get("git_repo_url") or source.get("name") or "unknown source"
        return f"commit {commit[:12]} of {where}" if commit else f"no commit; source {where}"
    if category == "model":
        models = record["models"]
        if not models:
            return "no model logged"
        model = models[0]
        flavors = ", ".join(model.get("flavors") or []) or "no flavors"
        signature = "signature" if model.get("signature") else "no signature"
        return f"{model.get('name') or model.get('model_id')} ({flavors}; {signature})"
    if category == "run":
        run = record["run"]
        return f"{run.get('status')}, {run.get('lifecycle_stage')}"
    return ""


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
