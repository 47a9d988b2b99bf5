"""Every tracking URI form MLflow accepts is recognised: it works, or one line says what it
needs, with none of MLflow's own log lines. Databricks is tried without a network: no
credentials, a registry URI given as the store, a workspace that does not answer."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import stores
from tests.conftest import Store

TIMEOUT = 120  # seconds; the Databricks SDK alone would retry an unreachable host for 300


def _audit(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        k: v
        for k, v in stores.environment().items()
        if not k.startswith(("DATABRICKS_", "MLFLOW_TRACKING"))
    }
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "audit", "check", *args],
        capture_output=True, text=True, cwd=cwd, env=environment, timeout=TIMEOUT,
    )  # fmt: skip


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A home without ~/.databrickscfg."""
    folder = tmp_path / "home"
    folder.mkdir()
    return folder


@pytest.mark.parametrize(
    ("uri", "line"),
    [
        ("databricks",
         "cannot sign in to Databricks (databricks): no credentials found; set DATABRICKS_HOST "
         "and DATABRICKS_TOKEN, or add a DEFAULT profile in ~/.databrickscfg "
         "(databricks auth login)"),
        ("databricks://ml-prod",
         "cannot sign in to Databricks (databricks://ml-prod): no credentials found; set "
         "DATABRICKS_HOST and DATABRICKS_TOKEN, or add profile 'ml-prod' in ~/.databrickscfg "
         "(databricks auth login --profile ml-prod)"),
        ("databricks-uc",
         "databricks-uc is Unity Catalog's model registry, not a tracking store: use "
         "--tracking-uri databricks (or databricks://PROFILE); MLflow reads its registry from "
         "MLFLOW_REGISTRY_URI"),
        ("databricks-uc://ml-prod",
         "databricks-uc://ml-prod is Unity Catalog's model registry, not a tracking store: use "
         "--tracking-uri databricks (or databricks://PROFILE); MLflow reads its registry from "
         "MLFLOW_REGISTRY_URI"),
    ],
)  # fmt: skip
def test_databricks_uris_say_what_they_need_in_one_line(
    uri: str, line: str, home: Path, tmp_path: Path
) -> None:
    for spelling in (("--tracking-uri", uri), ()):  # the flag, and MLflow's variable
        done = _audit(*spelling, cwd=tmp_path, HOME=str(home), MLFLOW_TRACKING_URI=uri)
        assert done.returncode == 2
        assert done.stderr.splitlines() == [f"mlflow-audit: error: {line}"]
        assert not (tmp_path / uri).exists()  # never taken for a local folder


def test_a_databricks_workspace_that_does_not_answer_is_exit_2_within_the_timeout(
    home: Path, tmp_path: Path
) -> None:
    token = "dapi0123456789abcdef0123456789abcdef"
    started = time.monotonic()
    done = _audit(
        "--tracking-uri", "databricks", "--timeout", "1", cwd=tmp_path, HOME=str(home),
        DATABRICKS_HOST=f"https://127.0.0.1:{stores.free_port()}", DATABRICKS_TOKEN=token,
    )  # fmt: skip
    assert time.monotonic() - started < 60
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "mlflow-audit: error: cannot reach Databricks (databricks): no answer within 8 s "
        "(--timeout sets the seconds per request)"
    ]
    assert token not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("uri", "line"),
    [
        ("mysql://audit:pw@127.0.0.1:1/mlflow",
         "cannot open mysql://audit:***@127.0.0.1:1/mlflow: SQLAlchemy's driver for it is not "
         "installed (pip install mysqlclient)"),
        ("mysql+pymysql://audit:pw@127.0.0.1:1/mlflow",
         "cannot open mysql+pymysql://audit:***@127.0.0.1:1/mlflow: SQLAlchemy's driver for it "
         "is not installed (pip install pymysql)"),
        ("sqlite:///nowhere/mlflow.db", "no MLflow store at {cwd}/nowhere/mlflow.db (from "
         "sqlite:///nowhere/mlflow.db); MLflow would create an empty database there, so check "
         "the path"),
        ("file:///nowhere/mlruns", "no MLflow store at /nowhere/mlruns (from "
         "file:///nowhere/mlruns)"),
    ],
)  # fmt: skip
def test_database_and_path_uris_say_what_they_need(uri: str, line: str, tmp_path: Path) -> None:
    done = _audit("--tracking-uri", uri, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"mlflow-audit: error: {line.format(cwd=tmp_path)}"]


def test_sqlite_relative_and_absolute_and_file_uris_work(
    sqlite_store: Store, file_store: Store, tmp_path: Path
) -> None:
    shutil.copy(sqlite_store.root, tmp_path / "mlflow.db")
    for uri in ("sqlite:///mlflow.db", f"sqlite:///{tmp_path / 'mlflow.db'}"):
        done = _audit("--tracking-uri", uri, "-q", cwd=tmp_path)
        assert done.returncode == 1 and " runs in " in done.stdout, done.stderr
    done = _audit("--tracking-uri", file_store.root.as_uri(), "-q", cwd=tmp_path)
    assert done.returncode == 1 and " runs in " in done.stdout, done.stderr
    assert [path.name for path in tmp_path.iterdir()] == ["mlflow.db"]
