"""`audit.diff` and its renderings on the records of a real registered model's lineage
(tests/fixtures/lineage_store.py): what changed from train-v1 to train-v2 item by item, metric
deltas only on the same data, policy outcomes, and hostile values kept inert in every format."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from typing import Any

import jsonschema_rs
import pytest

from audit.api import check
from audit.diff import (
    VALUE_LIMIT,
    Change,
    DatasetChange,
    DatasetSide,
    MetricDataset,
    RecordDiff,
    RunRef,
    VersionRef,
    diff_records,
)
from audit.formats.diff import render_diff_json, render_diff_markdown, render_diff_text
from audit.resources import schema_path
from audit.result import AuditResult, RunResult
from tests.conftest import LineageStore

HOSTILE = (
    "<img src=x onerror=alert(1)> [link](javascript:alert(1)) | @octocat "
    "\x1b[31mred\x1b[0m \u202eevil `tick` **bold**\n::error::pwned ##[warning]x"
)
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclasses.dataclass(frozen=True)
class Audited:
    result: AuditResult
    by_name: dict[str, RunResult]

    def record(self, name: str) -> dict[str, Any]:
        """A copy of the run's evidence record, free to change."""
        assert self.result.records is not None
        return copy.deepcopy(dict(self.result.records[self.by_name[name].run_id]))

    def diff(self, old: str, new: str, *, results: bool = False) -> RecordDiff:
        return diff_records(
            self.record(old),
            self.record(new),
            old_result=self.by_name[old] if results else None,
            new_result=self.by_name[new] if results else None,
            rule_ids=[rule.id for rule in self.result.rules] if results else (),
        )


def _unwrapped(text: str) -> str:
    """The text with each wrapped line joined back to the line it continues."""
    return re.sub(r"\n {4,}(?=\S)", " ", text)


@pytest.fixture(scope="module")
def audited(lineage_store: LineageStore) -> Audited:
    result = check(
        lineage_store.uri, run_id=list(lineage_store.run_ids.values()), keep_records=True
    )
    by_name = {run.run_name or "": run for run in result.runs}
    assert set(by_name) == set(lineage_store.run_ids)
    return Audited(result, by_name)


@pytest.fixture(scope="module")
def validate() -> Any:
    schema = json.loads(schema_path("diff.schema.json").read_text())
    validator = jsonschema_rs.validator_for(schema)

    def validate(diff: RecordDiff) -> dict[str, Any]:
        document = json.loads(render_diff_json(diff))
        validator.validate(document)
        assert document == json.loads(json.dumps(diff.to_dict()))
        return document

    return validate


# ------------------------------------------------------------------- one version to the next


def test_train_v1_to_v2_item_by_item(audited: Audited, lineage_store: LineageStore) -> None:
    old, new = audited.record("train-v1"), audited.record("train-v2")
    diff = diff_records(old, new)

    assert diff.old.run_id == lineage_store.run_ids["train-v1"]
    assert (diff.old.run_name, diff.new.run_name) == ("train-v1", "train-v2")
    assert diff.old.experiment_name == diff.new.experiment_name == "churn"
    assert diff.old.registered_versions == (VersionRef("churn-classifier", "1"),)
    assert diff.new.registered_versions == (VersionRef("churn-classifier", "2", ("challenger",)),)
    assert diff.old.model_version is None and diff.old.sweep is None

    assert diff.params == (Change("changed", "C", "1.0", "0.5"),)

    (before,) = old["data"]["training"]
    (after,) = new["data"]["training"]
    assert diff.datasets == (
        DatasetChange(
            "removed",
            "training",
            "churn-2026-01",
            DatasetSide(before["digest"], before["source_uri"]),
            None,
        ),
        DatasetChange(
            "added",
            "training",
            "churn-2026-02",
            None,
            DatasetSide(after["digest"], after["source_uri"]),
        ),
    )
    assert before["digest"] != after["digest"]
    assert after["source_uri"].startswith("s3://acme-data/churn/churn-2026-02.parquet")

    assert diff.environment == (
        Change("added", "package pandas", None, "pandas==2.2.3"),
        Change("changed", "package scikit-learn", "scikit-learn==1.5.2", "scikit-learn==1.6.1"),
    )
    assert diff.code == (Change("changed", "commit", "1" * 40, "2" * 40),)
    assert diff.model == ()  # the same flavors and signature

    # train_accuracy was computed on each run's own training data, which changed: no delta.
    (metric,) = diff.metrics
    assert (metric.kind, metric.key, metric.reason) == (
        "not_comparable",
        "train_accuracy",
        "different datasets",
    )
    assert metric.delta is None and metric.old and metric.new
    assert (metric.old.context, metric.new.context) == ("training", "training")
    assert diff.policy is None and diff.changed


