"""Stores that change, or hold what MLflow would not write, while they are audited: the audit
reads a state that existed, changes nothing, and fails in one line where it cannot complete.

The stores are written by MLflow itself (the session's stores, or copies of them); what MLflow
would not write is then put into them with sqlite3 or into their files, and what changes them
during an audit is another process, as `mlflow gc` would be.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from audit.sources import CollectionNeeds, Selection, resolve_store
from audit.sources.sql import SqlSource
from tests import stores
from tests.conftest import CliResult, Store

# --------------------------------------------------------------------------- SQLite snapshots

#: Tables whose rows a hard delete removes with the run (`_RUN_DELETE_CASCADE_MODELS` of
#: MLflow's SQL store, which `mlflow gc` deletes with the run in one transaction).
_RUN_TABLES = ("runs", "params", "tags", "metrics", "latest_metrics")

#: A policy that reads no artifact, so that an audit of a few hundred runs takes a fraction of
#: a second; each run's evidence digest covers its params, tags and metrics all the same.
_POLICY = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "hyperparameters": {
            "minProperties": 1,
            "x-audit": {
                "id": "hyperparameters.logged",
                "title": "Hyperparameters are logged",
                "severity": "error",
                "category": "hyperparameters",
                "provisions": [],
                "remediation": "mlflow.log_params(...)",
            },
        }
    },
}

# Deletes the copies of the runs (`_replicate`) one transaction each, as `mlflow gc` deletes a
# run (SqlAlchemyStore._hard_delete_run): its metrics, latest metrics, params and tags, then the
# run. A lock held by a reader makes it wait (busy timeout), as MLflow's own writers do.
_HARD_DELETER = """
import random, sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
copies = connection.execute("SELECT run_uuid FROM runs WHERE length(run_uuid) > 32")
ids = [row[0] for row in copies]
random.Random(17).shuffle(ids)
print("ready", flush=True)
for run_id in ids:
    connection.execute("BEGIN IMMEDIATE")
    for table in ("metrics", "latest_metrics", "params", "tags", "runs"):
        connection.execute(f"DELETE FROM {table} WHERE run_uuid = ?", (run_id,))
    connection.execute("COMMIT")
    time.sleep(0.005)
"""


def _replicate(database: Path, copies: int) -> None:
    """Every run of the store `copies` times more, under new ids, with all its rows."""
    connection = sqlite3.connect(database)
    columns = {
        table: [row[1] for row in connection.execute(f"PRAGMA table_info({table})")]
        for table in _RUN_TABLES
    }
    with connection:
        for copy in range(1, copies + 1):
            for table in _RUN_TABLES:
                renamed = ", ".join(
                    f"run_uuid || 'c{copy:03d}'" if column == "run_uuid" else column
                    for column in columns[table]
                )
                connection.execute(
                    f"INSERT INTO {table} ({', '.join(columns[table])}) "  # noqa: S608
                    f"SELECT {renamed} FROM {table} WHERE length(run_uuid) = 32"
                )
    connection.close()


@pytest.fixture(scope="module")
def many_runs(sqlite_store: Store, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's SQLite store (written by MLflow) with every run 40 times over."""
    database = tmp_path_factory.mktemp("many-runs") / "mlflow.db"
    database.write_bytes(sqlite_store.root.read_bytes())
    _replicate(database, 40)
    return database


def _in_journal_mode(source: Path, target: Path, mode: str) -> Path:
    target.write_bytes(source.read_bytes())
    connection = sqlite3.connect(target)
    assert connection.execute(f"PRAGMA journal_mode = {mode}").fetchone()[0] == mode
    connection.close()
    return target


def _digests(result: CliResult) -> dict[str, str]:
    assert result.code in (0, 1), result.err
    return {run["run_id"]: run["evidence_sha256"] for run in result.json()["runs"]}


