"""Every verdict of the built-in policies on runs logged the way teams log them, decided by hand
from what MLflow stored (tests/fixtures/logging_store.py builds the store; the comments say
what each run holds, as read from its tables), and the four outcomes in every output format."""

from __future__ import annotations

import csv
import io
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from audit import check, evaluate, load_policy
from audit.api import report
from audit.evaluation import judge_record
from audit.formats import render
from audit.report import ReportSettings, parse_date
from audit.result import AuditResult
from tests.conftest import Store
from tests.records import complete_record

P, F, NA, UNK = "pass", "fail", "not_applicable", "unknown"

#: What every run of the store holds alike: run by a script (source type LOCAL, a script name),
#: finished, not deleted, no git commit (the builder runs outside any checkout), no `platform`
#: tag.
_COMMON = {
    "run.finished": P,
    "run.active": P,
    "source.git-commit": F,
    "source.clean-tree": NA,  # no commit: no checkout to be clean or dirty
    "source.non-interactive": P,
    "environment.platform": F,
}
#: A logged model (MLflow 3 logged model, its MLmodel, requirements.txt and python_env.yaml
#: read): python version and requirements recorded, all pinned (mlflow==..., scikit-learn==...);
#: a signature inferred; never registered.
_MODEL = {
    "environment.python-version": P,
    "environment.requirements": P,
    "environment.requirements-pinned": P,
    "environment.requirement-unpinned": P,
    "model.logged": P,
    "model.signature": P,
    "model.registered": F,
}
#: No model: nothing under the model's rules, nor an environment file.
_NO_MODEL = {
    "environment.python-version": F,
    "environment.requirements": F,
    "environment.requirements-pinned": NA,
    "environment.requirement-unpinned": NA,
    "model.logged": F,
    "model.signature": NA,
    "model.input-example": NA,
    "model.registered": NA,
}
#: No dataset input at all: the per-dataset rules have nothing to look at.
_NO_DATASETS = {
    "data.training-dataset": F,
    "data.evaluation-dataset": F,
    "data.dataset-digest": NA,
    "data.dataset-source": NA,
    "data.dataset-role": NA,
    "data.dataset-version-evidence": NA,
    "data.dataset-profile": NA,
}
#: Autologging's datasets: from code (CodeDatasetSource: no URI of the data), MLflow's 8-digit
#: digest, a profile with the row count, the role from the context autologging gives.
_AUTOLOGGED_DATA = {
    "data.training-dataset": P,  # "dataset", context "train"
    "data.dataset-digest": P,
    "data.dataset-source": F,
    "data.dataset-role": P,
    "data.dataset-version-evidence": F,
    "data.dataset-profile": P,
    "hyperparameters.logged": P,  # every estimator param
    "model.input-example": F,  # autologging logs no input example unless asked
}

