"""The Python API: the same audit the CLI runs, for notebooks and training scripts.

import audit
result = audit.check(tracking_uri="sqlite:///mlflow.db", experiment="churn-model")
result.exit_code, result.summary(), result.runs[0].findings
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit import __version__
from audit.errors import AuditError, SelectionError
from audit.evaluation import EvaluatedRun, RunEvaluator, evaluate
from audit.policy import Policy, load_policy
from audit.result import AuditResult, FailOn, RunResult
from audit.sources import (
    MAX_PAGE_SIZE,
    CollectedRun,
    CollectionNeeds,
    ModelSpec,
    Selection,
    TrackingStore,
    open_source,
    resolve_store,
)
from audit.sources.locations import allowing
from audit.waivers import WaiverSet, load_waivers

if TYPE_CHECKING:
    from audit.diff import RecordDiff
    from audit.lineage import LineageFacts
    from audit.report import ReportFiles, ReportSettings
    from audit.report.annex_iv import VersionChanges
    from audit.signing import PdfSignOptions, SignedBundle, SigningKey
    from audit.systemcard import SystemCard
    from audit.versions import Declare


def _names(value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def make_selection(
    *,
    experiment: str | Iterable[str] | None = None,
    run_id: str | Iterable[str] | None = None,
    model: str | Iterable[str] | None = None,
    filter: str | None = None,
    include_deleted: bool = False,
    max_runs: int | None = None,
) -> Selection:
    if max_runs is not None and max_runs < 1:
        raise SelectionError(f"--max-runs must be at least 1, not {max_runs}")
    return Selection(
        experiments=_names(experiment),
        run_ids=_names(run_id),
        models=tuple(ModelSpec.parse(spec) for spec in _names(model)),
        filter=filter or None,
        include_deleted=include_deleted,
        max_runs=max_runs,
    )


def collect(
    tracking_uri: str | None = None,
    *,
    selection: Selection | None = None,
    needs: CollectionNeeds | None = None,
    page_size: int = MAX_PAGE_SIZE,
    source: str = "auto",
    timeout: int | None = None,
    allow_artifact_locations: str | Iterable[str] | None = None,
) -> Iterator[CollectedRun]:
    """Stream one evidence record per selected run (all active experiments by default).

    `needs` says whether artifacts and the registry are read (default: both); pass
    `load_policy(...).needs` to read exactly what a policy looks at. `source`: "auto" (SQL for
    SQLite and PostgreSQL stores, MLflow's client otherwise), "sql" or "client".
    `allow_artifact_locations`: remote artifact locations (URI prefixes) to read besides the
    tracking server's own, with the credentials MLflow has for them (`audit.sources.locations`).
    """
    chosen = selection or Selection()
    store = _store(tracking_uri, allow_artifact_locations)
    reader = open_source(store, page_size=page_size, prefer=source, timeout=timeout)
    return reader.collect(chosen, needs or CollectionNeeds())


def _evaluate_selected(
    tracking_uri: str | None,
    selection: Selection,
    policy: str | Path | Policy | None,
    *,
    needs: CollectionNeeds | None = None,
    fail_on: FailOn = "error",
    min_score: float | None = None,
    waivers: str | Path | WaiverSet | None = None,
    keep_records: bool = False,
    page_size: int = MAX_PAGE_SIZE,
    source: str = "auto",
    timeout: int | None = None,
    allow_artifact_locations: str | Iterable[str] | None = None,
    on_run: Callable[[int], None] | None = None,
    collected: list[CollectedRun] | None = None,
    system_card: str | Path | SystemCard | None = None,
    export: Callable[[Mapping[str, Any], RunResult], None] | None = None,
) -> AuditResult:
    """Collect and evaluate: the audit `check`, `report` and `export` run. `collected`, when
    given, receives every collected run (records and metric histories) for the caller to
    render; `export` is called with each record and its result where they are made."""
    loaded = policy if isinstance(policy, Policy) else load_policy(policy)
    if min_score is not None and not 0 <= min_score <= 100:
        raise SelectionError(f"--min-score must be between 0 and 100, not {min_score:g}")
    accepted = waivers if isinstance(waivers, WaiverSet | None) else load_waivers(waivers)
    store = _store(tracking_uri, allow_artifact_locations)
    reader = open_source(store, page_size=page_size, prefer=source, timeout=timeout)
    evaluator = RunEvaluator(
        loaded, accepted, keep=keep_records or collected is not None, export=export
    )
    card = read_system_card(system_card)
    if selection.models:
        from audit.versions import with_lineage

        # A model version is audited with its lineage, read by a source of its own.
        lineage = open_source(store, page_size=page_size, prefer=source, timeout=timeout)
        versions = with_lineage(
            reader.collect(selection, needs or loaded.needs), lineage, _declare(card)
        )
        evaluated: Iterable[EvaluatedRun] = map(evaluator, versions)
    else:
        evaluated = reader.collect_each(selection, needs or loaded.needs, evaluator)
    if collected is not None:
        evaluated = _keeping(evaluated, collected)
    with _without_cyclic_gc():
        result = evaluate(
            evaluated,
            loaded,
            store=store.display,
            source=reader.name,
            selection=selection.to_dict(),
            fail_on=fail_on,
            min_score=min_score,
            waivers=accepted,
            keep_records=keep_records,
            truncated_at=selection.max_runs,
            on_run=on_run,
        )
    if not result.runs:
        raise SelectionError(f"no runs matched {selection.describe()} in {store.display}")
    return result


def read_system_card(card: str | Path | SystemCard | None) -> SystemCard | None:
    """The system card, read before the audit: a bad card must not cost a long audit."""
    if card is None or not isinstance(card, str | Path):
        return card
    from audit.systemcard import load_system_card

    return load_system_card(card)


def _declare(card: SystemCard | None) -> Declare:
    """How a version's `declared` section is made: from the card and its registered model's
    description and `system_card.*` tags."""
    from audit.systemcard import declared_section

    def declare(facts: LineageFacts) -> Mapping[str, Any]:
        return declared_section(
            card, model_description=facts.model_description, model_tags=facts.model_tags
        )

    return declare


def _store(
    tracking_uri: str | None, allow_artifact_locations: str | Iterable[str] | None
) -> TrackingStore:
    return allowing(resolve_store(tracking_uri), _names(allow_artifact_locations))


def _keeping(runs: Iterable[EvaluatedRun], kept: list[CollectedRun]) -> Iterator[EvaluatedRun]:
    for run in runs:
        if run.collected is not None:
            kept.append(run.collected)
        yield run


@contextlib.contextmanager
def _without_cyclic_gc() -> Iterator[None]:
    """Python's cycle collector off while runs are collected and evaluated. Records, results
    and findings hold no reference cycles, but each collection pass walks every object still
    alive, and an audit keeps 100,000 results alive: it took a fifth of a large audit's time.
    Worker processes forked meanwhile inherit the setting."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def check(
    tracking_uri: str | None = None,
    *,
    experiment: str | Iterable[str] | None = None,
    run_id: str | Iterable[str] | None = None,
    model: str | Iterable[str] | None = None,
    filter: str | None = None,
    include_deleted: bool = False,
    max_runs: int | None = None,
    policy: str | Path | Policy | None = None,
    fail_on: FailOn = "error",
    min_score: float | None = None,
    waivers: str | Path | WaiverSet | None = None,
    keep_records: bool = False,
    page_size: int = MAX_PAGE_SIZE,
    source: str = "auto",
    timeout: int | None = None,
    allow_artifact_locations: str | Iterable[str] | None = None,
    on_run: Callable[[int], None] | None = None,
    system_card: str | Path | SystemCard | None = None,
) -> AuditResult:
    """Collect the selected runs, evaluate them against the policy, and return the result.

    `waivers` is a waivers file (or a loaded `WaiverSet`): the findings it accepts are kept,
    marked as waived, and do not fail the gate. `min_score` fails the gate when fewer than that
    percentage of rule evaluations pass. `allow_artifact_locations`: as for `collect`.

    Raises `audit.AuditError` when the audit cannot be completed (what the CLI reports with
    exit code 2): a missing or unreachable store, an unknown experiment, run or model, a bad
    filter or policy, or no run matched.
    """
    selection = make_selection(
        experiment=experiment,
        run_id=run_id,
        model=model,
        filter=filter,
        include_deleted=include_deleted,
        max_runs=max_runs,
    )
    return _evaluate_selected(
        tracking_uri,
        selection,
        policy,
        fail_on=fail_on,
        min_score=min_score,
        waivers=waivers,
        keep_records=keep_records,
        page_size=page_size,
        source=source,
        timeout=timeout,
        allow_artifact_locations=allow_artifact_locations,
        on_run=on_run,
        system_card=system_card,
    )


