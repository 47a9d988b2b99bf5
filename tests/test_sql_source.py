"""The SQL source gives the client source's records, byte for byte, on real MLflow stores.

Every comparison runs both sources over the same store and selection: the client source is the
reference, since it reads through MLflow itself.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from audit.errors import ArtifactError, AuditError, SelectionError, StoreError
from audit.evidence import canonical_json, sha256_hex
from audit.sources import (
    MAX_PAGE_SIZE,
    CollectedRun,
    CollectionNeeds,
    ModelSpec,
    Selection,
    open_source,
    resolve_store,
)
from audit.sources.artifacts import LocalFolder, local_artifact_path
from audit.sources.client import ClientSource
from audit.sources.sql import SCHEMA_REVISION, SqlSource
from audit.sources.store import installed_mlflow_version, installed_schema_revision
from tests import stores
from tests.conftest import Store

EVERYTHING = CollectionNeeds(artifacts=True, registry=True, metric_history=True)
NO_ARTIFACTS = CollectionNeeds(artifacts=False, registry=True, metric_history=True)
NOTHING_EXTRA = CollectionNeeds(artifacts=False, registry=False, metric_history=False)


def collect(
    source: type[ClientSource] | type[SqlSource],
    uri: str,
    selection: Selection,
    needs: CollectionNeeds = EVERYTHING,
    page_size: int = MAX_PAGE_SIZE,
) -> list[CollectedRun]:
    return list(source(resolve_store(uri), page_size=page_size).collect(selection, needs))


def outcome(runs: list[CollectedRun]) -> list[tuple[Any, ...]]:
    """Everything a collected run carries, in a comparable form (NaN included)."""
    return [
        (
            run.record["run"]["id"],
            run.selected_by,
            run.model_versions,
            canonical_json(run.record),
            repr(sorted(run.metric_histories.items())),
        )
        for run in runs
    ]


def both(
    uri: str, selection: Selection, needs: CollectionNeeds = EVERYTHING, page_size: int = 50_000
) -> tuple[Any, Any]:
    """What each source yields, or the error it raises (type and message)."""
    results = []
    for source in (ClientSource, SqlSource):
        try:
            results.append(outcome(collect(source, uri, selection, needs, page_size)))
        except AuditError as error:
            results.append((type(error).__name__, str(error)))
    return results[0], results[1]


def models(*specs: str) -> tuple[ModelSpec, ...]:
    return tuple(ModelSpec.parse(spec) for spec in specs)


@pytest.fixture(params=["sqlite_store", "demo_store"])
def any_store(request: pytest.FixtureRequest) -> Store:
    store: Store = request.getfixturevalue(request.param)
    return store


# --------------------------------------------------------------------------- records


@pytest.mark.parametrize("needs", [EVERYTHING, NO_ARTIFACTS, NOTHING_EXTRA], ids=str)
def test_every_record_equals_the_client_sources(any_store: Store, needs: CollectionNeeds) -> None:
    selection = Selection(include_deleted=True)
    client = collect(ClientSource, any_store.uri, selection, needs)
    sql = collect(SqlSource, any_store.uri, selection, needs)
    assert len(client) > 5
    assert [r.record["run"]["id"] for r in sql] == [r.record["run"]["id"] for r in client]
    for expected, got in zip(client, sql, strict=True):
        name = expected.record["run"]["name"]
        assert canonical_json(got.record) == canonical_json(expected.record), name
        assert repr(got.metric_histories) == repr(expected.metric_histories), name
        assert got.evidence_sha256 == expected.evidence_sha256 == sha256_hex(got.record), name
    if needs.artifacts:
        # Not vacuous: environments from files, models with registered versions, charts.
        records = [r.record for r in sql]
        assert any(r["environment"]["requirements_from"] for r in records)
        assert any(v for r in records for m in r["models"] for v in m["registered_versions"])
        assert any(r.metric_histories for r in sql)


def test_hostile_values_survive_identically(sqlite_store: Store) -> None:
    """NaN (stored as 0 with is_nan), ±inf (stored as ±1.797e308), markup, long values."""
    selection = Selection(run_ids=(sqlite_store.run_ids["hostile"],))
    client, sql = both(sqlite_store.uri, selection)
    assert sql == client
    (record,) = [r.record for r in collect(SqlSource, sqlite_store.uri, selection)]
    values = {m["key"]: m["value"] for m in record["metrics"]}
    assert values["nan_metric"] == "NaN"
    assert values["inf_metric"] == 1.7976931348623157e308
    assert record["tags"]["long"] == stores.HOSTILE_LONG


# --------------------------------------------------------------------------- selection


def selections(ids: dict[str, str], truth_table_id: str) -> list[Selection]:
    """Selections of every kind over the varied store (tests/test_postgres.py uses them too)."""
    return [
        Selection(),
        Selection(experiments=("truth-table",)),
        Selection(experiments=(truth_table_id, "models", "truth-table")),
        Selection(experiments=("models",), include_deleted=True),
        Selection(run_ids=(ids["complete"], ids["hostile"], ids["complete"], ids["deleted"])),
        Selection(models=models("audit-test-model")),
        Selection(models=models("audit-test-model@champion", "audit-test-model@legacy")),
        Selection(models=models("audit-test-model/latest", "audit-test-model/1")),
        Selection(models=models("audit-test-model@latest", "audit-test-model@LATEST")),
        Selection(
            experiments=("models",),
            run_ids=(ids["logged-model"],),
            models=models("audit-test-model@champion"),
        ),
        Selection(max_runs=3),
        Selection(max_runs=4, include_deleted=True, run_ids=(ids["no-data"],)),
    ]


@pytest.mark.parametrize("page_size", [1, 2, 3, MAX_PAGE_SIZE])
def test_selections_give_the_same_runs_in_the_same_order(
    sqlite_store: Store, page_size: int
) -> None:
    truth_table_id = collect(
        SqlSource, sqlite_store.uri, Selection(experiments=("truth-table",), max_runs=1)
    )[0].record["run"]["experiment_id"]
    for selection in selections(sqlite_store.run_ids, truth_table_id):
        client, sql = both(sqlite_store.uri, selection, NO_ARTIFACTS, page_size)
        assert isinstance(client, list) and client, selection
        assert sql == client, selection


def test_selected_by_and_model_versions(sqlite_store: Store) -> None:
    ids = sqlite_store.run_ids
    selection = Selection(
        experiments=("models",),
        run_ids=(ids["logged-model"],),
        models=models("audit-test-model@champion", "audit-test-model"),
    )
    runs = collect(SqlSource, sqlite_store.uri, selection)
    first = runs[0]
    assert first.record["run"]["id"] == ids["logged-model"]
    assert first.selected_by == (
        "run id",
        "model audit-test-model@champion",
        "model audit-test-model",
    )
    assert [str(v) for v in first.model_versions] == [
        "audit-test-model/1 (@champion)",
        "audit-test-model/1",
    ]
    assert [r.selected_by for r in runs[2:]] == [("search",)] * (len(runs) - 2)


@pytest.mark.parametrize(
    ("selection", "message"),
    [
        (Selection(experiments=("no-such-experiment",)), "unknown experiment"),
        (Selection(experiments=("999999",)), "unknown experiment"),
        (Selection(run_ids=("0" * 32,)), "unknown run id"),
        (Selection(run_ids=("not a run id; --",)), "unknown run id"),
        (Selection(models=models("no-such-model")), "unknown registered model"),
        (Selection(models=models("no-such-model/latest")), "unknown registered model"),
        (Selection(models=models("no-such-model@latest")), "unknown registered model"),
        (Selection(models=models("audit-test-model@nope")), "unknown registered model"),
        (Selection(models=models("audit-test-model/99")), "unknown registered model"),
        (Selection(models=models("bad:name/1")), "unknown registered model"),
    ],
)
def test_unknown_names_fail_with_the_client_sources_error(
    sqlite_store: Store, selection: Selection, message: str
) -> None:
    client, sql = both(sqlite_store.uri, selection)
    assert client[0] == "SelectionError" and message in client[1]
    assert sql == client


@pytest.fixture(scope="module")
def edge_store(sqlite_store: Store, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The varied store with what real stores accumulate: a prompt (a registered model MLflow
    hides), a deleted model version (its alias gone), a version without a source run, a run
    without a name, runs started in the same millisecond."""
    from mlflow import MlflowClient

    directory = tmp_path_factory.mktemp("edge-store")
    database = directory / "mlflow.db"
    database.write_bytes(sqlite_store.root.read_bytes())
    uri = f"sqlite:///{database}"
    client = MlflowClient(uri, uri)
    client.register_prompt(name="greeting", template="Hello {{name}}")
    client.register_prompt(name="greeting", template="Hi {{name}}")
    client.set_prompt_alias("greeting", "production", 1)
    client.create_model_version(stores.MODEL_NAME, source="s3://bucket/model")
    client.delete_model_version(stores.MODEL_NAME, "1")
    ids = sqlite_store.run_ids
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE runs SET name = NULL WHERE run_uuid = ?", (ids["complete"],))
        connection.execute(
            "UPDATE runs SET start_time = 1000 WHERE run_uuid IN (?, ?, ?)",
            (ids["no-data"], ids["no-metrics"], ids["hostile"]),
        )
    connection.close()
    return uri


