# ruff: noqa: S608 - only column lists and `?` placeholders defined in this module are formatted
# into SQL; every value (run ids, names, aliases: all untrusted) is bound as a parameter.
"""The source that reads a SQLite or PostgreSQL tracking store's tables directly, read-only.

MLflow's client builds an entity object for every run, param, tag and metric: reading 100,000
runs through it takes about 78 s on SQLite, the same rows read with plain SQL about 5.5 s, and
importing MLflow alone takes longer than auditing a few thousand runs. This source reads MLflow's
tables through a read-only connection (SQLite: the standard `sqlite3` module, `mode=ro`;
PostgreSQL: psycopg, imported only for such a store, in a read-only session) and never imports
MLflow for a store whose artifacts are local files. Each query is written once, in SQL both
databases run, with `?` placeholders that `_Database` rewrites for psycopg.

Its records are the client source's, byte for byte: it selects the same runs in the same order
and gathers the same `RunFacts`, which `build_record` turns into records. Where MLflow's client
does something particular, the query says what and where (`mlflow/store/tracking/
sqlalchemy_store.py`, `mlflow/store/model_registry/sqlalchemy_store.py`, `mlflow/tracking/
client.py`), and `tests/test_sql_source.py` (SQLite) and `tests/test_postgres.py` (PostgreSQL)
compare the two sources run by run.

Stores written by older MLflow versions (2.9 on, `KNOWN_REVISIONS`) are read as they are, where
MLflow 3's client would migrate them first (and the client source therefore refuses them): the
tables and columns are inspected once per connection, and what a revision lacks (dataset inputs
before 2.4, logged models before 3.0, the registry's workspace column before 3.10) gives absent
facts, as the client reports for a migrated copy (`tests/test_old_stores.py` compares the two on
stores logged by MLflow 2.9, 2.22, 3.0 and 3.5). A store at a revision this source does not know
is read when it has every table and column read here, else refused naming what it lacks.

`--filter` (MLflow's search grammar) is parsed by MLflow's own parser and written as the SQL
conditions MLflow's SQL store applies (`_filter_sql`).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import posixpath
import re
import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

from audit.errors import AuditError, SelectionError, StoreError, first_line
from audit.evidence import (
    DatasetFacts,
    LoggedModelFacts,
    MetricFacts,
    ModelMetricFacts,
    RunFacts,
    record_and_digest,
)
from audit.lineage import LineageFacts, MetricLink, RegistryVersion
from audit.sources import (
    MAX_PAGE_SIZE,
    CollectedRun,
    CollectionNeeds,
    ModelSpec,
    ModelVersionRef,
    Selection,
)
from audit.sources.artifacts import (
    DirectArtifacts,
    ModelLocation,
    RunFiles,
    is_local,
    read_run_files,
)
from audit.sources.common import (
    RUN_ID,
    RegistryIndex,
    charted_metric_keys,
    model_id_of,
    runs_that_fit,
)
from audit.sources.revisions import KNOWN_REVISIONS, SCHEMA_REVISION
from audit.sources.store import TrackingStore, installed_schema_revision, read_sqlite_revision

__all__ = ["KNOWN_REVISIONS", "SCHEMA_REVISION", "SqlSource", "check_sql_usable"]

#: Table -> the columns this source reads, always needed.
_CORE: dict[str, tuple[str, ...]] = {
    "experiments": ("experiment_id", "name", "lifecycle_stage"),
    "runs": (
        "run_uuid", "name", "experiment_id", "user_id", "status", "start_time", "end_time",
        "lifecycle_stage", "artifact_uri",
    ),
    "params": ("run_uuid", "key", "value"),
    "tags": ("run_uuid", "key", "value"),
    "latest_metrics": ("run_uuid", "key", "value", "timestamp", "step", "is_nan"),
    "metrics": ("run_uuid", "key", "value", "timestamp", "step", "is_nan"),
    "registered_models": ("name",),
    "registered_model_tags": ("name", "key", "value"),
    "model_versions": (
        "name", "version", "creation_time", "description", "current_stage", "source", "run_id",
        "status",
    ),
    "model_version_tags": ("name", "version", "key", "value"),
    "registered_model_aliases": ("name", "alias", "version"),
}  # fmt: skip
#: Parts a known older revision may lack as a whole (then their facts are absent), keyed by the
#: table whose presence says the part is there.
_OPTIONAL: dict[str, dict[str, tuple[str, ...]]] = {
    # Dataset inputs (MLflow 2.4).
    "inputs": {
        "inputs": ("input_uuid", "source_type", "source_id", "destination_type", "destination_id"),
        "datasets": (
            "dataset_uuid", "name", "digest", "dataset_source_type", "dataset_source",
            "dataset_schema", "dataset_profile",
        ),
        "input_tags": ("input_uuid", "name", "value"),
    },
    # Logged models (MLflow 3.0).
    "logged_models": {
        "logged_models": (
            "model_id", "name", "status", "creation_timestamp_ms", "artifact_location",
            "source_run_id", "experiment_id", "lifecycle_stage",
        ),
        "logged_model_metrics": (
            "model_id", "metric_name", "metric_value", "metric_step", "run_id", "dataset_name",
            "dataset_digest",
        ),
    },
}  # fmt: skip
#: The registry tables that carry a workspace column from revision 1b5f0d9ad7c1 (MLflow 3.10) on.
_WORKSPACE_TABLES = (
    "registered_models", "registered_model_tags", "model_versions", "model_version_tags",
    "registered_model_aliases",
)  # fmt: skip

_T = TypeVar("_T")

#: Run ids per `IN (...)` query at most (SQLite allows 32,766 variables): a batch's params,
#: tags and metrics are held in memory until its records are built, whatever the page size.
_BATCH = 500
#: Rows of params, tags and latest metrics a batch is sized for, by the rows per run of the
#: batch before (MLflow limits a value's length, not how many a run has): 500 runs with 2,000
#: params each took the audit to 570 MB, batches sized so to 59 MB in the same time (3.5 s).
#: Runs of 10 params, 5 metrics and 6 tags still come 500 at a time.
_BATCH_ROWS = 20_000
#: Runs in a source's first batch, before their rows are counted.
_FIRST_BATCH = 20
_ARTIFACT_WORKERS = 8

# MLflow's single-tenant stores keep everything in this workspace and the registry filters on it.
_WORKSPACE = "default"
_PROMPT_TAG = "mlflow.prompt.is_prompt"
_DELETED_VERSION = "Deleted_Internal"
#: The stages `get_latest_versions` looks at (model_version_stages.ALL_STAGES).
_STAGES = ("None", "Staging", "Production", "Archived")
_LOGGED_MODEL_STATUS = {0: "UNSPECIFIED", 1: "PENDING", 2: "READY", 3: "FAILED"}

_RUN_COLUMNS = (
    "run_uuid, name, experiment_id, user_id, status, start_time, end_time, lifecycle_stage, "
    "artifact_uri"
)
_VERSION_COLUMNS = (
    "name, version, creation_time, description, current_stage, source, run_id, status"
)
_MODEL_COLUMNS = "model_id, name, status, creation_timestamp_ms, artifact_location, source_run_id"


@dataclass(frozen=True)
class _Run:
    run_id: str
    name: str | None
    experiment_id: str
    user_id: str | None
    status: str | None
    start_time: int | None
    end_time: int | None
    lifecycle_stage: str | None
    artifact_uri: str | None
    #: The experiment_id column as stored, for queries.
    experiment_key: Any = None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> _Run:
        run_id, name, experiment, user, status, start, end, stage, artifact_uri = row
        # MLflow's RunInfo refuses such a run, so the client source cannot read it: fail alike
        # rather than let the choice of source decide whether the audit completes.
        for column, value in (("user_id", user), ("status", status), ("start_time", start)):
            if value is None:
                raise _Unreadable(f"{column} cannot be None")
        # RunInfo carries the experiment id as a string (SqlRun.to_mlflow_entity).
        return cls(
            run_id, name, str(experiment), user, status, start, end, stage, artifact_uri, experiment
        )


class _Unreadable(Exception):
    """A row MLflow's client fails to read; reported as the client source reports it."""