def report(
    out: str | Path,
    tracking_uri: str | None = None,
    *,
    experiment: str | Iterable[str] | None = None,
    run_id: str | Iterable[str] | None = None,
    model: str | Iterable[str] | None = None,
    filter: str | None = None,
    include_deleted: bool = False,
    max_runs: int | None = None,
    policy: str | Path | Policy | None = None,
    fail_on: FailOn = "never",
    min_score: float | None = None,
    waivers: str | Path | WaiverSet | None = None,
    page_size: int = MAX_PAGE_SIZE,
    source: str = "auto",
    timeout: int | None = None,
    allow_artifact_locations: str | Iterable[str] | None = None,
    settings: ReportSettings | None = None,
    template_dir: str | Path | None = None,
    html_only: bool = False,
    jobs: int | None = None,
    on_run: Callable[[int], None] | None = None,
    on_document: Callable[[int, int], None] | None = None,
    sign_with: SigningKey | None = None,
    sign_options: PdfSignOptions | None = None,
    on_signed: Callable[[int, int], None] | None = None,
    compare_to: str | None = None,
    system_card: str | Path | SystemCard | None = None,
) -> tuple[AuditResult, ReportFiles]:
    """Audit the selected runs and write their documentation into `out`: per run an HTML and a
    PDF/A-3b file, a summary when several runs are selected, `evidence.json` and `result.json`.

    With `sign_with`, the folder is signed before it is published (`audit.signing`): a PAdES
    signature in every PDF and `audit.intoto.jsonl` over every file written.

    Raises `audit.AuditError` when the audit, the writing or the signing cannot be completed.
    """
    from audit.report import ReportSettings, parse_date, write_reports

    selection = make_selection(
        experiment=experiment,
        run_id=run_id,
        model=model,
        filter=filter,
        include_deleted=include_deleted,
        max_runs=max_runs,
    )
    # Reports show models, environments and histories whatever the policy itself looks at.
    needs = CollectionNeeds(artifacts=True, registry=True, metric_history=True)
    collected: list[CollectedRun] = []
    loaded = policy if isinstance(policy, Policy) else load_policy(policy)
    card = read_system_card(system_card)
    result = _evaluate_selected(
        tracking_uri,
        selection,
        loaded,
        system_card=card,
        needs=needs,
        fail_on=fail_on,
        min_score=min_score,
        waivers=waivers,
        page_size=page_size,
        source=source,
        timeout=timeout,
        allow_artifact_locations=allow_artifact_locations,
        on_run=on_run,
        collected=collected,
    )
    changes = _version_changes(
        result,
        collected,
        compare_to,
        lambda spec: audit_subject(
            spec,
            tracking_uri,
            loaded,
            source=source,
            timeout=timeout,
            allow_artifact_locations=allow_artifact_locations,
            system_card=card,
        ),
        loaded,
    )
    signed: list[SignedBundle] = []

    def sign(staging: Path) -> None:
        from audit.signing import PdfSignOptions
        from audit.signing.bundle import sign_in_place

        assert sign_with is not None
        options = sign_options or PdfSignOptions()
        signed.append(sign_in_place(staging, sign_with, options, on_file=on_signed))

    files = write_reports(
        result,
        collected,
        Path(out),
        settings or ReportSettings(date=parse_date(None)),
        template_dir=Path(template_dir) if template_dir is not None else None,
        html_only=html_only,
        jobs=jobs,
        on_document=on_document,
        finish=sign if sign_with is not None else None,
        changes=changes,
    )
    if signed:
        from dataclasses import replace

        from audit.signing.statement import ENVELOPE_FILE

        # Signed in the staging folder; the files now live in `out`.
        bundle = replace(signed[0], folder=files.folder, envelope=files.folder / ENVELOPE_FILE)
        files = replace(files, signature=bundle)
    return result, files


