"""Benchmark: `mlflow-audit check` against MLflow's own read of the same runs, side by side.

    python benchmarks/bench_check.py [--runs 2000] [--rounds 3] [--store-dir DIR]

Builds (once, then reuses) a SQLite store of N runs shaped like real training runs: 10 params,
5 metrics, 6 tags and 1 dataset input each. Then, alternating the two in every round so that
machine noise hits both alike, it times in fresh processes:

  mlflow read   python: import mlflow; page through MlflowClient.search_runs at its largest
                page size (what any tool built on MLflow's client must pay)
  audit         mlflow-audit check with the default policy and JSON output

and prints the medians and the ratio audit / mlflow read. The target for the check issue is a
ratio of at most 1.5. It also times `mlflow-audit --version`, and both operations once more inside
one process, after the imports, to show what the audit adds to the read itself.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

_READ_WITH_MLFLOW = """
import sys
from mlflow import MlflowClient
from mlflow.entities import ViewType
client = MlflowClient(sys.argv[1])
ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
token, count = None, 0
while True:
    page = client.search_runs(ids, max_results=50000, page_token=token)
    count += len(page)
    token = page.token
    if not token:
        break
print(count)
"""


def build_store(directory: Path, runs: int) -> Path:
    database = directory / "mlflow.db"
    if database.exists():
        return database
    directory.mkdir(parents=True, exist_ok=True)
    print(f"building a store of {runs} runs in {directory} (once) ...", flush=True)
    subprocess.run(
        [sys.executable, "-c", _BUILD, str(database), str(runs)], check=True, cwd=directory
    )
    return database


_BUILD = """
import sys, random, time
import pandas as pd
import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag, DatasetInput, Dataset, InputTag
uri = f"sqlite:///{sys.argv[1]}"
runs = int(sys.argv[2])
client = MlflowClient(uri)
experiments = [client.create_experiment(f"team-{i}") for i in range(4)]
frame = pd.DataFrame({"x": range(100), "y": range(100)})
source = "s3://bench/data.parquet?versionId=abc"
dataset = mlflow.data.from_pandas(frame, source=source, name="train")
entity = dataset._to_mlflow_entity()
random.seed(7)
start = time.time()
for i in range(runs):
    run = client.create_run(experiments[i % 4], run_name=f"run-{i}")
    now = int(time.time() * 1000)
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(f"metric_{k}", random.random(), now, 0) for k in range(5)],
        params=[Param(f"param_{k}", str(random.random())) for k in range(10)],
        tags=[RunTag(f"tag_{k}", f"value {k}") for k in range(4)]
        + [RunTag("mlflow.source.git.commit", "%040x" % random.getrandbits(160)),
           RunTag("python_version", "3.11.7")],
    )
    context = [InputTag("mlflow.data.context", "training")]
    client.log_inputs(run.info.run_id, [DatasetInput(entity, context)])
    client.set_terminated(run.info.run_id)
    if (i + 1) % 500 == 0:
        print(f"  {i + 1} runs, {time.time() - start:.0f} s", flush=True)
"""


_IN_PROCESS = """
import statistics, sys, time
import audit.api
from mlflow import MlflowClient
from mlflow.entities import ViewType
uri, rounds = sys.argv[1], int(sys.argv[2])
client = MlflowClient(uri)
ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
read, audit_ = [], []
for _ in range(rounds):
    start = time.perf_counter()
    token = None
    while True:
        page = client.search_runs(ids, max_results=50000, page_token=token)
        token = page.token
        if not token:
            break
    read.append(time.perf_counter() - start)
    start = time.perf_counter()
    audit.api.check(uri)
    audit_.append(time.perf_counter() - start)
print(statistics.median(read), statistics.median(audit_))
"""


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if completed.returncode not in (0, 1):
        raise SystemExit(f"{command[0]} failed ({completed.returncode}): {completed.stderr}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--store-dir", type=Path, help="default: benchmarks/.stores/runs-N (reused when present)"
    )
    args = parser.parse_args()
    directory = args.store_dir or Path(__file__).parent / ".stores" / f"runs-{args.runs}"
    database = build_store(directory.resolve(), args.runs)
    uri = f"sqlite:///{database}"
    audit = str(Path(sys.executable).with_name("mlflow-audit"))
    commands = {
        "mlflow read": [sys.executable, "-c", _READ_WITH_MLFLOW, uri],
        "audit": [audit, "check", "--tracking-uri", uri, "-f", "json", "-o", os.devnull],
        "--version": [audit, "--version"],
    }
    timings: dict[str, list[float]] = {name: [] for name in commands}
    for round_number in range(1, args.rounds + 1):
        for name, command in commands.items():
            timings[name].append(timed(command))
        print(
            f"round {round_number}: "
            + ", ".join(f"{name} {values[-1]:.2f} s" for name, values in timings.items()),
            flush=True,
        )
    medians = {name: statistics.median(values) for name, values in timings.items()}
    print()
    print(f"store: {args.runs} runs (10 params, 5 metrics, 6 tags, 1 dataset input each)")
    for name, value in medians.items():
        print(f"  {name:<12} median {value:6.2f} s   ({args.rounds} rounds, fresh processes)")
    ratio = medians["audit"] / medians["mlflow read"]
    print(f"  ratio audit / mlflow read: {ratio:.2f} (target <= 1.5)")
    inside = subprocess.run(
        [sys.executable, "-c", _IN_PROCESS, uri, str(args.rounds)],
        check=True, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    read, audited = float(inside[-2]), float(inside[-1])
    print(
        f"  in one process, imports excluded: search_runs {read:.2f} s, audit.check "
        f"{audited:.2f} s, ratio {audited / read:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
