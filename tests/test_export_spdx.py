"""The SPDX 3.0.1 export (audit/exports/spdx.py): every run and model version of the test stores
validated, offline, with SPDX's own JSON Schema and SHACL model (tests/reference/spdx-3.0.1) the
way spdx3-validate does it, read back with SPDX's Python bindings, and its facts checked."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import rdflib
import spdx_python_model
from spdx3_validate.core import check_graph
from spdx3_validate.spdx_versions import find_version

import audit
from audit.exports import ExportSettings, Subject, spdx
from audit.policy import load_policy
from tests.conftest import EXPORT_DATE, ExportCase

REFERENCE = Path(__file__).parent / "reference" / "spdx-3.0.1"
#: The files as vendored (README.md there says from where): a changed byte fails here.
VENDORED = {
    "schema.json": "59f59713c7d73ff0d833f4f468df974a689fc9dd36dc5510f1875ff85d276c54",
    "spdx-context.jsonld": "c72b0928f094c83e5c127784edb1ebca2af74a104fcacc007c332b23cbc788bd",
    "spdx-model.ttl": "1e6df676d5a4108de90362170b0933da53f929ae8147453cea0dffadb804fae5",
}
SPDX_VERSION = find_version(spdx.CONTEXT)
POLICY = load_policy(None).to_dict()


def settings_for(store: str, generated_at: str = EXPORT_DATE) -> ExportSettings:
    return ExportSettings(generated_at, audit.__version__, POLICY, store)


@dataclass(frozen=True)
class Export:
    case: ExportCase
    data: bytes
    document: dict[str, Any]

    @property
    def subject(self) -> Subject:
        return self.case.subject

    @property
    def record(self) -> Any:
        return self.subject.record

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [element for element in self.document["@graph"] if element["type"] == kind]

    def element(self, spdx_id: str) -> dict[str, Any]:
        return next(e for e in self.document["@graph"] if e.get("spdxId") == spdx_id)

    @property
    def model(self) -> dict[str, Any]:
        (root,) = self.of_type("SpdxDocument")[0]["rootElement"]
        return self.element(root)

    def related(self, kind: str) -> list[dict[str, Any]]:
        """The elements the model has a `kind` relationship to."""
        return [
            self.element(target)
            for relationship in self.of_type("Relationship")
            if relationship["relationshipType"] == kind
            and relationship["from"] == self.model["spdxId"]
            for target in relationship["to"]
        ]


@pytest.fixture(scope="module")
def exports(export_cases: list[ExportCase]) -> list[Export]:
    made = []
    for case in export_cases:
        data = spdx.render(case.subject, settings_for(case.store))
        made.append(Export(case, data, json.loads(data)))
    return made


@pytest.fixture(scope="module")
def champion(exports: list[Export]) -> Export:
    """The demo's champion, documented with the sample system card."""
    return next(e for e in exports if e.record.get("declared", {}).get("card"))


@pytest.fixture(scope="module")
def shacl_model() -> rdflib.Graph:
    graph = rdflib.Graph()
    graph.parse(REFERENCE / "spdx-model.ttl", format="turtle")
    return graph


@pytest.fixture(scope="module")
def schema() -> jsonschema_rs.Validator:
    return jsonschema_rs.Draft202012Validator(
        json.loads((REFERENCE / "schema.json").read_text(encoding="utf-8"))
    )


def rdf_graph(document: dict[str, Any]) -> rdflib.Graph:
    """The document as RDF, as spdx3-validate parses it, with the vendored context in place of
    the context's URL (which rdflib would fetch)."""
    context = json.loads((REFERENCE / "spdx-context.jsonld").read_text(encoding="utf-8"))
    assert document["@context"] == spdx.CONTEXT
    graph = rdflib.Graph()
    graph.parse(data=json.dumps({**document, "@context": context["@context"]}), format="json-ld")
    return graph


def shacl_errors(graph: rdflib.Graph, shacl_model: rdflib.Graph) -> list[str]:
    return check_graph(graph, shacl_model, SPDX_VERSION, False)


def test_the_reference_files_are_the_vendored_ones() -> None:
    readme = (REFERENCE / "README.md").read_text(encoding="utf-8")
    for name, digest in VENDORED.items():
        assert hashlib.sha256((REFERENCE / name).read_bytes()).hexdigest() == digest, name
        assert f"{digest}  {name}" in readme, f"README.md gives another sha256 of {name}"


