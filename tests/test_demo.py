"""The README's demo store has the mix it promises."""

from __future__ import annotations

from audit.api import check
from tests.conftest import Store

EXPECTED_AREAS = {
    "complete": set(),
    "no-data-version": {"data"},
    "no-hyperparameters": {"hyperparameters"},
    "no-evaluation-metrics": {"metrics"},
    "unpinned-requirements": set(),
    "model-saved-outside-mlflow": {"environment", "model"},
    "notebook-without-git": {"source"},
    "no-signature": {"model"},
    "crashed": {"run", "data", "metrics", "environment", "model"},
}


def test_demo_store_has_one_complete_run_and_one_gap_area_per_run(demo_store: Store) -> None:
    result = check(demo_store.uri, experiment="churn-model")
    errors = {
        run.run_name: {f.category for f in run.findings if f.severity == "error"}
        for run in result.runs
    }
    assert errors == EXPECTED_AREAS
    complete = next(run for run in result.runs if run.run_name == "complete")
    assert complete.findings == ()
    unpinned = next(run for run in result.runs if run.run_name == "unpinned-requirements")
    assert {f.rule_id for f in unpinned.findings if f.severity == "warning"} == {
        "environment.requirement-unpinned"
    }
    assert result.exit_code == 1


def test_demo_champion_passes_and_challenger_fails(demo_store: Store) -> None:
    assert check(demo_store.uri, model="churn-classifier@champion").exit_code == 0
    challenger = check(demo_store.uri, model="churn-classifier@challenger")
    assert challenger.exit_code == 1
    assert {f.rule_id for f in challenger.runs[0].findings if f.severity == "error"} == {
        "model.signature"
    }


def test_autologged_run_shows_what_autologging_misses(demo_store: Store) -> None:
    (run,) = check(demo_store.uri, experiment="price-regression").runs
    failed = {f.rule_id for f in run.findings}
    assert {"data.dataset-source", "data.evaluation-dataset", "metrics.evaluation"} <= failed