# --------------------------------------------------------------------------- exporting


@dataclass(frozen=True)
class ExportFiles:
    """What an export wrote: the folder, and the files in it (POSIX paths relative to it): the
    documents, and `result.json` and the envelope when it was signed."""

    folder: Path
    documents: tuple[str, ...]
    signed: bool = False


def export(
    format: str,
    out: str | Path,
    tracking_uri: str | None = None,
    *,
    experiment: str | Iterable[str] | None = None,
    run_id: str | Iterable[str] | None = None,
    model: str | Iterable[str] | None = None,
    filter: str | None = None,
    include_deleted: bool = False,
    max_runs: int | None = None,
    policy: str | Path | Policy | None = None,
    fail_on: FailOn = "never",
    min_score: float | None = None,
    waivers: str | Path | WaiverSet | None = None,
    page_size: int = MAX_PAGE_SIZE,
    source: str = "auto",
    timeout: int | None = None,
    allow_artifact_locations: str | Iterable[str] | None = None,
    on_run: Callable[[int], None] | None = None,
    system_card: str | Path | SystemCard | None = None,
    date: str | None = None,
    sign_with: SigningKey | None = None,
    cyclonedx_version: str = "1.6",
) -> tuple[AuditResult, ExportFiles]:
    """Audit the selected runs and export them into the folder `out` in `format`
    (`audit.exports.EXPORT_FORMATS`): a CycloneDX ML-BOM, an SPDX 3 document or a model card
    per run or model version, or one OSCAL assessment-results document for the audit.

    `date` (``YYYY-MM-DD`` or an ISO 8601 time; default: now) dates the documents: the same
    MLflow data, policy and date give the same files. Documents of the same names in `out` are
    replaced; others are left alone. With `sign_with`, the folder also gets the audit's
    `result.json` and is signed as a report folder is (`audit.intoto.jsonl`, an in-toto
    statement over every file, which `mlflow-audit verify` checks). Raises `audit.AuditError`
    when the audit or the writing cannot be completed; `out` is then left as it was."""

    from audit.exports import EXPORT_FORMATS, PER_SUBJECT, ExportSettings, subjects_of
    from audit.exports.cyclonedx import SPEC_VERSIONS
    from audit.exports.writer import AUDIT_DOCUMENT, SubjectWriter, renderer, written
    from audit.report.document import parse_date
    from audit.staging import Staging

    if cyclonedx_version not in SPEC_VERSIONS:
        raise SelectionError(
            f"CycloneDX {cyclonedx_version!r}: choose from {', '.join(SPEC_VERSIONS)}"
        )
    if format not in EXPORT_FORMATS:
        raise SelectionError(
            f"unknown export format {format!r}; choose from {', '.join(EXPORT_FORMATS)}"
        )
    try:
        moment = parse_date(date)
    except ValueError as error:
        raise SelectionError(str(error)) from None
    selection = make_selection(
        experiment=experiment,
        run_id=run_id,
        model=model,
        filter=filter,
        include_deleted=include_deleted,
        max_runs=max_runs,
    )
    loaded = policy if isinstance(policy, Policy) else load_policy(policy)
    settings = ExportSettings(
        generated_at=moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        tool_version=__version__,
        policy=loaded.to_dict(),
        store=_store(tracking_uri, allow_artifact_locations).display,
        cyclonedx_version=cyclonedx_version,
    )
    folder = Path(out)
    options: dict[str, Any] = {
        "fail_on": fail_on,
        "min_score": min_score,
        "waivers": waivers,
        "page_size": page_size,
        "source": source,
        "timeout": timeout,
        "allow_artifact_locations": allow_artifact_locations,
        "on_run": on_run,
        "system_card": system_card,
    }
    try:
        with Staging(folder) as staging:
            if format in PER_SUBJECT:
                writer = SubjectWriter(
                    format,
                    staging.files,
                    str(folder),
                    settings,
                    loaded.rules,
                    loaded.version_rule_ids,
                )
                result = _evaluate_selected(
                    tracking_uri, selection, loaded, export=writer, **options
                )
            else:
                result = _evaluate_selected(
                    tracking_uri, selection, loaded, keep_records=True, **options
                )
                subjects = list(subjects_of(result, loaded))
                document = renderer(format).render(result, subjects, settings)
                (staging.files / AUDIT_DOCUMENT[format]).write_bytes(document)
                result = replace(result, records=None)
            if sign_with is not None:
                _sign_export(staging.files, result, sign_with)
            names = written(staging.files)
            staging.publish(names)
    except OSError as error:
        raise AuditError(
            f"cannot write the export into {folder}: {error.strerror or error}"
        ) from None
    return result, ExportFiles(folder, tuple(names), signed=sign_with is not None)


