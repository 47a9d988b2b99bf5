"""`export --format model-card`: a Hugging Face model card (``README.md``) per subject.

The card is YAML metadata between two ``---`` lines, as the Hub and ``huggingface_hub`` read
it, then Markdown in the order of the Hub's model card template (model details, uses, bias,
risks and limitations, training, evaluation, technical specifications, more information) and
an Audit section last: the policy, each rule's outcome with the provisions it is relevant to,
the gaps with their fixes, and the scope of the audit.

**Metadata.** ``library_name`` when the model's MLflow flavors map to a library the Hub knows
(`HUB_LIBRARIES`; no other is guessed), ``tags``, ``datasets`` (each dataset's name as logged:
MLflow's name, not a Hub dataset id), ``metrics`` (each metric key) and ``model-index``: for
each dataset that evaluation metrics were computed on, one result with those metrics (``type``
the MLflow key), its dataset's ``type`` and ``name`` the logged name, ``revision`` MLflow's
digest and ``split`` its logged context. Metrics on training data and metrics whose dataset
MLflow did not record stay out of ``model-index`` (the body lists them): they are not
evaluation results on a dataset.

**The task.** ``model-index`` requires ``task.type``, and MLflow records no task:
``mlflow.models.evaluate`` uses its ``model_type`` without logging it, a record names the
model's flavors (a library, not a task), and the system card has no task field. Rather than
guess one from metric names, each result says ``other``, the catch-all of the Hub's task list,
named "Task not recorded in MLflow"; the body says the same.

**Untrusted text stays text.** Every value from MLflow, the policy or the system card reaches
the body through `md` or `code` (audit.formats.markdown): no HTML, link, heading or table cell
can come out of it, and control characters are written out as escapes. The metadata is
written by ``yaml.safe_dump`` from fresh plain containers (so no anchors, aliases or tags), its
text on one line with control characters escaped the same way.

Pure: the same subject and settings give the same bytes; only ``settings.generated_at`` dates
the card.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml

from audit.describe import number
from audit.exports import ExportSettings, Subject, evidence_places
from audit.formats.markdown import code, md
from audit.formats.rows import located
from audit.formats.text import one_line
from audit.policy import OUTCOMES
from audit.provisions import load_catalog
from audit.result import SCOPE_NOTE, RuleOutcome

SUFFIX = ".md"
TAGS = ("mlflow", "mlflow-audit")
#: MLflow flavor -> the Hub's library name (huggingface.js, model-libraries.ts), only where the
#: Hub has that library.
HUB_LIBRARIES: Mapping[str, str] = {
    "transformers": "transformers",
    "sentence_transformers": "sentence-transformers",
    "sklearn": "sklearn",
    "keras": "keras",
    "spacy": "spacy",
    "fastai": "fastai",
}
TASK: Mapping[str, str] = {"type": "other", "name": "Task not recorded in MLflow"}
NOT_RECORDED = "not recorded in MLflow"
_NO_CARD_FOR_RUN = (
    "not recorded: a run has no system card (a model version documented with one has)"
)
_SHOWN_PLACES = 3

# The system card's fields (schemas/system-card.schema.json) by the section that shows them.
_DIRECT_USE = (
    ("Intended purpose", "/intended_purpose"),
    ("Intended users", "/intended_users"),
    ("Persons affected", "/persons_affected"),
    ("Interactions", "/interactions"),
    ("Deployment", "/deployment/forms"),
    ("User interface", "/user_interface"),
    ("Instructions for use", "/instructions_for_use"),
    ("Human oversight", "/human_oversight"),
)
_RISKS = (
    ("Limitations", "/limitations"),
    ("Risk management", "/risk_management"),
    ("Cybersecurity", "/cybersecurity"),
)
_MORE = (
    ("Standards applied", "/standards"),
    ("Predetermined changes", "/predetermined_changes"),
    ("Expected lifetime", "/lifetime"),
    ("Post-market monitoring", "/post_market_monitoring"),
    ("EU declaration of conformity", "/declaration_of_conformity"),
)


def render(subject: Subject, settings: ExportSettings) -> bytes:
    metadata = yaml.safe_dump(
        card_metadata(subject), sort_keys=False, allow_unicode=True, width=1 << 16
    )
    body = "\n".join(_body(subject, settings)).rstrip("\n") + "\n"
    return f"---\n{metadata}---\n\n{body}".encode()


# --------------------------------------------------------------------------- metadata


def card_metadata(subject: Subject) -> dict[str, Any]:
    """The card's YAML metadata as plain data, in the order of the Hub's template."""
    record = subject.record
    metadata: dict[str, Any] = {}
    library = hub_library(record)
    if library:
        metadata["library_name"] = library
    metadata["tags"] = list(TAGS)
    datasets = _unique(_text(d["name"]) for d in _datasets(record) if d.get("name"))
    if datasets:
        metadata["datasets"] = datasets
    metrics = _unique(_text(m["key"]) for m in record["metrics"])
    if metrics:
        metadata["metrics"] = metrics
    results = [
        {
            "task": dict(TASK),
            "dataset": _index_dataset(record, dataset),
            "metrics": [
                {"type": _text(m["key"]), "value": _value(m["value"]), "name": _text(m["key"])}
                for m in computed
            ],
        }
        for dataset, computed in evaluation_results(record)
    ]
    if results:
        metadata["model-index"] = [{"name": _text(subject.name), "results": results}]
    return metadata


def hub_library(record: Mapping[str, Any]) -> str | None:
    """The Hub library of the subject's models' flavors; None when none maps, or when they map
    to more than one (the card names one)."""
    found = {
        HUB_LIBRARIES[flavor]
        for model in record["models"]
        for flavor in model.get("flavors") or ()
        if flavor in HUB_LIBRARIES
    }
    return found.pop() if len(found) == 1 else None


def evaluation_results(
    record: Mapping[str, Any],
) -> list[tuple[Mapping[str, Any], list[Mapping[str, Any]]]]:
    """(dataset, the evaluation metrics computed on it) for each dataset such metrics name, in
    the order of the metrics."""
    groups: dict[tuple[Any, Any], tuple[Mapping[str, Any], list[Mapping[str, Any]]]] = {}
    for metric in record["metrics"]:
        dataset = metric.get("dataset")
        if metric.get("context") == "evaluation" and isinstance(dataset, Mapping):
            key = (dataset.get("name"), dataset.get("digest"))
            groups.setdefault(key, (dataset, []))[1].append(metric)
    return list(groups.values())


def _index_dataset(record: Mapping[str, Any], dataset: Mapping[str, Any]) -> dict[str, Any]:
    name = _text(dataset.get("name") or "unnamed dataset")
    entry: dict[str, Any] = {"type": name, "name": name}
    logged = _logged_input(record, dataset)
    if logged is not None and logged.get("context"):
        entry["split"] = _text(logged["context"])
    if dataset.get("digest"):
        entry["revision"] = _text(dataset["digest"])
    return entry


def _logged_input(
    record: Mapping[str, Any], dataset: Mapping[str, Any]
) -> Mapping[str, Any] | None:
    """The dataset input a metric's dataset is (same name and digest), evaluation data first."""
    same = (dataset.get("name"), dataset.get("digest"))
    for entry in _datasets(record, ("evaluation", "other", "training")):
        if (entry.get("name"), entry.get("digest")) == same:
            return entry
    return None


