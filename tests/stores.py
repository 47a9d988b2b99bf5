"""Build real MLflow stores for the tests, with the real `mlflow` package.

Each builder logs through MLflow's own fluent API and client, so the stores hold exactly what
MLflow writes: run inputs, logged models, the registry, artifacts.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient

COMMIT = "3f1c2a9b7d4e5f60718293a4b5c6d7e8f9012345"
REQUIREMENTS = "scikit-learn==1.5.2\npandas==2.2.3\nnumpy==2.1.1\n"
MODEL_NAME = "audit-test-model"

#: Experiments and runs of the varied store, by run name.
TRUTH_TABLE = ("complete", "no-data", "no-hyperparameters", "no-metrics", "no-environment")
MISSING_CATEGORY = {
    "no-data": "data",
    "no-hyperparameters": "hyperparameters",
    "no-metrics": "metrics",
    "no-environment": "environment",
}
HOSTILE_MARKUP = "<script>alert('x')</script><img src=x onerror=alert(1)>"
HOSTILE_LONG = "A" * 7_990 + "<b>end</b>"  # 8,000 characters: MLflow's longest tag value
HOSTILE_NAME = "run <b>bold</b> \x1b[31mred\x1b[0m ünïcödé 😀 مرحبا"


@contextmanager
def tracking(uri: str) -> Iterator[MlflowClient]:
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield MlflowClient(uri, uri)
    finally:
        mlflow.set_tracking_uri(previous)


def _frame(rows: int = 40) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "tenure": [float(i % 17) for i in range(rows)],
            "charges": [round(20 + 1.5 * i, 2) for i in range(rows)],
            "churned": [i % 3 == 0 for i in range(rows)],
        }
    )


def _dataset(name: str, frame: pd.DataFrame) -> object:
    digest = hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()
    return mlflow.data.from_pandas(
        frame, source=f"s3://acme-data/churn/{name}.parquet?versionId={digest[:32]}", name=name
    )


def _log_environment(tmp: Path) -> None:
    requirements = tmp / "requirements.txt"
    requirements.write_text(REQUIREMENTS)
    mlflow.log_artifact(str(requirements))
    mlflow.set_tag("python_version", "3.11.7")


def build_truth_table(client: MlflowClient, tmp: Path) -> dict[str, str]:
    """Runs complete under the baseline policy, and runs that each miss exactly one area."""
    mlflow.set_experiment("truth-table")
    run_ids = {}
    for name in TRUTH_TABLE:
        with mlflow.start_run(run_name=name) as run:
            mlflow.set_tags({"mlflow.source.git.commit": COMMIT, "mlflow.source.type": "LOCAL"})
            if name != "no-data":
                mlflow.log_input(_dataset("train", _frame()), context="training")
            if name != "no-hyperparameters":
                mlflow.log_params({"alpha": 0.1, "epochs": 10})
            if name != "no-metrics":
                mlflow.log_metric("test_accuracy", 0.91)
            if name != "no-environment":
                _log_environment(tmp)
            run_ids[name] = run.info.run_id
    return run_ids


def build_hostile(client: MlflowClient) -> str:
    """Markup, control characters, unicode, 8,000-character values, NaN/inf, 1,000 params."""
    mlflow.set_experiment("hostile <i>experiment</i>")
    with mlflow.start_run(run_name=HOSTILE_NAME) as run:
        params = {f"param_{i:04d}": f"value {i}" for i in range(997)}
        params["markup"] = HOSTILE_MARKUP
        params["unicode"] = "naïve — 東京 — \u202eevil"
        params["long"] = "B" * 5_990 + "<i>end</i>"
        for start in range(0, len(params), 100):
            mlflow.log_params(dict(list(params.items())[start : start + 100]))
        mlflow.set_tags({"long": HOSTILE_LONG, "markup": HOSTILE_MARKUP})
        mlflow.log_metrics(
            {"nan_metric": float("nan"), "inf_metric": float("inf"), "neg_inf": float("-inf")}
        )
        mlflow.log_metric("system/cpu_utilization_percentage", 12.5)
        return str(run.info.run_id)


def build_models(client: MlflowClient, tmp: Path) -> dict[str, str]:
    """An MLflow 3 logged model (registered, with aliases), an MLflow 2.x style model logged under
    the run's artifacts with the `mlflow.log-model.history` tag, and a deleted run."""
    from sklearn.linear_model import LogisticRegression

    mlflow.set_experiment("models")
    frame = _frame(60)
    train, test = frame.iloc[:45], frame.iloc[45:]
    run_ids = {}
    with mlflow.start_run(run_name="logged-model") as run:
        mlflow.set_tags(
            {
                "mlflow.source.git.commit": COMMIT,
                "mlflow.source.git.dirty": "false",
                "platform": "Linux-6.1-x86_64",
            }
        )
        train_ds, test_ds = _dataset("train", train), _dataset("test", test)
        mlflow.log_input(train_ds, context="training")
        mlflow.log_input(test_ds, context="testing")
        mlflow.log_params({"C": 1.0, "max_iter": 200})
        model = LogisticRegression(C=1.0, max_iter=200).fit(
            train[["tenure", "charges"]], train["churned"]
        )
        for step in range(3):
            mlflow.log_metric("train_loss", 1.0 / (step + 1), step=step)
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            input_example=train[["tenure", "charges"]].head(3),
            pip_requirements=["scikit-learn==1.9.1", "pandas>=2"],
            registered_model_name=MODEL_NAME,
        )
        mlflow.log_metric(
            "test_accuracy",
            float(model.score(test[["tenure", "charges"]], test["churned"])),
            dataset=test_ds,
            model_id=info.model_id,
        )
        run_ids["logged-model"] = run.info.run_id

    with mlflow.start_run(run_name="legacy-2x-layout") as run:
        mlflow.set_tags({"mlflow.source.git.commit": COMMIT})
        mlflow.log_params({"n_estimators": 10})
        mlflow.log_metric("val_auc", 0.8)
        folder = tmp / "legacy-model"
        folder.mkdir()
        signature = {
            "inputs": '[{"type": "double", "name": "x", "required": true}]',
            "outputs": '[{"type": "long", "required": true}]',
        }
        (folder / "MLmodel").write_text(
            "flavors:\n  python_function:\n    python_version: 3.9.18\n"
            "mlflow_version: 2.9.2\n"
            f"signature:\n  inputs: '{signature['inputs']}'\n  outputs: '{signature['outputs']}'\n"
        )
        (folder / "requirements.txt").write_text("mlflow==2.9.2\nscikit-learn>=1.0\n")
        (folder / "python_env.yaml").write_text(
            "python: 3.9.18\ndependencies:\n- -r requirements.txt\n"
        )
        mlflow.log_artifacts(str(folder), artifact_path="model")
        history = [
            {
                "run_id": run.info.run_id,
                "artifact_path": "model",
                "utc_time_created": "2024-01-05 10:00:00.000000",
                "flavors": {"python_function": {}, "sklearn": {}},
                "model_uuid": "0a1b2c3d4e5f",
                "mlflow_version": "2.9.2",
                "signature": signature,
            }
        ]
        mlflow.set_tag("mlflow.log-model.history", json.dumps(history))
        run_ids["legacy-2x-layout"] = run.info.run_id
    client.create_model_version(
        MODEL_NAME,
        source=f"runs:/{run_ids['legacy-2x-layout']}/model",
        run_id=run_ids["legacy-2x-layout"],
    )
    client.set_registered_model_alias(MODEL_NAME, "champion", "1")
    client.set_registered_model_alias(MODEL_NAME, "legacy", "2")

    with mlflow.start_run(run_name="deleted") as run:
        mlflow.log_param("a", 1)
        run_ids["deleted"] = run.info.run_id
    client.delete_run(run_ids["deleted"])
    return run_ids


