"""python-jsonschema, the reference, and jsonschema-rs, the fast path, decide every run of every
store the tests build alike: the same outcome for every rule and the same findings, word for
word. And the reference's part of loading a policy: meta-validation, `$ref`s through
`referencing`, format checks a policy author registers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from audit import collect, load_policy
from audit.errors import PolicyError
from audit.evaluation import judge_record
from audit.policy import Policy, builtin_policy_names
from audit.sources import CollectionNeeds, Selection
from audit.validators import PythonEngine, RustEngine
from tests.records import complete_record
from tests.test_old_stores import VERSIONS, _copy

REPO = Path(__file__).resolve().parent.parent
POLICIES = (*builtin_policy_names(), str(REPO / "samples" / "policies" / "acme-high-risk.yaml"))
EVERYTHING = CollectionNeeds(artifacts=True, registry=True)
STORES = ("sqlite_store", "file_store", "demo_store", "logging_store", "postgres_store")


def _both(policy: str) -> tuple[Policy, Policy]:
    fast, reference = load_policy(policy), load_policy(policy, engine="jsonschema")
    assert isinstance(fast.engine, RustEngine) and isinstance(reference.engine, PythonEngine)
    return fast, reference


def _same_verdicts(records: list[dict[str, Any]]) -> int:
    findings = 0
    for policy in POLICIES:
        fast, reference = _both(policy)
        for record in records:
            verdict = judge_record(record, fast)
            assert judge_record(record, reference) == verdict, (policy, record["run"]["name"])
            findings += len(verdict.findings)
    return findings


@pytest.mark.parametrize("fixture", STORES)
def test_both_engines_decide_every_store_alike(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    store = request.getfixturevalue(fixture)
    records = [
        item.record
        for item in collect(store.uri, selection=Selection(include_deleted=True), needs=EVERYTHING)
    ]
    assert records
    assert _same_verdicts(records) > 0  # not vacuous: gaps found, by both


@pytest.mark.parametrize("version", VERSIONS)
def test_both_engines_decide_old_stores_alike(version: str, tmp_path: Path) -> None:
    database = _copy(version, tmp_path / "store")
    records = [
        item.record
        for item in collect(
            f"sqlite:///{database}", selection=Selection(include_deleted=True), needs=EVERYTHING
        )
    ]
    assert len(records) == 4 and _same_verdicts(records) > 0


def test_built_in_policies_are_valid_for_the_reference() -> None:
    """Built-in policies skip meta-validation when a gate starts; here is why they may."""
    annotation = json.loads((REPO / "schemas" / "x-audit.schema.json").read_text())
    for name in builtin_policy_names():
        document = json.loads((REPO / "schemas" / "policies" / f"{name}.json").read_text())
        jsonschema.Draft202012Validator.check_schema(document)
        for rule in load_policy(name).rules:
            for schema in json.loads(rule.conditions or "{}").values():
                for each in schema if isinstance(schema, list) else [schema]:
                    jsonschema.Draft202012Validator.check_schema(each.get("if", each))
        jsonschema.Draft202012Validator.check_schema(annotation)


def test_a_policy_file_is_checked_by_the_reference_with_its_place(tmp_path: Path) -> None:
    policy = tmp_path / "bad.yaml"
    policy.write_text("properties:\n  run:\n    minItems: -1\n")
    with pytest.raises(PolicyError, match=r"bad.yaml: not a valid JSON Schema at /properties/run"):
        load_policy(str(policy))
    conditions = tmp_path / "conditions.yaml"
    conditions.write_text(
        "properties:\n  models:\n    x-audit:\n      id: model.some\n      category: model\n"
        "      severity: info\n      provisions: []\n      title: t\n      remediation: r\n"
        "      applies_if: {type: 12}\n      not_applicable: never\n    minItems: 1\n"
    )
    with pytest.raises(PolicyError, match=r"rule model.some: applies_if: not a valid JSON"):
        load_policy(str(conditions))


def test_conditions_resolve_refs_where_they_are_written(tmp_path: Path) -> None:
    """A condition's `$ref` to the policy's own $defs means what it means there, for both."""
    policy = tmp_path / "refs.yaml"
    policy.write_text(
        "$defs:\n  has-models: {properties: {models: {minItems: 1}}}\n"
        "properties:\n  models:\n    x-audit:\n      id: model.checked\n      category: model\n"
        "      severity: error\n      provisions: []\n      title: A model has flavors\n"
        "      remediation: log one\n      applies_if: {$ref: '#/$defs/has-models'}\n"
        "      not_applicable: No model\n"
        "    contains: {required: [flavors], properties: {flavors: {type: array}}}\n"
    )
    record = complete_record()
    bare = {**record, "models": []}
    for engine in ("jsonschema-rs", "jsonschema"):
        loaded = load_policy(str(policy), engine=engine)  # type: ignore[arg-type]
        assert judge_record(bare, loaded).not_applicable == ("model.checked",)
        assert judge_record(record, loaded).not_applicable == ()


def test_format_checks_a_policy_author_registers(tmp_path: Path) -> None:
    policy = tmp_path / "format.yaml"
    policy.write_text(
        "properties:\n  source:\n    properties:\n      git_repo_url:\n        x-audit:\n"
        "          id: source.internal-repo\n          category: source\n"
        "          severity: warning\n          provisions: []\n"
        "          title: The code comes from our git server\n"
        "          remediation: push it to git.acme.example\n"
        "        type: string\n        format: acme-repo\n"
    )
    checker = jsonschema.FormatChecker()
    checker.checks("acme-repo")(lambda value: str(value).startswith("https://git.acme.example/"))
    record = complete_record()
    record["source"]["git_repo_url"] = "https://github.com/someone/fork.git"
    # Without the check `format` only annotates (JSON Schema 2020-12): nothing to find.
    assert judge_record(record, load_policy(str(policy))).findings == ()
    checked = load_policy(str(policy), format_checker=checker)
    assert checked.engine.name == "jsonschema"
    (finding,) = judge_record(record, checked).findings
    assert finding.rule_id == "source.internal-repo" and finding.pointer == "/source/git_repo_url"
    record["source"]["git_repo_url"] = "https://git.acme.example/ml/churn.git"
    assert judge_record(record, checked).findings == ()
