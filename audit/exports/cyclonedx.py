"""`export --format cyclonedx`: a CycloneDX 1.6 ML-BOM of one subject (JSON).

- ``metadata.component``: the model (``machine-learning-model``) with its ``modelCard``: the
  datasets it was trained and evaluated on (references to ``data`` components), its inputs and
  outputs (the logged signature), the estimator when autologging named it, every metric with the
  dataset it was computed on (``slice`` is that dataset's ``bom-ref``), and the system card's
  users, use cases and limitations for a model version;
- ``components``: the datasets (``data``; MLflow's digest as their version, the source as their
  URL) and the environment's packages (``library``, with a ``pkg:pypi`` purl, versioned when
  pinned) and Python (``platform``);
- ``formulation``: how the model was made: the training run (``build``) with its datasets and
  parameters, the code at its commit, the sweep it was a trial of, and each run that evaluated a
  model version (``test``);
- ``definitions`` and ``declarations``: the provisions the policy's rules are relevant to, as
  requirements; one claim per rule asked of the subject (its outcome, the record's places or the
  gap and its fix), and per provision an attestation of the claims for and against it. The
  evidence record's sha256 is the BOM's reference to the evidence itself: a signed report or
  export of the same run names the same digest.

Nothing is inferred that MLflow did not record: no learning approach or task unless logged, no
dataset hash algorithm (MLflow's digest is its own, not a SHA). The rendering is a pure function
of the subject and the settings; the parts every subject of a policy shares (the standards and
their requirements) are encoded once per policy.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import quote

import orjson

from audit.exports import ExportSettings, Subject, evidence_at, pinned_version, pypi_purl
from audit.policy import Outcome, Rule
from audit.provisions import load_catalog
from audit.result import SCOPE_NOTE, Finding

SUFFIX = ".cdx.json"
#: The CycloneDX versions a BOM can declare: it uses nothing 1.7 changed (tested valid under both).
SPEC_VERSIONS = ("1.6", "1.7")

MODEL_REF = "model"
_SOURCE_REF = "source-code"
_ASSESSOR_REF = "assessor"
#: Property names: MLflow's facts under ``mlflow:``, the audit's under ``mlflow-audit:``.
_MLFLOW = "mlflow:"
_AUDIT = "mlflow-audit:"


def render(subject: Subject, settings: ExportSettings) -> bytes:
    # Compact: an export of 100,000 runs writes 100,000 BOMs (indented, they are half again
    # as large and slower to write); `jq .` shows one indented.
    return orjson.dumps(bom(subject, settings)) + b"\n"


def bom(subject: Subject, settings: ExportSettings) -> dict[str, Any]:
    record = subject.record
    datasets = _datasets(record)
    libraries = _libraries(record)
    components = [*(component for _, component in datasets.values()), *libraries]
    document: dict[str, Any] = {
        "bomFormat": "CycloneDX",
        "specVersion": settings.cyclonedx_version,
        "serialNumber": "urn:uuid:"
        + settings.uuid(
            "cyclonedx", subject.key, subject.run.evidence_sha256, settings.generated_at
        ),
        "version": 1,
        "metadata": {
            "timestamp": settings.generated_at,
            "tools": {
                "components": [
                    {
                        "type": "application",
                        "name": "mlflow-audit",
                        "version": settings.tool_version,
                    }
                ]
            },
            "component": _model(subject, datasets),
            "properties": _properties(
                (f"{_AUDIT}store", settings.store),
                (
                    f"{_AUDIT}policy",
                    f"{settings.policy.get('name')} {settings.policy.get('version')}",
                ),
                (f"{_AUDIT}policy_sha256", settings.policy.get("sha256")),
                (f"{_AUDIT}status", subject.run.status),
            ),
        },
        "components": components,
    }
    if libraries:
        document["dependencies"] = [
            {"ref": MODEL_REF, "dependsOn": [library["bom-ref"] for library in libraries]}
        ]
    document["formulation"] = [_formula(subject, datasets)]
    standards = _standards(subject.rules)
    if standards.requirements:
        document["definitions"] = {"standards": standards.fragment}
        document["declarations"] = _declarations(subject, settings, standards)
    return document


# --------------------------------------------------------------------------- the model


def _model(
    subject: Subject, datasets: Mapping[tuple[str, str], tuple[str, dict[str, Any]]]
) -> dict[str, Any]:
    record = subject.record
    run = record["run"]
    lineage = subject.lineage
    logged = record["models"][0] if record.get("models") else None
    model: dict[str, Any] = {
        "type": "machine-learning-model",
        "bom-ref": MODEL_REF,
        "name": subject.name,
    }
    if subject.version is not None:
        model["version"] = subject.version
    description = None
    if lineage is not None:
        description = lineage["version"].get("description") or lineage["model"].get("description")
    if description:
        model["description"] = description
    properties = [
        (f"{_MLFLOW}run_id", run["id"]),
        (f"{_MLFLOW}run_name", run.get("name")),
        (f"{_MLFLOW}experiment", run.get("experiment_name") or run.get("experiment_id")),
    ]
    if logged is not None:
        properties += [
            (f"{_MLFLOW}model_uri", logged.get("uri")),
            (f"{_MLFLOW}model_id", logged.get("model_id")),
            (f"{_MLFLOW}flavors", ", ".join(logged.get("flavors") or ()) or None),
            (f"{_MLFLOW}mlflow_version", logged.get("mlflow_version")),
        ]
    if lineage is not None:
        properties += [
            (f"{_MLFLOW}registered_model", lineage["model"]["name"]),
            (f"{_MLFLOW}aliases", ", ".join(lineage["version"].get("aliases") or ()) or None),
            (f"{_MLFLOW}registered_at", lineage["version"].get("created")),
        ]
    properties.append((f"{_AUDIT}evidence_sha256", subject.run.evidence_sha256))
    model["properties"] = _properties(*properties)
    model["externalReferences"] = [
        {
            "type": "evidence",
            "url": f"urn:mlflow-audit:evidence:{quote(subject.key, safe='')}",
            "hashes": [{"alg": "SHA-256", "content": subject.run.evidence_sha256}],
            "comment": "The evidence record mlflow-audit collected from MLflow (sha256 of its "
            "canonical JSON, RFC 8785); a signed report or export of this subject names the "
            "same digest.",
        }
    ]
    model["modelCard"] = _model_card(subject, logged, datasets)
    return model


def _model_card(
    subject: Subject,
    logged: Mapping[str, Any] | None,
    datasets: Mapping[tuple[str, str], tuple[str, dict[str, Any]]],
) -> dict[str, Any]:
    record = subject.record
    parameters: dict[str, Any] = {}
    estimator = (record.get("tags") or {}).get("estimator_name")
    if estimator:
        parameters["modelArchitecture"] = estimator
    if datasets:
        parameters["datasets"] = [{"ref": ref} for ref, _ in datasets.values()]
    signature = logged.get("signature") if logged else None
    if isinstance(signature, Mapping):
        for side in ("inputs", "outputs"):
            described = _signature_format(signature.get(side))
            if described:
                parameters[side] = [{"format": described}]
    card: dict[str, Any] = {"bom-ref": "model-card"}
    if parameters:
        card["modelParameters"] = parameters
    metrics = [_metric(metric) for metric in record.get("metrics") or ()]
    if metrics:
        card["quantitativeAnalysis"] = {"performanceMetrics": metrics}
    considerations = _considerations(record.get("declared"))
    if considerations:
        card["considerations"] = considerations
    return card


def _signature_format(spec: Any) -> str | None:
    """The input or output of a logged signature in words: named columns or tensors."""
    if not isinstance(spec, list) or not spec:
        return None
    if all(isinstance(item, Mapping) and item.get("type") == "tensor" for item in spec):
        shapes = [item.get("tensor-spec", {}) for item in spec]
        return "; ".join(
            f"tensor {shape.get('dtype', '?')} {list(shape.get('shape') or [])}" for shape in shapes
        )
    types = sorted({str(item.get("type")) for item in spec if isinstance(item, Mapping)})
    return f"table of {len(spec)} column{'s' if len(spec) != 1 else ''} ({', '.join(types)})"


def _metric(metric: Mapping[str, Any]) -> dict[str, Any]:
    value = metric["value"]
    # The record keeps a value JSON cannot hold (NaN, Infinity) as its text.
    entry: dict[str, Any] = {
        "type": metric["key"],
        "value": value if isinstance(value, str) else repr(value),
    }
    dataset = metric.get("dataset")
    if isinstance(dataset, Mapping):
        entry["slice"] = _dataset_ref(dataset.get("name"), dataset.get("digest"))
    elif metric.get("context"):
        entry["slice"] = f"{metric['context']} data (no dataset logged)"
    return entry


def _considerations(declared: Any) -> dict[str, Any]:
    """What the system card says that CycloneDX has a place for."""
    if not isinstance(declared, Mapping):
        return {}
    placeholders = set(declared.get("placeholders") or ())
    fields = {
        "users": "intended_users",
        "useCases": "intended_purpose",
        "technicalLimitations": "limitations",
        "performanceTradeoffs": "metrics_rationale",
    }
    found = {}
    for name, key in fields.items():
        value = declared.get(key)
        if isinstance(value, str) and value and f"/{key}" not in placeholders:
            found[name] = [value]
    return found


# --------------------------------------------------------------------------- components


def _dataset_ref(name: Any, digest: Any) -> str:
    return f"dataset:{name}@{digest}" if digest else f"dataset:{name}"


def _datasets(record: Mapping[str, Any]) -> dict[tuple[str, str], tuple[str, dict[str, Any]]]:
    """Each dataset of the record once (by name and digest): its bom-ref and component."""
    found: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
    for role, entries in (record.get("data") or {}).items():
        for entry in entries or ():
            key = (str(entry.get("name")), str(entry.get("digest") or ""))
            if key in found:
                roles = found[key][1]["properties"]
                roles.append({"name": f"{_MLFLOW}dataset_role", "value": role})
                continue
            ref = _dataset_ref(*key)
            component: dict[str, Any] = {"type": "data", "bom-ref": ref, "name": key[0]}
            if key[1]:
                component["version"] = key[1]
            data: dict[str, Any] = {"type": "dataset", "name": key[0]}
            source = entry.get("source_uri")
            if isinstance(source, str) and source:
                data["contents"] = {"url": source}
            rows = entry.get("rows")
            if rows is not None:
                data["description"] = f"{rows} rows" + (
                    f", {entry['columns']} columns" if entry.get("columns") is not None else ""
                )
            component["data"] = [data]
            component["properties"] = _properties(
                (f"{_MLFLOW}dataset_role", role),
                (f"{_MLFLOW}dataset_digest", key[1] or None),
                (f"{_MLFLOW}dataset_source_type", entry.get("source_type")),
                (f"{_MLFLOW}logged_by_run", entry.get("run_id")),
            )
            found[key] = (ref, component)
    return found


def _libraries(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    environment = record.get("environment") or {}
    components: list[dict[str, Any]] = []
    python = environment.get("python_version")
    if python:
        components.append(
            {"type": "platform", "bom-ref": "python", "name": "python", "version": str(python)}
        )
    seen: set[str] = set()
    for requirement in environment.get("requirements") or ():
        name = str(requirement.get("name") or "")
        if not name:
            continue
        version = pinned_version(requirement)
        purl = pypi_purl(name, version)
        ref = purl or f"requirement:{name}"
        if ref in seen:
            continue
        seen.add(ref)
        library: dict[str, Any] = {"type": "library", "bom-ref": ref, "name": name}
        if version:
            library["version"] = version
        if purl:
            library["purl"] = purl
        if not version:
            library["properties"] = _properties(
                (f"{_MLFLOW}requirement", requirement.get("line") or name)
            )
        components.append(library)
    return components


# --------------------------------------------------------------------------- formulation


def _formula(
    subject: Subject, datasets: Mapping[tuple[str, str], tuple[str, dict[str, Any]]]
) -> dict[str, Any]:
    record = subject.record
    run = record["run"]
    source = record.get("source") or {}
    components = []
    if source.get("git_commit"):
        code: dict[str, Any] = {
            "type": "application",
            "bom-ref": _SOURCE_REF,
            "name": source.get("name") or "training code",
            "version": source["git_commit"],
            "pedigree": {"commits": [{"uid": source["git_commit"]}]},
        }
        if source.get("git_repo_url"):
            code["externalReferences"] = [{"type": "vcs", "url": source["git_repo_url"]}]
        code["properties"] = _properties(
            (f"{_MLFLOW}git_branch", source.get("git_branch")),
            (f"{_MLFLOW}git_dirty", _text(source.get("git_dirty"))),
        )
        components.append(code)
    training = [
        ref
        for (name, digest), (ref, component) in datasets.items()
        if any(
            p["value"] == "training"
            for p in component["properties"]
            if p["name"] == f"{_MLFLOW}dataset_role"
        )
    ]
    inputs: list[dict[str, Any]] = [{"resource": {"ref": ref}} for ref in training]
    params = record.get("hyperparameters") or {}
    if params:
        inputs.append({"parameters": [{"name": k, "value": str(v)} for k, v in params.items()]})
    workflow: dict[str, Any] = {
        "bom-ref": f"run:{run['id']}",
        "uid": run["id"],
        "name": f"MLflow run {run.get('name') or run['id']}",
        "description": f"The run that trained the model, in experiment "
        f"{run.get('experiment_name') or run.get('experiment_id')}; status {run.get('status')}.",
        "taskTypes": ["build"],
    }
    if components:
        workflow["resourceReferences"] = [{"ref": _SOURCE_REF}]
    if inputs:
        workflow["inputs"] = inputs
    workflow["outputs"] = [{"resource": {"ref": MODEL_REF}}]
    for field, key in (("timeStart", "start_time"), ("timeEnd", "end_time")):
        if run.get(key):
            workflow[field] = run[key]
    workflow["properties"] = _properties(
        (f"{_MLFLOW}user", run.get("user")),
        (f"{_MLFLOW}source_type", source.get("type")),
        (f"{_MLFLOW}source_name", source.get("name")),
        (f"{_MLFLOW}entry_point", source.get("entry_point")),
        (f"{_MLFLOW}parent_run_id", run.get("parent_run_id")),
    )
    workflows = [workflow]
    lineage = subject.lineage
    if lineage is not None:
        workflows += _lineage_workflows(lineage, datasets)
    formula: dict[str, Any] = {"bom-ref": "formulation"}
    if components:
        formula["components"] = components
    formula["workflows"] = workflows
    return formula


def _lineage_workflows(
    lineage: Mapping[str, Any], datasets: Mapping[tuple[str, str], tuple[str, dict[str, Any]]]
) -> list[dict[str, Any]]:
    workflows = []
    sweep = lineage.get("sweep")
    if isinstance(sweep, Mapping):
        search = sweep.get("search_space") or {}
        entry: dict[str, Any] = {
            "bom-ref": f"run:{sweep['id']}",
            "uid": sweep["id"],
            "name": f"MLflow run {sweep.get('name') or sweep['id']} (sweep)",
            "description": f"The sweep the training run was a trial of: "
            f"{sweep.get('trials')} trial runs.",
            "taskTypes": ["other"],
        }
        if search:
            entry["inputs"] = [
                {"parameters": [{"name": k, "value": str(v)} for k, v in search.items()]}
            ]
        workflows.append(entry)
    for evaluation in lineage.get("evaluations") or ():
        refs = [
            datasets[key][0]
            for key in (
                (str(d.get("name")), str(d.get("digest") or ""))
                for d in evaluation.get("datasets") or ()
            )
            if key in datasets
        ]
        workflows.append(
            {
                "bom-ref": f"run:{evaluation['id']}",
                "uid": evaluation["id"],
                "name": f"MLflow run {evaluation.get('name') or evaluation['id']} (evaluation)",
                "description": "A run that evaluated this model version: metrics "
                + ", ".join(evaluation.get("metrics") or ())
                + ".",
                "taskTypes": ["test"],
                "inputs": [
                    {"resource": {"ref": MODEL_REF}},
                    *({"resource": {"ref": r}} for r in refs),
                ],
            }
        )
    return workflows


# --------------------------------------------------------------------------- declarations


class _Standards:
    """The provisions a policy's rules are relevant to, as CycloneDX standards: encoded once
    per set of rules, shared by every BOM of an export."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        catalog = load_catalog()
        self.by_provision: dict[str, list[Rule]] = {}
        for rule in rules:
            for provision_id in rule.provisions:
                self.by_provision.setdefault(provision_id, []).append(rule)
        ordered = catalog.ordered(set(self.by_provision))
        self.requirements = {p.id: f"requirement:{p.id}" for p in ordered}
        standards: dict[str, dict[str, Any]] = {}
        for provision in ordered:
            framework = catalog.frameworks[provision.framework]
            standard = standards.setdefault(
                framework.id,
                {
                    "bom-ref": f"standard:{framework.id}",
                    "name": framework.title,
                    "version": framework.text_version,
                    "requirements": [],
                    "externalReferences": [{"type": "documentation", "url": framework.link}],
                },
            )
            standard["requirements"].append(
                {
                    "bom-ref": self.requirements[provision.id],
                    "identifier": provision.citation,
                    "title": provision.title,
                }
            )
        self.fragment = orjson.Fragment(orjson.dumps(list(standards.values())))


