"""Benchmark: `mlflow-audit check` on a large store, against MLflow's client and a bare SQL
read of the same tables, side by side in one run, on SQLite, PostgreSQL and an `mlflow server`.

    python benchmarks/bench_scale.py [--runs 100000] [--rounds 1] [--skip-client-audit]
                                     [--backends sqlite,postgresql,rest] [--floor]

Builds (once, then reuses) benchmarks/.stores/runs-N: the 2,000-run store of bench_check.py
(10 params, 5 metrics, 6 tags, 1 dataset input per run, written by MLflow itself) replicated
with SQL under new run ids until it holds N runs. For PostgreSQL, a real PostgreSQL 16 (the
pgserver wheel of the test extra) in benchmarks/.stores/postgres-N, whose tables MLflow creates
and the SQLite rows fill. For REST, an `mlflow server` over the SQLite store. Then times fresh
processes, with their peak memory (max RSS, from /usr/bin/time):

  bare SQL read      every row of runs, params, tags, latest_metrics, inputs, datasets and
                     input_tags (sqlite3 or psycopg): the floor any reader pays
  audit (sql)        mlflow-audit check --source sql -f json (the default for SQL stores)
  mlflow search_runs MlflowClient.search_runs(max_results=50000), page after page
  audit (client)     mlflow-audit check --source client -f json (skip with --skip-client-audit)
  cold start         mlflow-audit check of the 10-run demo store, against python -c "import mlflow"

With --floor, three more on SQLite and PostgreSQL: the SQL audit with its later stages cut
out, to show what the stages before them cost (its worker processes, page by page, no output
written):

  audit rows only    the runs' rows read into the facts a record is built from
  audit records only the evidence records built too, without canonical JSON, redaction,
                     sha256 or evaluation
  audit digests only the records' RFC 8785 canonical JSON and sha256 too (each run's result
                     carries its evidence digest), without redaction or evaluation

Targets (issue 6): search_runs / audit (sql) >= 10 on SQLite and PostgreSQL; audit (sql) /
bare SQL <= 2; over REST, search_runs / audit (client) >= 1.3; peak memory under 500 MB on
every path; cold start at most half of `import mlflow`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_check import _READ_WITH_MLFLOW, build_store  # noqa: E402

_BARE_READ = """
import sqlite3, sys
connection = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
rows = 0
for table in ("runs", "params", "tags", "latest_metrics", "inputs", "datasets", "input_tags"):
    cursor = connection.execute(f"SELECT * FROM {table}")
    while batch := cursor.fetchmany(10000):
        rows += len(batch)
print(rows)
"""

# `mlflow-audit check --source sql` with the stages after reading (`rows`), after building the
# records (`records`) or after their canonical JSON and sha256 (`digests`: the least a run costs
# when each result carries its evidence digest) cut out: each run's result is its id alone.
_AUDIT_FLOOR = """
import sys
import audit.api, audit.evidence as ev, audit.sources.sql as sql
from audit.evaluation import EvaluatedRun
from audit.result import RunResult

def record_only(facts):
    if sys.argv[2] == "rows":
        return {"run": {"id": facts.run_id}}, ""
    record = ev._unredacted_record(facts)
    if sys.argv[2] == "digests":
        return record, ev.sha256_hex(record)
    return record, ""

class IdOnly:
    def __init__(self, *arguments, **options):
        pass
    def __call__(self, item):
        run_id = item.record["run"]["id"]
        return EvaluatedRun(RunResult(run_id, None, "0", None, "", (), (), ()))

