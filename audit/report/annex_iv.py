"""The technical documentation of a registered model version, in the order of Annex IV of
Regulation (EU) 2024/1689: points 1 to 9 with their sub-points, each entry marked by where its
content came from (MLflow, with the run; the system card; or missing, with what would fill it).

Built from a version's evidence record (`audit.lineage.version_record`) and its audit result;
plain data for the `version.html.j2` template, which escapes everything it shows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from audit.describe import metric_text, number
from audit.diff import RecordDiff
from audit.formats.diff import DiffSection, diff_sections
from audit.formats.text import shorten
from audit.report.document import (
    Cover,
    MatrixGroup,
    ReportSettings,
    RuleCheck,
    appendix_facts,
    people_facts,
    policy_text,
    provision_matrix,
    rule_checks,
    severity_counts,
    single_run_result,
)
from audit.result import AuditResult, RunResult

Origin = Literal["mlflow", "declared", "missing"]

#: What the document says where the system card has nothing: how to fill it.
_CARD_HINT = "fill `{field}` in the system card"
#: Metrics a reader looks for first when a summary names a few.
_HEADLINE_METRICS = (
    "accuracy", "f1", "roc_auc", "auc", "precision", "recall", "rmse",
    "root_mean_squared_error", "mae", "mean_absolute_error", "r2", "log_loss",
)  # fmt: skip
#: What names add around a headline metric: `test_accuracy`, `accuracy_score`.
_METRIC_AFFIXES = re.compile(r"^(?:test|val|valid|validation|eval|evaluation)_|_score$")


@dataclass(frozen=True)
class Entry:
    """One fact of a point: its value and where it came from (`where`: the run or registry for
    MLflow, the card field for declared facts, what would fill it for missing ones)."""

    label: str
    value: str
    origin: Origin
    where: str


@dataclass(frozen=True)
class Table:
    """Facts that come as rows (datasets, metrics, parameters), all from one kind of origin."""

    caption: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    origin: Origin
    where: str
    #: Said instead of the table when it has no rows.
    empty: str = "none recorded"


@dataclass(frozen=True)
class Point:
    number: str
    heading: str
    entries: tuple[Entry, ...] = ()
    tables: tuple[Table, ...] = ()

    @property
    def origins(self) -> tuple[Origin, ...]:
        """Where this point's content came from, MLflow first, missing last."""
        found = {e.origin for e in self.entries} | {
            t.origin if t.rows else "missing" for t in self.tables
        }
        return tuple(o for o in ("mlflow", "declared", "missing") if o in found)


@dataclass(frozen=True)
class Section:
    number: int
    title: str
    points: tuple[Point, ...]


@dataclass(frozen=True)
class VersionChanges:
    """What changed since the version a version is compared with (Annex IV 6)."""

    #: The version compared with, as the document names it: ``churn-classifier v2``.
    label: str
    #: The two versions' records compared.
    diff: RecordDiff


@dataclass(frozen=True)
class Signatory:
    name: str
    role: str


@dataclass(frozen=True)
class VersionDocument:
    """A model version's technical documentation."""

    name: str
    cover: Cover
    run: RunResult
    record: Mapping[str, Any]
    sections: tuple[Section, ...]
    checks: tuple[RuleCheck, ...]
    #: Annex A: one row per provision, with its rules' outcomes.
    matrix: tuple[MatrixGroup, ...]
    appendix: tuple[tuple[str, str], ...]
    signatories: tuple[Signatory, ...] = ()
    #: Changes since the version compared with (Annex IV 6), section by section.
    changes: tuple[DiffSection, ...] | None = None
    compared_with: str | None = None
    #: Whether a system card was given: without one, every declared point is missing.
    has_card: bool = False
    #: The provider's own text in a Markdown system card, after its front matter.
    notes: str | None = None
    keywords: tuple[str, ...] = field(default=())

    @property
    def title(self) -> str:
        return f"{self.cover.title}: technical documentation"

    @property
    def counts(self) -> dict[Origin, int]:
        """Sub-points by their weakest origin: how much came from MLflow, was declared, is
        missing."""
        tally: dict[Origin, int] = {"mlflow": 0, "declared": 0, "missing": 0}
        for section in self.sections:
            for point in section.points:
                origins = point.origins
                tally[origins[-1] if origins else "missing"] += 1
        return tally