def _standards(rules: tuple[Rule, ...]) -> _Standards:
    """The standards of a set of rules, looked up by the tuple's identity (every subject of
    an export shares one or two tuples; hashing 24 rules per subject costs more than the
    lookup saves)."""
    return _cached(_STANDARDS, (id(rules),), rules, lambda: _Standards(rules))


def _declarations(
    subject: Subject, settings: ExportSettings, standards: _Standards
) -> dict[str, Any]:
    record = subject.record
    claims = []
    evidence = []
    statuses: dict[str, Outcome] = {}
    for rule, status, findings in subject.decided():
        statuses[rule.id] = status
        claim, proof = _claim(rule, status, findings, record)
        claims.append(claim)
        evidence.append(proof)
    policy = settings.policy
    return {
        "assessors": [
            {
                "bom-ref": _ASSESSOR_REF,
                "thirdParty": False,
                "organization": {"name": f"mlflow-audit {settings.tool_version} (automated check)"},
            }
        ],
        "attestations": [
            {
                "summary": f"{subject.label} against policy {policy.get('name')} "
                f"{policy.get('version')} (sha256 {policy.get('sha256')}): {subject.run.status}. "
                "Each provision's score is the share of its decided rules the evidence meets: "
                f"evidence mapped to the provision, not a verdict on it. {SCOPE_NOTE}",
                "assessor": _ASSESSOR_REF,
                "map": _attestation_map(standards, tuple(statuses.items())),
            }
        ],
        "claims": claims,
        "evidence": evidence,
    }