def build_varied_store(uri: str, tmp: Path, *, models: bool = True) -> dict[str, str]:
    """Every kind of run the suite audits; returns run ids by run name."""
    tmp.mkdir(parents=True, exist_ok=True)
    with tracking(uri) as client:
        run_ids = build_truth_table(client, tmp)
        run_ids["hostile"] = build_hostile(client)
        if models:
            run_ids.update(build_models(client, tmp))
    return run_ids


# --------------------------------------------------------------------------- store fingerprints


def tree_digest(root: Path) -> str:
    """sha256 over every path and file content below root (and root itself if a file)."""
    digest = hashlib.sha256()
    paths = [root] if root.is_file() else sorted(root.rglob("*"))
    for path in paths:
        digest.update(str(path.relative_to(root) if path != root else path.name).encode())
        digest.update(b"\0")
        if path.is_file():
            digest.update(path.read_bytes())
        digest.update(b"\1")
    return digest.hexdigest()


def tree_state(root: Path) -> dict[str, tuple[bool, bytes, int]]:
    """Every path below root, and root itself: whether a folder, its bytes (files), its
    modification time in ns. A file or folder created and removed again changes its folder's."""
    state = {}
    for path in [root, *sorted(root.rglob("*"))]:
        info = path.lstat()
        folder = path.is_dir() and not path.is_symlink()
        content = b"" if folder or not path.is_file() else path.read_bytes()
        state[str(path.relative_to(root))] = (folder, content, info.st_mtime_ns)
    return state


