"""`report` and `sign` failing at every step leave the report folder as it was, byte for byte.

Each step fails for real where a real condition can be made: files may not grow (RLIMIT_FSIZE,
the kernel's EFBIG, as a full disk fails a write), a folder stands where a file must go. Where
only one particular write or rename must fail, the failure is injected into the file operation
itself (`io.open`, `os.replace`) as a full disk or a busy file system would raise it; MLflow and
the code under test run unchanged.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import resource
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from audit.signing.statement import ENVELOPE_FILE
from audit.staging import PREFIX, Staging
from tests import stores
from tests.test_signing import (
    PASSPHRASE,
    PASSPHRASE_VARIABLE,
    Keys,
    SigningStore,
    _build_store,
    _keygen,
    _sign_args,
)

DATE = "2026-11-26"
Main = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="module", autouse=True)
def _passphrase_in_environment() -> Iterator[None]:
    os.environ[PASSPHRASE_VARIABLE] = PASSPHRASE
    yield
    del os.environ[PASSPHRASE_VARIABLE]


@pytest.fixture(scope="module")
def main() -> Main:
    return stores.in_process_cli()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> SigningStore:
    return _build_store(tmp_path_factory.mktemp("faults") / "store")


@pytest.fixture(scope="module")
def keys(main: Main, tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return _keygen(main, tmp_path_factory.mktemp("keys"), "CN=Jane Doe,O=Acme ML")


def _report_args(store: SigningStore, folder: Path) -> tuple[str, ...]:
    return (
        "report", "--tracking-uri", store.uri, "--out", str(folder),
        "--run-id", store.run_ids["complete"], "--run-id", store.run_ids["no-data"],
        "--date", DATE, "--jobs", "1",
    )  # fmt: skip


@pytest.fixture(scope="module")
def signed(main: Main, store: SigningStore, keys: Keys, tmp_path_factory) -> Path:
    """A signed report of two runs, with a file of the user's beside it: built once, copied by
    each test."""
    folder = tmp_path_factory.mktemp("signed") / "reports"
    code, _, err = main(*_report_args(store, folder), *_sign_args(keys))
    assert code == 0, err
    (folder / "notes").mkdir()
    (folder / "notes" / "review.txt").write_text("reviewed by the model-risk team\n")
    return folder


@pytest.fixture
def folder(signed: Path, tmp_path: Path) -> Path:
    target = tmp_path / "reports"
    shutil.copytree(signed, target)
    return target


def _sign(main: Main, folder: Path, keys: Keys) -> tuple[int, str, str]:
    return main(  # type: ignore[no-any-return]
        "sign", str(folder), "--key", str(keys.p12), "--passphrase-env", PASSPHRASE_VARIABLE
    )


def _assert_failed_and_unchanged(
    outcome: tuple[int, str, str], folder: Path, before: str, *words: str
) -> None:
    code, _, err = outcome
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    assert stores.tree_digest(folder) == before, "the folder changed"


# --------------------------------------------------------------------------- real conditions


@contextlib.contextmanager
def _files_may_not_grow_beyond(limit: int) -> Iterator[None]:
    """RLIMIT_FSIZE for this process: a write past `limit` bytes fails with EFBIG."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills us
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def test_report_failing_at_its_first_file(main: Main, store, folder: Path) -> None:
    before = stores.tree_digest(folder)
    with _files_may_not_grow_beyond(0):  # evidence.json, the first file, cannot be written
        outcome = main(*_report_args(store, folder), "--no-pdf")
    _assert_failed_and_unchanged(outcome, folder, before, "cannot write reports to", "too large")


def test_report_failing_at_a_middle_file(main: Main, store, signed: Path, folder: Path) -> None:
    # The JSON files and the HTML documents fit; the first PDF, written after the data files
    # and its HTML, does not (a run's PDF is some 80 KB, the largest other file under 60 KB).
    limit = 1 + max(p.stat().st_size for p in signed.iterdir() if p.suffix in (".json", ".html"))
    before = stores.tree_digest(folder)
    with _files_may_not_grow_beyond(limit):
        outcome = main(*_report_args(store, folder))
    _assert_failed_and_unchanged(outcome, folder, before, ".pdf", "too large")


def test_a_report_into_a_new_folder_that_fails_leaves_no_folder(
    main: Main, store, tmp_path: Path
) -> None:
    out = tmp_path / "new" / "reports"
    with _files_may_not_grow_beyond(0):
        code, _, err = main(*_report_args(store, out), "--no-pdf")
    assert code == 2 and "too large" in err
    assert list(tmp_path.iterdir()) == []