#: Places shown as a passing rule's evidence: a rule over every metric or requirement of a run
#: would list hundreds; the evidence record (its digest is the model's evidence reference)
#: holds them all.
_PLACES_SHOWN = 5

_OUTCOME_WORDS: dict[Outcome, str] = {
    "pass": "met",
    "fail": "not met",
    "waived": "not met, waived",
    "not_applicable": "not applicable",
    "unknown": "unknown",
}


def _claim(
    rule: Rule, status: Outcome, findings: tuple[Finding, ...], record: Mapping[str, Any]
) -> tuple[orjson.Fragment, orjson.Fragment]:
    """The rule's claim about the model and the evidence for or against it: for a pass, the
    places in the evidence record it rests on (the first few; the record, named by its digest,
    holds their values); for a gap, the findings' places and messages and the fix. Encoded once
    for every subject they read the same on: a claim that passes or is not decided always; its
    evidence when the places are the same; a gap when the findings are (runs share them)."""
    shared = _shared_parts(rule, status)
    if status == "pass":
        places = tuple(evidence_at(record, rule, limit=_PLACES_SHOWN))
        return shared.claim, _cached(
            _PASS_EVIDENCE, (id(rule), places), rule, lambda: _evidence(shared, places)
        )
    if status in ("fail", "waived"):
        key = (id(rule), status, *map(id, findings))
        return _cached(_GAPS, key, findings, lambda: _gap(shared, status, findings))
    return shared.claim, shared.proof


