"""PostgreSQL tracking stores: a real PostgreSQL 16 (the pgserver wheel), a store MLflow creates
in it, audited directly by the SQL source, through MLflow's client, and through a real
`mlflow server --backend-store-uri postgresql://...`.

The client source is the reference, as in tests/test_sql_source.py, whose helpers run both.
"""

from __future__ import annotations

import json

import pytest

from audit.api import collect as api_collect
from audit.api import make_selection
from audit.errors import StoreError
from audit.evidence import sha256_hex
from audit.sources import MAX_PAGE_SIZE, CollectionNeeds, Selection, open_source, resolve_store
from audit.sources.client import ClientSource
from audit.sources.sql import SqlSource
from tests import stores
from tests.conftest import PostgresMlflowServer, PostgresStore, Store
from tests.test_sql_source import (
    EVERYTHING,
    FILTERS,
    NO_ARTIFACTS,
    NOTHING_EXTRA,
    both,
    collect,
    models,
    outcome,
    selections,
)

#: The registry tables that gained a workspace column in MLflow 3.10.
WORKSPACE_TABLES = (
    "registered_models", "registered_model_tags", "model_versions", "model_version_tags",
    "registered_model_aliases",
)  # fmt: skip


# --------------------------------------------------------------------------- records


@pytest.mark.parametrize("needs", [EVERYTHING, NO_ARTIFACTS, NOTHING_EXTRA], ids=str)
def test_every_record_equals_the_client_sources(
    postgres_store: PostgresStore, needs: CollectionNeeds
) -> None:
    selection = Selection(include_deleted=True)
    client, sql = both(postgres_store.uri, selection, needs)
    assert isinstance(client, list) and len(client) == len(postgres_store.run_ids)
    for expected, got in zip(client, sql, strict=True):
        assert got == expected, expected[0]
    if needs.artifacts:
        # Not vacuous: environments from files, models with registered versions, charts.
        records = [r.record for r in collect(SqlSource, postgres_store.uri, selection)]
        assert any(r["environment"]["requirements_from"] for r in records)
        assert any(v for r in records for m in r["models"] for v in m["registered_versions"])


def test_hostile_values_survive(postgres_store: PostgresStore) -> None:
    """PostgreSQL has NaN and infinities of its own, but MLflow stores them as on SQLite."""
    selection = Selection(run_ids=(postgres_store.run_ids["hostile"],))
    (record,) = [r.record for r in collect(SqlSource, postgres_store.uri, selection)]
    values = {m["key"]: m["value"] for m in record["metrics"]}
    assert values["nan_metric"] == "NaN"
    assert values["inf_metric"] == 1.7976931348623157e308
    assert record["tags"]["long"] == stores.HOSTILE_LONG
    assert record["run"]["name"] == stores.HOSTILE_NAME


@pytest.mark.parametrize("page_size", [1, 3, MAX_PAGE_SIZE])
def test_selections_give_the_same_runs_in_the_same_order(
    postgres_store: PostgresStore, page_size: int
) -> None:
    truth_table_id = collect(
        SqlSource, postgres_store.uri, Selection(experiments=("truth-table",), max_runs=1)
    )[0].record["run"]["experiment_id"]
    extra = [
        Selection(experiments=("no-such-experiment",)),
        Selection(run_ids=("0" * 32,)),
        Selection(models=models("audit-test-model@nope")),
    ]
    for selection in selections(postgres_store.run_ids, truth_table_id) + extra:
        client, sql = both(postgres_store.uri, selection, NO_ARTIFACTS, page_size)
        assert sql == client, selection


# --------------------------------------------------------------------------- read-only


def _table_digests(store: PostgresStore) -> dict[str, str]:
    """md5 over the sorted rows of each table of the store."""
    tables = store.postgres.execute(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
        store.database,
    )
    return {
        table: store.postgres.execute(
            f"SELECT md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) "  # noqa: S608
            f'FROM public."{table}" AS t',
            store.database,
        )[0][0]
        for (table,) in tables
    }