class _Cursor(Protocol):
    """What is read from a query's result, the same for sqlite3's and psycopg's cursors."""

    def __iter__(self) -> Iterator[Any]: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class _Database:
    """One read-only connection to a store's database, SQLite or PostgreSQL, at one schema
    revision. Queries are written once, with SQLite's `?` placeholders; for psycopg, whose
    placeholder is `%s`, they are rewritten here (no query of this module has a `?` or `%` in a
    literal, and `%` is escaped all the same)."""

    def __init__(
        self, connection: Any, dialect: str, revision: str | None, *, wal: bool = False
    ) -> None:
        self.connection = connection
        self.dialect = dialect
        self.revision = revision
        #: SQLite in WAL mode, whose snapshot no other connection can share.
        self.wal = wal
        # MLflow's search puts runs without a start time last (a CASE on IS NULL, on every
        # database); SQLite sorts NULL lowest, so a descending order does too, PostgreSQL highest.
        self.nulls_last = " NULLS LAST" if dialect == "postgresql" else ""

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> _Cursor:
        if self.dialect == "postgresql":
            # psycopg reads placeholders only when given parameters, hence always a sequence.
            sql = sql.replace("%", "%%").replace("?", "%s")
            return self.connection.execute(sql, list(parameters))  # type: ignore[no-any-return]
        return self.connection.execute(sql, parameters)  # type: ignore[no-any-return]

    def columns(self) -> dict[str, set[str]]:
        """Table -> its column names, of the tables that unqualified names in queries reach."""
        columns: dict[str, set[str]] = {}
        if self.dialect == "postgresql":
            # MLflow creates its tables in the first schema of the search path (current_schema),
            # where this source's unqualified names find them too.
            for table, column in self.execute(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema()"
            ):
                columns.setdefault(table, set()).add(column)
            return columns
        for (table,) in self.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            columns[table] = {
                row[1] for row in self.execute("SELECT * FROM pragma_table_info(?)", (table,))
            }
        return columns

    @property
    def snapshot_shared_with_workers(self) -> bool:
        """Whether worker processes, each on a connection of its own, read the store as this
        connection's transaction does: on PostgreSQL by its exported snapshot; on SQLite in a
        rollback journal mode because that transaction's shared lock keeps every writer out
        until it ends. Not on SQLite in WAL mode, where writers go on and a new connection reads
        what they committed (SQLite's snapshot functions are not in Python's sqlite3)."""
        return not self.wal

    def export_snapshot(self) -> str | None:
        """PostgreSQL: the id of this transaction's snapshot, which other sessions can read
        from while this transaction lasts (`pg_export_snapshot`); None for SQLite."""
        if self.dialect != "postgresql":
            return None
        (snapshot,) = self.execute("SELECT pg_export_snapshot()").fetchone()
        return str(snapshot)

    def use_snapshot(self, snapshot: str) -> None:
        """Read from another session's exported snapshot, in a new transaction."""
        if not _SNAPSHOT_ID.fullmatch(snapshot):
            raise StoreError(f"not a PostgreSQL snapshot id: {snapshot!r}")
        self.connection.rollback()
        # A literal: SET TRANSACTION SNAPSHOT takes no parameters; the id was checked above.
        self.connection.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")

    def close(self) -> None:
        # Ending the read-only transaction changes nothing; a rollback says so.
        with contextlib.suppress(Exception):
            self.connection.rollback()
        self.connection.close()


_SNAPSHOT_ID = re.compile(r"[0-9A-Fa-f]+(-[0-9A-Fa-f]+)+")


def _connect(store: TrackingStore) -> _Database:
    if store.dialect == "postgresql":
        return _connect_postgresql(store)
    assert store.path is not None
    # mode=ro: SQLite itself refuses every write; query_only in case a future SQLite build
    # ignored the URI parameter. The source is a generator that a caller may resume from
    # another thread, never from two at once. No transactions begun by the sqlite3 module:
    # the one read transaction below is the connection's only one.
    db = sqlite3.connect(
        f"file:{quote(str(store.path))}?mode=ro",
        uri=True,
        check_same_thread=False,
        isolation_level=None,
    )
    try:
        db.execute("PRAGMA query_only = ON")
        # MLflow's SQL store sets it: `--filter "... LIKE ..."` is case-sensitive (ILIKE is not).
        db.execute("PRAGMA case_sensitive_like = ON")
        # Every query of the audit in one read transaction, as on PostgreSQL: each reads the
        # store as it was at the first (a snapshot), so that a run deleted meanwhile (`mlflow
        # gc`) is read whole or not at all, never as a run without its params, tags and
        # metrics. In WAL mode writers go on meanwhile; in a rollback journal mode (MLflow's
        # default) the transaction's shared lock keeps them waiting until the audit ends.
        db.execute("BEGIN")
        # The first read: names a file that is not an MLflow database as such.
        revision = read_sqlite_revision(db, store)
        (journal_mode,) = db.execute("PRAGMA journal_mode").fetchone()
    except BaseException:
        db.close()
        raise
    return _Database(db, "sqlite", revision, wal=str(journal_mode).lower() == "wal")


def _connect_postgresql(store: TrackingStore) -> _Database:
    import psycopg  # here only: a SQLite audit never loads it

    try:
        connection = psycopg.connect(**_libpq_parameters(store), autocommit=True)
    except psycopg.Error as error:
        raise StoreError(f"cannot connect to {store.display}: {first_line(error)}") from None
    try:
        # Every transaction of the session is read-only, so the server refuses any write, even
        # one this module never meant; REPEATABLE READ reads every page from one snapshot, so
        # runs logged while the audit pages are neither lost nor read twice.
        connection.execute(
            "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
        )
        connection.read_only = True
        connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        connection.autocommit = False
        try:
            row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        except psycopg.errors.UndefinedTable:
            raise StoreError(f"{store.display} is not an MLflow tracking database") from None
    except BaseException:
        connection.close()
        raise
    return _Database(connection, "postgresql", None if row is None else str(row[0]))