def _evidence(shared: _SharedParts, places: tuple[str, ...]) -> orjson.Fragment:
    shown = list(places[:_PLACES_SHOWN])
    if len(places) > _PLACES_SHOWN:
        shown.append("and more places of the same kind")
    if not shown:
        return shared.proof
    return orjson.Fragment(shared.proof_head + orjson.dumps("\n".join(shown)) + b"}}}]}")


def _gap(
    shared: _SharedParts, status: Outcome, findings: tuple[Finding, ...]
) -> tuple[orjson.Fragment, orjson.Fragment]:
    reasoning = (
        "Not met: "
        + "; ".join(f"{finding.pointer}: {finding.message}" for finding in findings)
        + f". Fix: {findings[0].remediation}"
    )
    waiver = findings[0].waiver if status == "waived" else None
    if waiver is not None:
        reasoning += f" Waived: {waiver.reason}"
    contents = "\n".join(finding.pointer for finding in findings)
    claim = orjson.Fragment(shared.claim_head + orjson.dumps(reasoning) + shared.claim_tail)
    proof = orjson.Fragment(shared.proof_head + orjson.dumps(contents) + b"}}}]}")
    return claim, proof


_T = TypeVar("_T")
#: What is encoded once and shared, each keyed by the identity of what it is made from: the
#: standards of a set of rules, a rule's parts for an outcome, the evidence of passes by rule
#: and places, gaps by rule, outcome and findings. Each entry holds the objects its key names,
#: so that the key stays theirs.
_STANDARDS: dict[tuple[Any, ...], tuple[Any, Any]] = {}
_SHARED: dict[tuple[Any, ...], tuple[Any, Any]] = {}
_PASS_EVIDENCE: dict[tuple[Any, ...], tuple[Any, Any]] = {}
_GAPS: dict[tuple[Any, ...], tuple[Any, Any]] = {}
_CACHED_AT_MOST = 20_000


