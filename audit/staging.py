"""Put files into a folder as one change: write them into a hidden staging folder inside it,
then move them into place together, setting aside what they replace until all are in.

`report` (documents and data files) and `sign` (signed PDFs and the envelope) write this way, so
that a failure at any step (a full disk, a folder where a file must go, a rename refused, an
interruption) leaves the folder as it was, byte for byte.

The staging folder lives inside the target folder rather than beside it: every move is then a
rename within one file system, and nothing needs the parent folder to be writable, the folder
to be renamable (a mount point, someone's working directory) or its permissions to be copied.
The price is that the files are moved one after the other: a reader looking during those few
renames may see some files new and others old.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

#: Staging folders are hidden, and named so that a leftover one (the process was killed) says
#: where it came from.
PREFIX = ".mlflow-audit-"


class Staging:
    """A hidden folder inside `folder` (created if missing, with its parents) to write files
    into, then `publish` them. Closing it removes it, and removes `folder` again when this
    created it and nothing was published."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._created = _missing_folders(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self.root = Path(tempfile.mkdtemp(prefix=PREFIX, dir=folder))
        except OSError:
            self._remove_created()
            raise
        #: Where the new files are written, at the paths they will have in `folder`.
        self.files = self.root / "new"
        self._previous = self.root / "previous"
        self._published = False
        self._keep = False
        try:
            self.files.mkdir()
        except OSError:
            self.close()
            raise

    def __enter__(self) -> Staging:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if not self._keep:
            shutil.rmtree(self.root, ignore_errors=True)
            if not self._published:
                self._remove_created()

    def publish(self, names: Sequence[str]) -> None:
        """Move each of `names` (POSIX paths relative to `files`) to the same path in `folder`,
        replacing what is there. Either every one is moved, or the folder is put back as it was
        and the error raised."""
        # What the folder holds, read once: a name whose first part is not there replaces
        # nothing and needs no look (an export publishes 100,000 new files).
        present = {entry.name for entry in os.scandir(self.folder)}
        taken = [name for name in names if name.split("/", 1)[0] in present]
        for name in taken:
            target = self.folder / name
            if target.is_dir() and not target.is_symlink():
                raise OSError(f"{target} is a folder where a file is to be written; move it away")
        taken_names = set(taken)
        folder, files = os.fspath(self.folder), os.fspath(self.files)
        set_aside: list[str] = []
        placed: list[str] = []
        made: list[Path] = []
        try:
            for name in names:
                if name not in taken_names and "/" not in name:
                    os.replace(f"{files}/{name}", f"{folder}/{name}")  # noqa: PTH105 (100,000 Paths cost seconds)
                    placed.append(name)
                    continue
                target = self.folder / name
                if not target.parent.is_dir():
                    # A document in a folder of its own (a model card's NAME/README.md).
                    missing = _missing_folders(target.parent)
                    target.parent.mkdir(parents=True)
                    made.extend(missing)
                if os.path.lexists(target):
                    previous = self._previous / name
                    previous.parent.mkdir(parents=True, exist_ok=True)
                    target.replace(previous)
                    set_aside.append(name)
                (self.files / name).replace(target)
                placed.append(name)
        except BaseException as error:
            stuck = self._put_back(placed, set_aside)
            for made_folder in reversed(made):
                with contextlib.suppress(OSError):
                    made_folder.rmdir()
            if stuck:
                # Never delete what could not be put back.
                self._keep = True
                raise OSError(
                    f"{getattr(error, 'strerror', None) or error}; and {', '.join(stuck)} could "
                    f"not be put back: the previous files are in {self._previous}"
                ) from error
            raise
        self._published = True

    def _put_back(self, placed: Sequence[str], set_aside: Sequence[str]) -> list[str]:
        """Undo a publish that failed part-way; the names that could not be restored."""
        stuck = []
        for name in reversed(placed):
            if name not in set_aside:
                try:
                    (self.folder / name).unlink()
                except OSError:
                    stuck.append(name)
        for name in reversed(set_aside):
            try:
                (self._previous / name).replace(self.folder / name)
            except OSError:
                stuck.append(name)
        return stuck

    def _remove_created(self) -> None:
        for folder in self._created:
            try:
                folder.rmdir()
            except FileNotFoundError:
                continue
            except OSError:
                return


def _missing_folders(folder: Path) -> list[Path]:
    """`folder` and those of its parents that do not exist yet, deepest first."""
    missing = []
    for candidate in (folder, *folder.parents):
        if os.path.lexists(candidate):
            break
        missing.append(candidate)
    return missing