def test_report_with_a_folder_where_a_document_goes(main: Main, store, folder: Path) -> None:
    (folder / "no-data.html").unlink()
    (folder / "no-data.html").mkdir()
    (folder / "no-data.html" / "kept.txt").write_text("mine")
    before = stores.tree_digest(folder)
    outcome = main(*_report_args(store, folder), "--no-pdf")
    _assert_failed_and_unchanged(outcome, folder, before, "no-data.html is a folder")


def test_sign_failing_at_its_first_file(main: Main, keys: Keys, folder: Path) -> None:
    before = stores.tree_digest(folder)
    with _files_may_not_grow_beyond(0):  # the first signed PDF cannot be written
        outcome = _sign(main, folder, keys)
    _assert_failed_and_unchanged(outcome, folder, before, "cannot sign", "too large")


def test_sign_with_a_folder_where_the_envelope_goes(main: Main, keys: Keys, folder) -> None:
    (folder / ENVELOPE_FILE).unlink()
    (folder / ENVELOPE_FILE).mkdir()
    (folder / ENVELOPE_FILE / "kept.txt").write_text("mine")
    before = stores.tree_digest(folder)
    outcome = _sign(main, folder, keys)
    _assert_failed_and_unchanged(outcome, folder, before, f"{ENVELOPE_FILE} is a folder")


# --------------------------------------------------------------------------- one write or rename


def _fail_writing(monkeypatch: pytest.MonkeyPatch, matches: Callable[[Path], bool]) -> list[Path]:
    """The first file opened for writing whose path `matches` fails as on a full disk."""
    real_open = io.open
    failed: list[Path] = []

    def guarded_open(file, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
        if (
            not failed
            and isinstance(file, str | os.PathLike)
            and any(flag in mode for flag in "wax+")
            and matches(Path(file))
        ):
            failed.append(Path(file))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(io, "open", guarded_open)
    return failed


def _fail_moving(
    monkeypatch: pytest.MonkeyPatch, matches: Callable[[Path, Path], bool], nth: int = 1
) -> list[Path]:
    """The `nth` rename whose source and destination `matches` fails as on a busy mount; the
    destinations of the matching renames tried, in order."""
    real_replace = os.replace
    tried: list[Path] = []

    def guarded_replace(source, destination, *args, **kwargs):  # type: ignore[no-untyped-def]
        if matches(Path(source), Path(destination)):
            tried.append(Path(destination))
            if len(tried) == nth:
                raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(destination))
        return real_replace(source, destination, *args, **kwargs)

    monkeypatch.setattr(os, "replace", guarded_replace)
    return tried


def _staged(path: Path, within: str | None = None) -> bool:
    """Whether `path` is in a staging folder (in its subfolder `within`, when given)."""
    parts = path.parts
    return any(
        part.startswith(PREFIX) and (within is None or parts[index + 1 : index + 2] == (within,))
        for index, part in enumerate(parts)
    )


def _placing(folder: Path) -> Callable[[Path, Path], bool]:
    """A new file moved from the staging folder to its place in `folder`."""
    return lambda source, destination: _staged(source, "new") and destination.parent == folder


def _setting_aside(name: str, folder: Path) -> Callable[[Path, Path], bool]:
    """The previous `name` moved out of the way, into the staging folder."""
    return lambda source, destination: source == folder / name and _staged(destination)


# The signed report without PDFs places 3 documents, evidence.json, result.json, the envelope.
@pytest.mark.parametrize(
    ("nth", "total"), [(1, 6), (3, 6), (6, 6)], ids=["first", "middle", "last"]
)
def test_report_failing_at_the_move_into_place(
    main: Main, store, keys: Keys, folder: Path, monkeypatch, nth: int, total: int
) -> None:
    before = stores.tree_digest(folder)
    tried = _fail_moving(monkeypatch, _placing(folder), nth)
    outcome = main(*_report_args(store, folder), "--no-pdf", *_sign_args(keys))
    assert len(tried) == nth
    if nth == total:
        assert tried[-1] == folder / ENVELOPE_FILE  # the final move
    _assert_failed_and_unchanged(outcome, folder, before, "cannot write reports", "busy")


def test_report_failing_to_set_aside_the_old_envelope(
    main: Main, store, keys: Keys, folder: Path, monkeypatch
) -> None:
    before = stores.tree_digest(folder)
    tried = _fail_moving(monkeypatch, _setting_aside(ENVELOPE_FILE, folder))
    outcome = main(*_report_args(store, folder), "--no-pdf", *_sign_args(keys))
    assert tried
    _assert_failed_and_unchanged(outcome, folder, before, "cannot write reports", "busy")