def _cached(
    cache: dict[tuple[Any, ...], tuple[Any, Any]],
    key: tuple[Any, ...],
    holds: Any,
    make: Callable[[], _T],
) -> _T:
    held = cache.get(key)
    if held is None or not _same(held[0], holds):
        if len(cache) >= _CACHED_AT_MOST:
            cache.clear()
        held = cache[key] = (holds, make())
    value: _T = held[1]
    return value


def _same(held: Any, holds: Any) -> bool:
    if held is holds:
        return True
    if isinstance(holds, tuple):
        return len(held) == len(holds) and all(a is b for a, b in zip(held, holds, strict=True))
    return held is holds


class _SharedParts:
    """The encoded parts of a rule's claim and evidence that do not depend on the subject."""

    def __init__(self, rule: Rule, status: Outcome) -> None:
        evidence_ref = f"evidence:{rule.id}"
        head = {"bom-ref": f"claim:{rule.id}", "target": MODEL_REF, "predicate": rule.title}
        refs = {("evidence" if status == "pass" else "counterEvidence"): [evidence_ref]}
        if status == "pass":
            reasoning = "Met"
        else:
            why = rule.not_applicable if status == "not_applicable" else rule.unknown
            reasoning = f"{_OUTCOME_WORDS[status].capitalize()}: {why or 'no reason given'}"
        self.claim = orjson.Fragment(orjson.dumps({**head, "reasoning": reasoning, **refs}))
        encoded_head = orjson.dumps(head)
        self.claim_head = encoded_head[:-1] + b',"reasoning":'
        self.claim_tail = b"," + orjson.dumps(refs)[1:]
        proof = {
            "bom-ref": evidence_ref,
            "description": f"{_OUTCOME_WORDS[status]} ({rule.severity}, {rule.category})",
        }
        self.proof = orjson.Fragment(orjson.dumps(proof))
        self.proof_head = (
            orjson.dumps(proof)[:-1]
            + b',"data":[{"name":"evidence record","contents":{"attachment":{"content":'
        )


