"""The alias ledger: an append-only JSON Lines file of signed, hash-chained alias moves.

Every line is one DSSE envelope (`audit.signing.dsse`, as the report bundle is signed) whose
payload is one `LedgerEntry` as RFC 8785 canonical JSON. Each entry holds the SHA-256 of the line
before it (without its newline) and its own sequence number, so that deleting, editing,
inserting or reordering a line breaks the chain at that line. Removing the last lines, or the
whole file, leaves a valid shorter chain: only a copy kept elsewhere shows that (the head digest
`verify_ledger` returns is what to compare).

One job: write and check the file. No MLflow call and no network here; the service that sees the
alias moves calls `append_entry`.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import hashlib
import json
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from cryptography import x509

from audit.errors import AuditError
from audit.evidence import canonical_json
from audit.gate.statefiles import sync_folder
from audit.signing import dsse
from audit.signing.keys import SigningKey, check_can_sign, common_name, fingerprint

PAYLOAD_TYPE = "application/vnd.mlflow-audit.ledger-entry+json"

#: The `previous` of the first entry.
GENESIS = "0" * 64

#: A line longer than this is not one of ours: an entry is well under 4 KiB.
MAX_LINE_BYTES = 64 << 10

#: What a verdict may hold (the model-version tags the service writes, plus the evidence digest).
VERDICT_FIELDS = frozenset(
    {
        "status",
        "score",
        "policy",
        "policy_sha256",
        "result_sha256",
        "evidence_sha256",
        "checked_at",
    }
)

#: What the caller of `append_entry` gives; `previous` and `sequence` come from the file.
MOVE_FIELDS = ("model", "alias", "old_version", "new_version", "moved_at", "verdict")

_READ_CHUNK = 1 << 20


class LedgerError(AuditError):
    """The ledger cannot be appended to or read (exit 2); its content is left as it was."""


@dataclass(frozen=True)
class LedgerEntry:
    """One alias move, as signed."""

    model: str
    alias: str
    #: None when the alias is new.
    old_version: str | None
    #: None when the alias was deleted.
    new_version: str | None
    #: ISO 8601, UTC, as the caller saw the move.
    moved_at: str
    #: None, or the new version's verdict: a subset of VERDICT_FIELDS.
    verdict: Mapping[str, Any] | None
    #: SHA-256 (hex) of the previous line without its newline; GENESIS for the first entry.
    previous: str
    sequence: int

    def to_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["verdict"] = dict(self.verdict) if self.verdict is not None else None
        return document

    def payload(self) -> bytes:
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, document: Any) -> LedgerEntry:
        """The entry `document` describes; ValueError saying why it is not one."""
        if not isinstance(document, Mapping):
            raise ValueError("not a JSON object")
        expected = {*MOVE_FIELDS, "previous", "sequence"}
        if set(document) != expected:
            missing = [f"no {n}" for n in sorted(expected - set(document))]
            extra = [f"unknown field {n}" for n in sorted(set(document) - expected)]
            raise ValueError(", ".join(missing + extra))
        fields = _move_fields(document)
        previous, sequence = document["previous"], document["sequence"]
        if not (isinstance(previous, str) and len(previous) == 64 and _is_hex(previous)):
            raise ValueError("previous is not a SHA-256 in hex")
        if type(sequence) is not int or sequence < 0:
            raise ValueError("sequence is not a whole number")
        return cls(**fields, previous=previous, sequence=sequence)


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def _move_fields(document: Mapping[str, Any]) -> dict[str, Any]:
    """The move's fields, checked: ValueError naming the first one that is wrong."""
    fields = {name: document.get(name) for name in MOVE_FIELDS}
    for name in ("model", "alias", "moved_at"):
        if not isinstance(fields[name], str) or not fields[name]:
            raise ValueError(f"{name} is not a non-empty string")
    for name in ("old_version", "new_version"):
        value = fields[name]
        if type(value) is int:  # MLflow's client gives versions as int or str
            fields[name] = value = str(value)
        if value is not None and (not isinstance(value, str) or not value):
            raise ValueError(f"{name} is neither a version nor null")
    if fields["old_version"] is None and fields["new_version"] is None:
        raise ValueError("old_version and new_version are both null")
    moved_at = str(fields["moved_at"])
    try:
        moment = datetime.datetime.fromisoformat(moved_at.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("moved_at is not an ISO 8601 time") from None
    if moment.utcoffset() != datetime.timedelta(0):
        raise ValueError("moved_at is not in UTC")
    verdict = fields["verdict"]
    if verdict is not None:
        if not isinstance(verdict, Mapping) or not all(isinstance(k, str) for k in verdict):
            raise ValueError("verdict is neither an object nor null")
        unknown = set(verdict) - VERDICT_FIELDS
        if unknown:
            raise ValueError(f"verdict holds unknown fields {', '.join(sorted(unknown))}")
        fields["verdict"] = dict(verdict)
    return fields


def line_digest(line: bytes) -> str:
    """What the next entry's `previous` holds: SHA-256 of the line without its newline."""
    return hashlib.sha256(line.removesuffix(b"\n")).hexdigest()


def append_entry(path: Path, entry_fields: Mapping[str, Any], key: SigningKey) -> LedgerEntry:
    """Sign the alias move `entry_fields` (MOVE_FIELDS; a missing version or verdict is None)
    with `key` and append it to the ledger at `path`, chained to its last line. Creates the file
    when missing. Raises LedgerError, leaving the file as it was, when the file is not a regular
    file, a symlink, or its last line is not a whole entry (or, signed by `key`, no longer
    verifies)."""
    unknown = set(entry_fields) - set(MOVE_FIELDS)
    if unknown:
        raise LedgerError(f"{path}: not fields of an alias move: {', '.join(sorted(unknown))}")
    try:
        fields = _move_fields(entry_fields)
    except ValueError as error:
        raise LedgerError(f"{path}: cannot record the move: {error}") from None
    check_can_sign(key)
    descriptor = _open_for_append(path)
    try:
        # One appender at a time: the chain is read and extended under the same lock.
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        previous, sequence = _chain_end(path, descriptor, key)
        entry = LedgerEntry(**fields, previous=previous, sequence=sequence)
        line = dsse.sign(entry.payload(), key.private_key, key.fingerprint, PAYLOAD_TYPE).to_json()
        if len(line) > MAX_LINE_BYTES:
            raise LedgerError(f"{path}: the entry would exceed {MAX_LINE_BYTES} bytes")
        written = os.write(descriptor, line)  # O_APPEND: at the end, in one write
        if written != len(line):
            raise LedgerError(
                f"{path}: only {written} of {len(line)} bytes written (disk full?); the last "
                "line is torn, 'mlflow-audit ledger verify' names it"
            )
        os.fsync(descriptor)
    except OSError as error:
        raise LedgerError(f"cannot append to {path}: {error.strerror or error}") from None
    finally:
        os.close(descriptor)  # releases the lock
    return entry


def _open_for_append(path: Path) -> int:
    """A descriptor of the ledger, read-write and appending, never through a symlink and never
    blocking on a FIFO; the file is created (0644 less the umask) when missing."""
    flags = os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    created = False
    try:
        try:
            descriptor = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o644)
            created = True
        except FileExistsError:
            descriptor = os.open(path, flags)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise LedgerError(f"{path}: is a symlink; give the ledger file itself") from None
        raise LedgerError(f"cannot open {path}: {error.strerror or error}") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise LedgerError(f"{path}: not a regular file")
    if created:
        # The new file's name made durable, as its content is; a folder that cannot be synced
        # (some network file systems) leaves the entry as durable as the file system makes it.
        with contextlib.suppress(OSError):
            sync_folder(path.parent)
    return descriptor


