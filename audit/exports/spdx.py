"""`export --format spdx`: an SPDX 3.0.1 document (JSON-LD) per subject, with the AI and
Dataset profiles' classes.

What goes where:

- the model is an `ai_AIPackage`, the document's root: its name, the registered version,
  `software_downloadLocation` (``models:/NAME/VERSION``, or the run's one logged model),
  `builtTime` (when MLflow logged the model), `releaseTime` (when the version was registered),
  `ai_hyperparameter`, `ai_metric`, and from the system card (`declared`) the supplier, the
  application, the limitation and the standards; the training run, its code and environment
  in `ai_informationAboutTraining` and as external references (``vcs``, ``buildMeta`` for the
  training run, ``metrics`` for each run that evaluated the version);
- each dataset input is a `dataset_DatasetPackage`, tied to the model by ``trainedOn``,
  ``testedOn`` or ``other`` (an input of unknown role);
- each requirement of the environment is a `software_Package` with its purl, which the model
  ``dependsOn``;
- each rule of the policy asked of the subject is an `Annotation` of type review on the model:
  its outcome, findings, evidence and the provisions it is relevant to.

SPDX has no place for the dataset a metric was computed on: each `ai_metric` entry's key names
it (``roc_auc on churn-holdout (digest 639f15ac)``), and the dataset is in the document.

Nothing is invented: a property MLflow (or the system card) does not hold is left out, and
`profileConformance` claims a profile only when the document meets its restrictions. A model's
MLflow flavors name the framework it was saved with, not its type (`ai_typeOfModel`): they are
in its comment. Identifiers are ``urn:uuid:`` UUIDs of the store, the subject and the element
(`ExportSettings.uuid`): the same facts give the same identifiers, and the same model version
in two stores two different ones, so documents can be merged into one graph.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import Any, TypeGuard

import orjson

from audit.exports import ExportSettings, Subject, evidence_places, pinned_version, pypi_purl

SUFFIX = ".spdx3.json"
CONTEXT = "https://spdx.org/rdf/3.0.1/spdx-context.jsonld"
SPEC_VERSION = "3.0.1"
#: The one CreationInfo every element of the document shares (a blank node).
CREATION = "_:creationinfo"

#: Properties the AI profile requires of an AIPackage (its "external properties cardinality
#: updates"); the profile is claimed only when the model has them all.
AI_PROFILE_REQUIRED = (
    "releaseTime",
    "suppliedBy",
    "software_downloadLocation",
    "software_packageVersion",
    "software_primaryPurpose",
)
# The Dataset profile requires builtTime, releaseTime and originatedBy of every
# DatasetPackage. MLflow records none of them, so a document never claims that profile.

#: A URI with a scheme (RFC 3986), without what xsd:anyURI or a reader would trip over.
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s<>\"{}|\\^`]+")
#: A requirement pinned to one version: ``==1.9.1`` or ``===1.9.1``.


def render(subject: Subject, settings: ExportSettings) -> bytes:
    # Compact, as the CycloneDX export: an export of 100,000 runs writes 100,000 documents.
    return orjson.dumps(_Document(subject, settings).build()) + b"\n"


class _Document:
    def __init__(self, subject: Subject, settings: ExportSettings) -> None:
        self.subject = subject
        self.settings = settings
        self.record = subject.record
        self.graph: list[dict[str, Any]] = []

    def id(self, *parts: str) -> str:
        return "urn:uuid:" + self.settings.uuid(
            self.settings.store, self.subject.key, "spdx", *parts
        )

    def add(self, kind: str, spdx_id: str, properties: Mapping[str, Any]) -> str:
        element = {"type": kind, "spdxId": spdx_id, "creationInfo": CREATION}
        element.update((key, value) for key, value in properties.items() if _given(value))
        self.graph.append(element)
        return spdx_id

    def build(self) -> dict[str, Any]:
        created = _seconds(self.settings.generated_at)
        if created is None:
            raise ValueError(f"not a time with a time zone: {self.settings.generated_at!r}")
        agent = self.id("agent")
        tool = self.id("tool")
        creation = {
            "type": "CreationInfo",
            "@id": CREATION,
            "specVersion": SPEC_VERSION,
            "created": created,
            "createdBy": [agent],
            "createdUsing": [tool],
        }
        self.add("SoftwareAgent", agent, {"name": "mlflow-audit"})
        self.add("Tool", tool, {"name": f"mlflow-audit {self.settings.tool_version}"})
        model = self.model()
        self.datasets(model)
        self.packages(model)
        self.annotations(model)
        document = {
            "type": "SpdxDocument",
            "spdxId": self.id("document"),
            "creationInfo": CREATION,
            "name": f"SPDX 3 AI document of {self.subject.label}",
            "comment": self.provenance(),
            "profileConformance": self.profiles(model),
            "rootElement": [model],
            "element": [element["spdxId"] for element in self.graph],
        }
        return {"@context": CONTEXT, "@graph": [creation, document, *self.graph]}

    def provenance(self) -> str:
        policy = self.settings.policy
        return (
            f"Written by mlflow-audit {self.settings.tool_version} from the MLflow tracking "
            f"store {self.settings.store}, under the policy {policy.get('name')} "
            f"(sha256 {policy.get('sha256')})."
        )

    def profiles(self, model: str) -> list[str]:
        element = next(element for element in self.graph if element["spdxId"] == model)
        if all(key in element for key in AI_PROFILE_REQUIRED):
            return ["core", "software", "ai"]
        return ["core", "software"]

    # ------------------------------------------------------------------ the model

    def model(self) -> str:
        record, subject = self.record, self.subject
        lineage = subject.lineage
        logged = self.logged_model()
        declared = record.get("declared") or {}
        location: str | None
        if lineage is not None:
            location = f"models:/{subject.name}/{subject.version}"
        else:
            location = logged.get("uri") if logged is not None else None
        properties: dict[str, Any] = {
            "name": subject.name,
            "description": self.description(),
            "comment": self.model_comment(),
            "software_packageVersion": subject.version,
            "software_primaryPurpose": "model",
            "software_downloadLocation": location if _is_uri(location) else None,
            "builtTime": _seconds(logged.get("created")) if logged is not None else None,
            "releaseTime": _seconds(lineage["version"].get("created")) if lineage else None,
            "suppliedBy": self.supplier(declared),
            "externalRef": list(self.model_references(declared)),
            "ai_hyperparameter": [
                {"type": "DictionaryEntry", "key": key, "value": value}
                for key, value in sorted(record["hyperparameters"].items())
            ],
            "ai_metric": self.metrics(),
            "ai_informationAboutTraining": self.training(),
            "ai_informationAboutApplication": _application(declared),
            "ai_limitation": declared.get("limitations"),
            "ai_standardCompliance": declared.get("standards"),
        }
        return self.add("ai_AIPackage", self.id("model"), properties)

    def logged_model(self) -> Mapping[str, Any] | None:
        """The logged model the subject is: the version's, or the run's only one."""
        models: list[Mapping[str, Any]] = self.record["models"]
        lineage = self.subject.lineage
        if lineage is not None:
            model_id = lineage["version"].get("model_id")
            for model in models:
                if model_id is not None and model.get("model_id") == model_id:
                    return model
        return models[0] if len(models) == 1 else None

    def description(self) -> str | None:
        lineage = self.subject.lineage
        if lineage is None:
            return None
        texts = (lineage["model"].get("description"), lineage["version"].get("description"))
        return "\n\n".join(text for text in texts if text) or None

    def model_comment(self) -> str | None:
        """The run's logged models with their flavors (the frameworks MLflow saved them
        with), and the version's aliases."""
        parts = []
        for model in self.record["models"]:
            flavors = ", ".join(model.get("flavors") or ()) or "no flavors recorded"
            parts.append(f"MLflow model {model.get('uri') or model.get('name')} ({flavors})")
        lineage = self.subject.lineage
        if lineage is not None and lineage["version"].get("aliases"):
            parts.append("aliases: " + ", ".join(lineage["version"]["aliases"]))
        return "; ".join(parts) or None

    def supplier(self, declared: Mapping[str, Any]) -> str | None:
        provider = declared.get("provider") or {}
        if not provider.get("name"):
            return None
        contact = provider.get("contact")
        return self.add(
            "Organization",
            self.id("supplier"),
            {"name": provider["name"], "comment": f"Contact: {contact}" if contact else None},
        )

    def model_references(self, declared: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        source, run = self.record["source"], self.record["run"]
        if source.get("git_repo_url"):
            commit = f": commit {source['git_commit']}" if source.get("git_commit") else ""
            yield _reference(
                "vcs",
                source["git_repo_url"],
                f"the repository of the training code, as the training run recorded it{commit}",
            )
        yield _reference("buildMeta", f"runs:/{run['id']}", "the MLflow run that trained the model")
        lineage = self.subject.lineage
        for evaluation in lineage["evaluations"] if lineage else ():
            yield _reference(
                "metrics",
                f"runs:/{evaluation['id']}",
                f"MLflow run {evaluation.get('name') or evaluation['id']} evaluated this "
                f"version: {', '.join(evaluation['metrics'])}",
            )
        instructions = declared.get("instructions_for_use")
        if _is_uri(instructions):
            yield _reference("documentation", instructions, "instructions for use")

    def metrics(self) -> list[dict[str, str]]:
        """Each metric, its key naming the dataset it was computed on; a key two metrics
        share names the run that logged each."""
        keys = [_metric_key(metric) for metric in self.record["metrics"]]
        shared = {key for key, count in Counter(keys).items() if count > 1}
        entries = []
        for key, metric in zip(keys, self.record["metrics"], strict=True):
            if key in shared:
                key += f" in run {metric.get('run_id') or self.record['run']['id']}"
            entries.append({"type": "DictionaryEntry", "key": key, "value": _number(metric)})
        return entries

    def training(self) -> str:
        record = self.record
        run, source, environment = record["run"], record["source"], record["environment"]
        lines = [
            f"MLflow run {run['id']} ({run.get('name') or 'unnamed'}) of experiment "
            f"{run.get('experiment_name') or run['experiment_id']}: status {run.get('status')}, "
            f"from {run.get('start_time')} to {run.get('end_time')}."
        ]
        if source.get("name") or source.get("git_commit"):
            lines.append(
                f"Code: {source.get('name') or 'unknown'}"
                + (f", entry point {source['entry_point']}" if source.get("entry_point") else "")
                + (f", git commit {source['git_commit']}" if source.get("git_commit") else "")
                + (f" of {source['git_repo_url']}" if source.get("git_repo_url") else "")
                + (f" (branch {source['git_branch']})" if source.get("git_branch") else "")
                + {True: ", with uncommitted changes", False: ", no uncommitted changes"}.get(
                    source.get("git_dirty"), ""
                )
                + "."
            )
        if environment.get("python_version") or environment.get("platform"):
            lines.append(
                f"Environment: Python {environment.get('python_version') or 'unknown'} on "
                f"{environment.get('platform') or 'an unknown platform'}."
            )
        sweep = (self.subject.lineage or {}).get("sweep")
        if sweep:
            space = ", ".join(f"{key}={value}" for key, value in sweep["search_space"].items())
            lines.append(
                f"Selected in the tuning sweep {sweep['id']} ({sweep.get('name') or 'unnamed'})"
                f" of {sweep.get('trials')} trials; search space: {space or 'not recorded'}."
            )
        return "\n".join(lines)

    # ------------------------------------------------------------------ the data

    def datasets(self, model: str) -> None:
        """One DatasetPackage per dataset (name and digest); the model trainedOn, testedOn or
        (role unknown) other each, one relationship per run that logged them."""
        ids: dict[tuple[Any, Any], str] = {}
        groups: dict[tuple[str, str | None], list[str]] = {}
        data = self.record["data"]
        for role, kind in (
            ("training", "trainedOn"),
            ("evaluation", "testedOn"),
            ("other", "other"),
        ):
            for dataset in data[role]:
                identity = (dataset.get("name"), dataset.get("digest"))
                if identity not in ids:
                    ids[identity] = self.dataset(dataset)
                targets = groups.setdefault((kind, dataset.get("run_id")), [])
                if ids[identity] not in targets:
                    targets.append(ids[identity])
        for (kind, run_id), targets in groups.items():
            run = f"MLflow run {run_id or self.record['run']['id']}"
            comment = (
                f"dataset inputs of {run} whose role (training or evaluation) is not known"
                if kind == "other"
                else f"dataset inputs logged by {run}"
            )
            self.relate(kind, model, targets, comment, run_id or "")

    def dataset(self, dataset: Mapping[str, Any]) -> str:
        name, digest = dataset.get("name"), dataset.get("digest")
        uri = dataset.get("source_uri")
        schema = dataset.get("schema")
        tabular = isinstance(schema, Mapping) and "mlflow_colspec" in schema
        facts = [f"source type {dataset['source_type']}"] if dataset.get("source_type") else []
        if dataset.get("context"):
            facts.append(f"logged with context {dataset['context']}")
        if dataset.get("rows") is not None:
            facts.append(f"{dataset['rows']} rows")
        if dataset.get("columns") is not None:
            facts.append(f"{dataset['columns']} columns")
        properties = {
            "name": name,
            "comment": "MLflow dataset input: " + ", ".join(facts) if facts else None,
            "software_primaryPurpose": "data",
            "software_downloadLocation": uri if _is_uri(uri) else None,
            "software_sourceInfo": f"MLflow dataset source: {uri}"
            if uri and not _is_uri(uri)
            else None,
            # MLflow's digest is its own fingerprint (8 hex digits of an MD5 over at most the
            # first 10,000 rows, or over the source and schema, or what the caller gave), not a
            # hash of the whole content that a reader could recompute: so it is the identifier
            # MLflow knows the dataset by, beside its name, not a verifiedUsing Hash.
            "externalIdentifier": [
                {
                    "type": "ExternalIdentifier",
                    "externalIdentifierType": "other",
                    "identifier": digest,
                    "issuingAuthority": "MLflow",
                    "comment": "MLflow dataset digest",
                }
            ]
            if digest
            else None,
            # A column schema is tabular data; MLflow records nothing else about the kind.
            "dataset_datasetType": ["structured" if tabular else "noAssertion"],
        }
        return self.add(
            "dataset_DatasetPackage", self.id("dataset", str(name), str(digest)), properties
        )

    # ------------------------------------------------------------------ the environment

    def packages(self, model: str) -> None:
        environment = self.record["environment"]
        targets = []
        for requirement in environment.get("requirements") or ():
            name = requirement.get("name")
            if not name:
                continue  # not a requirement (an option line, or unparsable)
            version = pinned_version(requirement)
            properties = {
                "name": name,
                "software_packageVersion": version,
                "software_packageUrl": pypi_purl(name, version),
                "comment": f"requirement: {requirement['line']}",
            }
            targets.append(self.add("software_Package", self.id("package", name), properties))
        if targets:
            where = environment.get("requirements_from") or "the run"
            self.relate("dependsOn", model, targets, f"the requirements in {where}", "")

    def relate(self, kind: str, source: str, targets: list[str], comment: str, key: str) -> None:
        properties = {"relationshipType": kind, "from": source, "to": targets, "comment": comment}
        self.add("Relationship", self.id("relationship", kind, key), properties)

    # ------------------------------------------------------------------ the audit

    def annotations(self, model: str) -> None:
        """Each rule of the policy asked of the subject, as the audit decided it."""
        for outcome in self.subject.outcomes():
            rule, status = outcome.rule, outcome.status
            lines = [f"mlflow-audit {status}: {rule.id} ({rule.severity}) {rule.title}"]
            for finding in outcome.findings:
                lines.append(f"found: {finding.message}")
                if finding.waiver is not None:
                    lines.append(f"waived: {finding.waiver.reason}")
            if status == "fail":
                lines.append(f"fix: {outcome.remediation}")
            elif status == "pass":
                evidence = outcome.evidence
                if evidence is not None:
                    lines.append(f"evidence: {evidence.text}")
                places = evidence_places(self.record, rule)
                if places:
                    lines.append("at: " + ", ".join(places))
            elif outcome.reason:
                lines.append(f"why: {outcome.reason}")
            citations = outcome.citations
            if citations:
                lines.append("relevant to: " + ", ".join(citations))
            properties = {
                "annotationType": "review",
                "subject": model,
                "contentType": "text/plain",
                "statement": "\n".join(lines),
            }
            self.add("Annotation", self.id("rule", rule.id), properties)


def _given(value: Any) -> bool:
    return value is not None and value != "" and value != []


def _is_uri(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and _URI.fullmatch(value) is not None


def _seconds(text: Any) -> str | None:
    """An ISO 8601 time as SPDX's DateTimeStamp (UTC, whole seconds), or None when it is not
    a time with a zone."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _reference(kind: str, locator: str, comment: str) -> dict[str, Any]:
    return {
        "type": "ExternalRef",
        "externalRefType": kind,
        "locator": [locator],
        "comment": comment,
    }


def _metric_key(metric: Mapping[str, Any]) -> str:
    dataset = metric.get("dataset")
    if not dataset:
        return str(metric["key"])
    named = f" on {dataset['name']}" if dataset.get("name") else " on a dataset"
    digest = f" (digest {dataset['digest']})" if dataset.get("digest") else ""
    return f"{metric['key']}{named}{digest}"


def _number(metric: Mapping[str, Any]) -> str:
    value = metric["value"]
    return repr(value) if isinstance(value, float) else str(value)


_APPLICATION = (
    ("intended_purpose", "Intended purpose"),
    ("intended_users", "Intended users"),
    ("persons_affected", "Persons affected"),
    ("interactions", "Interactions"),
    ("user_interface", "User interface"),
    ("human_oversight", "Human oversight"),
    ("instructions_for_use", "Instructions for use"),
)


def _application(declared: Mapping[str, Any]) -> str | None:
    """What the system card declares about the model's use, each part labelled."""
    parts = []
    system = declared.get("system") or {}
    if system.get("name"):
        version = f" {system['version']}" if system.get("version") else ""
        parts.append(f"AI system: {system['name']}{version}")
    for key, label in _APPLICATION:
        if declared.get(key):
            parts.append(f"{label}: {declared[key]}")
    deployment = declared.get("deployment") or {}
    forms = deployment.get("forms")
    if forms:
        parts.append("Deployment: " + ("; ".join(forms) if isinstance(forms, list) else forms))
    if deployment.get("hardware"):
        parts.append(f"Hardware: {deployment['hardware']}")
    return "\n".join(parts) or None