def _sign_export(folder: Path, result: AuditResult, key: SigningKey) -> None:
    """The export's folder signed as a report folder is: with the result the predicate
    summarises, then the envelope over every file."""
    from audit.formats.json import json_chunks
    from audit.reportfolder import RESULT_FILE
    from audit.signing import PdfSignOptions
    from audit.signing.bundle import sign_in_place

    with (folder / RESULT_FILE).open("w", encoding="utf-8") as handle:
        handle.writelines(json_chunks(result))
    sign_in_place(folder, key, PdfSignOptions())


# --------------------------------------------------------------------------- comparing


def subject_selection(spec: str) -> Selection:
    """One subject to compare: a run id, or one model version (NAME/VERSION, NAME/latest,
    NAME@ALIAS)."""
    text = spec.strip()
    if "/" in text or "@" in text:
        wrong = SelectionError(f"{spec!r} is not a run id, NAME/VERSION, NAME/latest or NAME@ALIAS")
        try:
            model = ModelSpec.parse(text)
        except SelectionError:
            raise wrong from None
        if model.version is None and model.alias is None:
            raise wrong
        return Selection(models=(model,))
    if not text:
        raise SelectionError("an empty run id")
    return Selection(run_ids=(text,))


@dataclass(frozen=True)
class AuditedSubject:
    """A run or a model version, audited on its own: its record and its result."""

    spec: str
    run: RunResult
    record: Mapping[str, Any]
    result: AuditResult

    @property
    def label(self) -> str:
        """How documents name it: ``churn-classifier v2``, or ``run NAME (ID)``."""
        lineage = self.record.get("lineage")
        if isinstance(lineage, Mapping):
            return f"{lineage['model']['name']} v{lineage['version']['version']}"
        name = f"{self.run.run_name} " if self.run.run_name else ""
        return f"run {name}({self.run.run_id})"


