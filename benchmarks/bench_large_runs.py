"""Benchmark: `mlflow-audit check` on runs with many params, through each source, with the
peak memory each takes.

    python benchmarks/bench_large_runs.py [--runs 1000] [--params 2000] [--width 100]
                                          [--sources sql,client,rest] [--rounds 1]

Builds (once, then reuses) benchmarks/.stores/large-RUNS-PARAMS-WIDTH/mlflow.db: the newest
RUNS runs of the 2,000-run store of bench_check.py, each given PARAMS more params of WIDTH
characters with SQL (2,000 params of 100 characters: about 360 KB of a server's answer per run;
HF Trainer-style autologging logs a couple of hundred). Then times fresh processes of
`mlflow-audit check -f json -o /dev/null` with their peak memory (max RSS, from /usr/bin/time):

  sql      --source sql on the SQLite store (batches of runs sized by their rows)
  client   --source client on the SQLite store (MLflow's client; pages sized by their rows)
  rest     against an `mlflow server` over the SQLite store (pages sized by their answers)

Target (issue 6): peak memory under 500 MB on every path.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sqlite3
import statistics
import sys
from pathlib import Path

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_check import build_store  # noqa: E402
from bench_scale import measured, mlflow_server  # noqa: E402

_RUN_TABLES = ("params", "tags", "metrics", "latest_metrics")


def large_store(store_dir: Path, runs: int, params: int, width: int) -> Path:
    """The newest `runs` runs of the 2,000-run store, each with `params` more params."""
    database = store_dir / f"large-{runs}-{params}-{width}" / "mlflow.db"
    if database.exists():
        return database
    seed = build_store(store_dir / "runs-2000", 2000)
    print(f"building {database} (once) ...", flush=True)
    database.parent.mkdir(parents=True, exist_ok=True)
    partial = database.with_suffix(".partial")
    shutil.copy2(seed, partial)
    connection = sqlite3.connect(partial)
    with connection:
        newest_last = connection.execute("SELECT run_uuid FROM runs ORDER BY start_time")
        ids = [row[0] for row in newest_last]
        dropped = [(run_id,) for run_id in ids[: max(0, len(ids) - runs)]]
        for table in _RUN_TABLES:
            connection.executemany(f"DELETE FROM {table} WHERE run_uuid = ?", dropped)
        connection.executemany(
            "DELETE FROM inputs WHERE destination_type = 'RUN' AND destination_id = ?", dropped
        )
        connection.executemany("DELETE FROM runs WHERE run_uuid = ?", dropped)
        value = ("abcdefghij" * (width // 10 + 1))[:width]
        connection.executemany(
            "INSERT INTO params (key, value, run_uuid) VALUES (?, ?, ?)",
            (
                (f"extra_param_{index:05d}", value, run_id)
                for run_id in ids[-runs:]
                for index in range(params)
            ),
        )
    connection.execute("VACUUM")
    connection.close()
    partial.rename(database)  # only a whole store is ever reused
    return database


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--params", type=int, default=2000)
    parser.add_argument("--width", type=int, default=100)
    parser.add_argument("--sources", default="sql,client,rest")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--store-dir", type=Path, default=HERE / ".stores")
    args = parser.parse_args()
    database = large_store(args.store_dir.resolve(), args.runs, args.params, args.width)
    audit = str(Path(sys.executable).with_name("mlflow-audit"))

    def check(uri: str, *options: str) -> list[str]:
        return [audit, "check", "--tracking-uri", uri, *options, "-f", "json", "-o", os.devnull]

    print(f"{args.runs:,} runs with {args.params:,} more params of {args.width} characters")
    with contextlib.ExitStack() as stack:
        for source in args.sources.split(","):
            if source == "rest":
                command = check(stack.enter_context(mlflow_server(database)))
            else:
                command = check(f"sqlite:///{database}", "--source", source)
            times, peaks = [], []
            for _ in range(args.rounds):
                seconds, peak = measured(command)
                times.append(seconds)
                peaks.append(peak)
            print(
                f"  {source:8} median {statistics.median(times):7.2f} s   peak {max(peaks):6.0f} MB"
                f"   (target < 500 MB)",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
