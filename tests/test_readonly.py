"""An audit never changes the store: the SQLite file and the ./mlruns tree are byte-identical."""

from __future__ import annotations

from pathlib import Path

from tests import stores
from tests.conftest import Store


def test_sqlite_store_is_byte_identical_after_audits(cli, sqlite_store: Store) -> None:
    before = stores.tree_digest(sqlite_store.root.parent)
    for args in (
        [],
        ["--include-deleted", "--policy", "baseline"],
        ["--model", "audit-test-model@champion"],
        ["-e", "no-such-experiment"],
    ):
        cli("check", "--tracking-uri", sqlite_store.uri, *args)
    assert stores.tree_digest(sqlite_store.root.parent) == before


def test_file_store_is_byte_identical_after_audits(cli, file_store: Store) -> None:
    before = stores.tree_digest(file_store.root)
    assert cli("check", "--tracking-uri", file_store.uri, "-f", "json").code == 1
    assert cli("check", "--tracking-uri", file_store.root.as_uri(), "--include-deleted").code == 1
    assert stores.tree_digest(file_store.root) == before
    assert not (file_store.root / "models").exists()


def test_default_mlruns_store_is_audited(cli, file_store: Store, copy_of, monkeypatch) -> None:
    copy = copy_of(file_store.root)
    monkeypatch.chdir(copy.parent)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    result = cli("check", "-e", "truth-table", "--policy", "baseline", "-f", "json")
    assert result.code == 1
    assert result.json()["store"] == str(copy)


def test_file_store_without_trash_folder_is_refused_untouched(
    cli, file_store: Store, copy_of
) -> None:
    copy: Path = copy_of(file_store.root)
    (copy / ".trash").rmdir()
    before = stores.tree_digest(copy)
    result = cli("check", "--tracking-uri", str(copy))
    assert result.code == 2 and "no .trash folder" in result.err
    assert stores.tree_digest(copy) == before


def test_sqlite_file_given_as_a_path_gets_a_hint(cli, sqlite_store: Store) -> None:
    result = cli("check", "--tracking-uri", str(sqlite_store.root))
    assert result.code == 2 and "did you mean sqlite:///" in result.err