def test_the_three_renderings_say_each_change(audited: Audited, validate: Any) -> None:
    diff = audited.diff("train-v1", "train-v2")
    text = render_diff_text(diff)
    for line in (
        "hyperparameters: 1 changed",
        "  ~ C                              1.0 -> 0.5",
        "datasets: 1 added, 1 removed",
        "  + package pandas                 pandas==2.2.3",
        "  ~ package scikit-learn           scikit-learn==1.5.2 -> scikit-learn==1.6.1",
        "model: no changes",
        "policy outcomes: not compared (no audit results)",
    ):
        assert line in text.splitlines()
    assert all(len(line) <= 100 for line in text.splitlines())
    text = _unwrapped(text)
    assert "  - training churn-2026-01         digest " in text
    assert "train_accuracy                 1.0 -> 1.0 (training data, no dataset link) · " in text
    assert "not comparable: different datasets" in text
    assert f"  ~ commit                         {'1' * 40} -> {'2' * 40}" in text

    markdown = render_diff_markdown(diff)
    assert markdown.startswith("### mlflow-audit diff: 7 changes\n")
    assert "| changed | C | 1\\.0 | 0\\.5 |" in markdown
    assert "| added | package pandas |  | pandas==2\\.2\\.3 |" in markdown
    assert "| removed | training | churn\\-2026\\-01 | digest " in markdown
    assert "#### Model: no changes" in markdown

    document = validate(diff)
    assert document["schema_version"] == "1.0" and document["changed"] is True
    assert document["params"] == [{"kind": "changed", "name": "C", "old": "1.0", "new": "0.5"}]
    assert document["policy"] is None


def test_identical_records_have_no_changes(audited: Audited, validate: Any) -> None:
    record = audited.record("train-v2")
    run = audited.by_name["train-v2"]
    diff = diff_records(
        record, copy.deepcopy(record), old_result=run, new_result=run, rule_ids=["x"]
    )
    assert not diff.changed
    assert diff.params == diff.datasets == diff.metrics == diff.environment == () == diff.model
    assert diff.code == () and diff.policy is not None and diff.policy.rules == ()
    assert diff.old == diff.new
    text = render_diff_text(diff)
    for title in ("hyperparameters", "datasets", "metrics", "environment", "code", "model"):
        assert f"{title}: no changes" in text.splitlines()
    assert "policy outcomes: no changes" in text
    markdown = render_diff_markdown(diff)
    assert markdown.startswith("### mlflow-audit diff: no changes\n")
    assert markdown.count(": no changes\n") == 8  # the headline and the seven sections
    assert validate(diff)["changed"] is False


# --------------------------------------------------------------------------- metrics


def test_metric_deltas_on_the_same_holdout(audited: Audited, validate: Any) -> None:
    """evaluate-v2 and evaluate-v3 evaluated two versions on the same holdout dataset: only
    log_loss moved, and it has a delta; the metrics that stayed are not listed."""
    old, new = audited.record("evaluate-v2"), audited.record("evaluate-v3")
    assert old["data"]["evaluation"][0]["digest"] == new["data"]["evaluation"][0]["digest"]
    values = {
        name: {m["key"]: m["value"] for m in r["metrics"]}
        for name, r in (("old", old), ("new", new))
    }
    diff = diff_records(old, new)
    (metric,) = diff.metrics
    assert (metric.kind, metric.key) == ("changed", "log_loss")
    assert metric.old and metric.old.value == values["old"]["log_loss"]
    assert metric.new and metric.new.value == values["new"]["log_loss"]
    assert metric.delta == pytest.approx(values["new"]["log_loss"] - values["old"]["log_loss"])
    assert metric.relative == pytest.approx(100 * metric.delta / values["old"]["log_loss"])
    assert metric.delta < 0 and metric.reason is None
    assert diff.params == diff.datasets == diff.environment == diff.code == diff.model == ()
    text = _unwrapped(render_diff_text(diff))
    assert f"· delta {metric.delta:+.6g} ({metric.relative:+.3g}%)" in text
    assert validate(diff)["metrics"][0]["delta"] == pytest.approx(metric.delta)