@pytest.mark.parametrize(
    "selection",
    [
        Selection(include_deleted=True),
        Selection(models=models("audit-test-model")),
        Selection(models=models("audit-test-model@latest")),
        Selection(models=models("audit-test-model/1")),
        Selection(models=models("audit-test-model@champion")),
        Selection(models=models("audit-test-model@legacy")),
        Selection(models=models("greeting")),
        Selection(models=models("greeting@production")),
        Selection(models=models("greeting/1")),
        Selection(models=models("greeting@latest")),
    ],
    ids=Selection.describe,
)
def test_registry_and_ordering_edge_cases(edge_store: str, selection: Selection) -> None:
    for page_size in (1, 2, MAX_PAGE_SIZE):
        client, sql = both(edge_store, selection, EVERYTHING, page_size)
        assert sql == client, (selection, page_size)


def test_a_run_mlflow_cannot_read_fails_alike(sqlite_store: Store, copy_of) -> None:
    copy = copy_of(sqlite_store.root)
    with sqlite3.connect(copy) as connection:
        connection.execute(
            "UPDATE runs SET start_time = NULL WHERE run_uuid = ?",
            (sqlite_store.run_ids["no-data"],),
        )
    connection.close()
    client, sql = both(f"sqlite:///{copy}", Selection())
    assert client[0] == "StoreError" and "start_time cannot be None" in client[1]
    assert sql == client