# Replaced, not added: a rename in the audit must fail here, not time the whole audit instead.
assert sql.record_and_digest and audit.api.RunEvaluator
sql.record_and_digest = record_only
audit.api.RunEvaluator = IdOnly
print(len(audit.api.check(sys.argv[1], source="sql").runs))
"""

# Tables whose rows belong to a run, and the columns that carry the run's (or input's) id.
_RUN_TABLES = {
    "runs": ("run_uuid",),
    "params": ("run_uuid",),
    "tags": ("run_uuid",),
    "metrics": ("run_uuid",),
    "latest_metrics": ("run_uuid",),
}


def replicate(database: Path, runs: int) -> None:
    """Copy every run (and its rows) under new ids until the store holds `runs` runs."""
    connection = sqlite3.connect(database)
    base = connection.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    copies = -(-runs // base) - 1
    columns = {
        table: [row[1] for row in connection.execute(f"PRAGMA table_info({table})")]
        for table in (*_RUN_TABLES, "inputs", "input_tags")
    }

    def select(table: str, renamed: dict[str, str]) -> str:
        return ", ".join(renamed.get(column, column) for column in columns[table])

    with connection:
        for copy in range(1, copies + 1):
            suffix = f"'x{copy:05d}'"
            for table, ids in _RUN_TABLES.items():
                renamed = {column: f"{column} || {suffix}" for column in ids}
                connection.execute(
                    f"INSERT INTO {table} ({', '.join(columns[table])}) "
                    f"SELECT {select(table, renamed)} FROM {table} "
                    f"WHERE run_uuid NOT LIKE '%x%'"
                )
            # A dataset input: DATASET -> RUN, with its own id for the context tag.
            renamed = {
                "input_uuid": f"input_uuid || {suffix}",
                "destination_id": f"destination_id || {suffix}",
            }
            connection.execute(
                f"INSERT INTO inputs ({', '.join(columns['inputs'])}) "
                f"SELECT {select('inputs', renamed)} FROM inputs "
                "WHERE destination_type = 'RUN' AND input_uuid NOT LIKE '%x%'"
            )
            connection.execute(
                f"INSERT INTO input_tags ({', '.join(columns['input_tags'])}) "
                f"SELECT {select('input_tags', {'input_uuid': f'input_uuid || {suffix}'})} "
                "FROM input_tags WHERE input_uuid NOT LIKE '%x%'"
            )
    connection.execute("VACUUM")
    connection.close()


def scaled_store(store_dir: Path, runs: int) -> Path:
    directory = store_dir / f"runs-{runs}"
    database = directory / "mlflow.db"
    if database.exists():
        return database
    seed = build_store(store_dir / "runs-2000", 2000)
    directory.mkdir(parents=True, exist_ok=True)
    print(f"replicating {seed} to {runs} runs in {database} (once) ...", flush=True)
    shutil.copy2(seed, database)
    replicate(database, runs)
    return database


_BARE_READ_POSTGRES = """
import sys, psycopg
rows = 0
with psycopg.connect(sys.argv[1]) as connection:
    for table in ("runs", "params", "tags", "latest_metrics", "inputs", "datasets", "input_tags"):
        with connection.cursor(name=f"read_{table}") as cursor:
            cursor.execute(f"SELECT * FROM {table}")
            while batch := cursor.fetchmany(10000):
                rows += len(batch)
print(rows)
"""

_CREATE_WITH_MLFLOW = """
import sys
from mlflow import MlflowClient
MlflowClient(sys.argv[1]).search_experiments()  # creates MLflow's tables, at its revision
"""

#: Tables copied from the SQLite store into PostgreSQL, parents first.
_COPIED_TABLES = (
    "experiments", "experiment_tags", "runs", "params", "tags", "metrics", "latest_metrics",
    "datasets", "inputs", "input_tags",
)  # fmt: skip


#: Columns holding the ids `replicate` made; PostgreSQL keeps MLflow's varchar(32) for them.
_ID_COLUMNS = frozenset({"run_uuid", "destination_id", "input_uuid"})


def _fit_id(value: Any) -> Any:
    """A replicated id ("<uuid>x00001", 38 characters) as 32 hex digits, the same every time."""
    if isinstance(value, str) and len(value) > 32:
        import hashlib

        return hashlib.md5(value.encode(), usedforsecurity=False).hexdigest()
    return value


def postgres_store(store_dir: Path, database: Path, runs: int) -> tuple[Any, str]:
    """A PostgreSQL server holding the SQLite store's runs (copied once); (server, URI)."""
    import warnings

    import psycopg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        server = pgserver.get_server(store_dir / f"postgres-{runs}", cleanup_mode="stop")
    uri = str(server.get_uri("mlflow"))
    filled = store_dir / f"postgres-{runs}" / ".filled"
    if filled.exists():
        return server, uri
    print(f"copying {database} into PostgreSQL (once) ...", flush=True)
    server.psql("CREATE DATABASE mlflow;")
    subprocess.run([sys.executable, "-c", _CREATE_WITH_MLFLOW, uri], check=True)
    source = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    with psycopg.connect(uri) as target:
        target.execute(f"TRUNCATE {', '.join(_COPIED_TABLES)} CASCADE")
        for table in _COPIED_TABLES:
            columns = [row[1] for row in source.execute(f"PRAGMA table_info({table})")]
            names = ", ".join(columns)
            booleans = {
                name
                for (name,) in target.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_name = %s AND data_type = 'boolean'",
                    (table,),
                )
            }
            with target.cursor().copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in source.execute(f"SELECT {names} FROM {table}"):
                    copy.write_row(
                        [
                            bool(value)
                            if name in booleans and value is not None
                            else _fit_id(value)
                            if name in _ID_COLUMNS
                            else value
                            for name, value in zip(columns, row, strict=True)
                        ]
                    )
        target.execute("ANALYZE")
    source.close()
    filled.touch()
    return server, uri


@contextlib.contextmanager
def mlflow_server(database: Path) -> Iterator[str]:
    """`mlflow server` over the SQLite store, on a free loopback port; its URI."""
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{database}",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2):  # noqa: S310
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit("mlflow server did not start") from None
                time.sleep(0.5)
        yield uri
    finally:
        process.terminate()
        process.wait(timeout=30)