# --------------------------------------------------------------------------- builder


def version_document(
    result: AuditResult,
    run: RunResult,
    record: Mapping[str, Any],
    settings: ReportSettings,
    name: str,
    *,
    changes: RecordDiff | None = None,
    compared_with: str | None = None,
) -> VersionDocument:
    facts = _Facts(record)
    checks = rule_checks(result, run, record)
    sections = (
        _general(facts),
        _development(facts),
        _monitoring(facts),
        Section(
            4,
            "Appropriateness of the performance metrics",
            (
                Point(
                    "4",
                    "Why these metrics are appropriate for this system",
                    (
                        facts.metrics_summary(),
                        facts.declared(
                            "Appropriateness", "/metrics_rationale", "metrics_rationale"
                        ),
                    ),
                ),
            ),
        ),
        _single(5, "Risk management system (Art. 9)", "Risk management system",
                facts.declared("Risk management", "/risk_management", "risk_management")),
        _changes(facts, changes, compared_with),
        _single(7, "Standards applied", "Harmonised standards and other specifications",
                facts.declared("Standards", "/standards", "standards")),
        _single(8, "EU declaration of conformity (Art. 47)", "Declaration of conformity",
                facts.declared(
                    "Declaration", "/declaration_of_conformity", "declaration_of_conformity"
                )),
        _single(9, "Post-market monitoring (Art. 72)", "Post-market monitoring plan",
                facts.declared(
                    "Plan", "/post_market_monitoring", "post_market_monitoring"
                )),
    )  # fmt: skip
    return VersionDocument(
        name=name,
        cover=_cover(result, run, facts, settings),
        run=run,
        record=record,
        sections=sections,
        checks=checks,
        matrix=provision_matrix(checks),
        appendix=appendix_facts(
            result,
            settings,
            (
                (f"Evidence sha256 ({facts.subject})", run.evidence_sha256),
                ("System card", facts.card_text),
            ),
        ),
        signatories=facts.signatories(),
        has_card=facts.has_card,
        notes=facts.notes,
        changes=diff_sections(changes) if changes is not None else None,
        compared_with=compared_with,
        keywords=(facts.subject, run.run_id),
    )


def _single(number: int, title: str, heading: str, entry: Entry) -> Section:
    return Section(number, title, (Point(str(number), heading, (entry,)),))


