"""Benchmark: `mlflow-audit check` on a large SQLite store, against MLflow's client and a bare
SQL read of the same tables, side by side in one run.

    python benchmarks/bench_scale.py [--runs 100000] [--rounds 1] [--skip-client-audit]

Builds (once, then reuses) benchmarks/.stores/runs-N: the 2,000-run store of bench_check.py
(10 params, 5 metrics, 6 tags, 1 dataset input per run, written by MLflow itself) replicated
with SQL under new run ids until it holds N runs. Then times fresh processes, with their peak
memory (max RSS, from /usr/bin/time):

  bare SQL read      sqlite3: every row of runs, params, tags, latest_metrics, inputs, datasets
                     and input_tags (the floor any reader pays)
  audit (sql)        mlflow-audit check --source sql -f json (the default for SQLite)
  mlflow search_runs MlflowClient.search_runs(max_results=50000), page after page
  audit (client)     mlflow-audit check --source client -f json (skip with --skip-client-audit)
  cold start         mlflow-audit check of the 10-run demo store, against python -c "import mlflow"

Targets (issue 6): search_runs / audit (sql) >= 10; audit (sql) / bare SQL <= 2; peak memory
under 500 MB on every path; cold start at most half of `import mlflow`.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

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
    parser.add_argument("--skip-client-audit", action="store_true")
    parser.add_argument("--store-dir", type=Path, default=HERE / ".stores")
    args = parser.parse_args()

    database = scaled_store(args.store_dir.resolve(), args.runs)
    uri = f"sqlite:///{database}"
    audit = str(Path(sys.executable).with_name("mlflow-audit"))
    commands = {
        "bare SQL read": [sys.executable, "-c", _BARE_READ, str(database)],
        "audit (sql)": [audit, "check", "--tracking-uri", uri, "--source", "sql", "-f", "json",
                        "-o", os.devnull],
        "mlflow search_runs": [sys.executable, "-c", _READ_WITH_MLFLOW, uri],
    }  # fmt: skip
    if not args.skip_client_audit:
        commands["audit (client)"] = [
            audit, "check", "--tracking-uri", uri, "--source", "client", "-f", "json",
            "-o", os.devnull,
        ]  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in commands}
    memory: dict[str, float] = dict.fromkeys(commands, 0.0)
    for round_number in range(args.rounds):
        for name, command in commands.items():
            seconds, megabytes = measured(command)
            times[name].append(seconds)
            memory[name] = max(memory[name], megabytes)
            print(
                f"round {round_number + 1}: {name} {seconds:.2f} s, {megabytes:.0f} MB", flush=True
            )

    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"\nstore: {args.runs} runs ({database})")
    for name in commands:
        print(f"  {name:<20} median {median[name]:7.2f} s   peak {memory[name]:6.0f} MB")
    print(
        f"  search_runs / audit (sql): {median['mlflow search_runs'] / median['audit (sql)']:.1f}"
        " (target >= 10)"
    )
    print(
        f"  audit (sql) / bare SQL read: {median['audit (sql)'] / median['bare SQL read']:.1f}"
        " (target <= 2)"
    )

    demo = args.store_dir.resolve() / "demo" / "mlflow.db"
    if demo.exists():
        cold = [measured([audit, "check", "--tracking-uri", f"sqlite:///{demo}", "-f", "json",
                          "-o", os.devnull])[0] for _ in range(5)]  # fmt: skip
        imports = [measured([sys.executable, "-c", "import mlflow"])[0] for _ in range(5)]
        print(
            f"  cold start: check of the demo store {statistics.median(cold):.2f} s, "
            f"import mlflow {statistics.median(imports):.2f} s, ratio "
            f"{statistics.median(cold) / statistics.median(imports):.2f} (target <= 0.5)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