def _libpq_parameters(store: TrackingStore) -> dict[str, Any]:
    """The connection parameters of a SQLAlchemy `postgresql[+driver]://` URI, for libpq."""
    import psycopg

    # libpq knows postgresql:// URIs; SQLAlchemy's `+psycopg2` (or other driver) is dropped.
    _, _, rest = store.uri.partition("://")
    try:
        parameters = psycopg.conninfo.conninfo_to_dict(f"postgresql://{rest}")
    except psycopg.Error as error:
        raise StoreError(f"{store.display} is not a PostgreSQL URI: {first_line(error)}") from None
    # libpq waits for an unreachable host as long as TCP does (minutes); a store that does not
    # answer in this time is down, as far as an audit is concerned.
    parameters.setdefault("connect_timeout", 10)
    # What a DBA sees in pg_stat_activity.
    parameters.setdefault("application_name", "mlflow-audit")
    return parameters


@dataclass(frozen=True)
class _Schema:
    """What a store's tables hold, inspected once per connection."""

    revision: str | None
    #: Optional parts present (keys of _OPTIONAL).
    parts: frozenset[str]
    #: Whether the registry tables have MLflow 3.10's workspace column.
    workspaces: bool

    @classmethod
    def read(cls, db: _Database, display: str) -> _Schema:
        revision = db.revision
        columns = db.columns()
        known = revision in KNOWN_REVISIONS
        needed = dict(_CORE)
        parts: set[str] = set()
        for part, tables in _OPTIONAL.items():
            # A store at a revision this source does not know must have every part.
            if part in columns or not known:
                parts.add(part)
                needed.update(tables)
        workspaces = all("workspace" in columns.get(table, ()) for table in _WORKSPACE_TABLES)
        if not known:
            for table in _WORKSPACE_TABLES:
                needed[table] = (*needed[table], "workspace")
        missing: list[str] = []
        for table, wanted in needed.items():
            if table not in columns:
                missing.append(f"table {table}")
            else:
                missing += [f"column {table}.{c}" for c in wanted if c not in columns[table]]
        if missing:
            which = "an MLflow schema revision" if known else "a schema revision"
            raise StoreError(
                f"{display} is at {which} {revision or 'none'} that the SQL source cannot read: "
                f"it lacks {', '.join(missing)}"
            )
        return cls(revision, frozenset(parts), workspaces)


@dataclass(frozen=True)
class _Selected:
    run: _Run
    selected_by: tuple[str, ...]
    versions: tuple[ModelVersionRef, ...] = ()


@dataclass
class _Version:
    """A registered model version with the attributes `RegistryIndex` reads."""

    name: str
    version: int
    creation_timestamp: int | None
    description: str | None
    current_stage: str | None
    source: str | None
    run_id: str | None
    status: str | None
    tags: dict[str, str | None] = field(default_factory=dict)


@dataclass
class _LoggedModel:
    model_id: str
    name: str | None
    status: str | None
    creation_timestamp: int | None
    artifact_location: str
    source_run_id: str | None
    metrics: list[tuple[Any, ...]] = field(default_factory=list)


@dataclass
class _RunDetails:
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: list[MetricFacts] = field(default_factory=list)
    datasets: list[DatasetFacts] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    models: list[_LoggedModel] = field(default_factory=list)


