"""Fail closed: a store that cannot be read completely is exit 2 with one line, never a pass."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests import stores
from tests.conftest import Store


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("truncated", "not a readable SQLite database"),
        ("garbage", "is not a SQLite database"),
        ("empty", "is not a SQLite database"),
    ],
)
@pytest.mark.parametrize("source", ["sql", "client"])
def test_damaged_sqlite_store_is_exit_2_and_left_as_it_is(
    cli, sqlite_store: Store, tmp_path: Path, damage: str, reason: str, source: str
) -> None:
    database = tmp_path / "mlflow.db"
    if damage == "truncated":
        shutil.copy2(sqlite_store.root, database)
        with database.open("r+b") as handle:
            handle.truncate(database.stat().st_size // 2)
    elif damage == "garbage":
        database.write_bytes(b"this is not a database\n" * 100)
    else:
        database.write_bytes(b"")
    before = stores.tree_digest(database)
    result = cli("check", "--tracking-uri", f"sqlite:///{database}", "--source", source)
    assert result.code == 2 and result.out == ""
    assert reason in result.err and str(database) in result.err
    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err
    assert stores.tree_digest(database) == before
