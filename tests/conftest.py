"""Session fixtures: real MLflow stores and a real `mlflow server`, built once per test session."""

from __future__ import annotations

import os

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import stores

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Store:
    uri: str
    root: Path  # the SQLite file or the ./mlruns folder
    run_ids: dict[str, str]


def _build_in(directory: Path, build: Callable[[], dict[str, str]]) -> dict[str, str]:
    # MLflow puts a new experiment's artifacts under ./mlruns of the working directory.
    previous = Path.cwd()
    os.chdir(directory)
    try:
        return build()
    finally:
        os.chdir(previous)


@pytest.fixture(scope="session")
def sqlite_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    directory = tmp_path_factory.mktemp("sqlite-store")
    uri = f"sqlite:///{directory / 'mlflow.db'}"
    run_ids = _build_in(directory, lambda: stores.build_varied_store(uri, directory / "work"))
    return Store(uri, directory / "mlflow.db", run_ids)


@pytest.fixture(scope="session")
def file_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    directory = tmp_path_factory.mktemp("file-store")
    root = directory / "mlruns"
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        run_ids = _build_in(
            directory,
            lambda: stores.build_varied_store(root.as_uri(), directory / "work", models=False),
        )
    finally:
        del os.environ["MLFLOW_ALLOW_FILE_STORE"]
    return Store(str(root), root, run_ids)


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """The README's demo store, built by the sample script exactly as `make demo` does."""
    directory = tmp_path_factory.mktemp("demo") / "store"
    subprocess.run(
        [sys.executable, str(REPO / "samples" / "build_demo_store.py"), str(directory)],
        check=True,
        capture_output=True,
        env=stores.environment(),
    )
    return Store(f"sqlite:///{directory / 'mlflow.db'}", directory / "mlflow.db", {})


@dataclass(frozen=True)
class Server:
    uri: str
    database: Path
    run_ids: dict[str, str]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real `mlflow server` on a free loopback port, with runs logged through it."""
    directory = tmp_path_factory.mktemp("server")
    database = directory / "server.db"
    port = stores.free_port()
    log = (directory / "server.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{database}",
            "--artifacts-destination", str(directory / "artifacts"),
            "--serve-artifacts",
            "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1",
        ],
        cwd=directory,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=stores.environment(),
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(uri, process, directory / "server.log")
        run_ids = _build_in(
            directory, lambda: stores.build_varied_store(uri, directory / "work", models=True)
        )
        yield Server(uri, database, run_ids)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_until_healthy(uri: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"mlflow server did not become healthy: {log.read_text()[-2000:]}")


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> dict[str, object]:
        return dict(json.loads(self.out))


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run `mlflow-audit ARGS` in this process (the console script adds only the entry point)."""
    from audit.cli import main

    def run(*args: str) -> CliResult:
        code = main(list(args))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def copy_of(tmp_path: Path) -> Callable[[Path], Path]:
    def copy(source: Path) -> Path:
        target = tmp_path / source.name
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
        return target

    return copy