EXPECTED: dict[str, dict[str, str]] = {
    # model.score(X_test, y_test) logs LogisticRegression_score_X_test, linked to no dataset,
    # and logs no evaluation dataset: the one true gap is the missing evaluation data.
    "autolog-score": {
        **_COMMON, **_MODEL, **_AUTOLOGGED_DATA,
        "data.evaluation-dataset": F,
        "metrics.evaluation": P,  # LogisticRegression_score_X_test, by autologging's name
        "metrics.evaluation-dataset": F,  # linked to no dataset
    },
    # predict(X_test) logs the test set with context "eval"; f1_score logs f1_score_X_test.
    "autolog-metric": {
        **_COMMON, **_MODEL, **_AUTOLOGGED_DATA,
        "data.evaluation-dataset": P,
        "metrics.evaluation": P,
        "metrics.evaluation-dataset": F,  # MLflow links f1_score_X_test to no dataset
    },
    # evaluate() logs the test DataFrame as an input without a context and links every metric
    # (accuracy_score, f1_score, ...) to it: evaluation data, by MLflow's own link.
    "autolog-evaluate": {
        **_COMMON, **_MODEL, **_AUTOLOGGED_DATA,
        "data.evaluation-dataset": P,
        "metrics.evaluation": P,
        "metrics.evaluation-dataset": P,
    },
    # By hand: iris-train with context "training" and an s3 source; iris-test logged by
    # log_metric(dataset=...) without a context, its metric linked to it; an input example.
    "manual-linked": {
        **_COMMON, **_MODEL,
        "data.training-dataset": P,
        "data.evaluation-dataset": P,  # iris-test: evaluation by the metric linked to it
        "data.dataset-digest": P,
        "data.dataset-source": P,
        "data.dataset-role": P,
        "data.dataset-version-evidence": F,  # s3 URIs without a version, 8-digit digests
        "data.dataset-profile": P,
        "hyperparameters.logged": P,
        "metrics.evaluation": P,
        "metrics.evaluation-dataset": P,
        "model.input-example": P,
    },
    # train_data and test_data without a context, then evaluate(test_data): test_data is
    # evaluation data by MLflow's metric link; train_data training data by its name only.
    "nocontext-evaluate": {
        **_COMMON, **_MODEL,
        "data.training-dataset": P,
        "data.evaluation-dataset": P,
        "data.dataset-digest": P,
        "data.dataset-source": P,  # data/train.csv, data/test.csv
        "data.dataset-role": F,  # train_data: its name only
        "data.dataset-version-evidence": F,
        "data.dataset-profile": P,
        "hyperparameters.logged": P,
        "metrics.evaluation": P,
        "metrics.evaluation-dataset": P,
        "model.input-example": P,
    },
    # LightGBM autolog: "dataset" (context train), "train" and "valid" (context eval); "train"
    # is the training data again (same digest), "valid" held out. valid-multi_logloss is
    # computed on "valid", train-multi_logloss on the training data.
    "lightgbm-valid": {
        **_COMMON, **_MODEL, **_AUTOLOGGED_DATA,
        "data.evaluation-dataset": P,
        "metrics.evaluation": P,
        "metrics.evaluation-dataset": P,
    },
    # One param, nothing else.
    "no-model": {
        **_COMMON, **_NO_MODEL, **_NO_DATASETS,
        "hyperparameters.logged": P,
        "metrics.evaluation": F,
        "metrics.evaluation-dataset": NA,
    },
    # A committed script edited before it ran: MLflow records the commit and nothing about the
    # edit (mlflow.source.git.dirty is set only by GenAI git model versioning).
    "dirty-checkout": {
        **_COMMON, **_NO_MODEL, **_NO_DATASETS,
        "source.git-commit": P,
        "source.clean-tree": UNK,
        "hyperparameters.logged": P,
        "metrics.evaluation": P,  # val_loss, by its name
        "metrics.evaluation-dataset": F,
    },
}  # fmt: skip

_BASELINE_FULL = {
    "data.dataset-version": P,
    "hyperparameters.logged": P,
    "metrics.logged": P,
    "environment.python-version": P,
    "environment.requirements": P,
    "source.git-commit": F,
}
EXPECTED_BASELINE: dict[str, dict[str, str]] = {
    **{name: _BASELINE_FULL for name in EXPECTED if name not in ("no-model", "dirty-checkout")},
    "no-model": {
        **_BASELINE_FULL,
        "data.dataset-version": F,
        "metrics.logged": F,
        "environment.python-version": F,
        "environment.requirements": F,
    },
    "dirty-checkout": {
        **_BASELINE_FULL,
        "data.dataset-version": F,
        "environment.python-version": F,
        "environment.requirements": F,
        "source.git-commit": P,
    },
}


@pytest.fixture(scope="module")
def results(logging_store: Store) -> dict[str, AuditResult]:
    return {
        policy: check(logging_store.uri, policy=policy, keep_records=True)
        for policy in ("eu-ai-act-high-risk", "baseline")
    }


def _outcomes(result: AuditResult) -> dict[str, dict[str, str]]:
    return {
        str(run.run_name): {o.rule_id: o.status for o in result.outcomes(run)}
        for run in result.runs
    }


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("eu-ai-act-high-risk", EXPECTED), ("baseline", EXPECTED_BASELINE)],
)
def test_every_verdict_of_the_builtin_policies(
    results: dict[str, AuditResult], policy: str, expected: dict[str, dict[str, str]]
) -> None:
    result = results[policy]
    rules = [rule.id for rule in result.rules]
    for name, outcomes in expected.items():
        assert sorted(outcomes) == sorted(rules), name  # every rule, by hand
    assert _outcomes(result) == expected