def audit_subject(
    spec: str,
    tracking_uri: str | None,
    policy: Policy,
    *,
    source: str = "auto",
    timeout: int | None = None,
    allow_artifact_locations: str | Iterable[str] | None = None,
    system_card: SystemCard | None = None,
) -> AuditedSubject:
    selection = subject_selection(spec)
    try:
        result = _evaluate_selected(
            tracking_uri,
            selection,
            policy,
            system_card=system_card,
            needs=CollectionNeeds(artifacts=True, registry=True),
            keep_records=True,
            source=source,
            timeout=timeout,
            allow_artifact_locations=allow_artifact_locations,
        )
    except SelectionError as error:
        if not selection.run_ids:
            raise
        raise SelectionError(f"{error} (a model version is NAME/VERSION or NAME@ALIAS)") from None
    (run,) = result.runs
    assert result.records is not None
    return AuditedSubject(spec, run, result.records[run.run_id], result)


def diff(
    old: str,
    new: str,
    tracking_uri: str | None = None,
    *,
    policy: str | Path | Policy | None = None,
    source: str = "auto",
    timeout: int | None = None,
    allow_artifact_locations: str | Iterable[str] | None = None,
    system_card: str | Path | SystemCard | None = None,
) -> RecordDiff:
    """What changed from `old` to `new`: two runs (by id) or two model versions (NAME/VERSION,
    NAME@ALIAS), each audited against `policy` on its own (a version with its lineage).
    Raises `audit.AuditError` when either cannot be audited."""
    loaded = policy if isinstance(policy, Policy) else load_policy(policy)
    options: dict[str, Any] = {
        "source": source,
        "timeout": timeout,
        "allow_artifact_locations": allow_artifact_locations,
        "system_card": read_system_card(system_card),
    }
    before = audit_subject(old, tracking_uri, loaded, **options)
    after = audit_subject(new, tracking_uri, loaded, **options)
    return _diff_subjects(before, after.record, after.run, loaded)


def _diff_subjects(
    before: AuditedSubject, record: Mapping[str, Any], run: RunResult, policy: Policy
) -> RecordDiff:
    """The diff of two subjects audited apart, as one audit of both would decide them: when
    either is a model version, the rules about versions are not applicable to a run (not
    passed by it) and count in the scores."""
    from audit.diff import diff_records
    from audit.evaluation import version_rules_not_applicable

    runs = [before.run, run]
    versions = any(each.model_versions for each in runs)
    if versions:
        runs = version_rules_not_applicable(runs, policy)
    return diff_records(
        before.record,
        record,
        old_result=runs[0],
        new_result=runs[1],
        rule_ids=[rule.id for rule in policy.rules_for(versions)],
    )


def _version_changes(
    result: AuditResult,
    collected: Iterable[CollectedRun],
    compare_to: str | None,
    audit_one: Callable[[str], AuditedSubject],
    policy: Policy,
) -> dict[str, VersionChanges]:
    """For each model version documented, what changed since `compare_to`, else since the
    version before it (Annex IV 6)."""
    from audit.report.annex_iv import VersionChanges

    versions = [item.record for item in collected if "lineage" in item.record]
    if compare_to is not None and len(versions) != 1:
        raise SelectionError(
            f"--compare-to compares one model version with another; this report documents "
            f"{len(versions)} model versions"
        )
    runs = {run.run_id: run for run in result.runs}
    changes = {}
    for record in versions:
        lineage = record["lineage"]
        previous = lineage.get("previous_version")
        spec = compare_to or (f"{lineage['model']['name']}/{previous}" if previous else None)
        if spec is None:
            continue
        before = audit_one(spec)
        run = runs[record["run"]["id"]]
        changes[run.run_id] = VersionChanges(
            before.label, _diff_subjects(before, record, run, policy)
        )
    return changes
