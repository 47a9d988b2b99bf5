"""The files of the gate's state folder: written whole or not at all, read back as untrusted.

A file is replaced by writing a temporary file beside it, syncing it to disk and renaming it
over the old one, then syncing the folder: a process killed at any point leaves either the old
file or the new one, never a torn mix, and a power cut does not lose a rename that was reported
done. What is read back is bounded and validated by its reader: anyone who can write to the
folder could have put anything there.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from audit.errors import AuditError

#: Temporary files start with this; one left behind by a killed process is incomplete and
#: never replaced anything, so it is removed on the next start.
TEMPORARY = ".tmp-"


class StateError(AuditError):
    """The state folder cannot be read or written, or is in use by another process."""


def cannot_write(path: Path, problem: OSError) -> StateError:
    return StateError(f"{path}: cannot write: {problem.strerror or problem}")


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data` as one step that survives a kill or a power cut."""
    descriptor, temporary = tempfile.mkstemp(prefix=TEMPORARY, dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        Path(temporary).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(temporary).unlink()
        raise
    sync_folder(path.parent)


def append_line(path: Path, line: bytes) -> None:
    """Add one line to `path` and sync it. A process killed during the write leaves at most a
    torn last line, which readers skip."""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(descriptor, line + b"\n")
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def sync_folder(folder: Path) -> None:
    """Make the renames and new names in `folder` durable."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def remove_temporaries(folder: Path) -> None:
    """Remove what killed writers left behind in `folder`."""
    for leftover in folder.glob(TEMPORARY + "*"):
        with contextlib.suppress(OSError):
            leftover.unlink()


def make_folder(folder: Path) -> None:
    """Create `folder` (and its parents) for the gate's state, or say why not."""
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as problem:
        raise StateError(
            f"state folder {folder}: cannot create: {problem.strerror or problem}"
        ) from None
    if not folder.is_dir():
        raise StateError(f"state folder {folder}: not a folder")