def _shared_parts(rule: Rule, status: Outcome) -> _SharedParts:
    return _cached(_SHARED, (id(rule), status), rule, lambda: _SharedParts(rule, status))


@functools.lru_cache(maxsize=256)
def _attestation_map(
    standards: _Standards, statuses: tuple[tuple[str, Outcome], ...]
) -> orjson.Fragment:
    """Per provision, the claims for and against it: the same for every subject whose rules
    have the same outcomes (most of a large audit's runs share a few patterns)."""
    status_of = dict(statuses)
    entries = []
    for provision, requirement in standards.requirements.items():
        relevant = [r.id for r in standards.by_provision[provision] if r.id in status_of]
        passed = [rule_id for rule_id in relevant if status_of[rule_id] == "pass"]
        failed = [rule_id for rule_id in relevant if status_of[rule_id] in ("fail", "waived")]
        undecided = [r for r in relevant if status_of[r] in ("not_applicable", "unknown")]
        entry: dict[str, Any] = {"requirement": requirement}
        if passed:
            entry["claims"] = [f"claim:{rule_id}" for rule_id in passed]
        if failed:
            entry["counterClaims"] = [f"claim:{rule_id}" for rule_id in failed]
        decided = len(passed) + len(failed)
        words = f"{len(passed)} of {decided} decided rules met"
        if undecided:
            words += "; not decided: " + ", ".join(
                f"{rule_id} ({_OUTCOME_WORDS[status_of[rule_id]]})" for rule_id in undecided
            )
        conformance: dict[str, Any] = {"rationale": words}
        if decided:
            conformance["score"] = round(len(passed) / decided, 4)
        entry["conformance"] = conformance
        entries.append(entry)
    return orjson.Fragment(orjson.dumps(entries))


# --------------------------------------------------------------------------- helpers


def _properties(*pairs: tuple[str, Any]) -> list[dict[str, str]]:
    return [{"name": name, "value": str(value)} for name, value in pairs if value not in (None, "")]


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return str(value).lower() if isinstance(value, bool) else str(value)