class _Facts:
    """Reads a version record for the document: MLflow facts with the run they came from, the
    card's fields with their origin."""

    def __init__(self, record: Mapping[str, Any]) -> None:
        self.record = record
        self.lineage: Mapping[str, Any] = record["lineage"]
        self.card: Mapping[str, Any] = record.get("declared") or {}
        self.version: Mapping[str, Any] = self.lineage["version"]
        self.model: Mapping[str, Any] = self.lineage["model"]
        self.source_run: Mapping[str, Any] = self.lineage["source_run"]
        self.subject = f"{self.model['name']} v{self.version['version']}"
        self.runs = {self.source_run["id"]: self.source_run}
        for evaluation in self.lineage["evaluations"]:
            self.runs[evaluation["id"]] = evaluation
        if self.lineage.get("sweep"):
            self.runs[self.lineage["sweep"]["id"]] = self.lineage["sweep"]

    # -- where facts came from

    def run_label(self, run_id: str | None = None) -> str:
        run = self.runs.get(run_id or self.source_run["id"]) or {"id": run_id, "name": None}
        name = f"{run['name']} " if run.get("name") else ""
        return f"run {name}({run['id']})"

    @property
    def source_label(self) -> str:
        return f"MLflow, source {self.run_label()}"

    @property
    def registry_label(self) -> str:
        return f"MLflow model registry, {self.model['name']}"

    @property
    def card_text(self) -> str:
        card = self.card.get("card")
        if not isinstance(card, Mapping):
            return "none given"
        return f"{card.get('file')} (sha256 {card.get('sha256')})"

    def _declared_value(self, pointer: str) -> Any:
        node: Any = self.card
        for part in pointer.strip("/").split("/"):
            if not isinstance(node, Mapping):
                return None
            node = node.get(part)
        return node

    def _origin(self, pointer: str) -> str:
        origins = self.card.get("origins") or {}
        said = origins.get(pointer) if isinstance(origins, Mapping) else None
        card = self.card.get("card")
        file = card.get("file") if isinstance(card, Mapping) else None
        if said and said != "system card":
            return str(said)
        return (
            f"system card {file}, `{pointer.strip('/').replace('/', '.')}`"
            if file
            else ("system card")
        )

    def _missing(self, label: str, pointer: str, field: str) -> Entry:
        placeholders = self.card.get("placeholders") or []
        hint = _CARD_HINT.format(field=field)
        if pointer in placeholders:
            return Entry(label, "a placeholder, not a declaration", "missing", hint)
        return Entry(label, "not declared", "missing", hint)

    @property
    def notes(self) -> str | None:
        """The text of a Markdown system card after its front matter."""
        notes = self.card.get("notes")
        return notes if isinstance(notes, str) and notes.strip() else None

    @property
    def has_card(self) -> bool:
        return isinstance(self.card.get("card"), Mapping)

    def declared(self, label: str, pointer: str, field: str) -> Entry:
        value = self._declared_value(pointer)
        if isinstance(value, str) and value.strip():
            return Entry(label, value, "declared", self._origin(pointer))
        if isinstance(value, list) and value:
            return Entry(label, "; ".join(str(v) for v in value), "declared", self._origin(pointer))
        return self._missing(label, pointer, field)

    def signatories(self) -> tuple[Signatory, ...]:
        people = self._declared_value("/responsible_persons")
        if not isinstance(people, list):
            return ()
        return tuple(
            Signatory(str(p.get("name") or ""), str(p.get("role") or ""))
            for p in people
            if isinstance(p, Mapping) and p.get("name")
        )

    # -- MLflow facts

    def mlflow(self, label: str, value: object, where: str | None = None) -> Entry:
        if value in (None, "", [], {}):
            return Entry(label, "not recorded in MLflow", "missing", where or self.source_label)
        return Entry(label, str(value), "mlflow", where or self.source_label)

    def metrics_summary(self) -> Entry:
        evaluation = [m for m in self.record["metrics"] if m.get("context") == "evaluation"]
        if not evaluation:
            return Entry(
                "Metrics on evaluation data",
                "none recorded",
                "missing",
                "log metrics on held-out data linked to it (see section 2(g))",
            )
        headline = sorted(evaluation, key=_headline_rank)[:4]
        shown = "; ".join(_metric_value(m) for m in headline)
        more = f" ({len(evaluation)} in all, section 2(g))" if len(evaluation) > 4 else ""
        runs = sorted({m.get("run_id") or self.source_run["id"] for m in evaluation})
        return Entry(
            "Metrics on evaluation data",
            shown + more,
            "mlflow",
            "MLflow, " + ", ".join(self.run_label(r) for r in runs),
        )


# --------------------------------------------------------------------------- sections