def _value(value: Any) -> Any:
    """A metric value as the metadata holds it: a number (the record keeps integers too large
    for a double as text), or the record's text for NaN and the infinities."""
    if isinstance(value, str) and value.removeprefix("-").isdigit():
        return int(value)
    return value


def _text(value: Any) -> str:
    return one_line(str(value))


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _datasets(
    record: Mapping[str, Any], roles: Sequence[str] = ("training", "evaluation", "other")
) -> list[Mapping[str, Any]]:
    return [entry for role in roles for entry in record["data"][role]]


# --------------------------------------------------------------------------- body


def _body(subject: Subject, settings: ExportSettings) -> list[str]:
    record = subject.record
    return [
        f"# Model Card for {md(subject.label)}",
        "",
        f"Written by mlflow-audit {md(settings.tool_version)} on {md(settings.generated_at)} "
        f"from the evidence MLflow holds in {code(settings.store)}. Where neither MLflow nor "
        "the system card holds a fact, the card says so.",
        "",
        *_model_details(subject),
        "## Uses",
        "",
        "### Direct Use",
        "",
        *_declared_facts(record, _DIRECT_USE),
        "### Out-of-Scope Use",
        "",
        "Not recorded: neither MLflow nor the system card holds out-of-scope uses.",
        "",
        "## Bias, Risks, and Limitations",
        "",
        *_declared_facts(record, _RISKS),
        *_training(record),
        *_evaluation(record),
        *_technical(record),
        "## More Information",
        "",
        *_declared_facts(record, _MORE),
        *_audit(subject, settings),
    ]


