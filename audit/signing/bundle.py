"""Sign a report folder: a PAdES signature in every PDF, then one DSSE envelope over every file.

The PDFs are signed first, so that the envelope's digests are those of the signed PDFs. Signed
copies are written beside the originals and renamed over them only when all are done, and the
envelope is written last: a failure part-way leaves the folder as it was.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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
    subjects_of,
)


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
    except OSError as error:
        raise SigningError(f"cannot sign {folder}: {error}") from None
    pdfs = [name for name in names if name.lower().endswith(".pdf")]
    staged: list[tuple[Path, Path]] = []
    try:
        for done, name in enumerate(pdfs, start=1):
            original = folder / name
            copy = original.with_name(f".{original.name}.signed")
            staged.append((copy, original))
            sign_pdf(original, key, options, target=copy)
            if on_file:
                on_file(done, len(pdfs))
        for copy, original in staged:
            copy.replace(original)
        staged.clear()
        moment = (signed_at or datetime.now(timezone.utc)).astimezone(timezone.utc)
        subjects = subjects_of(folder)
        payload = statement(subjects, predicate(result, key, moment))
        envelope = dsse.sign(payload, key.private_key, key.fingerprint)
        target = folder / ENVELOPE_FILE
        partial = folder / f".{ENVELOPE_FILE}.partial"
        partial.write_bytes(envelope.to_json())
        partial.replace(target)
    except OSError as error:
        raise SigningError(f"cannot sign {folder}: {error.strerror or error}") from None
    finally:
        for copy, _ in staged:
            copy.unlink(missing_ok=True)
    return SignedBundle(
        folder=folder,
        envelope=target,
        envelope_sha256=sha256_file(target),
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