class SqlSource:
    """Reads a SQLite or PostgreSQL tracking store's tables directly, read-only, without
    MLflow."""

    name = "sql"

    def __init__(
        self,
        store: TrackingStore,
        *,
        page_size: int = MAX_PAGE_SIZE,
        workers: int | None = None,
    ) -> None:
        _check_sql_store(store)
        self.store = store
        self.page_size = max(1, min(page_size, MAX_PAGE_SIZE))
        self._filter = _NO_FILTER
        self._artifacts = DirectArtifacts(store)
        self._experiment_names: dict[str, str | None] = {}
        self._registry: RegistryIndex | None = None
        #: Runs in the next batch of `_collect_page`, sized by the rows of the one before.
        self._batch_runs = _FIRST_BATCH
        self._schema = _Schema(SCHEMA_REVISION, frozenset(_OPTIONAL), workspaces=True)
        #: Processes that build records when a selection is large (see `_Workers`).
        self.workers = workers if workers is not None else (os.cpu_count() or 1)

    # ----------------------------------------------------------------------- public

    def collect(self, selection: Selection, needs: CollectionNeeds) -> Iterator[CollectedRun]:
        return self.collect_each(selection, needs, _as_collected)

    def collect_each(
        self, selection: Selection, needs: CollectionNeeds, finish: Callable[[CollectedRun], _T]
    ) -> Iterator[_T]:
        # Parsed before any run is read: a bad filter is an error of the selection.
        self._filter = _filter_sql(selection.filter) if selection.filter else _NO_FILTER
        return self._collect(selection, needs, finish)

    def _collect(
        self, selection: Selection, needs: CollectionNeeds, finish: Callable[[CollectedRun], _T]
    ) -> Iterator[_T]:
        # Any revision MLflow 2.9 to SCHEMA_REVISION writes is read as it is (the connection is
        # read-only; nothing is ever migrated), others when they hold what is read.
        with self._errors(), contextlib.closing(_connect(self.store)) as db:
            self._schema = _Schema.read(db, self.store.display)
            yield from self._select(db, selection, needs, finish)

    # ----------------------------------------------------------------------- setup

    def _ws(self, alias: str = "") -> str:
        """The registry's workspace column, or the one workspace of a store from before MLflow
        3.10, whose registry tables have no such column (migrating adds it as 'default')."""
        if self._schema.workspaces:
            return f"{alias}.workspace" if alias else "workspace"
        return f"'{_WORKSPACE}'"

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """One-line audit errors (exit 2), worded like the client source's."""
        try:
            yield
        except AuditError:
            raise
        except Exception as error:
            raise StoreError(f"reading {self.store.display} failed: {first_line(error)}") from None

    # ----------------------------------------------------------------------- selection

    def _select(
        self,
        db: _Database,
        selection: Selection,
        needs: CollectionNeeds,
        finish: Callable[[CollectedRun], _T],
    ) -> Iterator[_T]:
        seen: set[str] = set()
        emitted = 0
        limit = selection.max_runs
        with contextlib.ExitStack() as stack:
            workers: _Workers | None = None
            for page in self._pages(db, selection):
                fresh: list[_Selected] = []
                for item in page:
                    if item.run.run_id in seen:
                        continue
                    if limit is not None and emitted + len(fresh) >= limit:
                        break
                    seen.add(item.run.run_id)
                    fresh.append(item)
                if workers is None and self._worth_workers(db, len(fresh)):
                    workers = stack.enter_context(
                        _Workers(self.store, self.workers, db.export_snapshot(), finish)
                    )
                collected = (
                    workers.collect(fresh, needs)
                    if workers is not None and len(fresh) >= _JOB_RUNS
                    else map(finish, self._collect_page(db, fresh, needs))
                )
                for run in collected:
                    emitted += 1
                    yield run
                if limit is not None and emitted >= limit:
                    return

    def _worth_workers(self, db: _Database, runs: int) -> bool:
        return (
            self.workers > 1
            and db.snapshot_shared_with_workers
            and runs >= _PARALLEL_MIN_RUNS
            and sys.platform.startswith("linux")  # fork: workers start in milliseconds
        )

    def _pages(self, db: _Database, selection: Selection) -> Iterator[list[_Selected]]:
        explicit = [_Selected(self._get_run(db, r), ("run id",)) for r in selection.run_ids]
        for spec in selection.models:
            for version, alias in self._model_versions(db, spec):
                ref = ModelVersionRef(version.name, str(version.version), alias)
                if not version.run_id:
                    raise SelectionError(
                        f"registered model version {ref} has no source run to audit"
                    )
                explicit.append(
                    _Selected(self._get_run(db, version.run_id), (f"model {spec}",), (ref,))
                )
        if explicit:
            yield _merge_explicit(explicit)
        if selection.searches:
            for page in self._search(db, selection):
                yield [_Selected(run, ("search",)) for run in page]

    def _get_run(self, db: _Database, run_id: str) -> _Run:
        row = None
        if RUN_ID.match(run_id):
            row = db.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_uuid = ?", (run_id,)
            ).fetchone()
        if row is None:
            raise SelectionError(f"unknown run id {run_id!r} in {self.store.display}")
        return _Run.from_row(row)

    def _experiment_ids(self, db: _Database, selection: Selection) -> list[int] | None:
        """The experiments named by the selection, or None for every experiment the search
        covers (left to a subquery: a store can hold more experiments than SQLite variables)."""
        if not selection.experiments:
            return None
        ids: list[int] = []
        for reference in selection.experiments:
            # get_experiment_by_name, then get_experiment for a number; both see deleted ones.
            rows = db.execute(
                "SELECT experiment_id, name FROM experiments "
                "WHERE name = ? AND lifecycle_stage IN ('active', 'deleted')",
                (reference,),
            ).fetchall()
            if len(rows) > 1:
                raise StoreError(
                    f"reading {self.store.display} failed: {len(rows)} experiments are named "
                    f"{reference!r}"
                )
            if not rows and reference.isdigit():
                with contextlib.suppress(ValueError):
                    rows = db.execute(
                        "SELECT experiment_id, name FROM experiments "
                        "WHERE experiment_id = ? AND lifecycle_stage IN ('active', 'deleted')",
                        (int(reference),),
                    ).fetchall()
            if not rows:
                raise SelectionError(
                    f"unknown experiment {reference!r} in {self.store.display} "
                    "(give its name or id)"
                )
            experiment_id, name = rows[0]
            self._experiment_names[str(experiment_id)] = name
            ids.append(experiment_id)
        return list(dict.fromkeys(ids))

    def _search(self, db: _Database, selection: Selection) -> Iterator[list[_Run]]:
        """Runs in the order of MLflow's search_runs without order_by (start_time DESC, then
        run_uuid), page by page. Pages continue after the last row read (keyset) rather than
        at an offset, which gives the same pages without sorting the skipped rows again."""
        stages = ("active", "deleted") if selection.include_deleted else ("active",)
        marks = _marks(stages)
        experiment_ids = self._experiment_ids(db, selection)
        if experiment_ids is None:
            scope = (
                f"experiment_id IN (SELECT experiment_id FROM experiments "
                f"WHERE lifecycle_stage IN ({marks}))"
            )
            scope_parameters: list[Any] = list(stages)
        else:
            scope = f"experiment_id IN ({_marks(experiment_ids)})"
            scope_parameters = list(experiment_ids)
        after: tuple[Any, str] | None = None
        while True:
            conditions = [scope, f"lifecycle_stage IN ({marks})", *self._filter.conditions(db)]
            parameters: list[Any] = [*scope_parameters, *stages, *self._filter.parameters]
            if after is not None:
                start_time, run_id = after
                # Runs without a start time come last (`nulls_last`).
                if start_time is None:
                    conditions.append("start_time IS NULL AND run_uuid > ?")
                    parameters.append(run_id)
                else:
                    conditions.append(
                        "(start_time < ? OR (start_time = ? AND run_uuid > ?) "
                        "OR start_time IS NULL)"
                    )
                    parameters += [start_time, start_time, run_id]
            rows = db.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE {' AND '.join(conditions)} "
                f"ORDER BY start_time DESC{db.nulls_last}, run_uuid LIMIT ?",
                [*parameters, self.page_size],
            ).fetchall()
            if rows:
                yield [_Run.from_row(row) for row in rows]
            if len(rows) < self.page_size:
                return
            after = (rows[-1][5], rows[-1][0])

    # ----------------------------------------------------------------------- lineage

    def lineage_facts(self, version: ModelVersionRef, parent_run_id: str | None) -> LineageFacts:
        """The registry's facts about a version's model, the metrics other runs linked to its
        logged model, and how many trials the sweep `parent_run_id` ran."""
        with self._errors(), contextlib.closing(_connect(self.store)) as db:
            self._schema = _Schema.read(db, self.store.display)
            name = version.name
            model = db.execute(
                f"SELECT description FROM registered_models WHERE {self._ws()} = ? AND name = ?",
                (_WORKSPACE, name),
            ).fetchone()
            if model is None:
                raise SelectionError(f"unknown registered model {name!r} in {self.store.display}")
            model_tags = dict(
                db.execute(
                    "SELECT key, value FROM registered_model_tags "
                    f"WHERE {self._ws()} = ? AND name = ?",
                    (_WORKSPACE, name),
                ).fetchall()
            )
            aliases: dict[int, list[str]] = {}
            for alias, number in db.execute(
                "SELECT alias, version FROM registered_model_aliases "
                f"WHERE {self._ws()} = ? AND name = ? ORDER BY alias",
                (_WORKSPACE, name),
            ):
                aliases.setdefault(int(number), []).append(alias)
            who = dict(
                (int(number), (user, updated))
                for number, user, updated in db.execute(
                    "SELECT version, user_id, last_updated_time FROM model_versions "
                    f"WHERE {self._ws()} = ? AND name = ?",
                    (_WORKSPACE, name),
                )
            )
            versions = sorted(self._search_versions(db, name), key=lambda v: int(v.version))
            registered = tuple(
                RegistryVersion(
                    version=str(v.version),
                    run_id=v.run_id,
                    model_id=model_id_of(v.source),
                    source=v.source,
                    status=v.status,
                    stage=v.current_stage,
                    description=v.description,
                    created=v.creation_timestamp,
                    updated=who.get(int(v.version), (None, None))[1],
                    registered_by=who.get(int(v.version), (None, None))[0] or None,
                    aliases=tuple(aliases.get(int(v.version), ())),
                    tags={k: v for k, v in v.tags.items() if v is not None},
                )
                for v in versions
            )
            this = next((v for v in registered if v.version == version.version), None)
            links: tuple[MetricLink, ...] = ()
            if this is not None and this.model_id and "logged_models" in self._schema.parts:
                links = tuple(
                    MetricLink(
                        key, _link_value(value), step, stamp, run_id, dataset_name, dataset_digest
                    )
                    for key, value, step, stamp, run_id, dataset_name, dataset_digest in db.execute(
                        "SELECT metric_name, metric_value, metric_step, metric_timestamp_ms, "
                        "run_id, dataset_name, dataset_digest FROM logged_model_metrics "
                        "WHERE model_id = ? ORDER BY metric_name, run_id, metric_step, "
                        "metric_timestamp_ms",
                        (this.model_id,),
                    )
                )
            trials = None
            if parent_run_id is not None:
                trials = db.execute(
                    "SELECT COUNT(*) FROM tags JOIN runs ON runs.run_uuid = tags.run_uuid "
                    "WHERE tags.key = 'mlflow.parentRunId' AND tags.value = ? "
                    "AND runs.lifecycle_stage = 'active' AND runs.experiment_id = "
                    "(SELECT experiment_id FROM runs WHERE run_uuid = ?)",
                    (parent_run_id, parent_run_id),
                ).fetchone()[0]
            return LineageFacts(
                name=name,
                version=version.version,
                model_description=model[0],
                model_tags={k: v for k, v in model_tags.items() if v is not None},
                versions=registered,
                links=links,
                trials=trials,
            )

    # ----------------------------------------------------------------------- registry

    def _model_versions(self, db: _Database, spec: ModelSpec) -> list[tuple[_Version, str | None]]:
        unknown = SelectionError(
            f"unknown registered model version {str(spec)!r} in {self.store.display}"
        )
        if not _valid_model_name(spec.name):
            raise unknown
        if spec.alias:
            # get_model_version_by_alias: "latest" (any case) is the highest version in a
            # stage; the client then refuses a prompt version.
            if spec.alias.lower() == "latest":
                version = self._latest_version(db, spec.name)
            else:
                version = self._aliased_version(db, spec.name, spec.alias)
            if version is None or _PROMPT_TAG in version.tags:
                raise unknown
            return [(version, spec.alias)]
        if spec.version and spec.version != "latest":
            version = self._version(db, spec.name, int(spec.version))
            if version is None or _PROMPT_TAG in version.tags:
                raise unknown
            return [(version, None)]
        # get_registered_model, which refuses a prompt, then search_model_versions by name.
        if not self._registered_model_exists(db, spec.name, refuse_prompts=True):
            raise unknown
        versions = self._search_versions(db, spec.name)
        versions.sort(key=lambda v: int(v.version))
        if not versions:
            raise SelectionError(f"registered model {spec.name!r} has no versions")
        if spec.version == "latest":
            versions = versions[-1:]
        return [(version, None) for version in versions]

    def _registered_model_exists(
        self, db: _Database, name: str, *, refuse_prompts: bool = False
    ) -> bool:
        row = db.execute(
            f"SELECT 1 FROM registered_models WHERE {self._ws()} = ? AND name = ?",
            (_WORKSPACE, name),
        ).fetchone()
        if row is None:
            return False
        if refuse_prompts:
            prompt = db.execute(
                f"SELECT 1 FROM registered_model_tags WHERE {self._ws()} = ? AND name = ? "
                "AND key = ?",
                (_WORKSPACE, name, _PROMPT_TAG),
            ).fetchone()
            return prompt is None
        return True

    def _version(self, db: _Database, name: str, version: int) -> _Version | None:
        row = db.execute(
            f"SELECT {_VERSION_COLUMNS} FROM model_versions WHERE {self._ws()} = ? AND name = ? "
            "AND version = ? AND current_stage != ?",
            (_WORKSPACE, name, version, _DELETED_VERSION),
        ).fetchone()
        if row is None:
            return None
        found = _Version(*row)
        found.tags = dict(
            db.execute(
                "SELECT key, value FROM model_version_tags "
                f"WHERE {self._ws()} = ? AND name = ? AND version = ?",
                (_WORKSPACE, name, version),
            ).fetchall()
        )
        return found

    def _aliased_version(self, db: _Database, name: str, alias: str) -> _Version | None:
        if not self._registered_model_exists(db, name):
            return None
        row = db.execute(
            "SELECT version FROM registered_model_aliases "
            f"WHERE {self._ws()} = ? AND name = ? AND alias = ?",
            (_WORKSPACE, name, alias),
        ).fetchone()
        return None if row is None else self._version(db, name, row[0])

    def _latest_version(self, db: _Database, name: str) -> _Version | None:
        if not self._registered_model_exists(db, name):
            return None
        row = db.execute(
            f"SELECT MAX(version) FROM model_versions WHERE {self._ws()} = ? AND name = ? "
            f"AND current_stage IN ({_marks(_STAGES)})",
            (_WORKSPACE, name, *_STAGES),
        ).fetchone()
        return None if row is None or row[0] is None else self._version(db, name, row[0])

    def _search_versions(self, db: _Database, name: str | None = None) -> list[_Version]:
        """search_model_versions: live versions, without prompts (a name any of whose versions
        carries the prompt tag set to 'true' is a prompt)."""
        condition, parameters = ("AND v.name = ?", [name]) if name is not None else ("", [])
        rows = db.execute(
            f"SELECT {_VERSION_COLUMNS} FROM model_versions AS v "
            f"WHERE {self._ws('v')} = ? {condition} AND v.current_stage != ? AND NOT EXISTS ("
            f"  SELECT 1 FROM model_version_tags AS t WHERE {self._ws('t')} = {self._ws('v')} "
            "  AND t.name = v.name AND t.key = ? AND t.value = 'true')",
            [_WORKSPACE, *parameters, _DELETED_VERSION, _PROMPT_TAG],
        ).fetchall()
        versions = [_Version(*row) for row in rows]
        tag_condition = "AND name = ?" if name is not None else ""
        tags: dict[tuple[str, int], dict[str, str | None]] = {}
        for tag_name, version, key, value in db.execute(
            "SELECT name, version, key, value FROM model_version_tags "
            f"WHERE {self._ws()} = ? {tag_condition}",
            [_WORKSPACE, *parameters],
        ):
            tags.setdefault((tag_name, version), {})[key] = value
        for found in versions:
            found.tags = tags.get((found.name, found.version), {})
        return versions

    def _registry_index(self, db: _Database) -> RegistryIndex:
        if self._registry is None:
            # search_registered_models leaves prompts out, and with them their aliases.
            aliases: dict[tuple[str, str], list[str]] = {}
            for name, alias, version in db.execute(
                "SELECT a.name, a.alias, a.version FROM registered_model_aliases AS a "
                f"JOIN registered_models AS m ON {self._ws('m')} = {self._ws('a')} "
                f"AND m.name = a.name WHERE {self._ws('m')} = ? AND NOT EXISTS ("
                "  SELECT 1 FROM registered_model_tags AS t "
                f"WHERE {self._ws('t')} = {self._ws('m')} "
                "  AND t.name = m.name AND t.key = ? AND t.value = 'true')",
                (_WORKSPACE, _PROMPT_TAG),
            ):
                aliases.setdefault((name, str(version)), []).append(alias)
            self._registry = RegistryIndex(self._search_versions(db), aliases)
        return self._registry

    # ----------------------------------------------------------------------- evidence

    def _collect_page(
        self, db: _Database, page: Sequence[_Selected], needs: CollectionNeeds
    ) -> Iterator[CollectedRun]:
        if not page:
            return
        registry = self._registry_index(db) if needs.registry else None
        # The client searches logged models in the experiments of the whole page.
        experiment_ids = {item.run.experiment_key for item in page}
        start = 0
        while start < len(page):
            batch = page[start : start + self._batch_runs]
            start += len(batch)
            runs = [item.run for item in batch]
            details = self._details(db, runs, experiment_ids)
            rows = sum(len(d.params) + len(d.tags) + len(d.metrics) for d in details.values())
            self._batch_runs = runs_that_fit(_BATCH_ROWS, len(batch), rows, _BATCH)
            files = self._files(runs, details, needs)
            for item, run_files in zip(batch, files, strict=True):
                facts = self._facts(
                    db, item.run, details[item.run.run_id], registry, run_files, needs
                )
                record, digest = record_and_digest(facts)
                histories = self._metric_histories(db, record) if needs.metric_history else {}
                yield CollectedRun(record, item.selected_by, item.versions, histories, digest)

    def _details(
        self, db: _Database, runs: Sequence[_Run], experiment_ids: Set[Any]
    ) -> dict[str, _RunDetails]:
        """Params, tags, latest metrics, dataset inputs and logged models of a batch of runs,
        one query each."""
        ids = [run.run_id for run in runs]
        details = {run_id: _RunDetails() for run_id in ids}
        marks = _marks(ids)
        for run_id, key, value in db.execute(
            f"SELECT run_uuid, key, value FROM params WHERE run_uuid IN ({marks})", ids
        ):
            details[run_id].params[key] = value
        for run_id, key, value in db.execute(
            f"SELECT run_uuid, key, value FROM tags WHERE run_uuid IN ({marks})", ids
        ):
            details[run_id].tags[key] = value
        for run_id, key, value, timestamp, step, is_nan in db.execute(
            "SELECT run_uuid, key, value, timestamp, step, is_nan FROM latest_metrics "
            f"WHERE run_uuid IN ({marks})",
            ids,
        ):
            # SQLite has no NaN (stored as 0 with is_nan) and keeps infinities as ±1.797e308,
            # which the client returns as they are.
            details[run_id].metrics.append(
                MetricFacts(key, math.nan if is_nan else value, step, timestamp)
            )
        self._datasets(db, ids, details)
        self._logged_models(db, ids, experiment_ids, details)
        return details

    def _datasets(self, db: _Database, ids: list[str], details: dict[str, _RunDetails]) -> None:
        if "inputs" not in self._schema.parts:
            return  # a store from before MLflow 2.4 holds no dataset inputs
        # SqlAlchemyStore._get_run_inputs: one input per dataset, its tags joined in.
        inputs: dict[str, dict[str, tuple[tuple[Any, ...], list[tuple[str, str]]]]] = {}
        for row in db.execute(
            "SELECT i.destination_id, d.dataset_uuid, d.name, d.digest, d.dataset_source_type, "
            "d.dataset_source, d.dataset_schema, d.dataset_profile, t.name, t.value "
            "FROM inputs AS i JOIN datasets AS d ON i.source_id = d.dataset_uuid "
            "LEFT OUTER JOIN input_tags AS t ON t.input_uuid = i.input_uuid "
            f"WHERE i.destination_type = 'RUN' AND i.destination_id IN ({_marks(ids)}) "
            "ORDER BY i.destination_id",
            ids,
        ):
            run_inputs = inputs.setdefault(row[0], {})
            _, tags = run_inputs.setdefault(row[1], (row[2:8], []))
            if row[8] is not None:
                tags.append((row[8], row[9]))
        for run_id, run_inputs in inputs.items():
            for (name, digest, source_type, source, schema, profile), tags in run_inputs.values():
                context = next((value for key, value in tags if key == "mlflow.data.context"), None)
                details[run_id].datasets.append(
                    DatasetFacts(name, digest, source_type, source, schema, profile, context)
                )

    def _logged_models(
        self,
        db: _Database,
        ids: list[str],
        experiment_ids: Set[Any],
        details: dict[str, _RunDetails],
    ) -> None:
        """MLflow 3 logged models of the runs: those they are the source run of (as
        search_logged_models finds them), then the models they output (get_logged_model)."""
        if "logged_models" not in self._schema.parts:
            return  # a store from before MLflow 3.0 holds no logged models
        # The experiments are matched here, not in SQL: a page can span more experiments than
        # SQLite takes variables.
        for *row, experiment_id in db.execute(
            f"SELECT {_MODEL_COLUMNS}, experiment_id FROM logged_models "
            f"WHERE lifecycle_stage != 'deleted' AND source_run_id IN ({_marks(ids)}) "
            "ORDER BY creation_timestamp_ms DESC, model_id",
            ids,
        ):
            if experiment_id in experiment_ids:
                model = _model(row)
                details[str(model.source_run_id)].models.append(model)
        for run_id, model_id in db.execute(
            "SELECT source_id, destination_id FROM inputs WHERE source_type = 'RUN_OUTPUT' "
            f"AND destination_type = 'MODEL_OUTPUT' AND source_id IN ({_marks(ids)})",
            ids,
        ).fetchall():
            details[run_id].outputs.append(model_id)
        for run_id in ids:
            known = {m.model_id for m in details[run_id].models}
            for model_id in details[run_id].outputs:
                if model_id in known:
                    continue
                row = db.execute(
                    f"SELECT {_MODEL_COLUMNS} FROM logged_models "
                    "WHERE model_id = ? AND lifecycle_stage != 'deleted'",
                    (model_id,),
                ).fetchone()
                if row is None:
                    # What the client source fails with: get_logged_model does not return
                    # deleted models.
                    raise StoreError(
                        f"reading {self.store.display} failed: Logged model with ID "
                        f"'{model_id}' not found."
                    )
                details[run_id].models.append(_model(row))
                known.add(model_id)
        models = {m.model_id: m for d in details.values() for m in d.models}
        if models:
            # Rows of one model may be spread over several of its entries in `details`.
            by_id: dict[str, list[tuple[Any, ...]]] = {}
            model_ids = list(models)
            for start in range(0, len(model_ids), _BATCH):
                chunk = model_ids[start : start + _BATCH]
                for row in db.execute(
                    "SELECT model_id, metric_name, metric_value, metric_step, run_id, "
                    "dataset_name, dataset_digest FROM logged_model_metrics "
                    f"WHERE model_id IN ({_marks(chunk)})",
                    chunk,
                ):
                    by_id.setdefault(row[0], []).append(row[1:])
            for run_details in details.values():
                for model in run_details.models:
                    model.metrics = by_id.get(model.model_id, [])

    def _files(
        self, runs: Sequence[_Run], details: Mapping[str, _RunDetails], needs: CollectionNeeds
    ) -> Iterable[RunFiles]:
        if not needs.artifacts:
            return [RunFiles() for _ in runs]

        def read(run: _Run) -> RunFiles:
            return read_run_files(
                self._artifacts,
                run.run_id,
                run.artifact_uri,
                details[run.run_id].tags,
                [
                    ModelLocation(m.model_id, m.artifact_location, m.status)
                    for m in details[run.run_id].models
                ],
            )

        # Remote artifact stores answer in parallel; local folders are read faster in one thread.
        if all(is_local(run.artifact_uri) for run in runs):
            return map(read, runs)
        with ThreadPoolExecutor(max_workers=_ARTIFACT_WORKERS) as pool:
            return list(pool.map(read, runs))

    def _facts(
        self,
        db: _Database,
        run: _Run,
        details: _RunDetails,
        registry: RegistryIndex | None,
        files: RunFiles,
        needs: CollectionNeeds,
    ) -> RunFacts:
        run_name = run.name
        # SqlRun.to_mlflow_entity falls back to the mlflow.runName tag for an unnamed run.
        if not run_name and (tagged := details.tags.get("mlflow.runName")):
            run_name = tagged
        models = [
            LoggedModelFacts(
                model_id=model.model_id,
                name=model.name,
                status=model.status,
                creation_time=model.creation_timestamp,
                metrics=tuple(
                    ModelMetricFacts(key, value, step, dataset_name, dataset_digest)
                    for key, value, step, metric_run, dataset_name, dataset_digest in model.metrics
                    if metric_run in (None, run.run_id)
                ),
                files=files.models.get(model.model_id),
            )
            for model in details.models
        ]
        versions = (
            registry.for_run(run.run_id, [m.model_id for m in details.models]) if registry else []
        )
        return RunFacts(
            run_id=run.run_id,
            run_name=run_name,
            experiment_id=run.experiment_id,
            experiment_name=self._experiment_name(db, run.experiment_id),
            status=run.status,
            start_time=run.start_time,
            end_time=run.end_time,
            user=run.user_id,
            lifecycle_stage=run.lifecycle_stage,
            params=details.params,
            metrics=details.metrics,
            tags=details.tags,
            datasets=details.datasets,
            logged_models=models,
            registered_versions=versions,
            run_files=files.run,
            history_model_files=files.history,
            artifacts_read=needs.artifacts,
        )

    def _experiment_name(self, db: _Database, experiment_id: str) -> str | None:
        if experiment_id not in self._experiment_names:
            row = None
            if experiment_id.isdigit():
                with contextlib.suppress(ValueError):
                    row = db.execute(
                        "SELECT name FROM experiments "
                        "WHERE experiment_id = ? AND lifecycle_stage IN ('active', 'deleted')",
                        (int(experiment_id),),
                    ).fetchone()
            self._experiment_names[experiment_id] = None if row is None else row[0]
        return self._experiment_names[experiment_id]

    def _metric_histories(
        self, db: _Database, record: Mapping[str, Any]
    ) -> dict[str, tuple[tuple[float, float], ...]]:
        """Every logged value of the run's metrics that have more than one step, in the order of
        MLflow's get_metric_history (timestamp, step, value)."""
        run_id = record["run"]["id"]
        histories = {}
        for key in charted_metric_keys(record):
            points = tuple(
                (float(step), math.nan if is_nan else float(value))
                for value, step, is_nan in db.execute(
                    "SELECT value, step, is_nan FROM metrics WHERE run_uuid = ? AND key = ? "
                    "ORDER BY timestamp, step, value",
                    (run_id, key),
                )
            )
            if len(points) > 1:
                histories[key] = points
        return histories