@pytest.mark.parametrize("mode", ["delete", "wal"])
def test_runs_hard_deleted_during_audits_are_audited_whole_or_not_at_all(
    cli: Callable[..., CliResult], many_runs: Path, tmp_path: Path, mode: str
) -> None:
    """While another process hard-deletes runs as `mlflow gc` does, every run each audit reports
    has the evidence it had before any was deleted (its params, tags and metrics), never a run
    without them. In a rollback journal mode the deletes wait for each audit's read
    transaction to end; in WAL mode they go on during it."""
    database = _in_journal_mode(many_runs, tmp_path / "mlflow.db", mode)
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(_POLICY))
    audit = ("check", "--tracking-uri", f"sqlite:///{database}", "--policy", str(policy))
    before = _digests(cli(*audit, "-f", "json"))
    assert len(before) > 300
    deleter = subprocess.Popen(
        [sys.executable, "-c", _HARD_DELETER, str(database)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert deleter.stdout is not None and deleter.stdout.readline() == "ready\n"
        counts = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and deleter.poll() is None:
            audited = _digests(cli(*audit, "-f", "json"))
            changed = {run_id for run_id, digest in audited.items() if before[run_id] != digest}
            assert not changed, f"{len(changed)} of {len(audited)} runs audited half-deleted"
            counts.append(len(audited))
    finally:
        deleter.kill()
        deleter.wait()
    assert len(counts) >= 3 and counts[-1] < counts[0] <= len(before)  # runs went meanwhile


@pytest.mark.parametrize("mode", ["delete", "wal"])
def test_worker_processes_read_what_the_auditing_connection_reads(
    sqlite_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """A large SQLite audit is built by worker processes only where they read the store as the
    auditing connection's transaction does. In a rollback journal mode that transaction keeps
    writers out until the audit ends, workers included (a write tried before they start waits
    and gives up); in WAL mode a write goes through, and no worker process, which would read
    it, is started: the auditing process reads its snapshot alone."""
    import audit.sources.sql as sql

    database = _in_journal_mode(sqlite_store.root, tmp_path / "mlflow.db", mode)
    store = resolve_store(f"sqlite:///{database}")
    everything = CollectionNeeds(artifacts=True, registry=True, metric_history=True)
    selection = Selection(include_deleted=True)
    alone = _records(SqlSource(store, workers=1).collect(selection, everything))
    last = next(reversed(alone))
    written: list[str] = []

    class LateWorkers(sql._Workers):
        def __init__(self, *args: Any) -> None:
            written.append(_write_param(database, last))
            super().__init__(*args)

    monkeypatch.setattr(sql, "_PARALLEL_MIN_RUNS", 2)
    monkeypatch.setattr(sql, "_JOB_RUNS", 2)
    monkeypatch.setattr(sql, "_Workers", LateWorkers)
    parallel = SqlSource(store, workers=2)
    built_here: list[int] = []
    collect_page = parallel._collect_page

    def counted(*args: Any) -> Any:
        built_here.append(1)
        return collect_page(*args)

    monkeypatch.setattr(parallel, "_collect_page", counted)
    if mode == "wal":
        # No workers: the late param is written while the audit reads, and not seen by it.
        late = _records(_write_during(database, last, parallel.collect(selection, everything)))
        assert late == alone and built_here
        assert _records(SqlSource(store, workers=1).collect(selection, everything)) != alone
    else:
        assert _records(parallel.collect(selection, everything)) == alone
        assert written == ["database is locked"] and not built_here


def _records(collected: Any) -> dict[str, str]:
    from audit.evidence import canonical_json

    return {run.record["run"]["id"]: canonical_json(run.record) for run in collected}


def _write_param(database: Path, run_id: str) -> str:
    """Log a param to the run from another connection, waiting for a lock at most 0.2 s: what
    happened."""
    connection = sqlite3.connect(database, timeout=0.2)
    try:
        with connection:
            connection.execute(
                "INSERT INTO params (key, value, run_uuid) VALUES ('late', 'x', ?)", (run_id,)
            )
    except sqlite3.OperationalError as error:
        return str(error)
    finally:
        connection.close()
    return "written"


def _write_during(database: Path, run_id: str, collected: Any) -> Any:
    """The collected runs, a param written to `run_id` once the first has been read."""
    for index, run in enumerate(collected):
        if index == 0:
            assert _write_param(database, run_id) == "written"
        yield run


# --------------------------------------------------------------------------- ./mlruns stores


@pytest.mark.parametrize(
    ("arguments", "line"),
    [
        (("--model", "nosuch@champion"), "unknown registered model version 'nosuch@champion'"),
        (("--model", "nosuch"), "unknown registered model version 'nosuch'"),
        (("--model", "nosuch/1"), "unknown registered model version 'nosuch/1'"),
        (("--model", "nosuch/latest"), "unknown registered model version 'nosuch/latest'"),
        (("--run-id", "0123456789abcdef0123456789abcdef"), "unknown run id"),
        (("-e", "nosuch"), "unknown experiment 'nosuch'"),
        (("--filter", "params.alpha = 'nosuch'"), "no runs matched"),
    ],
)
def test_a_file_store_without_a_registry_is_left_as_it_is(
    cli: Callable[..., CliResult],
    file_store: Store,
    copy_of: Callable[[Path], Path],
    monkeypatch: pytest.MonkeyPatch,
    arguments: tuple[str, ...],
    line: str,
) -> None:
    """A ./mlruns store without `models/` (MLflow's file registry creates it when opened) is
    audited without a file or folder, a byte or a modification time changing: a registered
    model asked for is unknown, and so is anything else that is not there."""
    copy = copy_of(file_store.root)
    assert not (copy / "models").exists() and (copy / ".trash").is_dir()
    monkeypatch.chdir(copy.parent)  # the default store: ./mlruns
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = stores.tree_state(copy)
    result = cli("check", *arguments)
    assert result.code == 2 and result.out == ""
    assert result.err == f"mlflow-audit: error: {line}" + result.err.partition(line)[2]
    assert len(result.err.splitlines()) == 1 and str(copy) in result.err
    assert stores.tree_state(copy) == before


def test_audits_and_reports_of_a_file_store_change_nothing(
    cli: Callable[..., CliResult],
    file_store: Store,
    copy_of: Callable[[Path], Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Audits that complete change no file, folder or modification time of a ./mlruns store
    without `models/` either: deleted runs, the registry looked up for every run, a report
    with metric histories; nor does a report of a model that is not there."""
    copy = copy_of(file_store.root)
    monkeypatch.chdir(copy.parent)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = stores.tree_state(copy)
    assert cli("check", "--include-deleted", "--policy", "baseline").code == 1
    assert cli("report", "-e", "truth-table", "--no-pdf", "--out", str(tmp_path / "r")).code == 0
    failed = cli("report", "--model", "nosuch@champion", "--out", str(tmp_path / "m"))
    assert failed.code == 2 and len(failed.err.splitlines()) == 1
    assert stores.tree_state(copy) == before


# --------------------------------------------------------------------------- undecodable text


def _one_line(result: CliResult) -> str:
    assert result.code == 2 and result.out == "", (result.code, result.err)
    assert len(result.err.splitlines()) == 1 and "Traceback" not in result.err, result.err
    return result.err.strip()


@pytest.mark.parametrize("column", ["value", "key"])
@pytest.mark.parametrize("source", ["sql", "client"])
def test_a_tag_that_is_not_utf8_is_exit_2_in_one_line(
    cli: Callable[..., CliResult],
    sqlite_store: Store,
    copy_of: Callable[[Path], Path],
    column: str,
    source: str,
) -> None:
    """A tag whose bytes are not UTF-8 (written with sqlite3: MLflow would not) cannot be read
    by MLflow's client, which also logged the error with its traceback (59 lines) before the
    audit's line; the SQL source fails alike rather than audit a value MLflow never held."""
    database = copy_of(sqlite_store.root)
    with sqlite3.connect(database) as connection:
        connection.execute(
            f"UPDATE tags SET {column} = CAST(X'41FF42' AS TEXT) "  # noqa: S608
            "WHERE key = 'mlflow.user' AND run_uuid = ?",
            (sqlite_store.run_ids["complete"],),
        )
    connection.close()
    before = stores.tree_digest(database)
    result = cli("check", "--tracking-uri", f"sqlite:///{database}", "--source", source)
    line = _one_line(result)
    assert line.startswith(f"mlflow-audit: error: reading {database} failed: ")
    assert f"Could not decode to UTF-8 column '{column}'" in line
    assert stores.tree_digest(database) == before


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        ("tag", "'utf-8' codec can't decode byte 0xff"),
        ("experiment meta.yaml", "MLflow's file store skipped part of it: Malformed experiment"),
        ("run meta.yaml", "MLflow's file store skipped part of it: Wrong experiment ID"),
    ],
)
def test_a_file_store_mlflow_reads_in_part_is_exit_2_in_one_line(
    cli: Callable[..., CliResult],
    file_store: Store,
    copy_of: Callable[[Path], Path],
    damage: str,
    said: str,
) -> None:
    """MLflow's file store skips an experiment whose meta.yaml is malformed and a run whose
    meta.yaml names another experiment, with a warning (and its traceback) on stderr and no
    error: the audit would complete without them. Both, and a tag file that is not UTF-8, are
    exit 2 in one line."""
    root = copy_of(file_store.root)
    run_id = file_store.run_ids["complete"]
    (run,) = root.glob(f"*/{run_id}")
    if damage == "tag":
        (run / "tags" / "mlflow.user").write_bytes(b"A\xffB")
    elif damage == "experiment meta.yaml":
        (run.parent / "meta.yaml").write_text("")
    else:
        meta = run / "meta.yaml"
        meta.write_text(
            "\n".join(
                "experiment_id: '999'" if line.startswith("experiment_id:") else line
                for line in meta.read_text().splitlines()
            )
        )
    before = stores.tree_state(root)
    line = _one_line(cli("check", "--tracking-uri", str(root)))
    assert line.startswith(f"mlflow-audit: error: reading {root} failed: {said}"), line
    assert stores.tree_state(root) == before
