"""Evidence records: their schema, determinism, normalisation and hostile contents."""

from __future__ import annotations

import json
import math
import sys

import jsonschema_rs
import pytest
from mlflow import MlflowClient

from audit.api import collect, make_selection
from audit.evidence import (
    canonical_json,
    dataset_context,
    json_number,
    parse_requirements,
    sha256_hex,
)
from audit.resources import schema_path
from audit.sources import CollectionNeeds
from tests import stores
from tests.conftest import Store


def records(uri: str, **selection: object) -> dict[str, dict]:
    chosen = make_selection(**selection)  # type: ignore[arg-type]
    return {c.record["run"]["name"]: dict(c.record) for c in collect(uri, selection=chosen)}


@pytest.fixture(scope="module")
def sqlite_records(sqlite_store: Store) -> dict[str, dict]:
    return records(sqlite_store.uri, include_deleted=True)


def test_every_record_validates_against_the_published_schema(
    sqlite_records, file_store: Store
) -> None:
    validator = jsonschema_rs.validator_for(
        json.loads(schema_path("evidence-record.schema.json").read_text())
    )
    every = list(sqlite_records.values()) + list(records(file_store.uri).values())
    assert len(every) >= 12
    for record in every:
        errors = [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(record)]
        assert errors == [], record["run"]["name"]


def test_records_are_deterministic(sqlite_store: Store, sqlite_records) -> None:
    again = records(sqlite_store.uri, include_deleted=True)
    for name, record in sqlite_records.items():
        assert canonical_json(again[name]) == canonical_json(record), name
        assert sha256_hex(again[name]) == sha256_hex(record)
    # canonical JSON: sorted keys, no whitespace
    text = canonical_json(sqlite_records["complete"]).decode()
    assert text.startswith('{"collection":') and ", " not in text[:200]


def test_hostile_contents_come_out_intact(sqlite_records, sqlite_store: Store) -> None:
    record = sqlite_records[stores.HOSTILE_NAME]
    assert record["run"]["name"] == stores.HOSTILE_NAME
    assert record["run"]["experiment_name"] == "hostile <i>experiment</i>"
    params = record["hyperparameters"]
    assert len(params) == 1_000
    assert params["markup"] == stores.HOSTILE_MARKUP
    assert params["unicode"] == "naïve — 東京 — \u202eevil"
    assert len(params["long"]) == 6_000
    assert record["tags"]["long"] == stores.HOSTILE_LONG and len(stores.HOSTILE_LONG) == 8_000
    values = {m["key"]: m["value"] for m in record["metrics"]}
    # MLflow's SQL store keeps infinities as the largest double; the record shows what MLflow holds.
    stored = MlflowClient(sqlite_store.uri).get_run(record["run"]["id"]).data.metrics
    assert values == {key: json_number(stored[key]) for key in values}
    assert values["nan_metric"] == "NaN"
    assert math.isinf(values["inf_metric"]) or values["inf_metric"] == sys.float_info.max
    assert [m["key"] for m in record["system_metrics"]] == ["system/cpu_utilization_percentage"]
    # and the JSON round-trips without NaN tokens
    json.loads(canonical_json(record), parse_constant=lambda token: pytest.fail(token))


def test_run_section(sqlite_records, sqlite_store: Store) -> None:
    run = sqlite_records["complete"]["run"]
    assert run["id"] == sqlite_store.run_ids["complete"]
    assert run["experiment_name"] == "truth-table"
    assert run["status"] == "FINISHED" and run["lifecycle_stage"] == "active"
    assert run["start_time"].endswith("Z") and run["end_time"] >= run["start_time"]
    assert sqlite_records["deleted"]["run"]["lifecycle_stage"] == "deleted"


def test_datasets_grouped_by_context(sqlite_records) -> None:
    data = sqlite_records["logged-model"]["data"]
    (train,) = data["training"]
    (test,) = data["evaluation"]
    assert test["context"] == "testing" and data["other"] == []
    assert train["name"] == "train" and len(train["digest"]) == 8
    assert train["source_uri"].startswith("s3://acme-data/churn/train.parquet?versionId=")
    assert train["rows"] == 45 and train["columns"] == 3
    assert train["source_type"] == "s3"


def test_metrics_know_the_dataset_they_were_computed_on(sqlite_records) -> None:
    metrics = {m["key"]: m for m in sqlite_records["logged-model"]["metrics"]}
    assert metrics["test_accuracy"]["context"] == "evaluation"
    assert metrics["test_accuracy"]["context_from"] == "dataset"
    assert metrics["test_accuracy"]["dataset"]["name"] == "test"
    assert metrics["train_loss"]["step"] == 2  # latest step
    assert metrics["train_loss"]["context"] == "training"
    assert metrics["train_loss"]["context_from"] == "name"
    legacy = {m["key"]: m for m in sqlite_records["legacy-2x-layout"]["metrics"]}
    assert legacy["val_auc"]["context"] == "evaluation"


