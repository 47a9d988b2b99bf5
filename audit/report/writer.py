"""Write a report folder: one HTML and PDF per run, a summary for several runs, and the data
(`evidence.json`, `result.json`) they were made from.

Everything is rendered into a staging folder first and moved into place at the end
(`audit.staging`), so a failure leaves the previous reports as they were.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from audit.errors import AuditError
from audit.report.annex_iv import VersionChanges, VersionDocument, version_document
from audit.report.document import (
    ReportSettings,
    RunDocument,
    SummaryDocument,
    document_names,
    run_document,
    single_run_result,
    summary_document,
)
from audit.reportfolder import EVIDENCE_FILE, RESULT_FILE, evidence_json
from audit.result import AuditResult, RunResult
from audit.sources import CollectedRun
from audit.staging import Staging

if TYPE_CHECKING:
    from audit.signing import SignedBundle


@dataclass(frozen=True)
class ReportFiles:
    """What a report run wrote, relative to its folder."""

    folder: Path
    documents: tuple[str, ...]
    data: tuple[str, ...] = (EVIDENCE_FILE, RESULT_FILE)
    summary: str | None = None
    #: Files `finish` added (the signature envelope).
    extra: tuple[str, ...] = ()
    #: The signature, when the folder was signed.
    signature: SignedBundle | None = None

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.documents, *self.data, *self.extra)


@dataclass(frozen=True)
class _Job:
    """One document to render, with everything a worker process needs."""

    document: RunDocument | VersionDocument | SummaryDocument
    evidence: bytes
    result: bytes
    html_only: bool
    settings: ReportSettings
    template_dir: Path | None
    staging: Path
    allowed_roots: tuple[Path, ...] = field(default=())


def result_json(result: AuditResult) -> bytes:
    from audit.formats.json import render_json

    return render_json(result).encode("utf-8")


def write_reports(
    result: AuditResult,
    collected: Sequence[CollectedRun],
    folder: Path,
    settings: ReportSettings,
    *,
    template_dir: Path | None = None,
    html_only: bool = False,
    jobs: int | None = None,
    on_document: Callable[[int, int], None] | None = None,
    finish: Callable[[Path], None] | None = None,
    changes: Mapping[str, VersionChanges] | None = None,
) -> ReportFiles:
    """Render every document of `result` into `folder` (created if missing).

    `collected` gives each run's evidence record and metric histories; `jobs` is the number of
    worker processes for the PDFs (default: every core). `finish` is given the staging folder
    once everything is rendered, before anything is moved into `folder`: signing happens there,
    so that a failed signature leaves `folder` as it was. Files `finish` adds are published too.
    A model version's record (one with a `lineage`) gets its Annex IV documentation, with the
    changes `changes` holds for its run id (Annex IV 6).
    """
    from audit.report.html import builtin_template_dir

    result = _dated(result, settings)
    by_id = {item.record["run"]["id"]: item for item in collected}
    missing = [run.run_id for run in result.runs if run.run_id not in by_id]
    if missing:
        raise AuditError(f"no evidence record for run {missing[0]}")
    names = document_names(result)
    roots = (builtin_template_dir(), *((template_dir,) if template_dir else ()))
    histories = {item.record["run"]["id"]: item.metric_histories for item in collected}
    try:
        staging = Staging(folder)
    except OSError as error:
        raise AuditError(f"cannot write reports to {folder}: {error.strerror or error}") from None
    with staging:
        try:
            records = [by_id[run.run_id].record for run in result.runs]
            evidence = evidence_json(records, settings.timestamp, histories)
            outcome = result_json(result)
            (staging.files / EVIDENCE_FILE).write_bytes(evidence)
            (staging.files / RESULT_FILE).write_bytes(outcome)
            jobs_list = [
                _Job(
                    document=_document(
                        result, run, by_id[run.run_id], settings, names[run.run_id], changes
                    ),
                    evidence=evidence_json(
                        [by_id[run.run_id].record], settings.timestamp, histories
                    ),
                    result=result_json(single_run_result(result, run)),
                    html_only=html_only,
                    settings=settings,
                    template_dir=template_dir,
                    staging=staging.files,
                    allowed_roots=roots,
                )
                for run in result.runs
            ]
            summary = None
            if len(result.runs) > 1:
                summary = summary_document(result, names, settings)
                jobs_list.append(
                    _Job(
                        summary,
                        evidence,
                        outcome,
                        html_only,
                        settings,
                        template_dir,
                        staging.files,
                        roots,
                    )
                )
            documents = _render_all(jobs_list, jobs, on_document)
            if finish is not None:
                finish(staging.files)
            written = {*documents, EVIDENCE_FILE, RESULT_FILE}
            extra = tuple(sorted(p.name for p in staging.files.iterdir() if p.name not in written))
            staging.publish((*documents, EVIDENCE_FILE, RESULT_FILE, *extra))
        except OSError as error:
            raise AuditError(
                f"cannot write reports to {folder}: {error.strerror or error}"
            ) from None
    return ReportFiles(
        folder=folder,
        documents=documents,
        summary=f"{summary.name}.html" if summary else None,
        extra=extra,
    )


def _document(
    result: AuditResult,
    run: RunResult,
    collected: CollectedRun,
    settings: ReportSettings,
    name: str,
    changes: Mapping[str, VersionChanges] | None,
) -> RunDocument | VersionDocument:
    record = collected.record
    if "lineage" in record:
        compared = (changes or {}).get(run.run_id)
        return version_document(
            result,
            run,
            record,
            settings,
            name,
            changes=compared.diff if compared else None,
            compared_with=compared.label if compared else None,
        )
    return run_document(result, run, record, collected.metric_histories, settings, name)


def _dated(result: AuditResult, settings: ReportSettings) -> AuditResult:
    """The result as of the report's date, so the same data and date give the same files."""
    from dataclasses import replace

    return replace(result, generated_at=settings.timestamp)