def _model_details(subject: Subject) -> list[str]:
    record = subject.record
    run = record["run"]
    models = record["models"]
    flavors = _unique(flavor for model in models for flavor in model.get("flavors") or ())
    library = hub_library(record)
    facts = [
        ("Developed by", _declared(record, "/provider/name")),
        ("Contact", _declared(record, "/provider/contact")),
        ("AI system", _system(record)),
        ("Model type", _model_type(models, flavors)),
        ("Library", code(library) if library else "none the Hub knows for these flavors"),
        ("Task", NOT_RECORDED),
        ("License", NOT_RECORDED),
    ]
    lineage = subject.lineage
    if lineage is not None:
        version = lineage["version"]
        aliases = ", ".join(code(alias) for alias in version["aliases"])
        described = version.get("description") or lineage["model"].get("description")
        facts += [
            (
                "Registered model",
                f"{md(lineage['model']['name'])} version {md(version['version'])}"
                + (f" (aliases {aliases})" if aliases else ""),
            ),
            ("Description", _plain(described)),
            ("Registered on", _plain(version.get("created"))),
            ("Previous version", md(lineage.get("previous_version") or "none")),
        ]
    logged = [code(model.get("uri") or model.get("model_id") or "") for model in models]
    facts += [
        ("Logged model", ", ".join(logged) or "none"),
        ("Trained in run", _run_label(run["name"], run["id"], run.get("experiment_name"))),
        ("Run status", _plain(run.get("status"))),
        ("Run started", _plain(run.get("start_time"))),
        ("Run ended", _plain(run.get("end_time"))),
    ]
    source = record["source"]
    commit = source.get("git_commit")
    return [
        "## Model Details",
        "",
        "### Model Description",
        "",
        *_facts(facts),
        "### Model Sources",
        "",
        *_facts(
            [
                ("Repository", _plain(source.get("git_repo_url"))),
                ("Commit", code(commit) if commit else NOT_RECORDED),
                ("Branch", _plain(source.get("git_branch"))),
                ("Entry point", _plain(source.get("name"))),
            ]
        ),
    ]


def _model_type(models: Sequence[Mapping[str, Any]], flavors: Sequence[str]) -> str:
    if not models:
        return "no model logged"
    if not flavors:
        return f"MLflow model, flavors {NOT_RECORDED}"
    return "MLflow model, flavors " + ", ".join(code(flavor) for flavor in flavors)