def _next_transaction_id(store: PostgresStore) -> int:
    """The id the cluster gives its next writing transaction: unchanged while nothing writes
    (reads take none; autovacuum is off on the test server)."""
    return int(store.postgres.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())")[0][0])


def test_audits_write_nothing(cli, postgres_store: PostgresStore) -> None:
    before = (_next_transaction_id(postgres_store), _table_digests(postgres_store))
    for source in ("auto", "client"):
        result = cli(
            "check", "--tracking-uri", postgres_store.uri, "--source", source,
            "--include-deleted", "-f", "json",
        )  # fmt: skip
        assert result.code == 1, result.err
        assert result.json()["source"] == ("sql" if source == "auto" else "client")
    assert (_next_transaction_id(postgres_store), _table_digests(postgres_store)) == before


def test_the_sql_source_reads_in_one_read_only_snapshot(
    postgres_store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    import audit.sources.sql as sql

    real_connect = sql._connect
    opened = []

    def connect(store: object) -> object:
        opened.append(real_connect(store))  # type: ignore[arg-type]
        return opened[-1]

    monkeypatch.setattr(sql, "_connect", connect)
    source = SqlSource(resolve_store(postgres_store.uri))
    runs = source.collect(Selection(include_deleted=True), EVERYTHING)
    # Every run read, the source still open at its last one.
    assert len([next(runs) for _ in postgres_store.run_ids]) == len(postgres_store.run_ids)
    (db,) = opened
    assert db.execute("SHOW transaction_read_only").fetchone() == ("on",)
    assert db.execute("SHOW transaction_isolation").fetchone() == ("repeatable read",)
    # A transaction that wrote anything would have been given an id.
    assert db.execute("SELECT pg_current_xact_id_if_assigned()").fetchone() == (None,)
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        db.execute("UPDATE runs SET name = ? WHERE run_uuid = ?", ["x", "y"])
    runs.close()
    assert db.connection.closed


# --------------------------------------------------------------------------- schema revisions


def _copy_schema(store: PostgresStore, schema: str, revision: str, *changes: str) -> str:
    """A copy of the store's tables in another schema of its database, at another revision
    label, with `changes` (SQL run in that schema) applied; the URI that reads it."""
    tables = store.postgres.execute(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
        store.database,
    )
    statements = [f"DROP SCHEMA IF EXISTS {schema} CASCADE", f"CREATE SCHEMA {schema}"]
    for (table,) in tables:
        # Rows and columns only: no constraint stands in the way of the changes.
        statements.append(f'CREATE TABLE {schema}."{table}" AS TABLE public."{table}"')
    statements += [
        f"SET search_path TO {schema}",
        f"UPDATE alembic_version SET version_num = '{revision}'",  # noqa: S608
        *changes,
    ]
    store.postgres.execute("; ".join(statements), store.database)
    return store.postgres.uri(store.database, options=f"-csearch_path={schema}")


def test_another_revision_is_read_untouched_by_sql_and_refused_by_the_client(
    postgres_store: PostgresStore,
) -> None:
    uri = _copy_schema(postgres_store, "relabelled", "0584bdc529eb")  # what MLflow 2.22 writes
    assert isinstance(open_source(resolve_store(uri)), SqlSource)
    client, sql = both(uri, Selection())
    assert client[0] == "StoreError"
    assert "schema revision 0584bdc529eb" in client[1] and "would migrate" in client[1]
    assert "--source sql" in client[1]
    assert sql == both(postgres_store.uri, Selection())[1]


def test_a_store_from_before_mlflow_3_is_read_as_it_is(postgres_store: PostgresStore) -> None:
    """MLflow 2.9's tables: no logged models, no workspace column in the registry."""
    uri = _copy_schema(
        postgres_store,
        "mlflow29",
        "acf3f17fdcc7",
        "DROP TABLE logged_models, logged_model_metrics, logged_model_params, logged_model_tags",
        *(f"ALTER TABLE {table} DROP COLUMN workspace" for table in WORKSPACE_TABLES),
    )
    selection = Selection(include_deleted=True)
    head = {r.record["run"]["id"]: r for r in collect(SqlSource, postgres_store.uri, selection)}
    old = {r.record["run"]["id"]: r for r in collect(SqlSource, uri, selection)}
    assert old.keys() == head.keys()
    del head[postgres_store.run_ids["logged-model"]], old[postgres_store.run_ids["logged-model"]]
    assert outcome(list(old.values())) == outcome(list(head.values()))
    legacy = collect(SqlSource, uri, Selection(models=models("audit-test-model@legacy")))
    assert [r.record["run"]["id"] for r in legacy] == [postgres_store.run_ids["legacy-2x-layout"]]


def test_an_unknown_revision_lacking_a_column_is_refused_in_one_line(
    postgres_store: PostgresStore,
) -> None:
    drop = "ALTER TABLE datasets DROP COLUMN dataset_profile"
    uri = _copy_schema(postgres_store, "lacking", "0000deadbeef", drop)
    with pytest.raises(StoreError) as raised:
        collect(SqlSource, uri, Selection())
    message = str(raised.value)
    assert len(message.splitlines()) == 1
    assert "schema revision 0000deadbeef" in message
    assert message.endswith("it lacks column datasets.dataset_profile")


# --------------------------------------------------------------------------- choosing


def test_open_source_chooses_sql_for_postgresql_unless_told_otherwise(
    postgres_store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = resolve_store(postgres_store.uri)
    assert open_source(store).name == "sql"
    assert open_source(store, prefer="client").name == "client"
    mysql = resolve_store("mysql://user@127.0.0.1:9/mlflow")  # resolving does not connect
    assert open_source(mysql).name == "client"
    with pytest.raises(StoreError, match="PostgreSQL and SQLite stores only"):
        open_source(mysql, prefer="sql")
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "psycopg" else real_find_spec(name, *a),
    )
    assert open_source(store).name == "client"
    with pytest.raises(StoreError, match=r"needs psycopg \(pip install 'psycopg\[binary\]'\)"):
        open_source(store, prefer="sql")


def test_sqlalchemy_uris_become_libpq_parameters() -> None:
    from audit.sources.sql import _libpq_parameters

    store = resolve_store(
        "postgresql+psycopg2://auditor:p%40ss@db.example:6543/mlflow?sslmode=require"
    )
    assert store.dialect == "postgresql" and "p%40ss" not in store.display
    assert _libpq_parameters(store) == {
        "user": "auditor", "password": "p@ss", "host": "db.example", "port": "6543",
        "dbname": "mlflow", "sslmode": "require", "connect_timeout": 10,
        "application_name": "mlflow-audit",
    }  # fmt: skip
    given = resolve_store("postgresql://db.example/mlflow?connect_timeout=3&application_name=ci")
    assert _libpq_parameters(given)["connect_timeout"] == "3"
    assert _libpq_parameters(given)["application_name"] == "ci"


def test_a_sqlite_audit_never_imports_a_postgresql_driver(sqlite_store: Store) -> None:
    done = stores.probe_cli(
        "check", "--tracking-uri", sqlite_store.uri, "-f", "json", watched=("psycopg", "psycopg2")
    )
    assert done.loaded == () and done.code == 1, done.err
    assert json.loads(done.out)["source"] == "sql"


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize("source", ["auto", "client"])
def test_a_server_that_is_down_is_exit_2_in_one_line(cli, source: str) -> None:
    uri = f"postgresql://auditor:s3cret@127.0.0.1:{stores.free_port()}/mlflow"
    result = cli("check", "--tracking-uri", uri, "--source", source)
    assert result.code == 2
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert "Traceback" not in result.err and "s3cret" not in result.err
    assert "127.0.0.1" in result.err and "refused" in result.err, result.err
    assert result.out == ""


def test_a_database_without_mlflow_tables_is_refused(cli, postgres_store: PostgresStore) -> None:
    uri = postgres_store.postgres.uri("postgres")
    result = cli("check", "--tracking-uri", uri)
    assert result.code == 2
    assert result.err.strip().endswith("is not an MLflow tracking database"), result.err
    assert len(result.err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- mlflow server


@pytest.mark.slow
def test_an_audit_through_the_server_matches_the_direct_read(
    cli, postgres_mlflow_server: PostgresMlflowServer
) -> None:
    direct_uri = postgres_mlflow_server.store.uri
    over_http = cli("check", "--tracking-uri", postgres_mlflow_server.uri, "-f", "json")
    direct = cli("check", "--tracking-uri", direct_uri, "-f", "json")
    assert over_http.code == direct.code == 1, over_http.err + direct.err
    assert over_http.json()["source"] == "client" and direct.json()["source"] == "sql"

    def run_ids(result: object) -> list[str]:
        return [run["run_id"] for run in result.json()["runs"]]  # type: ignore[attr-defined]

    assert run_ids(over_http) == run_ids(direct)
    assert len(run_ids(direct)) == len(postgres_mlflow_server.store.run_ids) - 1  # one deleted


@pytest.mark.slow
def test_server_records_match_the_direct_read_of_its_database(
    postgres_mlflow_server: PostgresMlflowServer,
) -> None:
    needs = CollectionNeeds(artifacts=True, registry=True)
    everything = make_selection(include_deleted=True)
    over_http = {
        c.record["run"]["id"]: sha256_hex(c.record)
        for c in api_collect(postgres_mlflow_server.uri, selection=everything, needs=needs)
    }
    direct = {
        c.record["run"]["id"]: sha256_hex(c.record)
        for c in api_collect(postgres_mlflow_server.store.uri, selection=everything, needs=needs)
    }
    assert len(direct) == len(postgres_mlflow_server.store.run_ids)
    assert over_http == direct


def test_worker_processes_read_the_auditing_sessions_snapshot(
    postgres_store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records built by worker processes are those one process builds, in the same order, and
    the workers read the store as of the auditing session's snapshot: a param written after the
    audit started, before the workers connect, is not seen by them either."""
    import audit.sources.sql as sql

    store = resolve_store(postgres_store.uri)
    selection = Selection(include_deleted=True)
    alone = outcome(list(SqlSource(store, workers=1).collect(selection, EVERYTHING)))
    last = alone[-1][0]  # a run id of our own store
    late = f"INSERT INTO params (key, value, run_uuid) VALUES ('late', 'x', '{last}')"  # noqa: S608

    class LateWorkers(sql._Workers):
        def __init__(self, *args: object) -> None:
            postgres_store.postgres.execute(late, postgres_store.database)
            super().__init__(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(sql, "_PARALLEL_MIN_RUNS", 2)
    monkeypatch.setattr(sql, "_JOB_RUNS", 2)
    monkeypatch.setattr(sql, "_Workers", LateWorkers)
    parallel = SqlSource(store, workers=2)

    def not_here(*_: object) -> object:
        raise AssertionError("records were built in the auditing process")

    monkeypatch.setattr(parallel, "_collect_page", not_here)
    try:
        assert outcome(list(parallel.collect(selection, EVERYTHING))) == alone
        # Not vacuous: a new audit sees the param.
        again = outcome(list(SqlSource(store, workers=1).collect(selection, EVERYTHING)))
        assert again != alone
    finally:
        postgres_store.postgres.execute(
            f"DELETE FROM params WHERE key = 'late' AND run_uuid = '{last}'",  # noqa: S608
            postgres_store.database,
        )


@pytest.mark.parametrize("search", FILTERS)
def test_filters_select_what_mlflow_selects(postgres_store: PostgresStore, search: str) -> None:
    selection = Selection(include_deleted=True, filter=search)
    expected = collect(ClientSource, postgres_store.uri, selection, NOTHING_EXTRA)
    got = collect(SqlSource, postgres_store.uri, selection, NOTHING_EXTRA)
    assert [r.record["run"]["id"] for r in got] == [r.record["run"]["id"] for r in expected]
