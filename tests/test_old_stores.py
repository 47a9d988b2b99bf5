"""SQLite stores written by older MLflow versions are read as they are, never migrated.

The fixtures in tests/fixtures/old_stores/VERSION/ were logged by that MLflow version (see
build.py there; nothing is built at test time). Each test copies a fixture to its tmp folder and
replaces the fixed root the fixture was built under in the copy's artifact URIs, so that the
artifacts are found. The reference for the SQL source's reading of the store as it is: MLflow's
client reading a second copy that the installed MLflow migrated (`mlflow db upgrade`).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from audit.errors import StoreError
from audit.sources import (
    CollectionNeeds,
    ModelSpec,
    Selection,
    open_source,
    resolve_store,
)
from audit.sources.client import ClientSource
from audit.sources.sql import KNOWN_REVISIONS, SCHEMA_REVISION, SqlSource
from audit.sources.store import read_schema_revision
from tests import stores
from tests.test_sql_source import outcome

FIXTURES = Path(__file__).parent / "fixtures" / "old_stores"
VERSIONS = sorted(p.name for p in FIXTURES.iterdir() if (p / "build.json").is_file())
EVERYTHING = CollectionNeeds(artifacts=True, registry=True, metric_history=True)
SELECTIONS = {
    "all": Selection(include_deleted=True),
    "active": Selection(),
    "model": Selection(models=(ModelSpec.parse("old-store-model@champion"),)),
}


def _info(version: str) -> dict[str, str]:
    return dict(json.loads((FIXTURES / version / "build.json").read_text(encoding="utf-8")))


def _copy(version: str, target: Path) -> Path:
    """A copy of the fixture in `target`, its artifact URIs pointing into the copy."""
    shutil.copytree(FIXTURES / version, target)
    root = _info(version)["root"]
    database = target / "mlflow.db"
    connection = sqlite3.connect(database)
    with connection:
        tables = [
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        for table in tables:
            for column in [row[1] for row in connection.execute(f'PRAGMA table_info("{table}")')]:
                # Names from the fixture's own sqlite_master; values are bound.
                connection.execute(
                    f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '  # noqa: S608
                    f'WHERE typeof("{column}") = \'text\' AND instr("{column}", ?) > 0',
                    (root, str(target), root),
                )
    connection.close()
    return database


def _migrate(database: Path) -> None:
    """What the installed MLflow's client does to an older store when it opens it."""
    import sqlalchemy
    from mlflow.store.db.utils import _upgrade_db

    engine = sqlalchemy.create_engine(f"sqlite:///{database}")
    try:
        _upgrade_db(engine)
    finally:
        engine.dispose()


def test_there_are_fixtures_of_mlflow_2_and_3() -> None:
    majors = {version.split(".")[0] for version in VERSIONS}
    assert {"2", "3"} <= majors, VERSIONS


def test_known_revisions_are_mlflows_migration_chain() -> None:
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    script = ScriptDirectory.from_config(_get_alembic_config(""))
    chain = [r.revision for r in script.walk_revisions(base="base", head="heads")]
    chain.reverse()
    assert tuple(chain[chain.index(KNOWN_REVISIONS[0]) :]) == KNOWN_REVISIONS
    assert KNOWN_REVISIONS[-1] == SCHEMA_REVISION


@pytest.mark.parametrize("version", VERSIONS)
def test_fixture_is_at_an_older_known_revision(version: str) -> None:
    revision = read_schema_revision(resolve_store(f"sqlite:///{FIXTURES / version / 'mlflow.db'}"))
    assert revision == _info(version)["revision"]
    assert revision in KNOWN_REVISIONS and revision != SCHEMA_REVISION