def _training(record: Mapping[str, Any]) -> list[str]:
    data = record["data"]
    lines = [
        "## Training Details",
        "",
        "### Training Data",
        "",
        *_datasets_table(record, data["training"], "No training dataset logged."),
    ]
    if data["other"]:
        lines += ["Datasets logged without a known role:", ""]
        lines += _datasets_table(record, data["other"], "")
    lines += ["### Training Procedure", "", "#### Training Hyperparameters", ""]
    params = record["hyperparameters"]
    if params:
        lines += ["| parameter | value |", "|---|---|"]
        lines += [f"| {_cell_code(key)} | {md(value)} |" for key, value in params.items()]
        lines.append("")
    else:
        lines += [f"No hyperparameters logged ({NOT_RECORDED}).", ""]
    sweep = (record.get("lineage") or {}).get("sweep")
    if sweep:
        trials = sweep.get("trials")
        lines += [
            "#### Tuning sweep",
            "",
            "Chosen in the sweep "
            + _run_label(sweep["name"], sweep["id"], sweep.get("experiment_name"))
            + (f", {trials} trials" if trials is not None else "")
            + ". Its parameters (the search space):",
            "",
        ]
        space = sweep.get("search_space") or {}
        lines += [f"- {code(key)}: {md(value)}" for key, value in space.items()] or ["- none"]
        lines.append("")
    on_training = [m for m in record["metrics"] if m.get("context") == "training"]
    if on_training:
        lines += ["#### Metrics on training data", "", *_metrics_table(record, on_training)]
    return lines


def _evaluation(record: Mapping[str, Any]) -> list[str]:
    lines = [
        "## Evaluation",
        "",
        "### Testing Data, Factors & Metrics",
        "",
        "#### Testing Data",
        "",
        *_datasets_table(record, record["data"]["evaluation"], "No evaluation dataset logged."),
        "#### Metrics",
        "",
        *_facts([("Why these metrics", _declared(record, "/metrics_rationale"))]),
        "### Results",
        "",
    ]
    evaluated = [m for m in record["metrics"] if m.get("context") == "evaluation"]
    if evaluated:
        lines += _metrics_table(record, evaluated)
        lines += [
            "The metadata's `model-index` holds these metrics where MLflow recorded the dataset "
            "they were computed on.",
            "",
        ]
    else:
        lines += [f"No metric on evaluation data logged ({NOT_RECORDED}).", ""]
    unknown = [m for m in record["metrics"] if m.get("context") is None]
    if unknown:
        lines += ["#### Metrics on data not recorded", "", *_metrics_table(record, unknown)]
    return lines


def _technical(record: Mapping[str, Any]) -> list[str]:
    environment = record["environment"]
    requirements = environment.get("requirements")
    lines = [
        "## Technical Specifications",
        "",
        "### Compute Infrastructure",
        "",
        "#### Hardware",
        "",
        *_facts(
            [
                (
                    "Training platform",
                    _from(environment.get("platform"), environment.get("platform_from")),
                ),
                ("Intended hardware", _declared(record, "/deployment/hardware")),
            ]
        ),
        "#### Software",
        "",
        *_facts(
            [
                (
                    "Python",
                    _from(
                        environment.get("python_version"), environment.get("python_version_from")
                    ),
                ),
                ("MLflow", _plain(environment.get("mlflow_version"))),
                (
                    "Requirements",
                    _from(
                        None if requirements is None else f"{len(requirements)} lines",
                        environment.get("requirements_from"),
                    ),
                ),
            ]
        ),
    ]
    if requirements:
        lines += ["| requirement | pinned |", "|---|---|"]
        lines += [
            f"| {_cell_code(item['line'])} | {'yes' if item.get('pinned') else 'no'} |"
            for item in requirements
        ]
        lines.append("")
    return lines


# --------------------------------------------------------------------------- audit


