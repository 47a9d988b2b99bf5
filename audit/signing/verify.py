"""Verify a signed report folder, or one file of it, offline against a certificate the reviewer
trusts; and, when asked, against the MLflow store as it is today.

Nothing in the folder is trusted before its signature is checked: the envelope's payload is
parsed only to find the signer's certificate, which must then verify the signature and chain to
the reviewer's certificate.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509

from audit.errors import AuditError
from audit.formats.text import safe_wrapped
from audit.reportfolder import EVIDENCE_FILE
from audit.signing import dsse
from audit.signing.keys import colon_fingerprint, common_name, fingerprint, trust_problem
from audit.signing.pdf import PdfSignature, verify_pdf
from audit.signing.statement import (
    ENVELOPE_FILE,
    Statement,
    StatementError,
    folder_contents,
    sha256_file,
)

if TYPE_CHECKING:
    from audit.sources import CollectedRun, CollectionNeeds, TrackingStore


@dataclass(frozen=True)
class Problem:
    """Something that makes the bundle invalid: the file it concerns and why, in one line."""

    file: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"


@dataclass(frozen=True)
class RunDrift:
    """A signed run whose evidence in the store differs from what was signed."""

    run_id: str
    run_name: str | None
    changes: tuple[str, ...]


@dataclass(frozen=True)
class Verification:
    target: Path
    signer: str | None = None
    fingerprint: str | None = None
    signed_at: str | None = None
    files_checked: int = 0
    pdfs: tuple[PdfSignature, ...] = ()
    problems: tuple[Problem, ...] = ()
    #: With --against-store: how many runs were compared, and those that changed.
    runs_compared: int | None = None
    drift: tuple[RunDrift, ...] = ()
    store: str | None = None

    @property
    def valid(self) -> bool:
        return not self.problems and not self.drift

    @property
    def exit_code(self) -> int:
        return 0 if self.valid else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": str(self.target),
            "valid": self.valid,
            "signer": self.signer,
            "certificate_sha256": self.fingerprint,
            "signed_at": self.signed_at,
            "files_checked": self.files_checked,
            "pdf_signatures": [
                {
                    "file": pdf.path.name,
                    "signer": pdf.signer,
                    "signing_time": pdf.signing_time.isoformat() if pdf.signing_time else None,
                    "timestamped": pdf.timestamped,
                    "valid": pdf.valid,
                }
                for pdf in self.pdfs
            ],
            "problems": [{"file": p.file, "reason": p.reason} for p in self.problems],
            "store": self.store,
            "runs_compared": self.runs_compared,
            "changed_runs": [
                {"run_id": d.run_id, "run_name": d.run_name, "changes": list(d.changes)}
                for d in self.drift
            ],
        }


def verify(
    path: Path,
    trusted: Sequence[x509.Certificate],
    *,
    against_store: bool = False,
    tracking_uri: str | None = None,
    source: str = "auto",
    on_run: Callable[[int], None] | None = None,
    allow_artifact_locations: Sequence[str] = (),
) -> Verification:
    """Verify a report folder, its envelope, or one file of a signed folder.

    `against_store` collects the signed runs again from `tracking_uri` (default: the store the
    statement names), reading remote artifacts only where `check` would: the tracking server
    and `allow_artifact_locations`.

    Raises `AuditError` when verification cannot be carried out (missing envelope, store
    unreachable); every finding about the bundle itself is a `Problem` in the result.
    """
    if not path.exists():
        raise AuditError(f"{path}: no such file or folder")
    if (
        path.is_file()
        and path.suffix.lower() == ".pdf"
        and not (path.parent / ENVELOPE_FILE).exists()
    ):
        # A PDF on its own, e.g. attached to an e-mail: its PAdES signature is all there is.
        pdf = verify_pdf(path, trusted)
        return Verification(
            path,
            signer=pdf.signer,
            files_checked=1,
            pdfs=(pdf,),
            problems=tuple(Problem(path.name, reason) for reason in pdf.problems),
        )
    folder = path if path.is_dir() else path.parent
    only = None if path.is_dir() or path.name == ENVELOPE_FILE else path.name
    envelope_path = folder / ENVELOPE_FILE
    if not envelope_path.is_file():
        raise AuditError(f"{folder} holds no signature ({ENVELOPE_FILE} is missing)")
    try:
        envelope = dsse.Envelope.from_json(envelope_path.read_bytes())
    except OSError as error:
        raise AuditError(f"cannot read {envelope_path}: {error.strerror or error}") from None
    except dsse.EnvelopeError as error:
        return Verification(path, problems=(Problem(ENVELOPE_FILE, f"malformed: {error}"),))

    problems: list[Problem] = []
    statement, signer_certificate = _open_envelope(envelope, trusted, problems)
    if statement is None or signer_certificate is None:
        return Verification(path, problems=tuple(problems))
    result = Verification(
        path,
        signer=common_name(signer_certificate),
        fingerprint=fingerprint(signer_certificate),
        signed_at=_text(statement.predicate.get("signed_at")),
    )
    problems += _trust_problems(signer_certificate, statement, trusted)
    problems += _subject_problems(folder, statement, only)
    checked = [s.name for s in statement.subjects if only in (None, s.name)]
    pdfs = tuple(
        verify_pdf(folder / name, trusted)
        for name in checked
        if name.lower().endswith(".pdf") and (folder / name).is_file()
    )
    for pdf in pdfs:
        problems += [Problem(pdf.path.relative_to(folder).as_posix(), r) for r in pdf.problems]
    signed_evidence = _signed_evidence(folder, statement, problems)
    result = replace(result, files_checked=len(checked), pdfs=pdfs, problems=tuple(problems))
    if against_store:
        if signed_evidence is None:
            raise AuditError(
                f"cannot compare with the store: {EVIDENCE_FILE} of {folder} is missing or does "
                "not match the signature"
            )
        store, compared, drift = _compare_with_store(
            statement, signed_evidence, tracking_uri, source, on_run, allow_artifact_locations
        )
        result = replace(result, store=store, runs_compared=compared, drift=tuple(drift))
    return result


def _open_envelope(
    envelope: dsse.Envelope, trusted: Sequence[x509.Certificate], problems: list[Problem]
) -> tuple[Statement | None, x509.Certificate | None]:
    """The statement and the certificate whose key signed it, or problems saying why not."""
    if envelope.payload_type != dsse.PAYLOAD_TYPE:
        problems.append(Problem(ENVELOPE_FILE, f"payload type {envelope.payload_type!r}"))
        return None, None
    # The signer's chain travels in the (not yet trusted) predicate; the key that verifies the
    # signature picks the certificate, and trust is checked on it afterwards.
    candidates = list(trusted)
    try:
        unverified = Statement.parse(envelope.payload)
        candidates += _chain(unverified.predicate)
    except StatementError:
        unverified = None
    keyids = {keyid for keyid, _ in envelope.signatures}
    candidates.sort(key=lambda c: fingerprint(c) not in keyids)
    signer = next((c for c in candidates if dsse.verify(envelope, c.public_key())), None)
    if signer is None:
        problems.append(
            Problem(
                ENVELOPE_FILE,
                "the signature does not verify: the payload was changed or swapped, or it was "
                "signed by another key",
            )
        )
        return None, None
    if unverified is None:
        try:
            Statement.parse(envelope.payload)
        except StatementError as error:
            problems.append(Problem(ENVELOPE_FILE, str(error)))
        return None, None
    return unverified, signer


def _chain(predicate: Mapping[str, Any]) -> list[x509.Certificate]:
    certificates = []
    signer = predicate.get("signer")
    for pem in (signer.get("certificate_chain") if isinstance(signer, Mapping) else None) or []:
        try:
            certificates.append(x509.load_pem_x509_certificate(str(pem).encode("ascii")))
        except (ValueError, UnicodeEncodeError):
            continue
    return certificates


def _trust_problems(
    signer: x509.Certificate, statement: Statement, trusted: Sequence[x509.Certificate]
) -> list[Problem]:
    problem = trust_problem(signer, _chain(statement.predicate)[1:], trusted)
    return [Problem(ENVELOPE_FILE, problem)] if problem else []


def _subject_problems(folder: Path, statement: Statement, only: str | None) -> list[Problem]:
    problems = []
    listed = {subject.name for subject in statement.subjects}
    if only is not None and only not in listed:
        return [Problem(only, "not covered by the signature")]
    for subject in statement.subjects:
        if only not in (None, subject.name):
            continue
        target = folder / subject.name
        if target.is_symlink() or not target.is_file():
            problems.append(Problem(subject.name, "signed, but missing from the folder"))
            continue
        actual = sha256_file(target)
        if actual != subject.sha256:
            problems.append(
                Problem(
                    subject.name,
                    f"changed since signing (sha256 {actual[:16]}..., signed "
                    f"{subject.sha256[:16]}...)",
                )
            )
    if only is None:
        try:
            present, refused = folder_contents(folder)
        except OSError as error:
            return [*problems, Problem(folder.name, str(error))]
        # Hidden files too: a reader of the folder sees them as much as any other.
        problems += [
            Problem(name, "not covered by the signature (added after signing)")
            for name in present
            if name not in listed
        ]
        problems += [
            Problem(name, f"{why}, not covered by the signature")
            for name, why in refused
            if name not in listed
        ]
    return problems


@dataclass(frozen=True)
class _SignedEvidence:
    """What evidence.json, as signed, says the documents show."""

    #: Run id -> evidence record.
    records: Mapping[str, Mapping[str, Any]]
    #: Run id -> metric key -> points and sha256 of the history charted; None in folders
    #: written before evidence.json held them.
    history_digests: Mapping[str, Mapping[str, Any]] | None


def _signed_evidence(
    folder: Path, statement: Statement, problems: list[Problem]
) -> _SignedEvidence | None:
    """The evidence the signature covers, when evidence.json is intact; a problem when its
    records disagree with the digests the predicate signs."""
    from audit.evidence import sha256_hex

    subject = next((s for s in statement.subjects if s.name == EVIDENCE_FILE), None)
    path = folder / EVIDENCE_FILE
    if subject is None or not path.is_file() or sha256_file(path) != subject.sha256:
        return None
    try:
        document = json.loads(path.read_bytes())
        by_id = {record["run"]["id"]: record for record in document["records"]}
        histories = document.get("metric_history_digests")
        if histories is not None and not all(
            isinstance(h, Mapping) and all(isinstance(d, Mapping) for d in h.values())
            for h in histories.values()
        ):
            raise ValueError("malformed metric_history_digests")
    except (ValueError, KeyError, TypeError, AttributeError):
        problems.append(Problem(EVIDENCE_FILE, "not an evidence file of mlflow-audit"))
        return None
    for run_id, digest in statement.run_digests().items():
        record = by_id.get(run_id)
        if record is None or sha256_hex(record) != digest:
            problems.append(
                Problem(
                    EVIDENCE_FILE, f"the record of run {run_id} does not match the signed digest"
                )
            )
    return _SignedEvidence(by_id, histories)


def _compare_with_store(
    statement: Statement,
    signed: _SignedEvidence,
    tracking_uri: str | None,
    source: str,
    on_run: Callable[[int], None] | None,
    allow_artifact_locations: Sequence[str],
) -> tuple[str, int, list[RunDrift]]:
    """Collect every signed run again and list the ones whose evidence, or the metric histories
    their documents chart, changed."""
    from audit.errors import SelectionError
    from audit.evidence import sha256_hex
    from audit.reportfolder import history_digests
    from audit.signing.bundle import store_uri
    from audit.signing.drift import changes, history_changes, without_own_tags
    from audit.sources import CollectionNeeds, Selection, open_source, resolve_store
    from audit.sources.locations import allowing

    store = allowing(
        resolve_store(tracking_uri or store_uri(statement.predicate.get("tracking_store"))),
        allow_artifact_locations,
    )
    digests = statement.run_digests()
    reader = open_source(store, prefer=source)
    # The record depends on what is read; a report reads everything, histories included.
    needs = CollectionNeeds(
        artifacts=True, registry=True, metric_history=signed.history_digests is not None
    )
    drift: list[RunDrift] = []
    for count, (run_id, digest) in enumerate(digests.items(), start=1):
        record = signed.records.get(run_id) or {}
        name = (record.get("run") or {}).get("name")
        lineage = record.get("lineage")
        try:
            if isinstance(lineage, Mapping):
                current = _version_again(store, source, record, needs)
            else:
                (current,) = list(
                    reader.collect(Selection(run_ids=(run_id,), include_deleted=True), needs)
                )
        except SelectionError:
            gone = (
                "model version no longer in the registry"
                if isinstance(lineage, Mapping)
                else "run no longer in the store (deleted for good)"
            )
            drift.append(RunDrift(run_id, name, (gone,)))
            continue
        listed: list[str] = []
        if sha256_hex(current.record) != digest and (
            not record
            or sha256_hex(without_own_tags(current.record)) != sha256_hex(without_own_tags(record))
        ):
            listed += changes(record, current.record) or ["evidence changed"]
        if signed.history_digests is not None:
            listed += history_changes(
                signed.history_digests.get(run_id) or {}, history_digests(current.metric_histories)
            )
        if listed:
            drift.append(RunDrift(run_id, name, tuple(listed)))
        if on_run:
            on_run(count)
    return store.display, len(digests), drift


def _version_again(
    store: TrackingStore, source: str, record: Mapping[str, Any], needs: CollectionNeeds
) -> CollectedRun:
    """A signed model version's record as the store holds it today, with the system card's
    fields as signed (the card is not in the store)."""
    from audit.sources import ModelSpec, Selection, open_source
    from audit.versions import with_lineage

    lineage = record["lineage"]
    spec = ModelSpec(str(lineage["model"]["name"]), version=str(lineage["version"]["version"]))
    collected = open_source(store, prefer=source).collect(Selection(models=(spec,)), needs)
    declared = record.get("declared")
    (current,) = list(
        with_lineage(
            collected,
            open_source(store, prefer=source),
            (lambda facts: declared) if isinstance(declared, Mapping) else None,
        )
    )
    return current


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def describe(outcome: Verification) -> str:
    """The verification as text for people: what was checked, then one line per failure."""
    lines = []
    if outcome.signer:
        when = f" at {outcome.signed_at}" if outcome.signed_at else ""
        lines.append(f"Signed by {outcome.signer}{when}")
        if outcome.fingerprint:
            # 95 characters: on a line of its own, so that it fits 100 columns whole.
            lines += ["  certificate SHA-256:", f"    {colon_fingerprint(outcome.fingerprint)}"]
    for problem in outcome.problems:
        lines.append(f"FAIL  {problem}")
    for run in outcome.drift:
        label = f"{run.run_id} ({run.run_name})" if run.run_name else run.run_id
        for change in run.changes:
            lines.append(f"CHANGED  run {label}: {change}")
    pdfs = [pdf for pdf in outcome.pdfs if pdf.valid]
    if outcome.valid:
        lines.append(
            f"OK: {outcome.files_checked} file{'s' if outcome.files_checked != 1 else ''} as "
            f"signed, {len(pdfs)} PDF signature{'s' if len(pdfs) != 1 else ''} valid and "
            "covering the whole file"
        )
        if outcome.runs_compared is not None:
            lines.append(
                f"OK: {outcome.runs_compared} run{'s' if outcome.runs_compared != 1 else ''} "
                f"unchanged in {outcome.store}"
            )
    else:
        parts = []
        if outcome.problems:
            count = len(outcome.problems)
            parts.append(f"{count} problem{'s' if count != 1 else ''}")
        if outcome.drift:
            count = len(outcome.drift)
            parts.append(f"{count} run{'s' if count != 1 else ''} changed in {outcome.store}")
        lines.append(f"INVALID: {', '.join(parts)}")
    # Signer names, file names, run names and store contents are untrusted: escaped, and
    # wrapped within 100 columns under their FAIL or CHANGED.
    return "\n".join(piece for line in lines for piece in safe_wrapped(line)) + "\n"