def _chain_end(path: Path, descriptor: int, key: SigningKey) -> tuple[str, int]:
    """The `previous` and `sequence` of the entry to append: read from the file's end, so that
    a large ledger costs one read of its last line. The last line must be a whole entry and,
    when it names `key` as its signer, signed by it (after a key rotation the line names the old
    key, which only `ledger verify` with its certificate can check)."""
    size = os.fstat(descriptor).st_size
    if size == 0:
        return GENESIS, 0
    window = min(size, MAX_LINE_BYTES + 1)
    tail = os.pread(descriptor, window, size - window)
    if not tail.endswith(b"\n"):
        raise LedgerError(
            f"{path}: the last line has no newline (a torn write?); run "
            "'mlflow-audit ledger verify' and repair the file by hand"
        )
    start = tail.rfind(b"\n", 0, len(tail) - 1) + 1
    if start == 0 and window < size:
        raise LedgerError(f"{path}: the last line is longer than {MAX_LINE_BYTES} bytes")
    line = tail[start:]
    try:
        envelope = _envelope(line)
        last = _unsigned_entry(envelope)
    except ValueError as error:
        raise LedgerError(f"{path}: the last line is {error}") from None
    keyids = {keyid for keyid, _ in envelope.signatures}
    if key.fingerprint in keyids and not dsse.verify(envelope, key.certificate.public_key()):
        raise LedgerError(
            f"{path}: the signature of the last line does not verify (changed after signing); "
            "run 'mlflow-audit ledger verify'"
        )
    return line_digest(line), last.sequence + 1


