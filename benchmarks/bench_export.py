"""Benchmark: exporting every run's CycloneDX ML-BOM beside the gate's JSON result.

    python benchmarks/bench_export.py [--runs 100000] [--rounds 3] [--format cyclonedx]

Builds (once, then reuses) the SQLite store of bench_scale.py with that many runs, then times,
alternating in every round, two fresh processes on it:

  check   mlflow-audit check --source sql -f json -o /dev/null   (the whole result as JSON)
  export  mlflow-audit export --source sql -f cyclonedx -o DIR/    (one BOM per run, 100,000
          files, into a new folder each round; removed after it)

and prints each round, the medians, their ratio and the export's size. Target (issue 21):
exporting costs at most 2x `check --format json`. The machine is shared: only the ratio of
times measured side by side means anything.
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
    args = parser.parse_args()

    database = scaled_store(args.store_dir.resolve(), args.runs)
    uri = f"sqlite:///{database}"
    audit = str(Path(sys.executable).with_name("mlflow-audit"))
    scratch = Path(tempfile.mkdtemp(prefix="bench-export-", dir=args.store_dir))
    out = scratch / "export"
    commands = {
        "check": [audit, "check", "--tracking-uri", uri, "--source", "sql", "-f", "json",
                  "-o", os.devnull],
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
                print(f"round {round_number + 1}: {name:6} {seconds:7.1f} s  {peak:6.0f} MB",
                      flush=True)  # fmt: skip
                if name == "export":
                    listed = subprocess.run(
                        ["du", "-s", "--block-size=1M", str(out)], capture_output=True, text=True
                    )
                    size = int(listed.stdout.split()[0])
                    files = sum(1 for _ in out.iterdir())
                    shutil.rmtree(out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    check, export = (statistics.median(times[name]) for name in ("check", "export"))
    print(f"\n{args.runs} runs, {args.rounds} rounds, medians:")
    print(f"  check -f json          {check:7.1f} s  peak {max(peaks['check']):.0f} MB")
    print(f"  export -f {args.format:12} {export:7.1f} s  peak {max(peaks['export']):.0f} MB, "
          f"{files} files, {size} MB")  # fmt: skip
    print(f"  ratio export / check   {export / check:7.2f}  (target: at most 2)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