def test_what_mlflow_stored_and_how_the_record_knows_it(results: dict[str, AuditResult]) -> None:
    records = {r["run"]["name"]: r for r in results["baseline"].records.values()}  # type: ignore[union-attr]

    def roles(name: str) -> set[tuple[str, str | None, str | None, str | None]]:
        data = records[name]["data"]
        return {
            (group, d["name"], d["context"], d["role_from"]) for group in data for d in data[group]
        }

    def metric(name: str, key: str) -> tuple[Any, ...]:
        (found,) = [m for m in records[name]["metrics"] if m["key"] == key]
        dataset = found["dataset"]["name"] if found["dataset"] else None
        return found["context"], found["context_from"], dataset

    assert roles("autolog-score") == {("training", "dataset", "train", "context")}
    assert metric("autolog-score", "LogisticRegression_score_X_test") == (
        "evaluation",
        "name",
        None,
    )
    assert metric("autolog-score", "training_score") == ("training", "dataset", "dataset")
    assert metric("autolog-metric", "f1_score_X_test") == ("evaluation", "name", None)
    assert ("evaluation", "dataset", "eval", "context") in roles("autolog-metric")
    assert ("evaluation", "dataset", None, "metric") in roles("autolog-evaluate")
    assert metric("autolog-evaluate", "accuracy_score") == ("evaluation", "dataset", "dataset")
    assert roles("manual-linked") == {
        ("training", "iris-train", "training", "context"),
        ("evaluation", "iris-test", None, "metric"),
    }
    assert roles("nocontext-evaluate") == {
        ("training", "train_data", None, "name"),
        ("evaluation", "test_data", None, "metric"),
    }
    assert metric("nocontext-evaluate", "f1_score") == ("evaluation", "dataset", "test_data")
    assert roles("lightgbm-valid") == {
        ("training", "dataset", "train", "context"),
        ("training", "train", "eval", "digest"),
        ("evaluation", "valid", "eval", "context"),
    }
    assert metric("lightgbm-valid", "valid-multi_logloss") == ("evaluation", "name", "valid")
    assert metric("lightgbm-valid", "train-multi_logloss") == ("training", "name", "train")
    assert records["dirty-checkout"]["source"]["git_dirty"] is None
    assert records["dirty-checkout"]["source"]["git_commit"]


def _finding(result: AuditResult, run_name: str, rule_id: str) -> Any:
    (run,) = [run for run in result.runs if run.run_name == run_name]
    (finding, *_) = [f for f in run.findings if f.rule_id == rule_id]
    return finding


def test_findings_say_what_was_found_and_fit_the_logging_style(
    results: dict[str, AuditResult],
) -> None:
    result = results["eu-ai-act-high-risk"]
    weak = _finding(result, "nocontext-evaluate", "data.dataset-role")
    assert weak.severity == "warning" and weak.pointer == "/data/training/0/role_from"
    assert "train_data" in weak.message and "name only" in weak.message
    assert 'context="training"' in weak.remediation
    # An autologged run gets autologging's fix, a hand-logged one the manual call.
    autologged = _finding(result, "autolog-score", "data.evaluation-dataset")
    assert autologged.gap == "No evaluation dataset logged as a run input"
    assert "model.predict(X_test)" in autologged.remediation
    assert "model.score() alone logs none" in autologged.remediation
    by_hand = _finding(result, "no-model", "data.evaluation-dataset")
    assert by_hand.remediation.startswith("Log the data the model was tested on")
    unlinked = _finding(result, "autolog-metric", "metrics.evaluation-dataset")
    assert "f1_score_X_test (evaluation data by its name)" in unlinked.message
    assert "mlflow.models.evaluate" in unlinked.remediation