# ----------------------------------------------------------------------- validity


def test_every_export_is_valid_under_the_spdx_json_schema(
    exports: list[Export], schema: jsonschema_rs.Validator
) -> None:
    failures = {
        export.case.id: failing_elements(export.document)
        for export in exports
        if not schema.is_valid(export.document)
    }
    assert len(exports) == 45
    assert not failures, json.dumps(failures, indent=1)


def failing_elements(document: dict[str, Any]) -> list[str]:
    """Which elements of an invalid document the schema rejects, and why (an error of the
    whole document quotes all of it)."""
    schema = json.loads((REFERENCE / "schema.json").read_text(encoding="utf-8"))
    element_schema = jsonschema_rs.Draft202012Validator(
        {"$defs": schema["$defs"], "$ref": "#/$defs/AnyClass", "unevaluatedProperties": False}
    )
    return [
        f"{element['type']} {element.get('spdxId', element.get('@id'))}: {error.message[:300]}"
        for element in document["@graph"]
        for error in list(element_schema.iter_errors(element))[:1]
    ] or ["(the document, not one element)"]


def test_every_export_conforms_to_the_spdx_shacl_model(
    exports: list[Export], shacl_model: rdflib.Graph
) -> None:
    """One pySHACL run over all the documents merged (each alone takes 1 to 2 s; merged, the
    45 take about 14 s), which the distinct spdxIds of `test_spdx_ids_...` make sound."""
    merged = rdflib.Graph()
    for export in exports:
        merged += rdf_graph(export.document)
    errors = shacl_errors(merged, shacl_model)
    owner = {
        element["spdxId"]: export.case.id
        for export in exports
        for element in export.document["@graph"]
        if "spdxId" in element
    }
    cases = {
        owner.get(node, node) for error in errors for node in re.findall(r"<(urn:[^>]+)>", error)
    }
    assert not errors, f"{sorted(cases)}\n" + "\n".join(errors[:5])


def test_every_export_is_read_by_spdxs_python_bindings(exports: list[Export]) -> None:
    """spdx-python-model (SPDX's shacl2code bindings) types every property on reading, and
    `link` names every reference that no element of the document answers."""
    for export in exports:
        model, objects = spdx_python_model.load_data(copy.deepcopy(export.document))
        assert objects.link() == set(), export.case.id
        (package,) = objects.foreach_type(model.ai_AIPackage)
        assert package.name == export.subject.name, export.case.id


def test_spdx_ids_are_distinct_across_subjects_and_stores(exports: list[Export]) -> None:
    """The same model version in two stores is two things, and no two documents disagree
    about an element they share."""
    seen: dict[str, str] = {}
    for export in exports:
        for element in export.document["@graph"]:
            if "spdxId" in element:
                assert element["spdxId"].startswith("urn:uuid:")
                assert seen.setdefault(element["spdxId"], export.case.id) == export.case.id


#: Changes SPDX forbids: (element type, property, new value; None removes the property).
SCHEMA_CONTROLS = {
    "a time with fractions of a second": ("CreationInfo", "created", "2026-12-01T00:00:00.5Z"),
    "a dataset without dataset_datasetType": (
        "dataset_DatasetPackage",
        "dataset_datasetType",
        None,
    ),
    "a property SPDX does not define": ("ai_AIPackage", "ai_accuracy", "0.9"),
    "a relationship type SPDX does not define": ("Relationship", "relationshipType", "evaluatedOn"),
}
TOOL = "the document's Tool"
SHACL_CONTROLS = {
    "a Tool as the model's supplier": ("ai_AIPackage", "suppliedBy", TOOL),
    "a relationship to an element the document lacks": (
        "Relationship",
        "to",
        ["urn:uuid:00000000-0000-5000-8000-000000000000"],
    ),
}


def mutated(document: dict[str, Any], kind: str, key: str, value: Any) -> dict[str, Any]:
    document = copy.deepcopy(document)
    element = next(e for e in document["@graph"] if e["type"] == kind)
    if value is None:
        del element[key]
    else:
        tool = next(e["spdxId"] for e in document["@graph"] if e["type"] == "Tool")
        element[key] = tool if value == TOOL else value
    return document


