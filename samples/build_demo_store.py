"""Build a demo MLflow store of realistic training runs with a known mix of gaps.

    python samples/build_demo_store.py DIR

writes DIR/mlflow.db (MLflow's default SQLite store) and DIR/mlruns (artifacts), with:

experiment "churn-model": binary classifiers on scikit-learn's breast cancer data set (a stand-in
for a churn model; it ships with scikit-learn, so no download), one run per row:

  complete                   passes every rule of eu-ai-act-high-risk; registered as
                             churn-classifier version 1, alias "champion"; records that its
                             checkout was clean (mlflow.source.git.dirty=false), which MLflow
                             does not record for ordinary runs: elsewhere that rule is unknown
  no-data-version            no dataset logged as a run input            (data)
  no-hyperparameters         no params                                   (hyperparameters)
  no-evaluation-metrics      only training-loss history, nothing on test (metrics)
  unpinned-requirements      requirements without versions               (environment, warnings)
  model-saved-outside-mlflow a pickle logged as a plain file, no MLflow model, so no recorded
                             environment                                 (environment, model)
  notebook-without-git       an interactive session, no git commit       (source)
  no-signature               model without signature or input example;   (model)
                             version 2, alias "challenger"
  crashed                    a run that failed part-way                  (run)

experiment "churn-tuning": a grid search over C (the parent run "tuning-sweep" and one child
run per trial); the best trial is registered as churn-classifier version 3, alias "champion",
and evaluated in a run of its own ("evaluate-champion", mlflow.models.evaluate on the test
set), the way an evaluation job does: its metrics reach version 3 through MLflow's link between
metric and logged model. `--model churn-classifier@champion` documents it with that lineage.

experiment "price-regression": one run with scikit-learn autologging (mlflow.sklearn.autolog),
the way many teams start; autologging records datasets without a source.

MLFLOW_DISABLE_TELEMETRY is set: demo data stays on this machine.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import subprocess
import sys
import warnings
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
warnings.filterwarnings("ignore")

import mlflow  # noqa: E402 - after the telemetry switch
import mlflow.data  # noqa: E402

EXPERIMENT = "churn-model"
MODEL_NAME = "churn-classifier"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path, help="where to create mlflow.db and mlruns/")
    args = parser.parse_args()
    directory: Path = args.directory.resolve()
    if (directory / "mlflow.db").exists():
        parser.error(f"{directory / 'mlflow.db'} exists; give a new directory")
    directory.mkdir(parents=True, exist_ok=True)
    os.chdir(directory)
    build(directory)
    return 0


def build(directory: Path) -> None:
    import logging

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    mlflow.set_tracking_uri("sqlite:///mlflow.db")
    mlflow.set_registry_uri("sqlite:///mlflow.db")
    data = _Data(directory)
    commit = _git_commit()

    mlflow.set_experiment(EXPERIMENT)
    runs = {
        "complete": dict(),
        "no-data-version": dict(log_inputs=False),
        "no-hyperparameters": dict(log_params=False),
        "no-evaluation-metrics": dict(log_test_metrics=False),
        "unpinned-requirements": dict(pip_requirements=["scikit-learn", "pandas", "numpy>=1.24"]),
        "model-saved-outside-mlflow": dict(mlflow_model=False),
        "notebook-without-git": dict(notebook=True),
        "no-signature": dict(signature=False),
    }
    run_ids = {}
    for name, options in runs.items():
        run_ids[name] = _train(data, name, commit, **options)
        print(f"  {EXPERIMENT}/{name}: run {run_ids[name]}")
    run_ids["crashed"] = _crashed_run(data, commit)
    print(f"  {EXPERIMENT}/crashed: run {run_ids['crashed']}")

    client = mlflow.MlflowClient()
    client.update_registered_model(
        MODEL_NAME, description="Flags customers likely to cancel within 90 days."
    )
    client.set_registered_model_alias(MODEL_NAME, "challenger", "2")
    for name, run_id in _tuning_sweep(data, commit).items():
        print(f"  churn-tuning/{name}: run {run_id}")
    client.set_registered_model_alias(MODEL_NAME, "champion", "3")

    mlflow.set_experiment("price-regression")
    print(f"  price-regression/autologged: run {_autologged_run()}")


class _Data:
    """Train/test split of the breast cancer data, saved content-addressed like a data lake."""

    def __init__(self, directory: Path) -> None:
        from sklearn.datasets import load_breast_cancer
        from sklearn.model_selection import train_test_split

        frame = load_breast_cancer(as_frame=True).frame
        self.train, self.test = train_test_split(frame, test_size=0.25, random_state=7)
        self.features = [c for c in frame.columns if c != "target"]
        store = directory / "data"
        store.mkdir(exist_ok=True)
        self.uris = {}
        for split, part in (("train", self.train), ("test", self.test)):
            content = part.to_csv(index=False).encode()
            path = store / f"breast-cancer-{split}-{hashlib.sha256(content).hexdigest()}.csv"
            path.write_bytes(content)
            self.uris[split] = path.as_uri()

    def dataset(self, split: str) -> mlflow.data.dataset.Dataset:
        frame = self.train if split == "train" else self.test
        return mlflow.data.from_pandas(
            frame, source=self.uris[split], name=f"breast-cancer-{split}", targets="target"
        )


def _git_commit() -> str | None:
    """The commit of this checkout, which a CI pipeline would record for the training code."""
    sha = os.environ.get("GITHUB_SHA") or os.environ.get("CI_COMMIT_SHA")
    if sha:
        return sha
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _source_tags(commit: str | None, notebook: bool) -> dict[str, str]:
    if notebook:
        return {"mlflow.source.type": "NOTEBOOK", "mlflow.source.name": "churn-exploration.ipynb"}
    tags = {"mlflow.source.type": "LOCAL", "mlflow.source.name": "train.py"}
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["mlflow.source.git.repoURL"] = "https://git.example.com/acme/churn-model.git"
        tags["mlflow.source.git.branch"] = "main"
    return tags


def _train(
    data: _Data,
    run_name: str,
    commit: str | None,
    *,
    log_inputs: bool = True,
    log_params: bool = True,
    log_test_metrics: bool = True,
    pip_requirements: list[str] | None = None,
    mlflow_model: bool = True,
    notebook: bool = False,
    signature: bool = True,
) -> str:
    import joblib
    from sklearn.linear_model import SGDClassifier
    from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score
    from sklearn.preprocessing import StandardScaler

    params = {"loss": "log_loss", "alpha": 0.0005, "epochs": 20, "random_state": 7}
    scaler = StandardScaler().fit(data.train[data.features])
    x_train = scaler.transform(data.train[data.features])
    x_test = scaler.transform(data.test[data.features])
    y_train, y_test = data.train["target"], data.test["target"]
    model = SGDClassifier(loss="log_loss", alpha=params["alpha"], random_state=7)

    with mlflow.start_run(run_name=run_name) as run:
        mlflow.set_tags(_source_tags(commit, notebook))
        if run_name == "complete" and commit:
            # As a pipeline that trains from a fresh clone can state; MLflow does not.
            mlflow.set_tag("mlflow.source.git.dirty", "false")
        if notebook:
            # MLflow records the commit of the checkout this script runs from; a notebook
            # session outside version control has none.
            for key in ("mlflow.source.git.commit", "mlflow.source.git.repoURL"):
                if key in mlflow.get_run(run.info.run_id).data.tags:
                    mlflow.delete_tag(key)
        if mlflow_model:
            mlflow.set_tag("platform", platform.platform())
        if log_inputs:
            mlflow.log_input(data.dataset("train"), context="training")
            test_dataset = data.dataset("test")
            mlflow.log_input(test_dataset, context="evaluation")
        else:
            test_dataset = None
        if log_params:
            mlflow.log_params(params)
        for epoch in range(params["epochs"]):
            model.partial_fit(x_train, y_train, classes=[0, 1])
            loss = log_loss(y_train, model.predict_proba(x_train))
            mlflow.log_metric("train_loss", loss, step=epoch)

        model_id = None
        if mlflow_model:
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                input_example=x_train[:5] if signature else None,
                pip_requirements=pip_requirements,
                registered_model_name=MODEL_NAME
                if run_name in ("complete", "no-signature")
                else None,
            )
            model_id = info.model_id
        else:
            path = Path("model.joblib")
            joblib.dump(model, path)
            mlflow.log_artifact(str(path))
            path.unlink()
        if log_test_metrics:
            predictions = model.predict(x_test)
            metrics = {
                "test_accuracy": accuracy_score(y_test, predictions),
                "test_f1": f1_score(y_test, predictions),
                "test_roc_auc": roc_auc_score(y_test, model.predict_proba(x_test)[:, 1]),
            }
            for key, value in metrics.items():
                mlflow.log_metric(key, value, dataset=test_dataset, model_id=model_id)
        return str(run.info.run_id)


def _tuning_sweep(data: _Data, commit: str | None) -> dict[str, str]:
    """A grid search whose best trial becomes version 3, evaluated by a separate run."""
    import numpy
    import pandas
    import sklearn
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    mlflow.set_experiment("churn-tuning")
    grid = (0.01, 0.1, 1.0)
    # Pinned as a lock file would: inferring them costs each trial seconds.
    pinned = [
        f"{module.__name__.replace('sklearn', 'scikit-learn')}=={module.__version__}"
        for module in (sklearn, pandas, numpy)
    ] + [f"mlflow=={mlflow.__version__}"]
    x_train, y_train = data.train[data.features], data.train["target"]
    run_ids: dict[str, str] = {}
    trials = []
    with mlflow.start_run(run_name="tuning-sweep") as sweep:
        mlflow.set_tags(_source_tags(commit, notebook=False))
        mlflow.log_params(
            {"search.C": list(grid), "search.strategy": "grid", "search.metric": "train_accuracy"}
        )
        for number, c in enumerate(grid, start=1):
            with mlflow.start_run(run_name=f"trial-{number}", nested=True) as trial:
                mlflow.set_tags(_source_tags(commit, notebook=False))
                if commit:
                    mlflow.set_tag("mlflow.source.git.dirty", "false")
                mlflow.set_tag("platform", platform.platform())
                mlflow.log_input(data.dataset("train"), context="training")
                mlflow.log_params({"C": c, "max_iter": 500, "scaler": "standard"})
                model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=500))
                model.fit(x_train, y_train)
                accuracy = float(model.score(x_train, y_train))
                mlflow.log_metric("train_accuracy", accuracy)
                info = mlflow.sklearn.log_model(
                    model, name="model", input_example=x_train[:5], pip_requirements=pinned
                )
                trials.append((accuracy, c, trial.info.run_id, info))
                run_ids[f"trial-{number}"] = trial.info.run_id
        run_ids["tuning-sweep"] = sweep.info.run_id
    _, c, best_run, best = max(trials, key=lambda t: (t[0], -t[1]))
    mlflow.MlflowClient().create_model_version(
        MODEL_NAME,
        best.model_uri,
        run_id=best_run,
        model_id=best.model_id,
        description=f"Best trial of the grid search (C={c}).",
    )
    with mlflow.start_run(run_name="evaluate-champion") as evaluation:
        mlflow.set_tags(_source_tags(commit, notebook=False))
        mlflow.models.evaluate(
            best.model_uri,
            data=data.dataset("test"),
            model_type="classifier",
            evaluators=["default"],
            model_id=best.model_id,
        )
        run_ids["evaluate-champion"] = evaluation.info.run_id
    return run_ids


def _crashed_run(data: _Data, commit: str | None) -> str:
    with mlflow.start_run(run_name="crashed") as run:
        mlflow.set_tags(_source_tags(commit, notebook=False))
        mlflow.log_input(data.dataset("train"), context="training")
        mlflow.log_params({"loss": "hinge", "alpha": 10.0})
        mlflow.log_metric("train_loss", float("nan"), step=0)
    # What a crash in the training loop leaves behind.
    mlflow.MlflowClient().set_terminated(run.info.run_id, status="FAILED")
    return str(run.info.run_id)


def _autologged_run() -> str:
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import RandomForestRegressor

    features, target = load_diabetes(return_X_y=True, as_frame=True)
    mlflow.sklearn.autolog(log_input_examples=True, silent=True)
    with mlflow.start_run(run_name="autologged") as run:
        RandomForestRegressor(n_estimators=20, max_depth=4, random_state=7).fit(features, target)
    mlflow.sklearn.autolog(disable=True)
    return str(run.info.run_id)


if __name__ == "__main__":
    sys.exit(main())