def _general(facts: _Facts) -> Section:
    record, version = facts.record, facts.version
    env = record["environment"]
    aliases = ", ".join(f"@{a}" for a in version["aliases"]) or "none"
    previous = facts.lineage.get("previous_version")
    models = record.get("models") or []
    flavors = sorted({f for m in models for f in (m.get("flavors") or [])})
    packages = env.get("requirements")
    return Section(
        1,
        "General description of the AI system",
        (
            Point(
                "1(a)",
                "Intended purpose, provider, version",
                (
                    facts.declared("Intended purpose", "/intended_purpose", "intended_purpose"),
                    facts.declared("Provider", "/provider/name", "provider.name"),
                    facts.declared("Contact", "/provider/contact", "provider.contact"),
                    facts.declared("AI system", "/system/name", "system.name"),
                    facts.declared("System version", "/system/version", "system.version"),
                    facts.mlflow(
                        "Model version",
                        f"{facts.subject} (aliases: {aliases}; status "
                        f"{version.get('status') or 'not recorded'})",
                        facts.registry_label,
                    ),
                    facts.mlflow(
                        "Relation to previous versions",
                        f"follows v{previous}; changes in section 6"
                        if previous
                        else "the first version of this registered model",
                        facts.registry_label,
                    ),
                ),
            ),
            Point(
                "1(b)",
                "Interaction with other hardware, software and AI systems",
                (facts.declared("Interactions", "/interactions", "interactions"),),
            ),
            Point(
                "1(c)",
                "Versions of relevant software",
                (
                    facts.mlflow("Python", env.get("python_version")),
                    facts.mlflow("MLflow", env.get("mlflow_version")),
                    facts.mlflow(
                        "Packages",
                        f"{len(packages)} requirements ({env.get('requirements_from')}), "
                        "listed in section 2(c)"
                        if packages
                        else None,
                    ),
                ),
            ),
            Point(
                "1(d)",
                "Forms in which the system is placed on the market",
                (
                    facts.declared("Deployment forms", "/deployment/forms", "deployment.forms"),
                    facts.mlflow(
                        "Model packaging",
                        (", ".join(flavors) + " flavors; " if flavors else "")
                        + (version.get("source") or ""),
                        facts.registry_label,
                    ),
                ),
            ),
            Point(
                "1(e)",
                "Hardware the system is intended to run on",
                (
                    facts.declared("Hardware", "/deployment/hardware", "deployment.hardware"),
                    facts.declared("Expected lifetime and maintenance", "/lifetime", "lifetime"),
                ),
            ),
            Point(
                "1(f)",
                "Products the system is a component of",
                (
                    Entry(
                        "External features, marking, layout",
                        "not held by MLflow or the system card",
                        "missing",
                        "attach photographs or illustrations where the system is a component "
                        "of products",
                    ),
                ),
            ),
            Point(
                "1(g)",
                "User interface provided to the deployer",
                (facts.declared("User interface", "/user_interface", "user_interface"),),
            ),
            Point(
                "1(h)",
                "Instructions for use",
                (
                    facts.declared(
                        "Instructions for use", "/instructions_for_use", "instructions_for_use"
                    ),
                ),
            ),
        ),
    )


def _development(facts: _Facts) -> Section:
    record = facts.record
    run = record["run"]
    source = record["source"]
    sweep = facts.lineage.get("sweep")
    method = [
        facts.mlflow(
            "Training run",
            f"{run.get('name') or '(unnamed)'} in experiment "
            f"{run.get('experiment_name') or run.get('experiment_id')}, "
            f"{run.get('start_time') or '?'} to {run.get('end_time') or '?'}, "
            f"status {run.get('status')}",
        ),
        facts.mlflow(
            "Code",
            f"commit {source['git_commit']}"
            + (f" of {source['git_repo_url']}" if source.get("git_repo_url") else "")
            + (f", {source['name']}" if source.get("name") else "")
            if source.get("git_commit")
            else None,
        ),
    ]
    if sweep:
        method.append(
            facts.mlflow(
                "Tuning sweep",
                f"trial of {facts.run_label(sweep['id'])}: "
                f"{sweep.get('trials') if sweep.get('trials') is not None else '?'} trials; "
                "this version's run was selected from them",
                f"MLflow, parent {facts.run_label(sweep['id'])}",
            )
        )
    tables_2b = [
        Table(
            "Hyperparameters",
            ("Parameter", "Value"),
            tuple((k, str(v)) for k, v in record["hyperparameters"].items()),
            "mlflow",
            facts.source_label,
        )
    ]
    if sweep:
        tables_2b.append(
            Table(
                "Search space of the sweep",
                ("Parameter", "Value"),
                tuple((k, str(v)) for k, v in sweep["search_space"].items()),
                "mlflow",
                f"MLflow, parent {facts.run_label(sweep['id'])}",
                empty="the parent run logged no parameters",
            )
        )
    tables_2b += _signature_tables(facts)
    env = record["environment"]
    requirements = env.get("requirements") or []
    system = record.get("system_metrics") or []
    evaluations = facts.lineage["evaluations"]
    return Section(
        2,
        "Elements of the AI system and its development",
        (
            Point("2(a)", "Methods and steps of development", tuple(method)),
            Point(
                "2(b)",
                "Design specifications",
                (
                    facts.declared("Intended users", "/intended_users", "intended_users"),
                    facts.declared("Persons affected", "/persons_affected", "persons_affected"),
                ),
                tuple(tables_2b),
            ),
            Point(
                "2(c)",
                "System architecture and computational resources",
                (
                    facts.mlflow("Training platform", env.get("platform")),
                    facts.mlflow(
                        "Resources used in training",
                        "; ".join(metric_text(m) for m in system[:6]) if system else None,
                    ),
                ),
                (
                    Table(
                        "Requirements",
                        ("Requirement", "Pinned"),
                        tuple(
                            (str(r.get("line")), "yes" if r.get("pinned") else "no")
                            for r in requirements
                        ),
                        "mlflow",
                        facts.source_label,
                    ),
                ),
            ),
            Point(
                "2(d)",
                "Data requirements and training data",
                (),
                (_datasets_table(facts, "training", "Training data"),),
            ),
            Point(
                "2(e)",
                "Human oversight measures (Art. 14)",
                (facts.declared("Oversight measures", "/human_oversight", "human_oversight"),),
            ),
            Point(
                "2(f)",
                "Pre-determined changes",
                (
                    facts.declared(
                        "Pre-determined changes", "/predetermined_changes", "predetermined_changes"
                    ),
                ),
            ),
            Point(
                "2(g)",
                "Validation and testing",
                (
                    facts.mlflow(
                        "Evaluating runs",
                        "; ".join(
                            f"{facts.run_label(e['id'])}: {len(e['metrics'])} metrics"
                            for e in evaluations
                        )
                        or "the source run itself",
                        "MLflow, metrics linked to the version's logged model",
                    ),
                ),
                (
                    _datasets_table(facts, "evaluation", "Evaluation data"),
                    _metrics_table(facts),
                ),
            ),
            Point(
                "2(h)",
                "Cybersecurity measures",
                (facts.declared("Measures", "/cybersecurity", "cybersecurity"),),
            ),
        ),
    )