def test_logged_model_environment_and_registry(sqlite_records) -> None:
    record = sqlite_records["logged-model"]
    (model,) = record["models"]
    assert model["origin"] == "logged_model" and model["uri"] == f"models:/{model['model_id']}"
    assert "sklearn" in model["flavors"] and "python_function" in model["flavors"]
    assert model["signature"]["inputs"][0]["name"] == "tenure"
    assert model["input_example"] is True
    assert [v["version"] for v in model["registered_versions"]] == ["1"]
    environment = record["environment"]
    assert environment["python_version_from"] == f"{model['uri']}/python_env.yaml"
    assert environment["requirements_from"] == f"{model['uri']}/requirements.txt"
    pins = {r["name"]: r["pinned"] for r in environment["requirements"]}
    assert pins["scikit-learn"] is True and pins["pandas"] is False
    assert environment["mlflow_version"]
    assert environment["platform"] == "Linux-6.1-x86_64"
    assert record["source"]["git_dirty"] is False


def test_mlflow_2_layout_from_history_tag_and_run_artifacts(sqlite_records) -> None:
    record = sqlite_records["legacy-2x-layout"]
    (model,) = record["models"]
    assert model["origin"] == "run_artifacts"
    assert model["uri"].endswith("/model") and model["mlflow_version"] == "2.9.2"
    assert model["signature"]["inputs"] == [{"type": "double", "name": "x", "required": True}]
    assert [(v["version"], v["aliases"]) for v in model["registered_versions"]] == [
        ("2", ["legacy"])
    ]
    environment = record["environment"]
    assert environment["python_version"] == "3.9.18"
    assert environment["requirements_from"].endswith("/model/requirements.txt")
    assert "mlflow.log-model.history" not in record["tags"]


def test_run_artifact_and_tag_environment(sqlite_records) -> None:
    environment = sqlite_records["complete"]["environment"]
    assert environment["python_version"] == "3.11.7"
    assert environment["python_version_from"] == "tag:python_version"
    assert environment["requirements_from"].endswith("/requirements.txt")
    assert [r["line"] for r in environment["requirements"]] == stores.REQUIREMENTS.split()
    assert sqlite_records["no-environment"]["environment"]["requirements"] is None


def test_artifacts_are_skipped_when_the_policy_does_not_need_them(sqlite_store: Store) -> None:
    chosen = make_selection(run_id=sqlite_store.run_ids["logged-model"])
    (lean,) = collect(
        sqlite_store.uri, selection=chosen, needs=CollectionNeeds(artifacts=False, registry=False)
    )
    assert lean.record["collection"]["artifacts_read"] is False
    assert lean.record["models"][0]["flavors"] is None
    assert lean.record["models"][0]["registered_versions"] == []


def test_file_store_gives_the_same_records_as_sqlite(sqlite_records, file_store: Store) -> None:
    from_files = records(file_store.uri)
    for name in stores.TRUTH_TABLE:
        left, right = from_files[name], sqlite_records[name]
        for section in ("data", "hyperparameters", "environment"):
            if section == "environment":
                left = {**left, "environment": {**left["environment"], "requirements_from": None}}
                right = {
                    **right,
                    "environment": {**right["environment"], "requirements_from": None},
                }
            assert left[section] == right[section], (name, section)


# --------------------------------------------------------------------------- normalisation


def test_parse_requirements() -> None:
    parsed = parse_requirements(
        "# comment\n-r base.txt\n--extra-index-url https://x\nnumpy==2.1.1\n"
        "pandas>=2\nscipy==1.*\ntorch @ git+https://github.com/pytorch/pytorch@"
        + "a" * 40
        + "\nnot a requirement!!\nSciKit_Learn===1.5  # inline comment\n"
    )
    assert [(r["name"], r["pinned"]) for r in parsed] == [
        ("numpy", True),
        ("pandas", False),
        ("scipy", False),
        ("torch", True),
        (None, False),
        ("scikit-learn", True),
    ]


@pytest.mark.parametrize(
    ("context", "group"),
    [("train", "training"), ("Training", "training"), ("validation", "evaluation"),
     ("test", "evaluation"), ("testing", "evaluation"), ("eval", "evaluation"),
     (None, "other"), ("inference", "other")],
)  # fmt: skip
def test_dataset_context(context: str | None, group: str) -> None:
    assert dataset_context(context) == group


def test_json_number() -> None:
    assert json_number(math.nan) == "NaN"
    assert json_number(-math.inf) == "-Infinity"
    assert json_number(2**60) == str(2**60)
    assert json_number(0.5) == 0.5