def test_report_failing_at_a_middle_document(main: Main, store, folder, monkeypatch) -> None:
    before = stores.tree_digest(folder)
    failed = _fail_writing(monkeypatch, lambda path: path.name == "no-data.html")
    outcome = main(*_report_args(store, folder), "--no-pdf")
    assert failed and _staged(failed[0])
    _assert_failed_and_unchanged(outcome, folder, before, "No space left on device")


def test_report_failing_at_the_envelope_write(
    main: Main, store, keys: Keys, folder: Path, monkeypatch
) -> None:
    before = stores.tree_digest(folder)
    failed = _fail_writing(monkeypatch, lambda path: path.name == ENVELOPE_FILE)
    outcome = main(*_report_args(store, folder), "--no-pdf", *_sign_args(keys))
    assert failed and _staged(failed[0])
    _assert_failed_and_unchanged(outcome, folder, before, "cannot write reports", "No space left")


def test_sign_failing_at_a_middle_pdf(main: Main, keys: Keys, folder, monkeypatch) -> None:
    before = stores.tree_digest(folder)
    failed = _fail_writing(monkeypatch, lambda path: "no-data.pdf" in path.name)
    outcome = _sign(main, folder, keys)
    assert failed and _staged(failed[0])
    _assert_failed_and_unchanged(outcome, folder, before, "cannot sign", "No space left")


def test_sign_failing_at_the_envelope_write(main: Main, keys: Keys, folder, monkeypatch) -> None:
    before = stores.tree_digest(folder)
    failed = _fail_writing(monkeypatch, lambda path: path.name == ENVELOPE_FILE)
    outcome = _sign(main, folder, keys)
    assert failed and _staged(failed[0])
    _assert_failed_and_unchanged(outcome, folder, before, "cannot sign", "No space left")


# Signing places 3 PDFs, then the envelope.
@pytest.mark.parametrize(
    ("nth", "total"), [(1, 4), (2, 4), (4, 4)], ids=["first", "middle", "last"]
)
def test_sign_failing_at_the_move_into_place(
    main: Main, keys: Keys, folder: Path, monkeypatch, nth: int, total: int
) -> None:
    before = stores.tree_digest(folder)
    tried = _fail_moving(monkeypatch, _placing(folder), nth)
    outcome = _sign(main, folder, keys)
    assert len(tried) == nth
    if nth == total:
        assert tried[-1] == folder / ENVELOPE_FILE  # the final move
    _assert_failed_and_unchanged(outcome, folder, before, "cannot sign", "busy")


def test_signing_again_replaces_only_the_signed_files(main: Main, keys: Keys, folder) -> None:
    """The success path of the same code: PDFs co-signed, envelope new, the rest untouched,
    nothing of the staging left behind, and the folder verifies."""
    untouched = {p: p.read_bytes() for p in folder.rglob("*") if p.suffix in (".html", ".txt")}
    envelope = (folder / ENVELOPE_FILE).read_bytes()
    code, _, err = _sign(main, folder, keys)
    assert code == 0, err
    assert {p: p.read_bytes() for p in untouched} == untouched
    assert (folder / ENVELOPE_FILE).read_bytes() != envelope
    assert not [p for p in folder.iterdir() if p.name.startswith(PREFIX)]
    code, out, _ = main("verify", str(folder), "--cert", str(keys.pem))
    assert code == 0, out


# --------------------------------------------------------------------------- staging


def test_what_cannot_be_put_back_is_kept_and_named(tmp_path: Path, monkeypatch) -> None:
    """When undoing a failed publish fails too, the previous files stay in the staging folder,
    and the error says where."""
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.txt").write_text("old a")
    (folder / "b.txt").write_text("old b")
    real_replace = os.replace
    calls: list[tuple[Path, Path]] = []

    def replace_failing_on_b(source, destination):  # type: ignore[no-untyped-def]
        calls.append((Path(source), Path(destination)))
        if Path(destination) == folder / "b.txt" or Path(source) == folder / "b.txt":
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(destination))
        if Path(destination) == folder / "a.txt" and Path(source).parent.name == "previous":
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(destination))
        return real_replace(source, destination)

    with Staging(folder) as staging:
        (staging.files / "a.txt").write_text("new a")
        (staging.files / "b.txt").write_text("new b")
        monkeypatch.setattr(os, "replace", replace_failing_on_b)
        with pytest.raises(OSError, match=r"a\.txt could not be put back") as raised:
            staging.publish(["a.txt", "b.txt"])
        monkeypatch.undo()
    kept = Path(str(raised.value).rsplit("the previous files are in ", 1)[1])
    assert (kept / "a.txt").read_text() == "old a"
    assert (folder / "b.txt").read_text() == "old b"