def test_datasets_without_a_role_are_named_where_one_is_missing() -> None:
    record = complete_record()
    other = dict(record["data"]["training"][0], name="iris", context=None, role_from=None)
    record["data"] = {"training": [], "evaluation": [], "other": [other, dict(other, name="raw")]}
    findings = judge_record(record, load_policy()).findings
    messages = {f.rule_id: f.message for f in findings}
    assert messages["data.training-dataset"] == (
        "/data/training: none recorded; found 2 datasets without a context: iris, raw"
    )


def test_nothing_passes_without_evidence(results: dict[str, AuditResult]) -> None:
    """Every pass names the evidence it passed on; rules with nothing to check are not passes,
    and a run that logged one param scores on the rules that apply to it only."""
    result = results["eu-ai-act-high-risk"]
    for run in result.runs:
        for outcome in result.outcomes(run):
            if outcome.status == "pass":
                assert outcome.evidence is not None and outcome.evidence.text, (
                    run.run_name,
                    outcome.rule_id,
                )
                assert outcome.evidence.pointers
    (bare,) = [run for run in result.runs if run.run_name == "no-model"]
    single = evaluate([result.records[bare.run_id]], load_policy())  # type: ignore[index]
    counts = single.outcome_counts()
    assert counts == {"fail": 8, "unknown": 0, "waived": 0, "not_applicable": 12, "pass": 4}
    assert single.score == round(100 * 4 / 12, 1)  # not 70% as when nothing to check passed
    evidence = {
        o.rule_id: o.evidence.text
        for o in result.outcomes(next(r for r in result.runs if r.run_name == "manual-linked"))
        if o.evidence
    }
    assert (
        evidence["metrics.evaluation"].startswith("accuracy = 0.97")
        and "iris-test" in (evidence["metrics.evaluation"])
    )
    assert evidence["data.training-dataset"].startswith("1 recorded: iris-train (digest")
    assert evidence["run.finished"] == "status: FINISHED"


def test_unknown_counts_as_not_passed_in_the_score(results: dict[str, AuditResult]) -> None:
    result = results["eu-ai-act-high-risk"]
    (dirty,) = [run for run in result.runs if run.run_name == "dirty-checkout"]
    alone = evaluate([result.records[dirty.run_id]], load_policy())  # type: ignore[index]
    counts = alone.outcome_counts()
    assert counts == {"fail": 7, "unknown": 1, "waived": 0, "not_applicable": 10, "pass": 6}
    assert alone.score == round(100 * 6 / 14, 1)
    assert alone.exit_code == 1  # the failures fail the gate; the unknown never does
    clean = [r for r in result.runs if r.run_name != "dirty-checkout"]
    assert all(not run.unknown for run in clean)


def test_runs_are_listed_worst_first(results: dict[str, AuditResult], cli, logging_store) -> None:
    result = results["eu-ai-act-high-risk"]
    keys = [
        (run.severity_counts()["error"], run.severity_counts()["warning"]) for run in result.runs
    ]
    assert keys == sorted(keys, reverse=True)
    table = cli("check", "--tracking-uri", logging_store.uri).out
    shown = [
        line.split()[1] for line in table.splitlines() if re.match(r"^(FAIL|WARN|PASS)  ", line)
    ]
    assert shown == [run.run_name for run in result.runs]


# --------------------------------------------------------------------------- every format


def _junit_outcomes(text: str) -> dict[tuple[str, str], str]:
    found = {}
    for suite in ET.fromstring(text).iter("testsuite"):  # noqa: S314 - our own output
        run_id = next(
            (p.get("value") for p in suite.iter("property") if p.get("name") == "run_id"), None
        )
        for case in suite.iter("testcase"):
            rule_id = str(case.get("name")).split(":")[0]
            skipped = case.find("skipped")
            if case.find("failure") is not None:
                outcome = "fail"
            elif skipped is not None:
                outcome = str(skipped.get("message")).split(":")[0].replace(" ", "_")
            elif case.find("system-out") is not None and "below the gate" in str(
                case.findtext("system-out")
            ):
                outcome = "fail"
            else:
                outcome = "pass"
            found[(str(run_id), rule_id)] = outcome
    return found