def _render_all(
    jobs: Sequence[_Job], workers: int | None, on_document: Callable[[int, int], None] | None
) -> tuple[str, ...]:
    count = min(workers or os.cpu_count() or 1, len(jobs))
    written: list[str] = []
    if count <= 1 or all(job.html_only for job in jobs):
        for job in jobs:
            written += _render(job)
            if on_document:
                on_document(len(written) // (1 if job.html_only else 2), len(jobs))
        return tuple(written)
    from audit.report.pdf import import_weasyprint

    # Imported before the pool starts, so forked workers inherit it instead of each paying
    # for the import.
    import_weasyprint()
    with ProcessPoolExecutor(max_workers=count) as pool:
        futures: list[Future[list[str]]] = [pool.submit(_render, job) for job in jobs]
        pending = set(futures)
        done_count = 0
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in done:
                error = future.exception()
                if error is not None:
                    for other in pending:
                        other.cancel()
                    raise error
                done_count += 1
                if on_document:
                    on_document(done_count, len(jobs))
        for future in futures:
            written += future.result()
    return tuple(written)


def _render(job: _Job) -> list[str]:
    """Render one document's HTML and PDF into the staging folder; return the file names."""
    from audit.report.html import render_run, render_summary, render_version

    document = job.document
    if isinstance(document, RunDocument):
        html = render_run(document, job.settings, job.template_dir)
    elif isinstance(document, VersionDocument):
        html = render_version(document, job.settings, job.template_dir)
    else:
        html = render_summary(document, job.settings, job.template_dir)
    html_name = f"{document.name}.html"
    (job.staging / html_name).write_text(html, encoding="utf-8")
    if job.html_only:
        return [html_name]
    from audit.report.pdf import EmbeddedFile, write_pdf

    pdf_name = f"{document.name}.pdf"
    write_pdf(
        html,
        job.staging / pdf_name,
        base_dir=job.staging,
        allowed_roots=job.allowed_roots,
        attachments=(
            EmbeddedFile(EVIDENCE_FILE, job.evidence, "Evidence records this document shows"),
            EmbeddedFile(RESULT_FILE, job.result, "Audit result: findings, counts, matrix"),
        ),
        date=job.settings.date,
    )
    return [html_name, pdf_name]