def set_schema_revision(database: Path, revision: str) -> None:
    connection = sqlite3.connect(database)
    with connection:
        connection.execute("UPDATE alembic_version SET version_num = ?", (revision,))
    connection.close()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def environment() -> dict[str, str]:
    """This process's environment for a child, without the active experiment MLflow may have
    left in it (a store built in-process sets one that the child's store does not have)."""
    env = dict(os.environ)
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    for name in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(name, None)
    return env


# --------------------------------------------------------------------------- fresh processes

# The console script in a fresh process. Its last line on stderr names the top-level packages
# of those watched (argv[1], comma-separated) that it loaded, and its exit code.
_PROBE = """
import sys
from audit.__main__ import entry
watched = set(sys.argv[1].split(","))
sys.argv = ["mlflow-audit", *sys.argv[2:]]
code = 0
try:
    entry()
except SystemExit as done:
    code = done.code or 0
# entry() marks pandas, NumPy and pyarrow absent with None: those are not loaded.
loaded = sorted({m.split(".")[0] for m, module in sys.modules.items() if module} & watched)
print("LOADED", ",".join(loaded) or "-", "EXIT", code, file=sys.stderr)
"""


@dataclass(frozen=True)
class Probe:
    out: str
    #: stderr without the probe's own line
    err: str
    loaded: tuple[str, ...]
    code: int


def probe_cli(
    *args: str,
    watched: Iterable[str],
    python: str | Path = sys.executable,
    cwd: Path | None = None,
) -> Probe:
    """`mlflow-audit ARGS` in a fresh process of `python`: its output, exit code, and which of
    the `watched` packages it imported."""
    done = subprocess.run(
        [str(python), "-c", _PROBE, ",".join(watched), *args],
        capture_output=True, text=True, cwd=cwd, env=environment(),
    )  # fmt: skip
    *err, marker = done.stderr.strip().splitlines() or [""]
    parts = marker.split()
    assert parts[:1] == ["LOADED"], done.stderr
    loaded = () if parts[1] == "-" else tuple(parts[1].split(","))
    return Probe(done.stdout, "\n".join(err), loaded, int(parts[3]))


def unwrapped(text: str) -> str:
    """`verify`'s text output with each wrapped line whole again, after checking that every
    line fits 100 columns: continuation lines (indented by 6) joined to the line above."""
    lines: list[str] = []
    for line in text.splitlines():
        assert len(line) <= 100, line
        if line.startswith("      ") and lines:
            lines[-1] += " " + line.strip()
        else:
            lines.append(line)
    return "\n".join(lines) + ("\n" if text.endswith("\n") else "")


def in_process_cli() -> Callable[..., tuple[int, str, str]]:
    """`mlflow-audit ARGS` run in this process: its exit code, stdout and stderr."""
    import contextlib
    import io

    from audit.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
        return code, out.getvalue(), err.getvalue()

    return run
