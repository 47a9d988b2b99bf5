"""The in-toto Statement v1 a report bundle is signed as.

https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md: the subjects are every
file of the report folder with its SHA-256; the predicate (ours, `PREDICATE_TYPE`, described in
schemas/attestation-predicate.schema.json and docs/signing.md) says what was audited, against
which policy, and who signed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = (
    "https://github.com/mlflow-audit/mlflow-audit/blob/main/docs/signing.md#predicate-v1"
)

#: The envelope's own file in a report folder; everything else in the folder is a subject.
ENVELOPE_FILE = "audit.intoto.jsonl"


class StatementError(ValueError):
    """The payload is not a statement of ours."""


@dataclass(frozen=True)
class Subject:
    name: str
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "digest": {"sha256": self.sha256}}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_files(folder: Path) -> list[str]:
    """Every file under `folder` but the envelope, as `folder_contents` lists them; an OSError
    for the first entry that is not a regular file or a folder."""
    files, refused = folder_contents(folder)
    if refused:
        name, why = refused[0]
        raise OSError(f"{name} is {why}; refusing to sign or trust it")
    return files


def folder_contents(folder: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """Every regular file under `folder` but the envelope, hidden ones and those in subfolders
    too, as sorted POSIX paths relative to it; and the entries that are neither a regular file
    nor a folder, with what they are. Symbolic links are among those (signing one would sign
    whatever it points at today), and so are pipes, sockets and devices (reading one may block,
    or give other bytes each time). A folder that cannot be listed is an OSError."""
    files: list[str] = []
    refused: list[tuple[str, str]] = []

    def unreadable(error: OSError) -> None:
        raise error

    for directory, folders, names in os.walk(folder, onerror=unreadable):
        for name in (*folders, *names):
            path = Path(directory, name)
            relative = path.relative_to(folder).as_posix()
            if path.is_symlink():
                refused.append((relative, "a symbolic link"))
            elif not (name in folders or path.is_file()):
                refused.append((relative, "not a regular file (a pipe, socket or device)"))
            elif name not in folders and relative != ENVELOPE_FILE:
                files.append(relative)

    # In the order of their path components, as pathlib sorts paths.
    def order(name: str) -> list[str]:
        return name.split("/")

    return sorted(files, key=order), sorted(refused, key=lambda entry: order(entry[0]))


def statement(subjects: Sequence[Subject], predicate: Mapping[str, Any]) -> bytes:
    document = {
        "_type": STATEMENT_TYPE,
        "subject": [subject.to_dict() for subject in subjects],
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    }
    return json.dumps(document, indent=None, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Statement:
    subjects: tuple[Subject, ...]
    predicate: Mapping[str, Any]

    @classmethod
    def parse(cls, payload: bytes) -> Statement:
        try:
            document = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as error:
            raise StatementError(f"the signed payload is not JSON ({error})") from None
        if not isinstance(document, Mapping) or document.get("_type") != STATEMENT_TYPE:
            raise StatementError("the signed payload is not an in-toto Statement v1")
        if document.get("predicateType") != PREDICATE_TYPE:
            raise StatementError(
                f"the statement's predicateType is {document.get('predicateType')!r}, not an "
                "mlflow-audit report"
            )
        subjects = []
        for entry in document.get("subject") or []:
            name = entry.get("name") if isinstance(entry, Mapping) else None
            digest = entry.get("digest", {}).get("sha256") if isinstance(entry, Mapping) else None
            if not isinstance(name, str) or not isinstance(digest, str) or _escapes(name):
                raise StatementError(f"the statement has a malformed subject: {entry!r:.200}")
            subjects.append(Subject(name, digest.lower()))
        predicate = document.get("predicate")
        if not isinstance(predicate, Mapping):
            raise StatementError("the statement has no predicate")
        return cls(tuple(subjects), predicate)

    def run_digests(self) -> dict[str, str]:
        return {
            str(run.get("run_id")): str(run.get("evidence_sha256"))
            for run in self.predicate.get("runs") or []
            if isinstance(run, Mapping)
        }


def _escapes(name: str) -> bool:
    """A subject name that would point outside the folder it is checked in."""
    parts = Path(name).parts
    return not parts or Path(name).is_absolute() or ".." in parts or "\\" in name
