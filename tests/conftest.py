"""Session fixtures: real MLflow stores and a real `mlflow server`, built once per test session."""

from __future__ import annotations

import os

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

import contextlib
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests import stores

REPO = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------- a clean checkout

#: What tools write next to the code by design; anything else appearing or changing in the
#: checkout during the suite is a test or a command writing where it should not.
_CACHES = frozenset({"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"})


def _checkout_state() -> dict[str, tuple[str, int, int]] | None:
    """Each path `git status` reports (untracked and ignored included), with its size and
    modification time; None outside a git checkout."""
    try:
        listing = subprocess.run(
            ["git", "status", "--porcelain=v1", "-z", "--untracked-files=all", "--ignored"],
            cwd=REPO, capture_output=True, check=True, timeout=60,
        ).stdout.decode("utf-8", "surrogateescape")  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    state = {}
    for entry in filter(None, listing.split("\0")):
        code, path = entry[:2], entry[3:]
        if _CACHES.intersection(Path(path).parts):
            continue
        with contextlib.suppress(OSError):
            stat = (REPO / path).lstat()
            state[path] = (code, stat.st_size, stat.st_mtime_ns)
            continue
        state[path] = (code, -1, -1)
    return state


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_CHECKOUT] = _checkout_state()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The suite fails if it wrote into the checkout (a store, a report, a stray file)."""
    before = session.config.stash.get(_CHECKOUT, None)
    after = _checkout_state()
    if before is None or after is None or before == after:
        return
    changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_line(
            f"FAILED: the test session changed the checkout: {', '.join(changed[:10])}", red=True
        )
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


_CHECKOUT = pytest.StashKey[dict[str, tuple[str, int, int]] | None]()


@pytest.fixture(scope="session")
def junit_schema() -> Any:
    """The JUnit schema CI tools follow (Jenkins xUnit's junit-10.xsd), as in shared/reference."""
    import xmlschema

    return xmlschema.XMLSchema(str(REPO / "tests" / "reference" / "junit-10.xsd"))


@pytest.fixture(scope="session")
def sarif_validator() -> Any:
    """OASIS SARIF 2.1.0's JSON Schema (errata 01), as in shared/reference."""
    import jsonschema_rs

    schema = json.loads((REPO / "tests" / "reference" / "sarif-schema-2.1.0.json").read_text())
    validator = jsonschema_rs.validator_for(schema)
    assert type(validator).__name__ == "Draft4Validator"  # the schema's own draft
    return validator


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


def _built_by_a_copy(tmp_path_factory: pytest.TempPathFactory, script: str) -> Path:
    """The store a builder in tests/fixtures writes, run in a process of its own from a copy
    outside this repository (so that no run records this checkout's commit): its folder."""
    directory = tmp_path_factory.mktemp(Path(script).stem.replace("_", "-"))
    builder = directory / f"build_{script}"
    shutil.copy(REPO / "tests" / "fixtures" / script, builder)
    store = directory / "store"
    subprocess.run(
        [sys.executable, str(builder), str(store)],
        check=True,
        capture_output=True,
        cwd=directory,
        env=stores.environment(),
    )
    return store


@pytest.fixture(scope="session")
def logging_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """Runs logged the way teams log them: autologging, mlflow.models.evaluate, datasets without
    a context, LightGBM's validation sets, a dirty git checkout (tests/fixtures/logging_store.py).
    The builder runs as a copy outside this repository, so that only the run meant to come from
    a git checkout records a commit."""
    store = _built_by_a_copy(tmp_path_factory, "logging_store.py")
    run_ids = json.loads((store / "runs.json").read_text())
    return Store(f"sqlite:///{store / 'mlflow.db'}", store / "mlflow.db", run_ids)


@dataclass(frozen=True)
class LineageStore:
    uri: str
    root: Path
    model: str
    run_ids: dict[str, str]
    model_ids: dict[str, str]


@pytest.fixture(scope="session")
def lineage_store(tmp_path_factory: pytest.TempPathFactory) -> LineageStore:
    """One registered model with three versions: v2 evaluated in a separate run with
    mlflow.models.evaluate, v3 the best child of a sweep (tests/fixtures/lineage_store.py).
    Built outside this repository, so that no run records this checkout's commit."""
    store = _built_by_a_copy(tmp_path_factory, "lineage_store.py")
    built = json.loads((store / "lineage.json").read_text())
    return LineageStore(
        f"sqlite:///{store / 'mlflow.db'}",
        store / "mlflow.db",
        built["model"],
        built["runs"],
        built["model_ids"],
    )


@dataclass(frozen=True)
class ExportCase:
    """One subject of the test stores for the exports' tests: which store, and the subject."""

    store: str
    subject: Any  # audit.exports.Subject

    @property
    def id(self) -> str:
        return f"{self.store}:{self.subject.label}"


#: The date every export in the tests is made on, so that they are reproducible.
EXPORT_DATE = "2026-12-01T00:00:00Z"


@pytest.fixture(scope="session")
def export_cases(
    sqlite_store: Store, logging_store: Store, lineage_store: LineageStore, demo_store: Store
) -> list[ExportCase]:
    """Every run and every model version of the test stores, audited with the default policy
    (the demo's champion with the sample system card), as the exports receive them."""
    import audit
    from audit.exports import subjects_of
    from audit.policy import load_policy

    policy = load_policy(None)
    cases: list[ExportCase] = []

    def add(store: str, uri: str, **selection: Any) -> None:
        result = audit.check(tracking_uri=uri, policy=policy, keep_records=True, **selection)
        cases.extend(ExportCase(store, subject) for subject in subjects_of(result, policy))

    for name, store in (("sqlite", sqlite_store), ("logging", logging_store)):
        add(name, store.uri)
    add("lineage", lineage_store.uri)
    add("lineage", lineage_store.uri, model=[f"{lineage_store.model}/{v}" for v in (1, 2, 3)])
    add("demo", demo_store.uri)
    add("demo", demo_store.uri, model=["churn-classifier/1", "churn-classifier/2"])
    add(
        "demo",
        demo_store.uri,
        model="churn-classifier@champion",
        system_card=str(REPO / "samples" / "system-card.yaml"),
    )
    return cases


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
    with running_mlflow_server(directory, f"sqlite:///{database}") as uri:
        run_ids = _build_in(
            directory, lambda: stores.build_varied_store(uri, directory / "work", models=True)
        )
        yield Server(uri, database, run_ids)


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


# --------------------------------------------------------------------------- PostgreSQL


@dataclass(frozen=True)
class Postgres:
    """A real PostgreSQL 16 started by the pgserver wheel, reached on a Unix socket only."""

    server: Any

    def uri(self, database: str, **query: str) -> str:
        uri = str(self.server.get_uri(database))  # postgresql://postgres:@/DB?host=SOCKET_DIR
        return uri + "".join(f"&{key}={quote(value, safe='')}" for key, value in query.items())

    def execute(self, statement: str, database: str = "postgres") -> list[tuple[Any, ...]]:
        """Run one statement as the superuser, outside any audit (autocommit)."""
        import psycopg

        with psycopg.connect(self.uri(database), autocommit=True) as connection:
            cursor = connection.execute(statement)
            return cursor.fetchall() if cursor.description else []


@dataclass(frozen=True)
class PostgresStore:
    uri: str
    database: str
    postgres: Postgres
    run_ids: dict[str, str]


@dataclass(frozen=True)
class PostgresMlflowServer:
    uri: str
    store: PostgresStore


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    import tempfile
    import warnings

    # Not under pytest's temporary folder: run as root, pgserver runs PostgreSQL as its own
    # user, and every pytest session (a concurrent one too) makes that folder private again,
    # after which PostgreSQL could no longer be stopped.
    directory = Path(tempfile.mkdtemp(prefix="mlflow-audit-postgres-"))
    try:
        with warnings.catch_warnings():
            # platformdirs warns that XDG_RUNTIME_DIR is unset (CI), and falls back to /tmp.
            warnings.simplefilter("ignore")
            import pgserver

            server = pgserver.get_server(directory / "data", cleanup_mode="stop")
        try:
            postgres = Postgres(server)
            # Autovacuum's ANALYZE would take transaction ids on its own schedule; the
            # read-only tests count them.
            postgres.execute("ALTER SYSTEM SET autovacuum = off")
            postgres.execute("SELECT pg_reload_conf()")
            yield postgres
        finally:
            server.cleanup()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_store(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> PostgresStore:
    """The varied store, created in a PostgreSQL database by MLflow itself (tables, runs,
    registry); artifacts in local folders."""
    directory = tmp_path_factory.mktemp("postgres-store")
    postgres.execute("CREATE DATABASE mlflow")
    uri = postgres.uri("mlflow")
    run_ids = _build_in(directory, lambda: stores.build_varied_store(uri, directory / "work"))
    return PostgresStore(uri, "mlflow", postgres, run_ids)


@pytest.fixture(scope="session")
def postgres_mlflow_server(
    postgres_store: PostgresStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PostgresMlflowServer]:
    """A real `mlflow server --backend-store-uri postgresql://...` over the PostgreSQL store."""
    directory = tmp_path_factory.mktemp("postgres-server")
    with running_mlflow_server(directory, postgres_store.uri) as uri:
        yield PostgresMlflowServer(uri, postgres_store)


@contextlib.contextmanager
def running_mlflow_server(directory: Path, backend_store_uri: str) -> Iterator[str]:
    """`mlflow server` on a free loopback port, serving artifacts from `directory`; its URI."""
    port = stores.free_port()
    with (directory / "server.log").open("w") as log:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "mlflow", "server",
                "--backend-store-uri", backend_store_uri,
                "--artifacts-destination", str(directory / "artifacts"),
                "--serve-artifacts",
                "--host", "127.0.0.1", "--port", str(port),
                "--workers", "1",
            ],
            cwd=directory,
            stdout=log,
            stderr=subprocess.STDOUT,
            # MLflow's job runner (seven huey consumers, periodic tasks that write to the
            # store) serves no read, and would write while tests check that nothing does.
            env={**stores.environment(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )  # fmt: skip
        uri = f"http://127.0.0.1:{port}"
        try:
            _wait_until_healthy(uri, process, directory / "server.log")
            yield uri
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