def _monitoring(facts: _Facts) -> Section:
    return Section(
        3,
        "Monitoring, functioning and control",
        (
            Point(
                "3",
                "Capabilities, limitations, oversight and input specifications",
                (
                    facts.metrics_summary(),
                    facts.declared("Persons affected", "/persons_affected", "persons_affected"),
                    facts.declared("Human oversight", "/human_oversight", "human_oversight"),
                    facts.declared("Limitations", "/limitations", "limitations"),
                    facts.mlflow(
                        "Input specification",
                        _signature_summary(facts.record),
                    ),
                ),
            ),
        ),
    )


def _changes(facts: _Facts, changes: RecordDiff | None, compared_with: str | None) -> Section:
    versions = facts.lineage["versions"]
    table = Table(
        "Versions of the registered model",
        ("Version", "Aliases", "Registered", "Source run", "Description"),
        tuple(
            (
                v["version"],
                ", ".join(f"@{a}" for a in v["aliases"]),
                v.get("created") or "",
                v.get("run_id") or "",
                v.get("description") or "",
            )
            for v in versions
        ),
        "mlflow",
        facts.registry_label,
    )
    entries: tuple[Entry, ...]
    if compared_with is None:
        entries = (
            Entry(
                "Changes",
                "the first version: nothing to compare with",
                "mlflow",
                facts.registry_label,
            ),
        )
    else:
        changed = [
            f"{section.title}: {section.summary}"
            for section in (diff_sections(changes) if changes is not None else ())
            if section.rows
        ]
        entries = (
            Entry(
                "Compared with",
                f"{compared_with}; "
                + ("; ".join(changed) if changed else "no changes in the evidence")
                + " (the table below)",
                "mlflow",
                "MLflow: both versions' records, as audited now",
            ),
        )
    return Section(
        6,
        "Changes through the lifecycle",
        (Point("6", "Relevant changes made by the provider", entries, (table,)),),
    )


def _datasets_table(facts: _Facts, role: str, caption: str) -> Table:
    rows = []
    for dataset in facts.record["data"][role]:
        rows.append(
            (
                dataset.get("name") or "(unnamed)",
                dataset.get("digest") or "not recorded",
                dataset.get("source_uri") or dataset.get("source_type") or "not recorded",
                "?" if dataset.get("rows") is None else f"{dataset['rows']:,}",
                facts.run_label(dataset.get("run_id")),
            )
        )
    return Table(
        caption,
        ("Name", "Digest", "Source", "Rows", "Logged in"),
        tuple(rows),
        "mlflow",
        "MLflow dataset inputs",
        empty=f"no {caption.lower()} is logged as a dataset input",
    )