def test_every_format_shows_the_same_four_outcomes(
    results: dict[str, AuditResult],
    tmp_path: Path,
    logging_store: Store,
    junit_schema: Any,
    sarif_validator: Any,
) -> None:
    result = results["eu-ai-act-high-risk"]
    truth = {(run.run_id, o.rule_id): o.status for run in result.runs for o in result.outcomes(run)}
    assert set(truth.values()) == {"pass", "fail", "not_applicable", "unknown"}

    document = json.loads(render(result, "json"))
    assert document["schema_version"] == "2.0"
    assert {
        (run["run_id"], rule_id): outcome
        for run in document["runs"]
        for outcome, rule_ids in run["outcomes"].items()
        for rule_id in rule_ids
    } == truth
    for run in document["runs"]:  # a pass names its evidence; the rules say why not decided
        assert sorted(run["evidence"]) == sorted(run["outcomes"]["pass"])
    reasons = {rule["id"]: rule for rule in document["rules"]}
    assert all(
        reasons[rule_id][outcome]
        for run in document["runs"]
        for outcome in ("not_applicable", "unknown")
        for rule_id in run["outcomes"][outcome]
    )

    junit_text = render(result, "junit")
    junit_schema.validate(junit_text)  # the official schemas, with every outcome in them
    sarif_validator.validate(json.loads(render(result, "sarif")))
    junit = _junit_outcomes(junit_text)
    assert {key: ("fail" if v == "fail" else v) for key, v in junit.items()} == truth

    sarif = json.loads(render(result, "sarif"))["runs"][0]
    listed = {
        (entry["run_id"], rule_id): outcome
        for entry in sarif["properties"]["outcomes"]
        for outcome in ("pass", "fail", "waived", "not_applicable", "unknown")
        for rule_id in entry[outcome]
    }
    assert listed == truth
    assert {(r["properties"]["run_id"], r["ruleId"]) for r in sarif["results"]} == {
        key for key, outcome in truth.items() if outcome == "fail"
    }

    frame = result.to_pandas()
    keys = zip(frame.run_id, frame.rule_id, strict=True)
    assert dict(zip(keys, frame.status, strict=True)) == truth

    rows = list(csv.DictReader(io.StringIO(render(result, "csv"))))
    assert {(row["run_id"], row["rule_id"]) for row in rows} == {
        key for key, outcome in truth.items() if outcome == "fail"
    }

    table = render(result, "table", width=100)
    markdown = render(result, "markdown")
    github = render(result, "github")
    for run in result.runs:
        undecided = [rule for rule in run.not_applicable]
        block = table.split(str(run.run_id), 1)[1].split("\n\n", 1)[0]
        for rule_id in run.unknown:
            assert f"unknown {rule_id}" in block and rule_id in markdown
            assert f"::notice title=unknown%3A {rule_id}::" in github
        if undecided:
            assert ", ".join(undecided)[:40] in " ".join(block.split())
            assert all(rule_id in markdown for rule_id in undecided)
        passed = sum(1 for (rid, _), o in truth.items() if rid == run.run_id and o == "pass")
        assert f"rules: {passed} pass" in block

    reported, files = report(
        tmp_path / "reports",
        logging_store.uri,
        html_only=True,
        settings=ReportSettings(date=parse_date("2026-12-03")),
    )
    assert _outcomes(reported) == _outcomes(result) and files.documents
    for run in result.runs:
        html = (tmp_path / "reports" / f"{run.run_name}.html").read_text()
        badges = re.findall(
            r'<span class="badge (pass|fail|warn|info|not_applicable|unknown)">', html
        )
        assert badges.count("unknown") >= 2 * len(run.unknown)  # summary and evidence table
        assert badges.count("not_applicable") >= len(run.not_applicable)
        passed = html.split("What passed, and the evidence it passed on", 1)
        if any(truth[(run.run_id, r.id)] == "pass" for r in result.rules):
            listed_passes = passed[1].split("</ul>", 1)[0].count('class="badge pass"')
            expected = sum(1 for r in result.rules if truth[(run.run_id, r.id)] == "pass")
            assert listed_passes == expected
        assert "Compliance matrix" not in html and "breaks" not in html
        assert "Evidence mapped to provisions" in html and "not a conformity assessment" in html