def test_metrics_linked_to_datasets(audited: Audited, validate: Any) -> None:
    """A metric linked to a dataset (a version's record, `log_metric(dataset=...)`) compares
    only with one on the same digest; NaN and infinities change without a delta; the run that
    logged each value is kept."""
    old, new = audited.record("evaluate-v2"), audited.record("evaluate-v3")
    digest = old["data"]["evaluation"][0]["digest"]

    def link(record: dict[str, Any], key: str, digest: str | None, value: Any) -> None:
        entry = next(m for m in record["metrics"] if m["key"] == key)
        entry.update(dataset={"name": "churn-holdout", "digest": digest}, value=value)
        entry.update(context="evaluation", context_from="dataset", run_id=record["run"]["id"])

    link(old, "accuracy_score", digest, 0.8)
    link(new, "accuracy_score", digest, 0.9)
    link(old, "f1_score", digest, 0.5)
    link(new, "f1_score", "another-digest", 0.5)
    link(old, "roc_auc", None, 0.7)
    link(new, "roc_auc", None, 0.75)
    link(old, "precision_score", digest, 0.5)
    link(new, "precision_score", digest, "NaN")
    link(old, "recall_score", digest, "-Infinity")
    link(new, "recall_score", digest, 0.25)
    link(old, "score", digest, 0)
    link(new, "score", digest, 0.5)
    new["metrics"] = [m for m in new["metrics"] if m["key"] != "example_count"]
    new["metrics"].append({**new["metrics"][0], "key": "brier_score", "value": 0.1})
    diff = diff_records(old, new)
    by_key = {m.key: m for m in diff.metrics}
    assert set(by_key) == {
        "accuracy_score", "brier_score", "example_count", "f1_score", "log_loss",
        "precision_score", "recall_score", "roc_auc", "score",
    }  # fmt: skip

    accuracy = by_key["accuracy_score"]
    assert accuracy.kind == "changed" and accuracy.delta == pytest.approx(0.1)
    assert accuracy.relative == pytest.approx(12.5)
    assert accuracy.old and accuracy.old.dataset == MetricDataset("churn-holdout", digest)
    assert accuracy.old.run_id == old["run"]["id"]
    assert accuracy.new and accuracy.new.run_id == new["run"]["id"]
    # the same value, on other data: listed, not comparable
    f1 = by_key["f1_score"]
    assert (f1.kind, f1.reason, f1.delta) == ("not_comparable", "different datasets", None)
    roc = by_key["roc_auc"]
    assert (roc.kind, roc.reason, roc.delta) == ("not_comparable", "no dataset digest", None)
    for key in ("precision_score", "recall_score"):
        assert (by_key[key].kind, by_key[key].delta, by_key[key].relative) == (
            "changed",
            None,
            None,
        )
    assert by_key["precision_score"].new and by_key["precision_score"].new.value == "NaN"
    assert (by_key["score"].delta, by_key["score"].relative) == (0.5, None)  # from zero
    assert by_key["example_count"].kind == "removed" and by_key["example_count"].new is None
    assert by_key["brier_score"].kind == "added" and by_key["brier_score"].old is None

    text = _unwrapped(render_diff_text(diff))
    assert "no delta (not finite numbers)" in text and "NaN" in text
    assert f"on churn-holdout ({digest}), run {new['run']['id']}" in text
    document = validate(diff)
    assert "NaN" not in json.dumps([m["delta"] for m in document["metrics"]])


# --------------------------------------------------------------------------- model, lineage


def test_model_flavors_and_signature(audited: Audited, validate: Any) -> None:
    old, new = audited.record("train-v1"), audited.record("train-v2")
    model = new["models"][0]
    model["flavors"] = ["onnx", "python_function"]
    inputs = model["signature"]["inputs"]
    inputs[0]["type"] = "float"  # tenure: double -> float
    del inputs[1]  # charges removed
    inputs.append({"type": "string", "name": "region", "required": False})
    model["signature"]["params"] = [{"name": "threshold", "type": "double", "default": 0.5}]
    diff = diff_records(old, new)
    assert diff.model == (
        Change("added", "flavor onnx"),
        Change("removed", "flavor sklearn"),
        Change("removed", "input charges", "double", None),
        Change("added", "input region", None, "string (optional)"),
        Change("changed", "input tenure", "double", "float"),
        Change("added", "param threshold", None, "double default=0.5"),
    )
    new["models"][0]["signature"] = None
    new["models"].append({**old["models"][0], "name": "scaler"})
    several = diff_records(old, new)
    assert several.model == (
        Change("added", "model: flavor onnx"),
        Change("removed", "model: flavor sklearn"),
        Change("removed", "model: signature", "recorded", None),
        Change("added", "model scaler", None, old["models"][0]["uri"]),
    )
    validate(diff)
    validate(several)