def _metrics_table(facts: _Facts) -> Table:
    rows = []
    for metric in facts.record["metrics"]:
        dataset = metric.get("dataset")
        on = (
            f"{dataset.get('name') or '(unnamed)'} ({dataset.get('digest') or 'no digest'})"
            if isinstance(dataset, Mapping)
            else (
                f"{metric['context']} data, by its name"
                if metric.get("context")
                else "not recorded"
            )
        )
        rows.append(
            (
                str(metric["key"]),
                number(metric["value"]),
                on,
                facts.run_label(metric.get("run_id")),
            )
        )
    return Table(
        "Metrics",
        ("Metric", "Value", "Computed on", "Logged in"),
        tuple(rows),
        "mlflow",
        "MLflow metrics",
        empty="no metric is logged",
    )


def _signature_tables(facts: _Facts) -> list[Table]:
    tables = []
    for model in facts.record.get("models") or []:
        signature = model.get("signature")
        if not isinstance(signature, Mapping):
            continue
        for part in ("inputs", "outputs"):
            columns = signature.get(part)
            if isinstance(columns, list) and columns:
                tables.append(
                    Table(
                        f"Model {part} ({model.get('name') or model.get('model_id')})",
                        ("Name", "Type"),
                        tuple(
                            (str(c.get("name") or "(unnamed)"), str(c.get("type") or ""))
                            for c in columns
                            if isinstance(c, Mapping)
                        ),
                        "mlflow",
                        "MLflow model signature",
                    )
                )
        break
    return tables


def _signature_summary(record: Mapping[str, Any]) -> str | None:
    for model in record.get("models") or []:
        signature = model.get("signature")
        if isinstance(signature, Mapping) and isinstance(signature.get("inputs"), list):
            names = [str(c.get("name")) for c in signature["inputs"] if isinstance(c, Mapping)]
            return (
                f"{len(names)} inputs: {', '.join(names[:8])}"
                + (", ..." if len(names) > 8 else "")
                + " (section 2(b))"
            )
    return None


def _headline_rank(metric: Mapping[str, Any]) -> tuple[int, str]:
    key = str(metric.get("key")).lower()
    name = _METRIC_AFFIXES.sub("", key)
    if name in _HEADLINE_METRICS:
        return _HEADLINE_METRICS.index(name), key
    return len(_HEADLINE_METRICS), key


def _metric_value(metric: Mapping[str, Any]) -> str:
    """``accuracy_score = 0.91 on churn-holdout``."""
    dataset = metric.get("dataset")
    on = f" on {dataset.get('name') or '(unnamed)'}" if isinstance(dataset, Mapping) else ""
    return f"{metric.get('key')} = {number(metric.get('value'))}{on}"


def _cover(result: AuditResult, run: RunResult, facts: _Facts, settings: ReportSettings) -> Cover:
    version = facts.version
    provider = facts.declared("Provider", "/provider/name", "provider.name")
    purpose = facts.declared("Intended purpose", "/intended_purpose", "intended_purpose")
    system = facts.declared("AI system", "/system/name", "system.name")
    rows = [
        ("Model", facts.model["name"]),
        ("Version", str(version["version"])),
        ("Aliases", ", ".join(f"@{a}" for a in version["aliases"]) or "none"),
        ("AI system", system.value if system.origin == "declared" else "not declared"),
        ("Provider", provider.value if provider.origin == "declared" else "not declared"),
        (
            "Intended purpose",
            shorten(purpose.value, 240) if purpose.origin == "declared" else "not declared",
        ),
        ("Registered", f"{version.get('created') or 'date not recorded'}"
         + (f" by {version['registered_by']}" if version.get("registered_by") else "")),
        ("Source run", facts.run_label()),
        *people_facts(settings),
        ("Date", settings.date_text),
        ("Policy", policy_text(result)),
    ]  # fmt: skip
    return Cover(
        title=facts.subject,
        subtitle="Technical documentation following Annex IV of Regulation (EU) 2024/1689",
        facts=tuple(rows),
        status=run.status,
        counts=severity_counts([run]),
        outcomes=single_run_result(result, run).outcome_counts(),
    )