def test_a_deleted_output_model_fails_alike(sqlite_store: Store, copy_of) -> None:
    copy = copy_of(sqlite_store.root)
    with sqlite3.connect(copy) as connection:
        connection.execute("UPDATE logged_models SET lifecycle_stage = 'deleted'")
    connection.close()
    client, sql = both(f"sqlite:///{copy}", Selection(experiments=("models",)))
    assert client[0] == "StoreError" and "not found" in client[1]
    assert sql == client


# --------------------------------------------------------------------------- artifacts


def _point_run_at(copy: Path, run_id: str, artifact_uri: str, history: object = None) -> None:
    with sqlite3.connect(copy) as connection:
        connection.execute(
            "UPDATE runs SET artifact_uri = ? WHERE run_uuid = ?", (artifact_uri, run_id)
        )
        if history is not None:
            connection.execute(
                "UPDATE tags SET value = ? WHERE run_uuid = ? AND key = 'mlflow.log-model.history'",
                (json.dumps(history), run_id),
            )
    connection.close()


def test_a_model_path_outside_the_artifacts_is_unreadable_alike(
    sqlite_store: Store, copy_of
) -> None:
    copy = copy_of(sqlite_store.root)
    run_id = sqlite_store.run_ids["legacy-2x-layout"]
    with sqlite3.connect(copy) as connection:
        (uri,) = connection.execute(
            "SELECT artifact_uri FROM runs WHERE run_uuid = ?", (run_id,)
        ).fetchone()
    connection.close()
    _point_run_at(copy, run_id, uri, [{"artifact_path": "../../../../../../../etc"}])
    client, sql = both(f"sqlite:///{copy}", Selection(run_ids=(run_id,)))
    assert sql == client
    ((_, _, _, record, _),) = client
    notes = json.loads(record)["collection"]["notes"]
    assert notes == [
        f"runs:/{run_id}/../../../../../../../etc is unreadable: its path is not a plain path "
        "within the artifact folder; not read"
    ]


