"""Benchmark: exporting every run's CycloneDX ML-BOM beside the gate's JSON result.

    python benchmarks/bench_export.py [--runs 100000] [--rounds 3] [--format cyclonedx]

Builds (once, then reuses) the SQLite store of bench_scale.py with that many runs, then times,
in an order that alternates from round to round, fresh processes on it:

  check > null   mlflow-audit check --source sql -f json -o /dev/null   (bench_scale's audit)
  check > file   the same, writing result.json into the folder the export writes to
  export         mlflow-audit export --source sql -f cyclonedx -o DIR/  (one BOM per run,
                 100,000 files, into a new folder each round)

The outputs go to --out-dir, by default /dev/shm (memory) where it exists: the figures are then
mlflow-audit's own work, not the disk's. On this machine's virtual disk, creating a 27 KB file
took from 40 us to over 1 ms, depending on what the disk was still doing (writing back or
discarding earlier rounds' gigabytes): give --out-dir on a disk to measure one. Each output is
removed after its command and the folder's file system synced (untimed). Prints each round, the
medians and the ratios. Target (issue 21): exporting costs at most 2x `check --format json`;
both write their output, so `check > file` is the like-for-like side. The machine is shared:
only ratios measured side by side mean anything.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.bench_scale import HERE, measured, scaled_store  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--format", default="cyclonedx", choices=("cyclonedx", "spdx"))
    parser.add_argument("--store-dir", type=Path, default=HERE / ".stores")
    memory = Path("/dev/shm")  # noqa: S108 (a private folder is made in it, mkdtemp)
    parser.add_argument(
        "--out-dir", type=Path, default=memory if memory.is_dir() else HERE / ".stores"
    )
    args = parser.parse_args()

    database = scaled_store(args.store_dir.resolve(), args.runs)
    uri = f"sqlite:///{database}"
    audit = str(Path(sys.executable).with_name("mlflow-audit"))
    scratch = Path(tempfile.mkdtemp(prefix="bench-export-", dir=args.out_dir))
    out = scratch / "export"
    result = scratch / "result.json"
    check = [audit, "check", "--tracking-uri", uri, "--source", "sql", "-f", "json", "-o"]
    commands = {
        "check > null": [*check, os.devnull],
        "check > file": [*check, str(result)],
        "export": [audit, "export", "--tracking-uri", uri, "--source", "sql", "-f", args.format,
                   "--date", "2026-12-01", "-o", f"{out}/"],
    }  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in commands}
    peaks: dict[str, list[float]] = {name: [] for name in commands}
    files = size = 0
    try:
        for round_number in range(args.rounds):
            order = list(commands) if round_number % 2 == 0 else list(reversed(commands))
            for name in order:
                seconds, peak = measured(commands[name])
                times[name].append(seconds)
                peaks[name].append(peak)
                print(f"round {round_number + 1}: {name:12} {seconds:7.1f} s  {peak:6.0f} MB",
                      flush=True)  # fmt: skip
                if name == "export":
                    listed = subprocess.run(
                        ["du", "-s", "--block-size=1M", str(out)], capture_output=True, text=True
                    )
                    size = int(listed.stdout.split()[0])
                    files = sum(1 for _ in out.iterdir())
                    shutil.rmtree(out)
                result.unlink(missing_ok=True)
                os.sync()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    median = {name: statistics.median(seconds) for name, seconds in times.items()}
    print(f"\n{args.runs} runs, {args.rounds} rounds, outputs in {args.out_dir}, medians:")
    for name in ("check > null", "check > file"):
        print(f"  {name:24} {median[name]:7.1f} s  peak {max(peaks[name]):.0f} MB")
    print(f"  export -f {args.format:14} {median['export']:7.1f} s  "
          f"peak {max(peaks['export']):.0f} MB, {files} files, {size} MB")  # fmt: skip
    for name in ("check > file", "check > null"):
        ratio = median["export"] / median[name]
        print(f"  ratio export / {name:9} {ratio:7.2f}")
    print("  target: at most 2, against check writing its result (check > file)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