@pytest.mark.parametrize("control", sorted(SCHEMA_CONTROLS))
def test_the_schema_rejects_what_spdx_forbids(
    champion: Export, schema: jsonschema_rs.Validator, control: str
) -> None:
    assert not schema.is_valid(mutated(champion.document, *SCHEMA_CONTROLS[control]))


@pytest.mark.parametrize("control", sorted(SHACL_CONTROLS))
def test_the_shacl_model_rejects_what_spdx_forbids(
    champion: Export, schema: jsonschema_rs.Validator, shacl_model: rdflib.Graph, control: str
) -> None:
    """What the JSON Schema cannot see: the class of what a reference points at."""
    document = mutated(champion.document, *SHACL_CONTROLS[control])
    assert schema.is_valid(document)
    assert shacl_errors(rdf_graph(document), shacl_model)


# ----------------------------------------------------------------------- determinism, safety


def test_the_same_facts_give_the_same_bytes_and_a_date_changes_only_the_date(
    exports: list[Export],
) -> None:
    for export in exports:
        assert spdx.render(export.subject, settings_for(export.case.store)) == export.data
        later = spdx.render(export.subject, settings_for(export.case.store, "2027-01-02T03:04:05Z"))
        assert later != export.data
        assert later.replace(b'"created":"2027-01-02T03:04:05Z"', b"") == export.data.replace(
            b'"created":"2026-12-01T00:00:00Z"', b""
        ), export.case.id


def test_the_date_is_written_as_spdx_wants_it(exports: list[Export]) -> None:
    """SPDX's DateTimeStamp: UTC, whole seconds; a date without a time zone is no date."""
    export = exports[0]
    data = spdx.render(
        export.subject, settings_for(export.case.store, "2026-12-01T02:00:00.75+02:00")
    )
    assert json.loads(data)["@graph"][0]["created"] == "2026-12-01T00:00:00Z"
    with pytest.raises(ValueError, match="time zone"):
        spdx.render(export.subject, settings_for(export.case.store, "2026-12-01T00:00:00"))


def test_a_hostile_run_name_is_carried_exactly_and_escaped(exports: list[Export]) -> None:
    (export,) = [e for e in exports if "\x1b" in (e.record["run"]["name"] or "")]
    name = export.record["run"]["name"]
    assert b"\x1b" not in export.data and b"\\u001b[31m" in export.data
    assert export.model["name"] == name
    literals = {
        str(o) for o in rdf_graph(export.document).objects() if isinstance(o, rdflib.Literal)
    }
    assert name in literals


# ----------------------------------------------------------------------- the facts


def _datasets(export: Export, role: str) -> Iterator[dict[str, Any]]:
    yield from export.record["data"][role]


def _digests(package: dict[str, Any]) -> list[str]:
    return [
        identifier["identifier"]
        for identifier in package.get("externalIdentifier", [])
        if identifier.get("issuingAuthority") == "MLflow"
    ]


def test_each_dataset_is_a_dataset_package_with_its_digest(exports: list[Export]) -> None:
    checked = 0
    for export in exports:
        packages = export.of_type("dataset_DatasetPackage")
        for role in ("training", "evaluation", "other"):
            for dataset in _datasets(export, role):
                (package,) = [
                    p
                    for p in packages
                    if p.get("name") == dataset["name"] and _digests(p) == [dataset["digest"]]
                ]
                tabular = "mlflow_colspec" in (dataset["schema"] or {})
                assert package["dataset_datasetType"] == [
                    "structured" if tabular else "noAssertion"
                ]
                if (dataset["source_uri"] or "").startswith(("s3://", "file://")):
                    assert package["software_downloadLocation"] == dataset["source_uri"]
                checked += 1
    assert checked > 50


def test_the_model_is_trained_and_tested_on_the_datasets_of_their_role(
    exports: list[Export],
) -> None:
    roles = {"trainedOn": "training", "testedOn": "evaluation", "other": "other"}
    for export in exports:
        for kind, role in roles.items():
            related = {(p.get("name"), *(_digests(p) or [None])) for p in export.related(kind)}
            logged = {(d["name"], d["digest"]) for d in _datasets(export, role)}
            assert related == logged, (export.case.id, kind)
    evaluated = [e for e in exports if e.subject.label == "churn-classifier v2"]
    assert len(evaluated) == 2 and all(e.related("testedOn") for e in evaluated)