def test_version_records_lineage_in_the_subject(audited: Audited, validate: Any) -> None:
    """A version's record (the lead's `audit.lineage.version_record`) carries `lineage`:
    the version, its sweep and its evaluation runs name each side; a record without it is a
    run."""
    runs = {name: audited.by_name[name].run_id for name in audited.by_name}
    old, new = audited.record("train-v2"), audited.record("trial-2")
    old["lineage"] = {
        "model": {"name": "churn-classifier", "description": None, "tags": {}},
        "version": {"version": "2", "aliases": ["challenger"]},
        "sweep": None,
        "evaluations": [{"id": runs["evaluate-v2"], "name": "evaluate-v2"}],
    }
    new["lineage"] = {
        "model": {"name": "churn-classifier"},
        "version": {"version": "3", "aliases": ["champion"]},
        "sweep": {"id": runs["sweep-v3"], "name": "sweep-v3", "trials": 3},
        "evaluations": [{"id": runs["evaluate-v3"], "name": "evaluate-v3", "metrics": []}],
    }
    diff = diff_records(old, new)
    assert diff.old.model_version == VersionRef("churn-classifier", "2", ("challenger",))
    assert diff.new.model_version == VersionRef("churn-classifier", "3", ("champion",))
    assert diff.old.sweep is None and diff.new.sweep == RunRef(runs["sweep-v3"], "sweep-v3")
    assert diff.new.evaluations == (RunRef(runs["evaluate-v3"], "evaluate-v3"),)
    assert diff.params == (Change("changed", "C", "0.5", "1.0"),)
    assert diff.code == (Change("changed", "commit", "2" * 40, "3" * 40),)
    assert diff.datasets == diff.environment == ()
    text = _unwrapped(render_diff_text(diff))
    assert "model churn-classifier/3 (champion)" in text
    assert f"sweep {runs['sweep-v3']} sweep-v3" in text
    assert f"evaluated in {runs['evaluate-v3']} evaluate-v3" in text
    markdown = render_diff_markdown(diff)
    assert "| sweep |  | " in markdown and "| evaluated in | " in markdown
    validate(diff)


# --------------------------------------------------------------------------- policy outcomes


def test_policy_outcomes_rule_by_rule(audited: Audited, validate: Any) -> None:
    diff = audited.diff("train-v1", "evaluate-v2", results=True)
    old, new = audited.by_name["train-v1"], audited.by_name["evaluate-v2"]
    policy = diff.policy
    assert policy is not None
    changes = {rule.rule_id: (rule.old, rule.new) for rule in policy.rules}
    assert changes["data.evaluation-dataset"] == ("fail", "pass")
    assert changes["data.training-dataset"] == ("pass", "fail")
    assert changes["source.clean-tree"] == ("pass", "unknown")
    assert changes["model.signature"] == ("pass", "not_applicable")
    assert "run.finished" not in changes and "metrics.evaluation" not in changes  # same
    order = [rule.id for rule in audited.result.rules]
    assert [rule.rule_id for rule in policy.rules] == [r for r in order if r in changes]
    assert (policy.old_status, policy.new_status) == (old.status, new.status)
    # each side's score is the score of an audit of that run alone
    for score, run in ((policy.old_score, old), (policy.new_score, new)):
        assert score == dataclasses.replace(audited.result, runs=[run]).score
    assert policy.old_score != policy.new_score

    text = _unwrapped(render_diff_text(diff))
    assert f"status fail (unchanged) · score {policy.old_score:g}% -> {policy.new_score:g}%" in text
    assert f"  ~ {'data.training-dataset':<30} pass -> fail" in text
    assert "| data\\.evaluation\\-dataset | fail | pass |" in render_diff_markdown(diff)
    document = validate(diff)
    assert document["policy"]["rules"][0] == {
        "rule_id": policy.rules[0].rule_id,
        "old": policy.rules[0].old,
        "new": policy.rules[0].new,
    }
    without_rules = diff_records(
        audited.record("train-v1"), audited.record("evaluate-v2"), old_result=old, new_result=new
    )
    assert without_rules.policy and without_rules.policy.old_score is None
    assert {r.rule_id for r in without_rules.policy.rules} == set(changes)


