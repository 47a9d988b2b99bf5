"""Benchmark: what documenting a model version costs beside documenting its source run.

    python benchmarks/bench_version.py [--rounds 5]

Builds (once, then reuses) the demo store in benchmarks/.stores/demo, whose champion version
comes from a tuning sweep and was evaluated in a run of its own. Then, alternating in every
round in this one process, it times the whole of `mlflow-audit report` (collect, audit, render
the HTML and the PDF/A, write the folder) for

  run      --run-id <the champion's source run>: that run's report
  version  --model churn-classifier@champion --system-card samples/system-card.yaml: the
           version's Annex IV documentation, with its lineage (sweep parent, evaluating run,
           registry), the previous version audited for section 6, and the system card

and prints the medians and their ratio. Target: at most 1.5.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.bench_report import demo_store  # noqa: E402

MODEL = "churn-classifier@champion"
CARD = REPO / "samples" / "system-card.yaml"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from audit.api import check, report
    from audit.report import ReportSettings, parse_date

    uri = demo_store(REPO / "benchmarks" / ".stores" / "demo")
    (champion,) = check(uri, model=MODEL).runs
    settings = ReportSettings(date=parse_date("2026-12-03"))
    subjects = {
        "run": {"run_id": champion.run_id},
        "version": {"model": MODEL, "system_card": CARD},
    }
    times: dict[str, list[float]] = {name: [] for name in subjects}
    pages: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as scratch:
        # One untimed round: imports, fonts and caches are warm for both.
        for name, selection in subjects.items():
            report(Path(scratch) / f"warm-{name}", uri, settings=settings, jobs=1, **selection)
        for round_number in range(args.rounds):
            order = list(subjects) if round_number % 2 == 0 else list(reversed(subjects))
            for name in order:
                out = Path(scratch) / f"{name}-{round_number}"
                start = time.perf_counter()
                _, files = report(out, uri, settings=settings, jobs=1, **subjects[name])
                times[name].append(time.perf_counter() - start)
                pdf = next(out / f for f in files.documents if f.endswith(".pdf"))
                pages[name] = _pages(pdf)
    run, version = (statistics.median(times[name]) for name in ("run", "version"))
    print(f"store: {uri}; {args.rounds} rounds, alternating; medians of the whole report call")
    print(f"  run report      {run:6.2f} s   {pages['run']} pages  (--run-id {champion.run_id})")
    print(f"  version report  {version:6.2f} s   {pages['version']} pages  (--model {MODEL})")
    print(f"  ratio           {version / run:6.2f}   (target: at most 1.5)")
    return 0


def _pages(pdf: Path) -> int:
    from pypdf import PdfReader

    return len(PdfReader(pdf).pages)


if __name__ == "__main__":
    sys.exit(main())