def test_a_symlink_out_of_the_artifacts_is_not_followed(
    sqlite_store: Store, copy_of, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("password=hunter2\n")
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    (artifacts / "requirements.txt").symlink_to(secret)
    copy = copy_of(sqlite_store.root)
    run_id = sqlite_store.run_ids["complete"]
    _point_run_at(copy, run_id, artifacts.as_uri())
    for source in (ClientSource, SqlSource):
        with pytest.raises(ArtifactError, match=r"cannot read runs:/.*/requirements\.txt"):
            collect(source, f"sqlite:///{copy}", Selection(run_ids=(run_id,)))


@pytest.mark.parametrize(
    "uri",
    [
        "/tmp/a b/artifacts",
        "file:///tmp/a%20b/artifacts",
        "file:/tmp/artifacts",
        "file://localhost/tmp/artifacts",
        "relative/artifacts",
        "/tmp/100%25/%41",
        "C:/artifacts",
    ],
)
def test_local_artifact_uris_resolve_as_in_mlflow(uri: str) -> None:
    from mlflow.utils.file_utils import local_file_uri_to_path

    assert local_artifact_path(uri) == local_file_uri_to_path(uri)


def test_local_listing_matches_mlflows(sqlite_store: Store) -> None:
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    run_id = sqlite_store.run_ids["legacy-2x-layout"]
    with sqlite3.connect(f"file:{sqlite_store.root}?mode=ro", uri=True) as connection:
        (uri,) = connection.execute(
            "SELECT artifact_uri FROM runs WHERE run_uuid = ?", (run_id,)
        ).fetchone()
    connection.close()
    mlflow_repository = LocalArtifactRepository(uri)
    ours = LocalFolder(local_artifact_path(uri))
    for path in (None, "model", "model/", "no-such-folder"):
        expected = [(f.path, f.is_dir, f.file_size) for f in mlflow_repository.list_artifacts(path)]
        assert [(f.path, f.is_dir, f.file_size) for f in ours.list_artifacts(path)] == expected
    assert ours.read_head("model/MLmodel", 10) == Path(uri, "model", "MLmodel").read_bytes()[:10]


# --------------------------------------------------------------------------- read-only


def test_the_store_is_byte_identical_after_sql_reads(sqlite_store: Store) -> None:
    before = stores.tree_digest(sqlite_store.root.parent)
    for selection in (
        Selection(include_deleted=True),
        Selection(models=models("audit-test-model@champion")),
        Selection(experiments=("no-such-experiment",)),
    ):
        expect_error = pytest.raises(SelectionError) if selection.experiments else None
        with expect_error or contextlib.nullcontext():
            collect(SqlSource, sqlite_store.uri, selection)
    assert stores.tree_digest(sqlite_store.root.parent) == before


def test_a_wal_mode_store_file_is_unchanged(sqlite_store: Store, copy_of) -> None:
    """The database file stays byte-identical. (SQLite itself still creates the -wal and -shm
    files next to a WAL-mode database that a read-only connection opens, as it does for the
    client source.)"""
    copy = copy_of(sqlite_store.root)
    with sqlite3.connect(copy) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
    connection.close()
    before = stores.tree_digest(copy)
    assert collect(SqlSource, f"sqlite:///{copy}", Selection(include_deleted=True))
    assert stores.tree_digest(copy) == before


def test_another_schema_revision_is_read_untouched_by_sql_and_refused_by_the_client(
    sqlite_store: Store, copy_of
) -> None:
    """An older revision (here a head store relabelled) is read as it is by the SQL source;
    the client source, whose MLflow would migrate it, refuses and names the SQL source.
    tests/test_old_stores.py reads real stores of older MLflow versions."""
    copy = copy_of(sqlite_store.root)
    stores.set_schema_revision(copy, "0584bdc529eb")  # what MLflow 2.22 writes
    before = stores.tree_digest(copy)
    uri = f"sqlite:///{copy}"
    assert isinstance(open_source(resolve_store(uri)), SqlSource)
    client, sql = both(uri, Selection())
    assert client[0] == "StoreError"
    assert "schema revision 0584bdc529eb" in client[1] and "would migrate" in client[1]
    assert f"MLflow {installed_mlflow_version()} expects {SCHEMA_REVISION}" in client[1]
    assert "--source sql" in client[1]
    assert sql == both(sqlite_store.uri, Selection())[1]
    assert stores.tree_digest(copy) == before


def test_an_unknown_revision_with_every_table_read_is_read(sqlite_store: Store, copy_of) -> None:
    copy = copy_of(sqlite_store.root)
    stores.set_schema_revision(copy, "0000deadbeef")
    before = stores.tree_digest(copy)
    sql = both(f"sqlite:///{copy}", Selection())[1]
    assert sql == both(sqlite_store.uri, Selection())[1]
    assert stores.tree_digest(copy) == before


def test_an_unknown_revision_lacking_a_column_is_refused_in_one_line(
    sqlite_store: Store, copy_of
) -> None:
    copy = copy_of(sqlite_store.root)
    stores.set_schema_revision(copy, "0000deadbeef")
    connection = sqlite3.connect(copy)
    with connection:
        connection.execute("ALTER TABLE datasets DROP COLUMN dataset_profile")
    connection.close()
    before = stores.tree_digest(copy)
    with pytest.raises(StoreError) as raised:
        collect(SqlSource, f"sqlite:///{copy}", Selection())
    message = str(raised.value)
    assert len(message.splitlines()) == 1
    assert "schema revision 0000deadbeef" in message
    assert message.endswith("it lacks column datasets.dataset_profile")
    assert stores.tree_digest(copy) == before


def test_the_schema_revision_read_is_mlflows() -> None:
    """The SQL source's queries were checked against this revision; when the installed MLflow
    moves on, `open_source` falls back to the client source until they are checked again."""
    import mlflow
    from mlflow.store.db.utils import _get_latest_schema_revision

    assert installed_schema_revision() == _get_latest_schema_revision() == SCHEMA_REVISION
    assert installed_mlflow_version() == mlflow.__version__


def test_another_installed_mlflow_falls_back_to_the_client_source(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    import audit.sources.sql as sql

    store = resolve_store(sqlite_store.uri)
    monkeypatch.setattr(sql, "SCHEMA_REVISION", "0000000000ff")
    assert open_source(store).name == "client"
    with pytest.raises(StoreError, match="reads MLflow schema revision 0000000000ff"):
        open_source(store, prefer="sql")


def test_the_revision_comes_from_mlflow_when_its_scripts_are_not_found(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import audit.sources.store as store_module

    expected = installed_schema_revision()
    installed_schema_revision.cache_clear()
    monkeypatch.setattr(store_module, "_migrations_folder", lambda: None)
    try:
        assert installed_schema_revision() == expected
    finally:
        installed_schema_revision.cache_clear()


def test_a_sqlite_audit_with_local_artifacts_never_imports_mlflow(any_store: Store) -> None:
    done = stores.probe_cli(
        "check", "--tracking-uri", any_store.uri, "--include-deleted", "-f", "json",
        watched=("mlflow",),
    )  # fmt: skip
    assert done.loaded == () and done.code == 1, done.err
    result = json.loads(done.out)
    assert result["source"] == "sql" and len(result["runs"]) > 5


# --------------------------------------------------------------------------- choosing


def test_open_source_chooses_sql_for_sqlite_unless_told_otherwise(sqlite_store: Store) -> None:
    store = resolve_store(sqlite_store.uri)
    assert open_source(store).name == "sql"
    assert open_source(store, prefer="client").name == "client"
    assert open_source(store, prefer="sql").name == "sql"
    with pytest.raises(AuditError, match="unknown source"):
        open_source(store, prefer="fastest")


def test_sql_on_other_stores_is_a_clear_error() -> None:
    server = resolve_store("http://127.0.0.1:9")  # resolving does not connect
    assert open_source(server).name == "client"
    with pytest.raises(StoreError, match="SQLite stores only"):
        open_source(server, prefer="sql")
    with pytest.raises(StoreError, match="SQLite stores only"):
        SqlSource(server)


#: MLflow search filters over what the varied store holds: every kind of key and comparator.
FILTERS = (
    "params.alpha = '0.1'",
    "params.alpha = '0.1' and attributes.run_name != 'complete'",
    "params.alpha != '0.1'",
    "params.epochs IS NULL",
    "params.epochs IS NOT NULL",
    "params.markup LIKE '%script%'",
    "params.markup LIKE '%SCRIPT%'",
    "params.markup ILIKE '%SCRIPT%'",
    "metrics.test_accuracy > 0.9",
    "metrics.test_accuracy <= 0.9",
    "metrics.nan_metric != 0",
    "metrics.nan_metric = 0",
    "metrics.inf_metric > 1e300",
    "tags.`mlflow.source.git.commit` = '3f1c2a9b7d4e5f60718293a4b5c6d7e8f9012345'",
    "tags.long LIKE 'AAA%'",
    "tags.missing IS NULL",
    "attributes.run_name LIKE 'no-%'",
    "attributes.run_name ILIKE 'NO-%'",
    "attributes.run_id NOT IN ('0123456789abcdef0123456789abcdef')",
    "attributes.status = 'FINISHED'",
    "attributes.start_time > 0 and attributes.end_time > 0",
    "created > 0",
    "attributes.user_id != 'nobody'",
    "datasets.name = 'train'",
    "datasets.context = 'training'",
    "datasets.digest LIKE '%'",
)


@pytest.mark.parametrize("search", FILTERS)
def test_filters_select_what_mlflow_selects(sqlite_store: Store, search: str) -> None:
    """`--filter` is MLflow's search: the SQL source selects the same runs, in the same order,
    as MLflow's client over its own SQL store."""
    selection = Selection(include_deleted=True, filter=search)
    expected = collect(ClientSource, sqlite_store.uri, selection, NOTHING_EXTRA)
    got = collect(SqlSource, sqlite_store.uri, selection, NOTHING_EXTRA)
    assert [r.record["run"]["id"] for r in got] == [r.record["run"]["id"] for r in expected]


def test_not_every_filter_selects_everything(sqlite_store: Store) -> None:
    everything = len(collect(SqlSource, sqlite_store.uri, Selection(include_deleted=True),
                             NOTHING_EXTRA))  # fmt: skip
    sizes = {
        search: len(collect(SqlSource, sqlite_store.uri,
                            Selection(include_deleted=True, filter=search), NOTHING_EXTRA))
        for search in ("params.alpha = '0.1'", "params.markup LIKE '%SCRIPT%'",
                       "params.markup ILIKE '%SCRIPT%'", "metrics.nan_metric != 0")
    }  # fmt: skip
    assert 0 < sizes["params.alpha = '0.1'"] < everything
    assert sizes["params.markup LIKE '%SCRIPT%'"] == 0  # LIKE is case-sensitive, as in MLflow
    assert sizes["params.markup ILIKE '%SCRIPT%'"] == 1
    assert sizes["metrics.nan_metric != 0"] == 1  # NaN is stored as 0 with is_nan


def test_a_bad_filter_is_one_line(sqlite_store: Store) -> None:
    with pytest.raises(SelectionError, match=r"^invalid --filter 'params.alpha ==':"):
        collect(SqlSource, sqlite_store.uri, Selection(filter="params.alpha =="), NOTHING_EXTRA)
    # MLflow's store takes a list for run_id only.
    listed = Selection(filter="attributes.run_name IN ('complete', 'no-data')")
    with pytest.raises(SelectionError, match=r"(?i)^invalid --filter .*: only .*run_id.* a list"):
        collect(SqlSource, sqlite_store.uri, listed, NOTHING_EXTRA)


def test_records_do_not_depend_on_the_batch_size(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Details are loaded for batches of runs: a batch boundary inside a page changes nothing."""
    import audit.sources.sql as sql

    whole = outcome(collect(SqlSource, sqlite_store.uri, Selection(include_deleted=True)))
    monkeypatch.setattr(sql, "_BATCH", 2)
    batched = outcome(collect(SqlSource, sqlite_store.uri, Selection(include_deleted=True)))
    assert batched == whole


@pytest.fixture
def many_params(sqlite_store: Store, copy_of) -> tuple[str, int]:
    """A copy of the SQLite store whose runs have 300 params more (100 characters each): its
    URI and how many runs it holds."""
    copy = copy_of(sqlite_store.root)
    with sqlite3.connect(copy) as connection:
        ids = [row[0] for row in connection.execute("SELECT run_uuid FROM runs")]
        connection.executemany(
            "INSERT INTO params (key, value, run_uuid) VALUES (?, ?, ?)",
            [(f"extra_{i:03d}", "x" * 100, run_id) for run_id in ids for i in range(300)],
        )
    connection.close()
    assert len(ids) > 8
    return f"sqlite:///{copy}", len(ids)


def _rows(runs: Any) -> int:
    """Params, tags and metrics of MLflow runs."""
    return sum(len(r.data.params) + len(r.data.tags) + len(r.data.metrics) for r in runs)


def _sized_by_the_one_before(sizes: list[tuple[int, int]], budget: int) -> None:
    """Each batch or page (runs, rows) after the first holds no more runs than `budget` rows
    allow by the rows per run of the one before."""
    for (runs_before, rows_before), (runs, _) in itertools.pairwise(sizes):
        assert runs <= max(1, budget * runs_before // rows_before), sizes
    assert max(runs for runs, _ in sizes) <= 3, sizes


def test_batches_of_runs_with_many_params_hold_fewer_runs(
    many_params: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SQL source reads params, tags and metrics for a batch of runs at a time, sized for
    `_BATCH_ROWS` of them by the batch before: runs with many params come a few at a time, not
    500 (the memory an audit takes), and their records are the same."""
    import audit.sources.sql as sql

    uri, count = many_params
    selection = Selection(include_deleted=True)
    whole = outcome(collect(SqlSource, uri, selection))

    batches: list[tuple[int, int]] = []  # (runs, rows) of each batch read
    read_details = SqlSource._details

    def counted(self: SqlSource, db: Any, runs: Any, experiment_ids: Any) -> Any:
        details = read_details(self, db, runs, experiment_ids)
        rows = sum(len(d.params) + len(d.tags) + len(d.metrics) for d in details.values())
        batches.append((len(runs), rows))
        return details

    monkeypatch.setattr(SqlSource, "_details", counted)
    monkeypatch.setattr(sql, "_FIRST_BATCH", 2)
    monkeypatch.setattr(sql, "_BATCH_ROWS", 1_000)  # about three of these runs
    assert outcome(collect(SqlSource, uri, selection)) == whole
    assert sum(runs for runs, _ in batches) == count and batches[0][0] == 2
    _sized_by_the_one_before(batches, 1_000)


def test_pages_of_runs_with_many_params_hold_fewer_runs_through_mlflows_client(
    many_params: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through MLflow's client (which holds a page many times over while it builds it), pages
    are sized for CLIENT_PAGE_ROWS params, tags and metrics by the page before, the first
    holding FIRST_PAGE runs; the records are the same."""
    import audit.sources.client as client

    uri, count = many_params
    selection = Selection(include_deleted=True)
    whole = outcome(collect(ClientSource, uri, selection))

    pages: list[tuple[int, int]] = []  # (runs, rows) of each page read
    read_page = ClientSource._client_page

    def counted(self: ClientSource, *args: Any) -> Any:
        page = read_page(self, *args)
        pages.append((len(page.runs), _rows(page.runs)))
        assert page.weight == _rows(page.runs)
        return page

    monkeypatch.setattr(ClientSource, "_client_page", counted)
    monkeypatch.setattr(client, "FIRST_PAGE", 2)
    monkeypatch.setattr(client, "CLIENT_PAGE_ROWS", 1_000)
    assert outcome(collect(ClientSource, uri, selection)) == whole
    assert sum(runs for runs, _ in pages) == count and pages[0][0] == 2
    _sized_by_the_one_before([page for page in pages if page[0]], 1_000)


def test_records_built_in_worker_processes_are_the_same_in_the_same_order(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large selection is built by worker processes, job by job: the same records, in the
    same order, as one process builds; and a failure in a worker is the audit's one-line error."""
    import audit.sources.sql as sql

    store = resolve_store(sqlite_store.uri)
    selection = Selection(include_deleted=True)
    alone = outcome(list(SqlSource(store, workers=1).collect(selection, EVERYTHING)))
    assert len(alone) > 4
    monkeypatch.setattr(sql, "_PARALLEL_MIN_RUNS", 2)
    monkeypatch.setattr(sql, "_JOB_RUNS", 2)
    parallel = SqlSource(store, workers=2)

    def not_here(*_: Any) -> Any:
        raise AssertionError("records were built in the auditing process")

    monkeypatch.setattr(parallel, "_collect_page", not_here)  # the workers have their own
    assert outcome(list(parallel.collect(selection, EVERYTHING))) == alone

    monkeypatch.setattr(sql, "_collect_job", _failing_job)
    with pytest.raises(StoreError, match=r"^reading .* failed: disk I/O error$"):
        list(SqlSource(store, workers=2).collect(selection, EVERYTHING))


def test_runs_evaluated_in_worker_processes_give_the_same_result(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A large audit evaluates each run in the worker process that built it, waivers included:
    the same findings, statuses and waiver counts (expired ones too) as one process gives."""
    import os

    import audit
    import audit.evaluation
    import audit.sources.sql as sql

    waivers = tmp_path / "waivers.yaml"
    waivers.write_text(
        "waivers:\n"
        + "".join(
            f"  - rule: {rule}\n    scope: all\n    reason: accepted for the pilot\n"
            f"    approved_by: Jane Doe\n    expires: {expires}\n"
            for rule, expires in (("model.logged", "2999-01-01"), ("data.training-dataset",
                                  "2000-01-01"), ("run.finished", "2999-01-01"))
        )
    )  # fmt: skip

    def audited() -> audit.AuditResult:
        return audit.check(sqlite_store.uri, include_deleted=True, waivers=waivers)

    alone = audited()
    uses = {use.waiver.rule_id: (use.state, use.findings) for use in alone.waivers}
    assert uses["model.logged"][0] == "applied" and uses["model.logged"][1] > 0
    assert uses["data.training-dataset"][0] == "expired" and uses["data.training-dataset"][1] > 0

    auditor = os.getpid()
    evaluate_record = audit.evaluation.evaluate_record

    def in_a_worker(*args: Any) -> Any:
        assert os.getpid() != auditor, "a run was evaluated in the auditing process"
        return evaluate_record(*args)

    monkeypatch.setattr(audit.evaluation, "evaluate_record", in_a_worker)
    monkeypatch.setattr(sql, "_PARALLEL_MIN_RUNS", 2)
    monkeypatch.setattr(sql, "_JOB_RUNS", 2)
    monkeypatch.setattr(sql.os, "cpu_count", lambda: 2)
    parallel = audited()
    assert parallel.runs == alone.runs
    assert parallel.waivers == alone.waivers
    assert parallel.summary() == alone.summary()


def _failing_job(*_: Any) -> Any:
    raise sqlite3.OperationalError("disk I/O error")