def measured(command: list[str]) -> tuple[float, float]:
    """(seconds, peak MB) of a fresh process."""
    start = time.perf_counter()
    completed = subprocess.run(
        ["/usr/bin/time", "-f", "%M", *command], capture_output=True, text=True
    )
    elapsed = time.perf_counter() - start
    if completed.returncode not in (0, 1):
        raise SystemExit(f"{command} failed ({completed.returncode}): {completed.stderr[-2000:]}")
    kilobytes = int(re.findall(r"^(\d+)$", completed.stderr, re.MULTILINE)[-1])
    return elapsed, kilobytes / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--backends", default="sqlite,postgresql,rest")
    parser.add_argument("--skip-client-audit", action="store_true")
    parser.add_argument("--floor", action="store_true", help="also the SQL audit's first stages")
    parser.add_argument("--store-dir", type=Path, default=HERE / ".stores")
    args = parser.parse_args()
    backends = args.backends.split(",")
    store_dir = args.store_dir.resolve()

    database = scaled_store(store_dir, args.runs)
    audit = str(Path(sys.executable).with_name("mlflow-audit"))

    def check(uri: str, source: str) -> list[str]:
        return [audit, "check", "--tracking-uri", uri, "--source", source, "-f", "json",
                "-o", os.devnull]  # fmt: skip

    def sql_commands(uri: str, bare: list[str]) -> dict[str, list[str]]:
        commands = {
            "bare SQL read": bare,
            "audit (sql)": check(uri, "sql"),
            "mlflow search_runs": [sys.executable, "-c", _READ_WITH_MLFLOW, uri],
        }
        if not args.skip_client_audit:
            commands["audit (client)"] = check(uri, "client")
        if args.floor:
            for stage in ("rows", "records", "digests"):
                commands[f"audit {stage} only"] = [sys.executable, "-c", _AUDIT_FLOOR, uri, stage]
        return commands

    with contextlib.ExitStack() as stack:
        if "sqlite" in backends:
            uri = f"sqlite:///{database}"
            compare("SQLite", sql_commands(uri, [sys.executable, "-c", _BARE_READ, str(database)]),
                    args.rounds)  # fmt: skip
        if "postgresql" in backends:
            server, uri = postgres_store(store_dir, database, args.runs)
            stack.callback(server.cleanup)
            bare = [sys.executable, "-c", _BARE_READ_POSTGRES, uri]
            compare("PostgreSQL", sql_commands(uri, bare), args.rounds)
        if "rest" in backends:
            uri = stack.enter_context(mlflow_server(database))
            compare(
                "REST (mlflow server over the SQLite store)",
                {
                    "mlflow search_runs": [sys.executable, "-c", _READ_WITH_MLFLOW, uri],
                    "audit (client)": check(uri, "client"),
                },
                args.rounds,
            )

    demo = store_dir / "demo" / "mlflow.db"
    if demo.exists():
        cold = [measured([audit, "check", "--tracking-uri", f"sqlite:///{demo}", "-f", "json",
                          "-o", os.devnull])[0] for _ in range(5)]  # fmt: skip
        imports = [measured([sys.executable, "-c", "import mlflow"])[0] for _ in range(5)]
        print(
            f"cold start: check of the demo store {statistics.median(cold):.2f} s, "
            f"import mlflow {statistics.median(imports):.2f} s, ratio "
            f"{statistics.median(cold) / statistics.median(imports):.2f} (target <= 0.5)"
        )
    return 0


def compare(label: str, commands: dict[str, list[str]], rounds: int) -> None:
    """Time each command `rounds` times, alternating, and print medians, peaks and ratios."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    memory: dict[str, float] = dict.fromkeys(commands, 0.0)
    for round_number in range(rounds):
        for name, command in commands.items():
            seconds, megabytes = measured(command)
            times[name].append(seconds)
            memory[name] = max(memory[name], megabytes)
            print(f"{label} round {round_number + 1}: {name} {seconds:.2f} s, "
                  f"{megabytes:.0f} MB", flush=True)  # fmt: skip
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"\n{label}")
    for name in commands:
        print(f"  {name:<20} median {median[name]:7.2f} s   peak {memory[name]:6.0f} MB")
    for name in median:
        if name.endswith(" only"):
            # The second ratio is the most the whole audit could reach against search_runs.
            floor, search = median["bare SQL read"], median["mlflow search_runs"]
            print(f"  {name} / bare SQL read: {median[name] / floor:.1f}; "
                  f"search_runs / {name}: {search / median[name]:.1f}")  # fmt: skip
    if "audit (sql)" in median:
        print(
            f"  search_runs / audit (sql): "
            f"{median['mlflow search_runs'] / median['audit (sql)']:.1f} (target >= 10)"
        )
        print(
            f"  audit (sql) / bare SQL read: "
            f"{median['audit (sql)'] / median['bare SQL read']:.1f} (target <= 2)"
        )
    else:
        print(
            f"  search_runs / audit (client): "
            f"{median['mlflow search_runs'] / median['audit (client)']:.2f} (target >= 1.3)"
        )
    print(flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
