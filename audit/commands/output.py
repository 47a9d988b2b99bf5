"""Where a command's output goes: stdout or a file written whole, with colour when a person
reads it."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from audit.errors import AuditError

if TYPE_CHECKING:
    from audit.result import AuditResult


def use_color(mode: str, stream: TextIO) -> bool:
    if mode != "auto":
        return mode == "always"
    return stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def terminal_width() -> int:
    import shutil

    return shutil.get_terminal_size((80, 24)).columns


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def emit(chunks: Iterable[str], output: str | None) -> None:
    """Write the pieces of one output to stdout, or to the file `output`: atomically (a reader
    never sees half of it), except to devices and FIFOs, which are written as they are."""
    if output is None:
        for chunk in chunks:
            sys.stdout.write(chunk)
        sys.stdout.flush()
        return
    target = Path(output)
    if target.is_dir():
        raise AuditError(f"--output {output} is a directory")
    if target.exists() and not target.is_file():
        # /dev/null, a FIFO, /dev/stdout: renaming a file over them would replace the device.
        try:
            with target.open("w", encoding="utf-8") as handle:
                handle.writelines(chunks)
        except OSError as error:
            raise AuditError(f"cannot write {output}: {error.strerror or error}") from None
        return
    partial: Path | None = None
    try:
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=target.parent, prefix=f".{target.name}.", delete=False
        ) as handle:
            partial = Path(handle.name)
            handle.writelines(chunks)
        # A temporary file is private (0600); the output gets the mode any new file would.
        partial.chmod(0o666 & ~_umask())
        partial.replace(target)
    except OSError as error:
        if partial is not None:
            partial.unlink(missing_ok=True)
        raise AuditError(f"cannot write {output}: {error.strerror or error}") from None


class Progress:
    """A one-line counter on stderr while runs are collected, only on a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.shown = False

    def update(self, count: int) -> None:
        if self.enabled and count % 250 == 0:
            self.stream.write(f"\rmlflow-audit: {count} runs audited…")
            self.stream.flush()
            self.shown = True

    def documents(self, done: int, total: int, verb: str = "rendering") -> None:
        if self.enabled:
            width = 24
            filled = width * done // total
            self.stream.write(
                f"\rmlflow-audit: {verb} [{'#' * filled}{'.' * (width - filled)}] "
                f"{done}/{total} documents"
            )
            self.stream.flush()
            self.shown = True

    def done(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def tell(kind: str, text: str) -> None:
    """One line on stderr: an error or a warning. Its text may hold names from MLflow or a
    server's answer, so it is escaped to one line that cannot act as a terminal or CI command."""
    from audit.formats.text import safe_line

    print(f"mlflow-audit: {kind}: {safe_line(text)}", file=sys.stderr)


def warn_about_waivers(result: AuditResult) -> None:
    """Expired waivers no longer apply, unused ones match nothing: both need a person."""
    for use in result.waivers:
        if use.state != "applied":
            tell("warning", use.message)
