"""Policies: built-ins, x-audit mapping, composition, and every way a policy can be malformed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from audit.errors import PolicyError
from audit.evaluation import evaluate_record, judge_record
from audit.policy import builtin_policy_names, load_policy
from audit.resources import schema_path
from tests.conftest import REPO, Store

SAMPLE_POLICY = REPO / "samples" / "policies" / "acme-high-risk.yaml"


def test_builtin_policies_load_with_annotated_rules() -> None:
    assert builtin_policy_names() == ["baseline", "eu-ai-act-annex-iv", "eu-ai-act-high-risk"]
    default = load_policy()
    assert default.name == "eu-ai-act-high-risk" and default.version == "1.1.0"
    assert default.needs.artifacts and default.needs.registry
    ids = {rule.id for rule in default.rules}
    assert {"data.training-dataset", "metrics.evaluation", "model.signature",
            "environment.requirement-unpinned", "source.non-interactive"} <= ids  # fmt: skip
    baseline = load_policy("baseline")
    assert {rule.category for rule in baseline.rules} == {
        "data",
        "hyperparameters",
        "metrics",
        "environment",
        "source",
    }


def _record(**sections: object) -> dict:
    from tests.records import complete_record

    record = complete_record()
    record.update(sections)
    return record


def write(tmp_path: Path, name: str, content: object) -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_error_maps_to_nearest_annotation_through_refs(tmp_path: Path) -> None:
    policy = load_policy(
        write(
            tmp_path,
            "nested.json",
            {
                "properties": {
                    "hyperparameters": {
                        "x-audit": {
                            "id": "hyperparameters.outer", "category": "hyperparameters",
                            "severity": "warning", "provisions": [], "title": "outer",
                            "remediation": "r",
                        },
                        "allOf": [{"$ref": "#/$defs/inner"}, {"required": ["seed"]}],
                    }
                },
                "$defs": {
                    "inner": {
                        "x-audit": {
                            "id": "hyperparameters.inner", "category": "hyperparameters",
                            "severity": "error", "provisions": ["eu-ai-act/annex-iv/2/b"],
                            "title": "inner", "remediation": "r",
                        },
                        "required": ["learning_rate"],
                    }
                },
            },
        )
    )  # fmt: skip
    findings = evaluate_record(_record(hyperparameters={}), policy)
    assert [(f.rule_id, f.severity, f.pointer) for f in findings] == [
        ("hyperparameters.inner", "error", "/hyperparameters/learning_rate"),
        ("hyperparameters.outer", "warning", "/hyperparameters/seed"),
    ]
    assert findings[0].provisions == ("eu-ai-act/annex-iv/2/b",)


def test_unannotated_constraint_is_still_a_finding(tmp_path: Path) -> None:
    policy = load_policy(
        write(tmp_path, "plain.json", {"properties": {"tags": {"required": ["team"]}}})
    )
    (finding,) = evaluate_record(_record(), policy)
    assert finding.rule_id == "schema:/properties/tags/required"
    assert finding.severity == "error" and finding.category == "run"
    assert finding.pointer == "/tags/team"


def test_user_policy_extends_a_builtin_without_copying_it(tmp_path: Path) -> None:
    policy = load_policy(SAMPLE_POLICY)
    builtin_ids = {rule.id for rule in load_policy("eu-ai-act-high-risk").rules}
    ids = {rule.id for rule in policy.rules}
    assert builtin_ids < ids and "run.team-tag" in ids
    assert {"run.team-tag", "model.version-description"} <= ids
    findings = {f.rule_id for f in evaluate_record(_record(), policy)}
    assert findings == {"run.team-tag", "model.version-description"}  # v1 has no description
    described = _record(tags={"team": "risk-models"})
    described["models"][0]["registered_versions"][0]["description"] = "first version"
    assert evaluate_record(described, policy) == ()
    # A run whose model is not registered has no version to describe: not applicable.
    unregistered = _record(tags={"team": "risk-models"})
    unregistered["models"][0]["registered_versions"] = []
    verdict = judge_record(unregistered, policy)
    assert "model.version-description" in verdict.not_applicable
    assert {f.rule_id for f in verdict.findings} == {"model.registered"}


def test_relative_ref_to_a_neighbouring_yaml_file(tmp_path: Path) -> None:
    write(
        tmp_path,
        "common.yaml",
        "properties:\n  tags:\n    x-audit: {id: run.owner, category: run, severity: warning,\n"
        "      provisions: [], title: The run names its owner, remediation: set tag owner}\n"
        "    required: [owner]\n",
    )
    policy = load_policy(write(tmp_path, "team.yaml", "allOf:\n  - $ref: common.yaml\n"))
    (finding,) = evaluate_record(_record(), policy)
    assert (finding.rule_id, finding.pointer) == ("run.owner", "/tags/owner")


def test_complete_record_passes_default_policy() -> None:
    assert evaluate_record(_record(), load_policy()) == ()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.json", "{not json", "invalid JSON at line 1 column 2"),
        ("bad.yaml", "properties: [unclosed", "invalid YAML at line"),
        ("list.yaml", "- a\n- b\n", "a policy is a JSON Schema object"),
        ("notschema.json", {"type": "colour"}, "not a valid JSON Schema at /type"),
        ("regex.json", {"properties": {"a": {"pattern": "("}}}, "not a valid JSON Schema"),
        ("draft7.json", {"$schema": "http://json-schema.org/draft-07/schema#"},
         "$schema must be https://json-schema.org/draft/2020-12/schema"),
        ("unknown.json",
         {"properties": {"a": {"x-audit": {"id": "run.a", "category": "run", "severity": "error",
                                           "provisions": ["eu-ai-act/art-99"], "title": "t",
                                           "remediation": "r"}}}},
         "names unknown provision 'eu-ai-act/art-99'"),
        ("badnote.json",
         {"properties": {"a": {"x-audit": {"id": "run.a", "category": "run",
                                           "severity": "fatal", "provisions": [], "title": "t",
                                           "remediation": "r"}}}},
         "x-audit at /properties/a/severity"),
        ("remote.json", {"$ref": "https://example.com/policy.json"}, "not a local file"),
        ("dangling.json", {"$ref": "missing.json"}, "does not exist"),
    ],
)  # fmt: skip
def test_malformed_policies_are_rejected(
    tmp_path: Path, name: str, content: object, message: str
) -> None:
    with pytest.raises(PolicyError) as error:
        load_policy(write(tmp_path, name, content))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("bad", ["bad.json", "unknown.json"])
def test_malformed_policy_exits_2(cli, tmp_path: Path, sqlite_store: Store, bad: str) -> None:
    content = "{" if bad == "bad.json" else {
        "properties": {"a": {"x-audit": {"id": "run.a", "category": "run", "severity": "error",
                                         "provisions": ["nope"], "title": "t", "remediation": "r"}}}
    }  # fmt: skip
    result = cli(
        "check", "--tracking-uri", sqlite_store.uri, "--policy", str(write(tmp_path, bad, content))
    )
    assert result.code == 2 and result.err.startswith("mlflow-audit: error: ")


def test_policy_commands(cli) -> None:
    listing = cli("policy", "list")
    assert "eu-ai-act-high-risk (default)" in listing.out and "baseline" in listing.out
    shown = cli("policy", "show", "baseline")
    assert "data.dataset-version" in shown.out and "Art. 10(2)(b)" in shown.out
    schema = json.loads(cli("policy", "show", "baseline", "--schema").out)
    assert schema["$id"] == "urn:mlflow-audit:policy:baseline"
    valid = cli("policy", "validate", str(SAMPLE_POLICY))
    assert valid.code == 0 and "valid policy" in valid.out


def test_policy_hash_is_stable() -> None:
    assert (
        load_policy("baseline").sha256 == load_policy(schema_path("policies/baseline.json")).sha256
    )


def test_runs_with_the_same_gaps_share_their_findings(tmp_path: Path) -> None:
    """An audit of 100,000 runs holds every finding: a gap that runs share (same rule, place and
    message) is one object, and a rule of the same id in another policy is not mistaken for it."""
    rule = {"x-audit": {"id": "run.team-tag", "category": "run", "severity": "error",
                        "provisions": [], "title": "A team", "remediation": "set tag team"},
            "required": ["team"]}  # fmt: skip
    policy = load_policy(write(tmp_path, "a.json", {"properties": {"tags": rule}}))
    first = evaluate_record(_record(), policy)
    second = evaluate_record(_record(), policy)
    assert len(first) == 1 and first[0] is second[0]
    renamed = {**rule, "x-audit": {**rule["x-audit"], "title": "Another title"}}
    other = load_policy(write(tmp_path, "b.json", {"properties": {"tags": renamed}}))
    (finding,) = evaluate_record(_record(), other)
    assert finding.title == "Another title" and first[0].title == "A team"
