"""`export --format cyclonedx`: CycloneDX 1.6 ML-BOMs, validated by cyclonedx-python-lib's own
JSON validator (the CycloneDX schemas it ships), for every run and version of the test stores."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

from audit.exports import ExportSettings, Subject
from audit.exports.cyclonedx import MODEL_REF, render
from audit.provisions import load_catalog
from tests.conftest import EXPORT_DATE, ExportCase, LineageStore, Store

SETTINGS = ExportSettings(
    generated_at=EXPORT_DATE,
    tool_version="0.1.0",
    policy={"name": "eu-ai-act-high-risk", "version": "1.1.0", "sha256": "ab" * 32},
    store="sqlite:///mlflow.db",
)


def _bom(subject: Subject, settings: ExportSettings = SETTINGS) -> dict[str, Any]:
    return json.loads(render(subject, settings))


def _validation_errors(document: bytes, version: SchemaVersion) -> str | None:
    error = JsonStrictValidator(version).validate_str(document.decode("utf-8"))
    if error is None:
        return None
    data = error.data
    return f"{getattr(data, 'message', data)} at {list(getattr(data, 'absolute_path', []))}"


def test_every_run_and_version_of_the_test_stores_is_a_valid_cyclonedx_16_bom(
    export_cases: list[ExportCase],
) -> None:
    invalid = {
        case.id: error
        for case in export_cases
        if (error := _validation_errors(render(case.subject, SETTINGS), SchemaVersion.V1_6))
    }
    assert not invalid, invalid
    assert sum(case.subject.is_version for case in export_cases) == 6


def test_the_boms_declared_17_validate_against_cyclonedx_17(export_cases: list[ExportCase]) -> None:
    """--cyclonedx-version 1.7: the same document, declared 1.7, is valid CycloneDX 1.7."""
    settings = ExportSettings(**{**SETTINGS.__dict__, "cyclonedx_version": "1.7"})
    invalid = {}
    for case in export_cases:
        document = render(case.subject, settings)
        assert json.loads(document)["specVersion"] == "1.7"
        error = _validation_errors(document, SchemaVersion.V1_7)
        if error:
            invalid[case.id] = error
    assert not invalid, invalid


def test_bom_refs_are_unique_and_every_reference_resolves(export_cases: list[ExportCase]) -> None:
    for case in export_cases:
        document = _bom(case.subject)
        refs: list[str] = []
        _collect(document, "bom-ref", refs)
        assert len(refs) == len(set(refs)), case.id
        pointed: list[str] = []
        for key in ("ref", "requirement", "target", "assessor"):
            _collect(document, key, pointed)
        for key in ("dependsOn", "claims", "counterClaims", "evidence", "counterEvidence"):
            _collect_lists(document, key, pointed)
        assert set(pointed) <= set(refs), (case.id, set(pointed) - set(refs))


def test_each_dataset_carries_its_digest_and_source(export_cases: list[ExportCase]) -> None:
    for case in export_cases:
        record = case.subject.record
        components = {c["bom-ref"]: c for c in _bom(case.subject)["components"]}
        for role, entries in record["data"].items():
            for entry in entries:
                ref = (
                    f"dataset:{entry['name']}@{entry['digest']}"
                    if entry["digest"]
                    else (f"dataset:{entry['name']}")
                )
                component = components[ref]
                assert component["type"] == "data"
                if entry["digest"]:
                    assert component["version"] == entry["digest"]
                    assert {"name": "mlflow:dataset_digest", "value": entry["digest"]} in (
                        component["properties"]
                    )
                assert {"name": "mlflow:dataset_role", "value": role} in component["properties"]
                if entry.get("source_uri"):
                    assert component["data"][0]["contents"]["url"] == entry["source_uri"]


def test_each_metric_names_the_dataset_it_was_computed_on(export_cases: list[ExportCase]) -> None:
    with_dataset = 0
    for case in export_cases:
        document = _bom(case.subject)
        card = document["metadata"]["component"]["modelCard"]
        metrics = card.get("quantitativeAnalysis", {}).get("performanceMetrics", [])
        record_metrics = case.subject.record["metrics"]
        assert len(metrics) == len(record_metrics), case.id
        refs = {c["bom-ref"] for c in document["components"]}
        for exported, metric in zip(metrics, record_metrics, strict=True):
            assert exported["type"] == metric["key"]
            if isinstance(metric["value"], str):  # NaN, Infinity: kept as MLflow's text
                assert exported["value"] == metric["value"]
            else:
                assert float(exported["value"]) == metric["value"]
            if metric["dataset"]:
                with_dataset += 1
                # The slice is the dataset component's bom-ref: a reader joins the two.
                assert exported["slice"] == (
                    f"dataset:{metric['dataset']['name']}@{metric['dataset']['digest']}"
                )
                assert exported["slice"] in refs or case.subject.is_version
    assert with_dataset > 20  # the logging, lineage and demo stores evaluate on named data


def test_a_version_bom_holds_its_lineage_and_the_system_card(
    export_cases: list[ExportCase],
) -> None:
    (champion,) = [
        c for c in export_cases if c.subject.is_version and "declared" in c.subject.record
        and c.subject.record["declared"].get("card")
    ]  # fmt: skip
    record = champion.subject.record
    document = _bom(champion.subject)
    model = document["metadata"]["component"]
    assert (model["name"], model["version"]) == ("churn-classifier", "3")
    considerations = model["modelCard"]["considerations"]
    assert considerations["useCases"] == [record["declared"]["intended_purpose"]]
    assert considerations["technicalLimitations"] == [record["declared"]["limitations"]]
    workflows = {w["uid"]: w for w in document["formulation"][0]["workflows"]}
    lineage = record["lineage"]
    assert workflows[record["run"]["id"]]["taskTypes"] == ["build"]
    assert workflows[lineage["sweep"]["id"]]["taskTypes"] == ["other"]
    for evaluation in lineage["evaluations"]:
        assert workflows[evaluation["id"]]["taskTypes"] == ["test"]
    code = document["formulation"][0]["components"][0]
    assert code["version"] == record["source"]["git_commit"]
    assert code["externalReferences"] == [{"type": "vcs", "url": record["source"]["git_repo_url"]}]


def test_declarations_state_each_rule_and_provision_as_the_audit_decided(
    export_cases: list[ExportCase],
) -> None:
    catalog = load_catalog()
    for case in export_cases:
        subject = case.subject
        document = _bom(subject)
        declarations = document["declarations"]
        claims = {c["bom-ref"]: c for c in declarations["claims"]}
        statuses = subject.statuses()
        assert set(claims) == {f"claim:{rule_id}" for rule_id in statuses}
        for rule_id, status in statuses.items():
            claim = claims[f"claim:{rule_id}"]
            assert claim["target"] == MODEL_REF
            assert ("evidence" in claim) == (status == "pass"), (case.id, rule_id)
            if status == "fail":
                assert claim["reasoning"].startswith("Not met: ")
        attestation = declarations["attestations"][0]
        assert "not a conformity assessment" in attestation["summary"]
        by_requirement = {entry["requirement"]: entry for entry in attestation["map"]}
        for outcome in subject.outcomes():
            for provision in outcome.provisions:
                if provision not in catalog:
                    continue
                entry = by_requirement[f"requirement:{provision}"]
                claim = f"claim:{outcome.rule_id}"
                if statuses[outcome.rule_id] == "pass":
                    assert claim in entry.get("claims", [])
                elif statuses[outcome.rule_id] in ("fail", "waived"):
                    assert claim in entry.get("counterClaims", [])
                else:  # not applicable or unknown: neither for nor against
                    assert claim not in entry.get("claims", []) + entry.get("counterClaims", [])
        standards = {s["bom-ref"]: s for s in document["definitions"]["standards"]}
        cited = {r["bom-ref"]: r for s in standards.values() for r in s["requirements"]}
        assert set(by_requirement) == set(cited)


def test_packages_carry_purls_versioned_when_pinned(export_cases: list[ExportCase]) -> None:
    checked = 0
    for case in export_cases:
        libraries = [c for c in _bom(case.subject)["components"] if c["type"] == "library"]
        for requirement in case.subject.record["environment"]["requirements"] or ():
            matching = [c for c in libraries if c["name"] == requirement["name"]]
            assert matching, (case.id, requirement)
            library = matching[0]
            purl = PackageURL.from_string(library["purl"])
            assert purl.type == "pypi"
            assert purl.name == requirement["name"].lower().replace("_", "-")
            if requirement["pinned"] and requirement["specifier"].startswith("=="):
                assert purl.version == requirement["specifier"][2:] == library["version"]
                checked += 1
            else:
                assert purl.version is None and "version" not in library
    assert checked > 20


def test_a_bom_is_the_same_bytes_every_time_and_dated_by_the_settings(
    export_cases: list[ExportCase],
) -> None:
    case = export_cases[-1]
    first, second = render(case.subject, SETTINGS), render(case.subject, SETTINGS)
    assert first == second
    later = ExportSettings(**{**SETTINGS.__dict__, "generated_at": "2027-01-01T00:00:00Z"})
    a, b = json.loads(first), json.loads(render(case.subject, later))
    assert a["metadata"]["timestamp"] == EXPORT_DATE
    assert b["metadata"]["timestamp"] == "2027-01-01T00:00:00Z"
    assert a["serialNumber"] != b["serialNumber"]
    for document in (a, b):
        del document["metadata"]["timestamp"], document["serialNumber"]
    assert a == b


def test_hostile_names_are_carried_as_data(export_cases: list[ExportCase]) -> None:
    (hostile,) = [c for c in export_cases if "<b>bold</b>" in (c.subject.run.run_name or "")]
    document = render(hostile.subject, SETTINGS)
    assert b"\x1b" not in document  # JSON escapes control characters
    model = json.loads(document)["metadata"]["component"]
    assert model["name"] == hostile.subject.run.run_name  # the same text, not markup


# --------------------------------------------------------------------------- the command


def test_export_writes_one_bom_per_subject_into_a_folder(
    cli, lineage_store: LineageStore, tmp_path: Path
) -> None:
    out = tmp_path / "boms"
    done = cli(
        "export", "--tracking-uri", lineage_store.uri, "-f", "cyclonedx",
        "--model", lineage_store.model, "--date", "2026-12-01", "-o", f"{out}/",
    )  # fmt: skip
    assert done.code == 0, done.err
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"{lineage_store.model}-v{v}.cdx.json" for v in (1, 2, 3)]
    assert "Exported 3 cyclonedx documents" in done.err
    again = tmp_path / "again"
    cli(
        "export", "--tracking-uri", lineage_store.uri, "-f", "cyclonedx",
        "--model", lineage_store.model, "--date", "2026-12-01", "-o", f"{again}/",
    )  # fmt: skip
    for name in names:  # the same MLflow data and date: the same bytes
        assert (out / name).read_bytes() == (again / name).read_bytes()


def test_export_of_one_version_goes_to_stdout_or_a_file(
    cli, lineage_store: LineageStore, tmp_path: Path
) -> None:
    spec = f"{lineage_store.model}/2"
    shown = cli("export", "--tracking-uri", lineage_store.uri, "-f", "cyclonedx", "--model", spec)
    assert shown.code == 0, shown.err
    document = json.loads(shown.out)
    assert document["metadata"]["component"]["version"] == "2"
    target = tmp_path / "bom.json"
    written = cli(
        "export", "--tracking-uri", lineage_store.uri, "-f", "cyclonedx", "--model", spec,
        "-o", str(target),
    )  # fmt: skip
    assert written.code == 0 and json.loads(target.read_text())["bomFormat"] == "CycloneDX"
    assert f"to {target}" in written.err
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # as any new file, not private


def test_several_subjects_without_a_folder_fail_and_write_nothing(
    cli, sqlite_store: Store, tmp_path: Path
) -> None:
    target = tmp_path / "bom.json"
    target.write_text("kept")
    done = cli("export", "--tracking-uri", sqlite_store.uri, "-f", "cyclonedx", "-o", str(target))
    assert done.code == 2
    assert "give -o DIR/" in done.err and len(done.err.strip().splitlines()) == 1
    assert target.read_text() == "kept"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--date", "yesterday"], "--date 'yesterday' is not YYYY-MM-DD"),
        (["--model", "no-such-model/1"], "no-such-model"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    cli, sqlite_store: Store, tmp_path: Path, arguments: list[str], message: str
) -> None:
    out = tmp_path / "out"
    done = cli(
        "export", "--tracking-uri", sqlite_store.uri, "-f", "cyclonedx", "-o", f"{out}/",
        *arguments,
    )  # fmt: skip
    assert done.code == 2
    assert message in done.err and len(done.err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_missing_store_fails_closed(cli, tmp_path: Path) -> None:
    done = cli(
        "export", "--tracking-uri", f"sqlite:///{tmp_path / 'nothing.db'}", "-f", "cyclonedx",
        "-o", f"{tmp_path / 'out'}/",
    )  # fmt: skip
    assert done.code == 2 and "Traceback" not in done.err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- helpers


def _collect(node: Any, key: str, into: list[str]) -> None:
    if isinstance(node, Mapping):
        for name, value in node.items():
            if name == key and isinstance(value, str):
                into.append(value)
            _collect(value, key, into)
    elif isinstance(node, list):
        for item in node:
            _collect(item, key, into)


def _collect_lists(node: Any, key: str, into: list[str]) -> None:
    if isinstance(node, Mapping):
        for name, value in node.items():
            if name == key and isinstance(value, list):
                into.extend(v for v in value if isinstance(v, str))
            _collect_lists(value, key, into)
    elif isinstance(node, list):
        for item in node:
            _collect_lists(item, key, into)