def test_each_metric_names_the_dataset_it_was_computed_on(exports: list[Export]) -> None:
    with_dataset = 0
    for export in exports:
        entries = export.model.get("ai_metric", [])
        keys = [entry["key"] for entry in entries]
        assert len(keys) == len(set(keys)) == len(export.record["metrics"]), export.case.id
        for metric, entry in zip(export.record["metrics"], entries, strict=True):
            dataset = metric["dataset"]
            expected = metric["key"]
            if dataset:
                expected += f" on {dataset['name']} (digest {dataset['digest']})"
                with_dataset += 1
            assert entry["key"] == expected
            assert float(entry["value"]) == pytest.approx(float(metric["value"]), nan_ok=True)
    assert with_dataset > 100


def test_each_requirement_is_a_package_with_its_purl(exports: list[Export]) -> None:
    pinned = 0
    for export in exports:
        requirements = export.record["environment"]["requirements"] or []
        packages = {p["name"]: p for p in export.related("dependsOn")}
        assert set(packages) == {r["name"] for r in requirements if r["name"]}
        for requirement in requirements:
            package = packages[requirement["name"]]
            purl = f"pkg:pypi/{requirement['name']}"
            if requirement["pinned"] and requirement["specifier"].startswith("=="):
                version = requirement["specifier"].lstrip("=")
                assert package["software_packageVersion"] == version
                assert package["software_packageUrl"] == f"{purl}@{version}"
                pinned += 1
            else:
                assert "software_packageVersion" not in package
                assert package["software_packageUrl"] == purl
    assert pinned > 100


def test_each_rule_asked_is_a_review_with_its_outcome(exports: list[Export]) -> None:
    failing = 0
    for export in exports:
        statements = {
            a["statement"].split("\n")[0]: a["statement"]
            for a in export.of_type("Annotation")
            if a["subject"] == export.model["spdxId"] and a["annotationType"] == "review"
        }
        outcomes = export.subject.outcomes()
        assert len(statements) == len(outcomes)
        for outcome in outcomes:
            head = f"mlflow-audit {outcome.status}: {outcome.rule_id} ({outcome.severity}) "
            (statement,) = [s for h, s in statements.items() if h.startswith(head)]
            for finding in outcome.findings:
                assert f"found: {finding.message}" in statement
            if outcome.status == "fail":
                failing += 1
                assert f"fix: {outcome.remediation}" in statement
            for citation in outcome.citations:
                assert citation in statement
    assert failing > 20


def test_the_system_card_fills_the_ai_profile(champion: Export) -> None:
    declared, lineage, model = champion.record["declared"], champion.subject.lineage, champion.model
    supplier = champion.element(model["suppliedBy"])
    assert supplier["type"] == "Organization" and supplier["name"] == declared["provider"]["name"]
    assert model["ai_limitation"] == declared["limitations"]
    assert model["ai_standardCompliance"] == declared["standards"]
    assert declared["intended_purpose"] in model["ai_informationAboutApplication"]
    assert model["software_packageVersion"] == "3"
    assert model["software_downloadLocation"] == "models:/churn-classifier/3"
    assert model["releaseTime"] == lineage["version"]["created"][:19] + "Z"
    assert {"type": "ExternalRef", "externalRefType": "metrics"}.items() <= model["externalRef"][
        2
    ].items()
    assert champion.of_type("SpdxDocument")[0]["profileConformance"] == ["core", "software", "ai"]


def test_nothing_is_invented_and_no_profile_claimed_unmet(exports: list[Export]) -> None:
    """The AI profile requires a supplier, a release, a version and a download location of the
    model; the Dataset profile a build and release time and an originator of each dataset,
    which MLflow does not record."""
    claimed = 0
    for export in exports:
        model, profiles = export.model, export.of_type("SpdxDocument")[0]["profileConformance"]
        assert "dataset" not in profiles
        assert ("ai" in profiles) == all(key in model for key in spdx.AI_PROFILE_REQUIRED)
        claimed += "ai" in profiles
        if not export.subject.is_version:
            for key in ("software_packageVersion", "releaseTime", "suppliedBy"):
                assert key not in model, (export.case.id, key)
        if not export.record.get("declared", {}).get("card"):
            assert "ai_limitation" not in model and "suppliedBy" not in model
        assert "ai_typeOfModel" not in model and "ai_domain" not in model
    assert claimed == 1