def test_one_result_alone_is_refused(audited: Audited) -> None:
    record = audited.record("train-v1")
    with pytest.raises(ValueError, match="both audit results"):
        diff_records(record, record, old_result=audited.by_name["train-v1"])


# --------------------------------------------------------------------------- untrusted values


@pytest.fixture(scope="module")
def hostile_diff(audited: Audited) -> RecordDiff:
    old, new = audited.record("train-v1"), audited.record("train-v2")
    long = "A" * 5000 + "<tail>"
    new["hyperparameters"].update({"C": HOSTILE, HOSTILE: "x", "long": long})
    new["run"]["name"] = HOSTILE
    new["run"]["experiment_name"] = HOSTILE
    new["source"]["git_branch"] = HOSTILE
    new["data"]["training"][0]["name"] = HOSTILE
    new["data"]["training"][0]["source_uri"] = long
    new["metrics"][0]["key"] = HOSTILE
    new["environment"]["requirements"].append(
        {"name": None, "specifier": None, "pinned": False, "line": HOSTILE}
    )
    return diff_records(old, new)


def test_hostile_values_are_bounded(hostile_diff: RecordDiff, validate: Any) -> None:
    long_param = next(c for c in hostile_diff.params if c.name == "long")
    assert long_param.new is not None and len(long_param.new) < VALUE_LIMIT + 40
    assert long_param.new.startswith("A" * VALUE_LIMIT) and "truncated" in long_param.new
    document = validate(hostile_diff)
    assert document["new"]["run_name"] == HOSTILE  # JSON keeps the text, escaped by JSON


def test_hostile_values_stay_inert_in_the_text(hostile_diff: RecordDiff) -> None:
    for color in (False, True):
        text = render_diff_text(hostile_diff, color=color)
        plain = ANSI.sub("", text) if color else text
        assert "\x1b" not in plain and "\u202e" not in plain
        assert "\\x1b[31mred" in plain and "\\u202eevil" in plain
        for line in plain.splitlines():
            assert len(line) <= 100, line
            assert not line.lstrip().startswith("::")
            assert "##[" not in line
        assert "pwned" in plain and "\\n::error::pwned" in plain
        # two long values (a param and a dataset source), each cut short at 240 characters
        assert "<tail>" not in plain and 400 < plain.count("A") < 500
    colored = render_diff_text(hostile_diff, color=True)
    assert "  \x1b[33m~\x1b[0m C " in colored and "\x1b[32m+\x1b[0m" in colored
    assert "\x1b" not in render_diff_text(hostile_diff)


def test_hostile_values_stay_text_in_markdown(hostile_diff: RecordDiff) -> None:
    markdown = render_diff_markdown(hostile_diff)
    assert "<img" not in markdown and "&lt;img src=x onerror=alert\\(1\\)&gt;" in markdown
    assert "[link](javascript" not in markdown
    assert "@octocat" not in markdown and "@\u200boctocat" in markdown
    assert "\x1b" not in markdown and "\u202e" not in markdown
    columns = None
    rows = 0
    for line in markdown.splitlines():
        assert not line.lstrip().startswith("::")
        if not line.startswith("|"):
            columns = None
            continue
        # every pipe from MLflow is escaped: each row has the cells of its table's header
        cells = len(re.split(r"(?<!\\)\|", line))
        columns = columns or cells
        assert cells == columns, line
        rows += 1
    assert rows > 10 and "\\| @\u200boctocat" in markdown


def test_markdown_stays_under_the_comment_limit(audited: Audited) -> None:
    old, new = audited.record("train-v1"), audited.record("train-v2")
    new["hyperparameters"] = {f"p{i:05}": "<b>" * 100 for i in range(3000)}
    diff = diff_records(old, new)
    markdown = render_diff_markdown(diff)
    assert len(markdown.encode("utf-8")) <= 65_536
    assert "_Not shown, to stay within 65,536 characters:" in markdown
    assert "entries of the section hyperparameters" in markdown
    small = render_diff_markdown(diff, max_length=5_000)
    assert len(small.encode("utf-8")) <= 5_000