def _audit(subject: Subject, settings: ExportSettings) -> list[str]:
    policy = settings.policy
    outcomes = subject.outcomes()
    counts = dict.fromkeys(OUTCOMES, 0)
    for outcome in outcomes:
        counts[outcome.status] += 1
    lines = [
        "## Audit",
        "",
        f"Policy {code(str(policy.get('name', '')))}"
        + (f" version {md(str(policy['version']))}" if policy.get("version") else "")
        + (f" (sha256 {code(str(policy['sha256']))})" if policy.get("sha256") else "")
        + f": {len(outcomes)} rules asked of this subject, "
        + ", ".join(f"{n} {status.replace('_', ' ')}" for status, n in counts.items())
        + ".",
        "",
        "### Outcome per rule",
        "",
        "| rule | outcome | severity | relevant to | evidence, or why |",
        "|---|---|---|---|---|",
        *(_outcome_row(subject, outcome) for outcome in outcomes),
        "",
        "### Gaps and their fixes",
        "",
    ]
    gaps = [item for o in outcomes if o.status in ("fail", "waived") for item in _gap_items(o)]
    lines += [*(gaps or ["None."]), ""]
    catalog = load_catalog()
    cited = catalog.sort({p for outcome in outcomes for p in outcome.provisions if p in catalog})
    if cited:
        lines += ["### Provisions cited", ""]
        lines += [
            f"- [{md(catalog[p].citation)}](<{catalog[p].link}>): {md(catalog[p].title)}"
            for p in cited
        ]
        lines.append("")
    lines += ["### Scope", "", f"Evidence mapped to provisions. {md(SCOPE_NOTE)}", ""]
    return lines


def _outcome_row(subject: Subject, outcome: RuleOutcome) -> str:
    status = outcome.status
    if status == "pass":
        evidence = outcome.evidence
        if evidence is not None:
            why = md(evidence.text)
        else:  # the audit did not look: where in the record the rule found something
            places = evidence_places(subject.record, outcome.rule)
            why = ", ".join(_cell_code(place) for place in places[:_SHOWN_PLACES])
            if len(places) > _SHOWN_PLACES:
                why += f" and {len(places) - _SHOWN_PLACES} more"
    elif outcome.findings:
        why = md(outcome.findings[0].gap_text)
    else:
        why = md(outcome.reason or "")
    word = "**fail**" if status == "fail" else status.replace("_", " ")
    citations = ", ".join(md(citation) for citation in outcome.citations)
    return f"| {_cell_code(outcome.rule_id)} | {word} | {outcome.severity} | {citations} | {why} |"


def _gap_items(outcome: RuleOutcome) -> list[str]:
    items = [
        f"- {code(outcome.rule_id)} ({outcome.severity}, {outcome.status}): "
        f"{md(outcome.findings[0].gap_text)}"
    ]
    for finding in outcome.findings:
        item = f"  - found: {md(located(finding))}"
        waiver = finding.waiver
        if waiver is not None:
            item += (
                f"; waived: {md(waiver.reason)}, approved by {md(waiver.approved_by)}, "
                f"expires {waiver.expires.isoformat()}"
            )
        items.append(item)
    items.append(f"  - fix: {md(outcome.remediation)}")
    if outcome.citations:
        items.append("  - relevant to: " + ", ".join(md(c) for c in outcome.citations))
    return items


# --------------------------------------------------------------------------- declared facts


def _declared_facts(record: Mapping[str, Any], fields: Iterable[tuple[str, str]]) -> list[str]:
    return _facts((label, _declared(record, pointer)) for label, pointer in fields)


def _declared(record: Mapping[str, Any], pointer: str) -> str:
    """A field of the system card as Markdown with where it came from, or why there is none."""
    declared = record.get("declared")
    if not isinstance(declared, Mapping):
        return _NO_CARD_FOR_RUN
    value = _declared_value(declared, pointer)
    if isinstance(value, list):
        value = "; ".join(str(item) for item in value if item)
    if isinstance(value, str) and value.strip():
        return md(value) + _origin(declared, pointer)
    if pointer in (declared.get("placeholders") or ()):
        return "not declared: the system card holds a placeholder"
    if not isinstance(declared.get("card"), Mapping):
        return "not declared (no system card given)"
    return "not declared in the system card"