# --------------------------------------------------------------------------- helpers


#: Runs per job handed to a worker process, and the fewest runs of a page that are worth
#: starting workers for (forking them takes a few milliseconds; each builds about 5,000
#: records a second).
_JOB_RUNS = 1_000
_PARALLEL_MIN_RUNS = 4_000


class _Workers:
    """Processes that read, build and finish the records of a large selection, job by job, in
    order.

    Building a record (rows to facts, the record, its redaction) and evaluating it are nearly
    all of an audit's time and need no shared state, so each worker does both with its own
    read-only connection (on PostgreSQL, in the auditing session's snapshot) and sends back
    only what `finish` returns (a run's findings, for `check`). At most two jobs per worker are
    in flight, which bounds what is held in memory.
    """

    def __init__(
        self,
        store: TrackingStore,
        processes: int,
        snapshot: str | None,
        finish: Callable[[CollectedRun], Any],
    ) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.processes = processes
        self._pool = ProcessPoolExecutor(
            max_workers=processes,
            mp_context=multiprocessing.get_context("fork"),
            initializer=_start_worker,
            # Forked, not pickled: `finish` may hold what pickle cannot (a compiled policy).
            initargs=(store, snapshot, finish),
        )

    def __enter__(self) -> _Workers:
        return self

    def __exit__(self, *_: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def collect(self, page: Sequence[_Selected], needs: CollectionNeeds) -> Iterator[Any]:
        from collections import deque

        jobs = iter([page[i : i + _JOB_RUNS] for i in range(0, len(page), _JOB_RUNS)])
        pending = deque(
            self._pool.submit(_collect_job, job, needs)
            for job in itertools.islice(jobs, 2 * self.processes)
        )
        while pending:
            done = pending.popleft().result()
            following = next(jobs, None)
            if following is not None:
                pending.append(self._pool.submit(_collect_job, following, needs))
            yield from done


#: In a worker process: its source, connection and `finish`, set once by `_start_worker`.
_worker: tuple[SqlSource, _Database, Callable[[CollectedRun], Any]] | None = None


def _start_worker(
    store: TrackingStore, snapshot: str | None, finish: Callable[[CollectedRun], Any]
) -> None:
    global _worker
    source = SqlSource(store, workers=1)
    db = _connect(store)
    if snapshot is not None:
        # The auditing session's snapshot: every worker reads the store as of the same moment,
        # as the auditing session itself does (REPEATABLE READ), while writes go on.
        db.use_snapshot(snapshot)
    source._schema = _Schema.read(db, store.display)
    _worker = (source, db, finish)


def _collect_job(job: Sequence[_Selected], needs: CollectionNeeds) -> list[Any]:
    assert _worker is not None
    source, db, finish = _worker
    with source._errors():
        return [finish(run) for run in source._collect_page(db, job, needs)]


def _as_collected(run: CollectedRun) -> CollectedRun:
    return run


def check_sql_usable(store: TrackingStore) -> None:
    """Raise the AuditError that says why the SQL source cannot read this store."""
    _check_sql_store(store)
    installed = installed_schema_revision()
    if installed != SCHEMA_REVISION:
        raise StoreError(
            f"the SQL source reads MLflow schema revision {SCHEMA_REVISION}, but the installed "
            f"MLflow writes {installed}; read the store through the client source"
        )


def _check_sql_store(store: TrackingStore) -> None:
    if store.dialect == "postgresql":
        from importlib.util import find_spec

        # Without the driver the client source may still read it (through psycopg2, say).
        if find_spec("psycopg") is None:
            raise StoreError(
                f"reading {store.display} with the SQL source needs psycopg "
                "(pip install 'psycopg[binary]'); read it through the client source"
            )
        return
    if store.dialect != "sqlite" or store.path is None:
        raise StoreError(
            f"the SQL source reads PostgreSQL and SQLite stores only, not {store.display}; read "
            "it through the client source"
        )


@dataclass(frozen=True)
class _Filter:
    """An MLflow search filter as SQL conditions on `runs`, with their parameters in order."""

    #: Conditions written for one dialect or the other: (sqlite, postgresql).
    written: tuple[tuple[str, str], ...] = ()
    parameters: tuple[Any, ...] = ()

    def conditions(self, db: _Database) -> list[str]:
        return [pair[db.dialect == "postgresql"] for pair in self.written]


_NO_FILTER = _Filter()

#: Searchable run attributes and their columns in `runs` (mlflow/store/tracking/dbmodels).
_FILTER_ATTRIBUTES = {
    "run_id": "run_uuid",
    "status": "status",
    "user_id": "user_id",
    "artifact_uri": "artifact_uri",
    "start_time": "start_time",
    "end_time": "end_time",
    "lifecycle_stage": "lifecycle_stage",
}


def _filter_sql(text: str) -> _Filter:
    """`--filter`, parsed by MLflow's own parser (mlflow-skinny has it) and written as the
    conditions MLflow's SQL store applies (`_get_sqlalchemy_filter_clauses` in
    mlflow/store/tracking/sqlalchemy_store.py), run by run: the same runs, whatever the store."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.search_utils import SearchUtils

    try:
        parsed = SearchUtils.parse_search_filter(text)  # type: ignore[no-untyped-call]
    except MlflowException as error:
        raise SelectionError(f"invalid --filter {text!r}: {first_line(error)}") from None
    written: list[tuple[str, str]] = []
    parameters: list[Any] = []

    def add(sqlite: str, postgresql: str | None = None, *values: Any) -> None:
        written.append((sqlite, sqlite if postgresql is None else postgresql))
        parameters.extend(values)

    for clause in parsed:
        kind = clause["type"]
        key = SearchUtils.translate_key_alias(clause["key"])  # type: ignore[no-untyped-call]
        comparator = clause["comparator"].upper()
        value = clause["value"]
        if kind == "attribute" and key == "run_name":
            # As MLflow does: the mlflow.runName tag, since older runs have no name column.
            sqlite, postgresql, values = _compare("value", comparator, value)
            add(
                f"run_uuid IN (SELECT run_uuid FROM tags WHERE key = ? AND {sqlite})",
                f"run_uuid IN (SELECT run_uuid FROM tags WHERE key = ? AND {postgresql})",
                "mlflow.runName",
                *values,
            )
        elif kind == "attribute":
            column = _FILTER_ATTRIBUTES.get(key)
            if column is None:
                raise SelectionError(f"invalid --filter {text!r}: unknown attribute {key!r}")
            sqlite, postgresql, values = _compare(column, comparator, value)
            add(sqlite, postgresql, *values)
        elif kind in ("metric", "parameter", "tag"):
            table = {"metric": "latest_metrics", "parameter": "params", "tag": "tags"}[kind]
            if comparator in ("IS NULL", "IS NOT NULL"):
                negation = "NOT " if comparator == "IS NULL" else ""
                add(
                    f"{negation}EXISTS (SELECT 1 FROM {table} AS f WHERE "
                    "f.run_uuid = runs.run_uuid AND f.key = ?)",
                    None,
                    key,
                )
                continue
            if kind == "metric":
                value = float(value)
            sqlite, postgresql, values = _compare("value", comparator, value)
            if kind == "metric":
                # NaN is stored as 0 with is_nan: only "!=" holds for it.
                nan = "({} OR is_nan = ?)" if comparator == "!=" else "{} AND NOT is_nan = ?"
                sqlite, postgresql = nan.format(sqlite), nan.format(postgresql)
                values = (*values, True)
            add(
                f"run_uuid IN (SELECT run_uuid FROM {table} WHERE key = ? AND {sqlite})",
                f"run_uuid IN (SELECT run_uuid FROM {table} WHERE key = ? AND {postgresql})",
                key,
                *values,
            )
        elif kind == "dataset" and key == "context":
            sqlite, postgresql, values = _compare("t.value", comparator, value)
            query = (
                "run_uuid IN (SELECT i.destination_id FROM datasets AS d "
                "JOIN inputs AS i ON i.source_id = d.dataset_uuid "
                "JOIN input_tags AS t ON t.input_uuid = i.input_uuid AND t.name = ? AND {})"
            )
            add(query.format(sqlite), query.format(postgresql), "mlflow.data.context", *values)
        elif kind == "dataset" and key in ("name", "digest"):
            sqlite, postgresql, values = _compare(f"d.{key}", comparator, value)
            query = (
                "run_uuid IN (SELECT i.destination_id FROM datasets AS d "
                "JOIN inputs AS i ON i.source_id = d.dataset_uuid WHERE {})"
            )
            add(query.format(sqlite), query.format(postgresql), *values)
        else:
            raise SelectionError(
                f"--filter {text!r}: {kind} {key!r} is not searched by the SQL source; "
                "use --source client"
            )
    return _Filter(tuple(written), tuple(parameters))


def _compare(column: str, comparator: str, value: Any) -> tuple[str, str, tuple[Any, ...]]:
    """`column COMPARATOR ?` for SQLite and for PostgreSQL, and the values to bind, with
    SQLAlchemy's spelling of each operator (LIKE is case-sensitive: MLflow sets SQLite's
    case_sensitive_like, and so does `_connect`)."""
    if comparator in ("=", "!=", ">", ">=", "<", "<="):
        return f"{column} {comparator} ?", f"{column} {comparator} ?", (value,)
    if comparator == "LIKE":
        return f"{column} LIKE ?", f"{column} LIKE ?", (value,)
    if comparator == "ILIKE":
        return f"lower({column}) LIKE lower(?)", f"{column} ILIKE ?", (value,)
    if comparator in ("IN", "NOT IN"):
        values = tuple(value)
        condition = f"{column} {comparator} ({_marks(values)})"
        return condition, condition, values
    raise SelectionError(f"--filter: {comparator} is not searched by the SQL source")


def _marks(values: Sequence[Any]) -> str:
    """Placeholders for `IN (...)`: values are always bound, never written into the SQL."""
    return ", ".join("?" * len(values))


def _model(row: Sequence[Any]) -> _LoggedModel:
    model_id, name, status, created, location, source_run_id = row
    # LoggedModelStatus.from_int, an unknown number gives no status.
    return _LoggedModel(
        model_id, name, _LOGGED_MODEL_STATUS.get(status), created, location, source_run_id
    )


def _merge_explicit(items: list[_Selected]) -> list[_Selected]:
    """One entry per run, keeping every way the selection reached it."""
    merged: dict[str, _Selected] = {}
    for item in items:
        key = item.run.run_id
        previous = merged.get(key)
        if previous is not None:
            item = _Selected(
                item.run,
                tuple(dict.fromkeys(previous.selected_by + item.selected_by)),
                tuple(dict.fromkeys(previous.versions + item.versions)),
            )
        merged[key] = item
    return list(merged.values())


def _link_value(value: float | None) -> float:
    """A linked metric's value; MLflow stores NaN as NULL in logged_model_metrics."""
    return math.nan if value is None else float(value)


def _valid_model_name(name: str) -> bool:
    """MLflow's _validate_model_name: the client refuses other names before looking them up."""
    if not name.strip() or "/" in name or ":" in name:
        return False
    normalised = posixpath.normpath(name)
    return not (
        normalised != name
        or normalised == "."
        or normalised.startswith("..")
        or normalised.startswith("/")
    )