def _envelope(line: bytes) -> dsse.Envelope:
    """The line's envelope, when it is one of a ledger entry; ValueError saying why not."""
    try:
        envelope = dsse.Envelope.from_json(line)
    except RecursionError:  # JSON nested deeper than the parser goes
        raise ValueError("not JSON (nested too deep)") from None
    if envelope.payload_type != PAYLOAD_TYPE:
        raise ValueError(f"not a ledger entry (payload type {envelope.payload_type!r})")
    return envelope


def _unsigned_entry(envelope: dsse.Envelope) -> LedgerEntry:
    """The entry an envelope holds, signature unchecked; ValueError saying why it holds none."""
    try:
        return LedgerEntry.from_dict(json.loads(envelope.payload))
    except (ValueError, RecursionError) as error:
        raise ValueError(f"not a ledger entry ({error})") from None


@dataclass(frozen=True)
class LedgerProblem:
    """A line that breaks the ledger, and why, in one line."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True)
class LedgerVerification:
    path: Path
    #: Lines read, whether or not they are valid entries.
    lines: int = 0
    #: Entries whose signature verifies.
    entries: int = 0
    problems: tuple[LedgerProblem, ...] = ()
    #: Common names of the certificates that signed the entries, in order of first use.
    signers: tuple[str, ...] = ()
    #: SHA-256 of the last line (what the next entry chains to): compare it with a copy kept
    #: elsewhere to notice lines removed from the end.
    head: str = GENESIS
    last: LedgerEntry | None = None

    @property
    def valid(self) -> bool:
        return not self.problems

    @property
    def exit_code(self) -> int:
        return 0 if self.valid else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "ledger": str(self.path),
            "valid": self.valid,
            "lines": self.lines,
            "entries": self.entries,
            "signers": list(self.signers),
            "head_sha256": self.head,
            "last_sequence": self.last.sequence if self.last else None,
            "problems": [{"line": p.line, "reason": p.reason} for p in self.problems],
        }


@dataclass
class _Chain:
    """What the next line must chain to."""

    previous: str = GENESIS
    #: None after a line whose entry could not be read: the next one cannot be checked.
    sequence: int | None = 0
    signers: list[str] = field(default_factory=list)
    keys: tuple[_Key, ...] = ()


@dataclass(frozen=True)
class _Key:
    """A certificate that may sign, with what each line needs of it worked out once."""

    certificate: x509.Certificate
    fingerprint: str
    public_key: Any


def verify_ledger(path: Path, certificates: Sequence[x509.Certificate]) -> LedgerVerification:
    """Check every line of the ledger: an envelope of ours, signed by the key of one of
    `certificates`, holding an entry whose sequence and `previous` follow the line before.
    Streams the file, holding at most one line (MAX_LINE_BYTES) in memory. Raises LedgerError
    when the file cannot be read at all; every finding about its content is a LedgerProblem."""
    problems: list[LedgerProblem] = []
    chain = _Chain(keys=tuple(_Key(c, fingerprint(c), c.public_key()) for c in certificates))
    lines = entries = 0
    last: LedgerEntry | None = None
    with _open_for_reading(path) as handle:
        try:
            for number, line, digest, complete in _lines(handle):
                lines = number
                if not complete:
                    problems.append(
                        LedgerProblem(number, "the file ends without a newline (a torn write)")
                    )
                entry, why = (
                    _entry(line, chain)
                    if len(line) <= MAX_LINE_BYTES
                    else (None, f"longer than {MAX_LINE_BYTES} bytes")
                )
                if entry is None:
                    problems.append(LedgerProblem(number, str(why)))
                    chain.sequence = None
                else:
                    entries += 1
                    problems += [LedgerProblem(number, p) for p in _link_problems(entry, chain)]
                    chain.sequence = entry.sequence + 1
                    last = entry
                chain.previous = digest
        except OSError as error:
            raise LedgerError(f"cannot read {path}: {error.strerror or error}") from None
    return LedgerVerification(
        path,
        lines=lines,
        entries=entries,
        problems=tuple(problems),
        signers=tuple(chain.signers),
        head=chain.previous,
        last=last,
    )


def _open_for_reading(path: Path) -> BinaryIO:
    try:
        # O_NONBLOCK: a FIFO opens at once and is refused below, instead of waiting for a writer.
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise LedgerError(f"{path}: no such file") from None
    except OSError as error:
        raise LedgerError(f"cannot open {path}: {error.strerror or error}") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise LedgerError(f"{path}: not a regular file")
    return os.fdopen(descriptor, "rb")


def _lines(handle: BinaryIO) -> Iterator[tuple[int, bytes, str, bool]]:
    """(line number, the line, its digest, whether it ends with a newline). A line longer than
    MAX_LINE_BYTES comes back cut at MAX_LINE_BYTES + 1 bytes, its digest over the whole."""
    number = 0
    while True:
        line = handle.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        number += 1
        if line.endswith(b"\n"):
            yield number, line, line_digest(line), True
            continue
        digest = hashlib.sha256(line)
        complete = False
        while not complete:
            rest = handle.readline(_READ_CHUNK)
            if not rest:
                break
            complete = rest.endswith(b"\n")
            digest.update(rest.removesuffix(b"\n"))
        yield number, line, digest.hexdigest(), complete


def _entry(line: bytes, chain: _Chain) -> tuple[LedgerEntry | None, str | None]:
    """The line's entry when its signature verifies, else None and why."""
    try:
        envelope = _envelope(line)
    except ValueError as error:
        return None, str(error)
    keyids = {keyid for keyid, _ in envelope.signatures}
    # The certificate the key id names first: one signature check per line, not one per key.
    candidates = sorted(chain.keys, key=lambda known: known.fingerprint not in keyids)
    signer = next(
        (known.certificate for known in candidates if dsse.verify(envelope, known.public_key)),
        None,
    )
    if signer is None:
        if any(known.fingerprint in keyids for known in chain.keys):
            return None, "the signature does not verify: the entry was changed after signing"
        named = ", ".join(sorted(k[:16] + "..." for k in keyids if k)) or "none"
        return None, f"signed by an unknown key (key id {named}); give its certificate"
    name = common_name(signer)
    if name not in chain.signers:
        chain.signers.append(name)
    try:
        return _unsigned_entry(envelope), None
    except ValueError as error:
        return None, f"signed, but {error}"


def _link_problems(entry: LedgerEntry, chain: _Chain) -> list[str]:
    problems = []
    if chain.sequence is not None and entry.sequence != chain.sequence:
        problems.append(f"sequence {entry.sequence} where {chain.sequence} was due")
    if entry.previous != chain.previous:
        problems.append(
            "previous is not the SHA-256 of the line before (a line was removed, inserted, "
            "moved or changed)"
            if chain.previous != GENESIS or entry.sequence != 0
            else "the first entry does not start the chain"
        )
    return problems


def read_entries(path: Path) -> Iterator[tuple[int, LedgerEntry | None, str | None]]:
    """(line number, entry, None) or (line number, None, why not), without checking signatures
    or the chain: for listing a ledger. Raises LedgerError when the file cannot be read."""
    with _open_for_reading(path) as handle:
        try:
            for number, line, _, _ in _lines(handle):
                if len(line) > MAX_LINE_BYTES:
                    yield number, None, f"longer than {MAX_LINE_BYTES} bytes"
                    continue
                try:
                    yield number, _unsigned_entry(_envelope(line)), None
                except ValueError as error:
                    yield number, None, str(error)
        except OSError as error:
            raise LedgerError(f"cannot read {path}: {error.strerror or error}") from None