def _system(record: Mapping[str, Any]) -> str:
    declared = record.get("declared")
    name = _declared_value(declared, "/system/name")
    if not isinstance(declared, Mapping) or not isinstance(name, str) or not name.strip():
        return _declared(record, "/system/name")
    version = _declared_value(declared, "/system/version")
    text = f"{name} {version}" if isinstance(version, str) and version.strip() else name
    return md(text) + _origin(declared, "/system/name")


def _declared_value(declared: Any, pointer: str) -> Any:
    node = declared
    for part in pointer.strip("/").split("/"):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def _origin(declared: Mapping[str, Any], pointer: str) -> str:
    origins = declared.get("origins")
    said = origins.get(pointer) if isinstance(origins, Mapping) else None
    card = declared.get("card")
    if said == "system card" and isinstance(card, Mapping):
        return f" (declared in the system card {code(str(card.get('file')))})"
    return f" (from the {md(str(said))})" if said else ""


# --------------------------------------------------------------------------- pieces


def _facts(facts: Iterable[tuple[str, str]]) -> list[str]:
    """``- **label:** value`` lines (values already Markdown), then a blank line."""
    return [*(f"- **{label}:** {value}" for label, value in facts), ""]


def _plain(value: Any) -> str:
    return NOT_RECORDED if value in (None, "") else md(str(value))


def _from(value: Any, origin: Any) -> str:
    if value in (None, ""):
        return NOT_RECORDED
    return md(str(value)) + (f" (from {code(str(origin))})" if origin else "")


def _run_label(name: Any, run_id: Any, experiment: Any) -> str:
    label = f"{md(str(name))} ({code(str(run_id))})" if name else code(str(run_id))
    return label + (f", experiment {md(str(experiment))}" if experiment else "")


def _datasets_table(
    record: Mapping[str, Any], datasets: Sequence[Mapping[str, Any]], none: str
) -> list[str]:
    if not datasets:
        return [none, ""] if none else []
    lines = [
        "| dataset | digest | context | source | rows | logged by run |",
        "|---|---|---|---|---|---|",
    ]
    for dataset in datasets:
        digest = dataset.get("digest")
        source = dataset.get("source_uri") or dataset.get("source_type")
        rows = dataset.get("rows")
        lines.append(
            f"| {md(dataset.get('name') or 'unnamed')} "
            f"| {_cell_code(digest) if digest else NOT_RECORDED} "
            f"| {md(dataset.get('context') or 'none')} "
            f"| {_cell_code(source) if source else NOT_RECORDED} "
            f"| {NOT_RECORDED if rows is None else md(str(rows))} "
            f"| {_cell_code(dataset.get('run_id') or record['run']['id'])} |"
        )
    return [*lines, ""]


def _metrics_table(record: Mapping[str, Any], metrics: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = [
        "| metric | value | computed on (digest) | how known | logged by run |",
        "|---|---|---|---|---|",
    ]
    for metric in metrics:
        dataset = metric.get("dataset")
        if isinstance(dataset, Mapping):
            digest = dataset.get("digest")
            on = md(dataset.get("name") or "unnamed dataset") + (
                f" ({_cell_code(digest)})" if digest else ""
            )
            how = "MLflow linked it to the dataset"
            if metric.get("context_from") == "name":
                how = "by the metric's name"
        else:
            on = f"dataset {NOT_RECORDED}"
            how = "its role by the metric's name" if metric.get("context") else "not known"
        lines.append(
            f"| {_cell_code(metric['key'])} | {md(number(metric['value']))} | {on} | {how} "
            f"| {_cell_code(metric.get('run_id') or record['run']['id'])} |"
        )
    return [*lines, ""]


def _cell_code(text: Any) -> str:
    """A code span in a table cell, where a ``|`` would end the cell (GitHub-flavoured tables
    read an escaped one as text, in code spans too)."""
    return code(str(text)).replace("|", "\\|")