@pytest.mark.parametrize("version", VERSIONS)
def test_sql_source_reads_an_old_store_as_the_client_reads_it_migrated(
    version: str, tmp_path: Path
) -> None:
    fixture_before = stores.tree_digest(FIXTURES / version)
    original = _copy(version, tmp_path / "original")
    migrated = _copy(version, tmp_path / "migrated")
    _migrate(migrated)
    assert read_schema_revision(resolve_store(f"sqlite:///{migrated}")) == SCHEMA_REVISION
    before = stores.tree_digest(original.parent)

    source = open_source(resolve_store(f"sqlite:///{original}"))
    assert isinstance(source, SqlSource)
    for name, selection in SELECTIONS.items():
        sql = outcome(
            list(SqlSource(resolve_store(f"sqlite:///{original}")).collect(selection, EVERYTHING))
        )
        client = outcome(
            list(
                ClientSource(resolve_store(f"sqlite:///{migrated}")).collect(selection, EVERYTHING)
            )
        )
        assert sql, name
        assert sql == client, name

    assert stores.tree_digest(original.parent) == before
    assert stores.tree_digest(FIXTURES / version) == fixture_before


@pytest.mark.parametrize("version", VERSIONS)
def test_the_old_store_carries_its_evidence(version: str, tmp_path: Path) -> None:
    """The equivalence above is not vacuous: datasets, the model and its version are read."""
    database = _copy(version, tmp_path / "store")
    runs = list(
        SqlSource(resolve_store(f"sqlite:///{database}")).collect(
            Selection(include_deleted=True), EVERYTHING
        )
    )
    assert len(runs) == 4
    runs_by_name = {run.record["run"]["name"]: run for run in runs}
    records = {name: run.record for name, run in runs_by_name.items()}
    assert records["deleted"]["run"]["lifecycle_stage"] == "deleted"
    complete = records["complete"]
    assert [d["context"] for d in complete["data"]["training"]] == ["training"]
    assert complete["data"]["training"][0]["source_uri"] == "s3://bucket/train.parquet"
    assert sorted(m["key"] for m in complete["metrics"]) == ["accuracy", "loss"]
    assert len(runs_by_name["complete"].metric_histories["loss"]) == 4
    (model,) = complete["models"]
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    (history,) = connection.execute(
        "SELECT value FROM tags WHERE run_uuid = ? AND key = 'mlflow.log-model.history'",
        (complete["run"]["id"],),
    ).fetchone() or ("",)
    connection.close()
    # MLflow 2.x from about 2.15 leaves the signature out of the mlflow.log-model.history tag
    # (2.22.5's store shows it); the record then takes it from the model's MLmodel file.
    if version == "2.22.5":
        assert "signature" not in history
    assert model["signature"] is not None and model["input_example"] is True
    assert model["signature"]["inputs"][0]["name"] == "a"
    assert model["origin"] == ("logged_model" if version.startswith("3.") else "run_artifacts")
    (registered,) = model["registered_versions"]
    assert (registered["name"], registered["aliases"]) == ("old-store-model", ["champion"])
    assert registered["tags"] == {"validated": "yes"}


@pytest.mark.parametrize("version", VERSIONS)
def test_the_client_source_refuses_an_old_store_and_names_the_sql_source(
    version: str, tmp_path: Path
) -> None:
    database = _copy(version, tmp_path / "store")
    before = stores.tree_digest(database.parent)
    with pytest.raises(StoreError) as raised:
        list(ClientSource(resolve_store(f"sqlite:///{database}")).collect(Selection(), EVERYTHING))
    message = str(raised.value)
    assert _info(version)["revision"] in message and "--source sql" in message
    assert len(message.splitlines()) == 1
    assert stores.tree_digest(database.parent) == before


def test_an_unknown_revision_lacking_tables_is_refused_naming_them(tmp_path: Path) -> None:
    version = next(v for v in VERSIONS if v.startswith("2."))
    database = _copy(version, tmp_path / "store")
    stores.set_schema_revision(database, "0000deadbeef")
    before = stores.tree_digest(database.parent)
    with pytest.raises(StoreError) as raised:
        list(SqlSource(resolve_store(f"sqlite:///{database}")).collect(Selection(), EVERYTHING))
    message = str(raised.value)
    assert len(message.splitlines()) == 1
    assert "revision 0000deadbeef" in message
    assert "table logged_models" in message and "column model_versions.workspace" in message
    assert stores.tree_digest(database.parent) == before
