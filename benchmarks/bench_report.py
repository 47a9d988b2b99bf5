"""Benchmark: what `mlflow-audit report` adds to WeasyPrint, and how it scales over cores.

    python benchmarks/bench_report.py [--rounds 5] [--reports 20] [--summary-runs 1000]

Builds (once, then reuses) the demo store in benchmarks/.stores/demo, audits it once, and then,
in this one process, measures side by side:

  1. one run's PDF: WeasyPrint's own `HTML(string=html).write_pdf()` of the final HTML, against
     the whole path `report` takes for that document (build the document, render the Jinja2
     templates, write the PDF/A-3b with its attachments through the restricted fetcher).
     Alternating in every round; medians. Target: ratio at most 1.2.
  2. N run documents (HTML + PDF) rendered by one process, then by one process per core.
     Target on 2 cores: a speed-up of at least 1.7.
  3. the summary document of a --summary-runs audit (the demo runs repeated under new ids):
     render time and page count, written to benchmarks/.stores/summary-<N>.pdf to look at.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def demo_store(directory: Path) -> str:
    database = directory / "mlflow.db"
    if not database.exists():
        print(f"building the demo store in {directory} (once) ...", flush=True)
        subprocess.run(
            [sys.executable, str(REPO / "samples" / "build_demo_store.py"), str(directory)],
            check=True,
            capture_output=True,
        )
    return f"sqlite:///{database}"


def median_time(function, rounds: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reports", type=int, default=20)
    parser.add_argument("--summary-runs", type=int, default=1000)
    parser.add_argument("--store-dir", type=Path, default=REPO / "benchmarks" / ".stores")
    args = parser.parse_args()

    import weasyprint

    from audit.api import _evaluate_selected, make_selection
    from audit.report.document import (
        ReportSettings,
        document_names,
        parse_date,
        run_document,
        summary_document,
    )
    from audit.report.html import builtin_template_dir, render_run, render_summary
    from audit.report.pdf import EmbeddedFile, write_pdf
    from audit.report.writer import _Job, _render_all, result_json
    from audit.reportfolder import evidence_json
    from audit.sources import CollectedRun, CollectionNeeds

    uri = demo_store(args.store_dir / "demo")
    collected: list[CollectedRun] = []
    result = _evaluate_selected(
        uri,
        make_selection(),
        None,
        needs=CollectionNeeds(metric_history=True),
        collected=collected,
    )
    settings = ReportSettings(date=parse_date("2026-11-26"), organisation="Acme ML")
    by_id = {item.record["run"]["id"]: item for item in collected}
    names = document_names(result)
    roots = (builtin_template_dir(),)
    run = next(r for r in result.runs if r.run_name == "complete")
    item = by_id[run.run_id]
    histories = {run_id: each.metric_histories for run_id, each in by_id.items()}
    evidence = evidence_json([item.record], settings.timestamp, histories)
    outcome = result_json(result)
    attachments = (
        EmbeddedFile("evidence.json", evidence, "evidence"),
        EmbeddedFile("result.json", outcome, "result"),
    )

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        html = render_run(
            run_document(result, run, item.record, item.metric_histories, settings, "complete"),
            settings,
        )

        def bare() -> None:
            weasyprint.HTML(string=html).write_pdf(folder / "bare.pdf")

        def ours() -> None:
            document = run_document(
                result, run, item.record, item.metric_histories, settings, "complete"
            )
            page = render_run(document, settings)
            write_pdf(
                page,
                folder / "ours.pdf",
                base_dir=folder,
                allowed_roots=roots,
                attachments=attachments,
                date=settings.date,
            )

        def templates_only() -> None:
            render_run(
                run_document(result, run, item.record, item.metric_histories, settings, "c"),
                settings,
            )

        bare(), ours()  # warm fonts and caches for both
        bare_times, our_times = [], []
        for _ in range(args.rounds):
            bare_times.append(median_time(bare, 1))
            our_times.append(median_time(ours, 1))
        template_time = median_time(templates_only, args.rounds)
        bare_median, our_median = statistics.median(bare_times), statistics.median(our_times)
        print(f"one run's PDF ({args.rounds} rounds, medians)")
        print(f"  WeasyPrint HTML(string).write_pdf()   {bare_median:7.3f} s")
        print(f"  mlflow-audit document -> PDF/A-3b      {our_median:7.3f} s")
        print(f"    of which document + templates       {template_time:7.3f} s")
        print(f"  {'ratio':<39}{our_median / bare_median:7.2f}  (target <= 1.2)")

        runs = [result.runs[i % len(result.runs)] for i in range(args.reports)]
        jobs = [
            _Job(
                document=run_document(
                    result, r, by_id[r.run_id].record, by_id[r.run_id].metric_histories,
                    settings, f"{names[r.run_id]}-{index}",
                ),
                evidence=evidence_json([by_id[r.run_id].record], settings.timestamp, histories),
                result=outcome,
                html_only=False,
                settings=settings,
                template_dir=None,
                staging=folder,
                allowed_roots=roots,
            )
            for index, r in enumerate(runs)
        ]  # fmt: skip
        cores = os.cpu_count() or 1
        start = time.perf_counter()
        _render_all(jobs, 1, None)
        serial = time.perf_counter() - start
        start = time.perf_counter()
        _render_all(jobs, cores, None)
        parallel = time.perf_counter() - start
        print(f"\n{args.reports} run documents (HTML + PDF)")
        print(f"  1 process                              {serial:7.2f} s")
        print(f"  {cores} processes                            {parallel:7.2f} s")
        print(f"  {'speed-up':<39}{serial / parallel:7.2f}  (target >= 1.7 on 2 cores)")

        many = [
            replace(result.runs[i % len(result.runs)], run_id=f"{i:032x}")
            for i in range(args.summary_runs)
        ]
        big = replace(result, runs=many)
        start = time.perf_counter()
        summary_html = render_summary(
            summary_document(big, {r.run_id: f"run-{i}" for i, r in enumerate(many)}, settings),
            settings,
        )
        target = args.store_dir / f"summary-{args.summary_runs}.pdf"
        write_pdf(
            summary_html,
            target,
            base_dir=folder,
            allowed_roots=roots,
            attachments=(),
            date=settings.date,
        )
        elapsed = time.perf_counter() - start
        from pypdf import PdfReader

        pages = len(PdfReader(target).pages)
        print(f"\nsummary of {args.summary_runs} runs")
        print(
            f"  HTML + PDF                             {elapsed:7.2f} s, {pages} pages -> {target}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