def _reference_iso_time(millis: int | None) -> str | None:
    """iso_time as first written, with strftime: the fast spelling must match it."""
    from datetime import datetime, timezone

    if millis is None:
        return None
    try:
        moment = datetime.fromtimestamp(millis / 1000, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def test_iso_time_matches_strftime() -> None:
    import random

    from audit.evidence import iso_time

    rng = random.Random(7)  # noqa: S311 - reproducible test data
    values: list[int | None] = [None, 0, -1, 1, 999, 1764180138486, 10**20, -(10**20)]
    values += [-62135596800000, 253402300799999, 253402300800000, -62135596800001]
    values += [rng.randint(-62135596800000, 253402300799999) for _ in range(20_000)]
    values += [rng.randint(-(10**13), 10**13) for _ in range(20_000)]
    for value in values:
        assert iso_time(value) == _reference_iso_time(value), value


def _reference_bounded_tree(value: object, depth: int = 0) -> object:
    """_bounded_tree as first written, by isinstance only."""
    from collections.abc import Mapping

    from audit.evidence import bounded

    if depth > 32:
        return "[nested too deep]"
    if isinstance(value, str):
        return bounded(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return json_number(value)
    if isinstance(value, Mapping):
        return {bounded(k, 256): _reference_bounded_tree(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_reference_bounded_tree(v, depth + 1) for v in value]
    return bounded(value)


def test_bounded_tree_matches_its_reference() -> None:
    from audit.evidence import MAX_TEXT, _bounded_tree

    class Text(str):
        pass

    deep: object = "leaf"
    for index in range(40):
        deep = [deep] if index % 2 else {"k": deep, 3: index}
    cases: list[object] = [
        deep,
        {"s": "x" * (MAX_TEXT + 5), "k" * 300: 1, "f": 1.5, "n": math.nan, "i": 2**60},
        [True, False, None, 0, -0.0, math.inf, (1, "a"), Text("t" * (MAX_TEXT + 1)), {1, 2}],
        {"nested": [{"a": [1, 2, {"b": "c" * 20_000}]}], Text("key"): b"bytes"},
    ]
    for case in cases:
        got = _bounded_tree(case)
        assert json.dumps(got) == json.dumps(_reference_bounded_tree(case))


def _metric_run(keys: list[str], datasets: list[tuple[str, str | None]]) -> dict:
    from audit.evidence import DatasetFacts, MetricFacts, RunFacts, build_record

    return build_record(
        RunFacts(
            run_id="0" * 32, run_name="r", experiment_id="1", experiment_name="e",
            status="FINISHED", start_time=0, end_time=1, user="u", lifecycle_stage="active",
            params={}, tags={},
            metrics=[MetricFacts(key, 0.5, 0, 0) for key in keys],
            datasets=[
                DatasetFacts(name, f"{index:08x}", None, None, None, None, context)
                for index, (name, context) in enumerate(datasets)
            ],
        )
    )  # fmt: skip


@pytest.mark.parametrize(
    ("key", "context"),
    [
        ("validation_0-logloss", "evaluation"),  # XGBoost's scikit-learn API, eval_set
        ("eval-auc", "evaluation"),  # xgboost.train(evals=[(dvalid, "eval")])
        ("val_loss", "evaluation"), ("val_accuracy", "evaluation"),  # Keras
        ("val/acc", "evaluation"), ("train_loss_epoch", "training"),  # Lightning
        ("f1_score_X_test", "evaluation"), ("accuracy_score-2_X_val", "evaluation"),  # autolog
        ("LogisticRegression_score_X_test-2", "evaluation"),
        ("RandomForestClassifier_score_X_train", "training"),
        ("training_f1_score", "training"), ("test_accuracy", "evaluation"),
        ("f1_score", None), ("loss", None), ("example_count", None),
    ],
)  # fmt: skip
def test_what_a_metric_name_says_of_its_data(key: str, context: str | None) -> None:
    (metric,) = _metric_run([key], [])["metrics"]
    assert (metric["context"], metric["context_from"]) == (context, "name" if context else None)


def test_a_named_validation_set_is_the_metric_dataset_and_names_say_roles() -> None:
    record = _metric_run(
        ["holdout-rmse", "fit-rmse"],
        [("fit", "train"), ("holdout", "eval"), ("X_train", None), ("df_holdout", None),
         ("train_test", None), ("customers", None)],
    )  # fmt: skip
    metrics = {m["key"]: (m["context"], m["dataset"]["name"]) for m in record["metrics"]}
    assert metrics == {"holdout-rmse": ("evaluation", "holdout"), "fit-rmse": ("training", "fit")}
    roles = {
        d["name"]: (group, d["role_from"])
        for group in record["data"]
        for d in record["data"][group]
    }
    assert roles == {
        "fit": ("training", "context"),
        "holdout": ("evaluation", "context"),
        "X_train": ("training", "name"),
        "df_holdout": ("evaluation", "name"),
        "train_test": ("other", None),  # says both: says nothing
        "customers": ("other", None),
    }
