"""Sign a report folder: a PAdES signature in every PDF, then one DSSE envelope over every file.

The PDFs are signed first, so that the envelope's digests are those of the signed PDFs. The
signed PDFs and the envelope are written into a staging folder and moved in together at the
end (`audit.staging`): a failure at any step leaves the folder as it was.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from audit import __version__
from audit.errors import AuditError
from audit.reportfolder import RESULT_FILE
from audit.signing import dsse
from audit.signing.keys import SigningError, SigningKey, certificates_pem
from audit.signing.pdf import PdfSignOptions, sign_pdf
from audit.signing.statement import (
    ENVELOPE_FILE,
    Subject,
    folder_files,
    sha256_file,
    statement,
)
from audit.staging import Staging


@dataclass(frozen=True)
class SignedBundle:
    """What signing wrote."""

    folder: Path
    envelope: Path
    envelope_sha256: str
    subjects: tuple[Subject, ...]
    pdfs: tuple[str, ...]
    signer: str
    fingerprint: str
    result: Mapping[str, Any]


def sign_folder(
    folder: Path,
    key: SigningKey,
    options: PdfSignOptions,
    *,
    signed_at: datetime | None = None,
    on_file: Callable[[int, int], None] | None = None,
) -> SignedBundle:
    """Sign the report folder `folder` (as `mlflow-audit report` wrote it) with `key`."""
    if not folder.is_dir():
        raise AuditError(f"{folder}: not a folder")
    result = read_result(folder)
    try:
        names = folder_files(folder)
        with Staging(folder) as staging:
            bundle = _sign(folder, staging.files, names, result, key, options, signed_at, on_file)
            staging.publish((*bundle.pdfs, ENVELOPE_FILE))
    except OSError as error:
        raise SigningError(f"cannot sign {folder}: {error.strerror or error}") from None
    return replace(bundle, folder=folder, envelope=folder / ENVELOPE_FILE)


def sign_in_place(
    folder: Path,
    key: SigningKey,
    options: PdfSignOptions,
    *,
    signed_at: datetime | None = None,
    on_file: Callable[[int, int], None] | None = None,
) -> SignedBundle:
    """Sign a report folder nobody sees yet (the staging folder of `report`) in place. A failure
    part-way leaves it half signed; an OSError is the caller's to report, naming the folder the
    user knows."""
    result = read_result(folder)
    return _sign(folder, folder, folder_files(folder), result, key, options, signed_at, on_file)


def _sign(
    source: Path,
    target: Path,
    names: Sequence[str],
    result: Mapping[str, Any],
    key: SigningKey,
    options: PdfSignOptions,
    signed_at: datetime | None,
    on_file: Callable[[int, int], None] | None,
) -> SignedBundle:
    """Sign the PDFs among `names` in `source` into `target`, then write the envelope over
    every name (as signed in `target`, else as it is in `source`) into `target`."""
    pdfs = [name for name in names if name.lower().endswith(".pdf")]
    signed = set(pdfs)
    for done, name in enumerate(pdfs, start=1):
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        sign_pdf(source / name, key, options, target=target / name)
        if on_file:
            on_file(done, len(pdfs))
    subjects = [
        Subject(name, sha256_file((target if name in signed else source) / name)) for name in names
    ]
    moment = (signed_at or datetime.now(timezone.utc)).astimezone(timezone.utc)
    payload = statement(subjects, predicate(result, key, moment))
    envelope = dsse.sign(payload, key.private_key, key.fingerprint).to_json()
    (target / ENVELOPE_FILE).write_bytes(envelope)
    return SignedBundle(
        folder=target,
        envelope=target / ENVELOPE_FILE,
        envelope_sha256=hashlib.sha256(envelope).hexdigest(),
        subjects=tuple(subjects),
        pdfs=tuple(pdfs),
        signer=key.subject,
        fingerprint=key.fingerprint,
        result=result,
    )


def read_result(folder: Path) -> Mapping[str, Any]:
    """The folder's result.json: what the predicate says was audited."""
    path = folder / RESULT_FILE
    try:
        document = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise AuditError(
            f"{folder} has no {RESULT_FILE}; sign a folder written by 'mlflow-audit report'"
        ) from None
    except (OSError, ValueError) as error:
        raise AuditError(f"cannot read {path}: {error}") from None
    if not isinstance(document, Mapping) or not isinstance(document.get("runs"), list):
        raise AuditError(f"{path} is not an mlflow-audit result")
    return document


def store_uri(store: object) -> str:
    """The store result.json names, as a tracking URI: it shows a SQLite store as its path."""
    if not isinstance(store, str) or not store:
        raise AuditError("the report names no tracking store; give --tracking-uri")
    if "://" not in store and Path(store).is_file():
        return f"sqlite:///{store}"
    return store


def predicate(result: Mapping[str, Any], key: SigningKey, signed_at: datetime) -> dict[str, Any]:
    """What the signature vouches for, beyond the files' digests."""
    summary = result.get("summary") or {}
    policy = result.get("policy") or {}
    return {
        "tool": {"name": "mlflow-audit", "version": __version__},
        "report": {
            "tool": result.get("tool"),
            "generated_at": result.get("generated_at"),
            "schema_version": result.get("schema_version"),
        },
        "policy": {field: policy.get(field) for field in ("name", "version", "origin", "sha256")},
        # result.json already holds the store with credentials stripped.
        "tracking_store": result.get("store"),
        "source": result.get("source"),
        "selection": result.get("selection"),
        "runs": [
            {
                "run_id": run.get("run_id"),
                "run_name": run.get("run_name"),
                "experiment_id": run.get("experiment_id"),
                "status": run.get("status"),
                "evidence_sha256": run.get("evidence_sha256"),
            }
            for run in result["runs"]
        ],
        "summary": {
            field: summary.get(field)
            for field in (
                "runs",
                "runs_by_status",
                "findings",
                "waived",
                "by_severity",
                "score",
                "outcomes",
            )
        }
        | {"gate_failed": (summary.get("gate") or {}).get("failed")},
        "signed_at": signed_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "signer": {
            "subject": key.subject,
            "certificate_sha256": key.fingerprint,
            "certificate_chain": [
                certificates_pem([certificate]).decode("ascii")
                for certificate in (key.certificate, *key.chain)
            ],
        },
    }
