"""Find the tracking store and make sure reading it cannot change it.

MLflow's client is not read-only by construction: it creates an empty SQLite database for a
mistyped path, migrates a SQLite store written by another MLflow version when it opens it, and
creates folders in a `./mlruns` file store. The guards here run before MLflow sees the store.
"""

from __future__ import annotations

import ast
import functools
import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from audit.errors import StoreError, first_line
from audit.sources.revisions import SCHEMA_REVISION

StoreKind = Literal["sqlite", "database", "file", "http", "databricks", "other"]

DEFAULT_SQLITE_URI = "sqlite:///mlflow.db"
DEFAULT_FILE_STORE = "mlruns"
_DATABASE_SCHEMES = ("postgresql", "mysql", "mssql")
_SECRET_QUERY_KEYS = re.compile(r"(pass|secret|token|key|credential|auth)", re.IGNORECASE)
_SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass(frozen=True)
class TrackingStore:
    """A tracking store, resolved and checked.

    ``uri`` is what the user named (or MLflow's default); ``client_uri`` is what MLflow is given,
    which for SQLite opens the file read-only; ``display`` has credentials stripped.
    ``artifact_locations`` are the remote artifact locations (URI prefixes) the user allows the
    audit to read besides the tracking server's own (`audit.sources.locations`).
    """

    uri: str
    kind: StoreKind
    client_uri: str
    display: str
    path: Path | None = None
    artifact_locations: tuple[str, ...] = ()

    @property
    def dialect(self) -> str | None:
        """The database of a SQL store (sqlite, postgresql, mysql, mssql), without SQLAlchemy's
        `+driver`; None for other stores."""
        if self.kind == "sqlite":
            return "sqlite"
        if self.kind == "database":
            return urlsplit(self.uri).scheme.lower().split("+", 1)[0]
        return None

    @property
    def has_registry_folder(self) -> bool:
        """A file store's registry lives in `models/`; MLflow creates it when asked to search it."""
        return self.kind != "file" or (self.path is not None and (self.path / "models").is_dir())


def redact_uri(uri: str) -> str:
    """The URI without passwords, tokens or keys, fit for reports and logs."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparseable URI>"
    netloc = parts.netloc
    if "@" in netloc:
        from audit.redaction import redact_text

        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        if redact_text(unquote(user)) != unquote(user):  # a token as the user name (ghp_...@)
            user = "***"
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
    query = urlencode(
        [
            (key, "***" if _SECRET_QUERY_KEYS.search(key) else value)
            for key, value in parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="*/:",
    )
    if netloc == parts.netloc and query == parts.query:
        # Nothing to hide: rebuilding would lose the empty authority of sqlite:////abs/path.
        return uri
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _has_file_store_data(root: Path) -> bool:
    """MLflow's own test: a numbered experiment folder holding meta.yaml."""
    try:
        return any(
            entry.is_dir() and entry.name.isdigit() and (entry / "meta.yaml").exists()
            for entry in root.iterdir()
        )
    except OSError:
        return False


def default_tracking_uri(cwd: Path | None = None) -> str:
    """MLflow's default: ./mlruns when it holds experiments, else sqlite:///mlflow.db."""
    return default_store(cwd)[0]


def default_store(cwd: Path | None = None) -> tuple[str, str]:
    """MLflow's default store for the working directory, and why it is that one, in words."""
    here = cwd or Path.cwd()
    mlruns = here / DEFAULT_FILE_STORE
    if _has_file_store_data(mlruns):
        return DEFAULT_FILE_STORE, f"MLflow's default: {mlruns} holds experiments"
    database = here / "mlflow.db"
    state = "" if database.is_file() else ", which does not exist"
    return DEFAULT_SQLITE_URI, (
        f"MLflow's default: {database}{state} (no ./mlruns with experiments here)"
    )


#: Unity Catalog's model registry: MLflow's registry URIs, never a tracking store.
_REGISTRY_ONLY_SCHEMES = ("databricks-uc", "uc")
# "scheme:" as RFC 3986 spells it; a single letter is a Windows drive (C:\mlruns).
_SCHEME = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]+):")


def resolve_store(tracking_uri: str | None = None) -> TrackingStore:
    """Resolve `--tracking-uri`, else MLFLOW_TRACKING_URI, else MLflow's default, and check it."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        uri = default_tracking_uri()
        if uri == DEFAULT_SQLITE_URI and not Path("mlflow.db").is_file():
            raise StoreError(
                f"no MLflow store here: neither ./mlruns with experiments nor ./mlflow.db in "
                f"{Path.cwd()}; run where your store is, or name it with --tracking-uri or "
                "MLFLOW_TRACKING_URI (sqlite:///path/mlflow.db, http://server:5000, ...)"
            )
    if uri.lower() in ("databricks", *_REGISTRY_ONLY_SCHEMES):  # MLflow's bare spellings
        uri = uri.lower()
        scheme = uri
    else:
        found = _SCHEME.match(uri)
        scheme = found.group(1).lower() if found else ""
    base_scheme = scheme.split("+", 1)[0]
    if base_scheme in _REGISTRY_ONLY_SCHEMES:
        raise StoreError(
            f"{redact_uri(uri)} is Unity Catalog's model registry, not a tracking store: use "
            "--tracking-uri databricks (or databricks://PROFILE); MLflow reads its registry from "
            "MLFLOW_REGISTRY_URI"
        )
    if base_scheme == "sqlite":
        return _sqlite_store(uri)
    if scheme in ("", "file") or re.fullmatch(r"[a-zA-Z]", scheme):  # a plain or Windows path
        return _file_store(uri)
    if base_scheme in _DATABASE_SCHEMES:
        return TrackingStore(uri, "database", uri, redact_uri(uri))
    if scheme in ("http", "https"):
        return TrackingStore(uri, "http", uri, redact_uri(uri))
    if scheme.startswith("databricks"):
        return TrackingStore(uri, "databricks", uri, redact_uri(uri))
    return TrackingStore(uri, "other", uri, redact_uri(uri))


def _sqlite_store(uri: str) -> TrackingStore:
    parts = urlsplit(uri)
    raw_path = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
    if parts.netloc or not raw_path or raw_path == ":memory:" or raw_path.startswith("file:"):
        raise StoreError(
            f"{uri!r} is not a SQLite store on disk (expected sqlite:///path/to/mlflow.db)"
        )
    path = Path(raw_path).expanduser().resolve()
    if not path.is_file():
        raise StoreError(
            f"no MLflow store at {path} (from {uri}); MLflow would create an empty database "
            "there, so check the path"
        )
    try:
        with path.open("rb") as handle:
            header = handle.read(len(_SQLITE_MAGIC))
    except OSError as error:
        raise StoreError(f"cannot read {path}: {error.strerror or error}") from None
    if header != _SQLITE_MAGIC:
        raise StoreError(f"{path} is not a SQLite database")
    # SQLAlchemy hands `file:` names with uri=true to SQLite, which then opens the file read-only:
    # any write MLflow might attempt fails instead of changing the store. The `+pysqlite` spelling
    # keeps MLflow from creating a folder named after the URI.
    client_uri = f"sqlite+pysqlite:///file:{quote(str(path))}?mode=ro&uri=true"
    return TrackingStore(uri, "sqlite", client_uri, str(path), path)


def _file_store(uri: str) -> TrackingStore:
    raw = uri
    if uri.startswith("file:"):
        parts = urlsplit(uri)
        raw = unquote(parts.path)
    path = Path(raw).expanduser().resolve()
    if path.is_file():
        hint = f"; did you mean sqlite:///{raw}?" if _looks_like_sqlite(path) else ""
        raise StoreError(f"{path} is a file, not an MLflow ./mlruns store{hint}")
    if not path.is_dir():
        raise StoreError(f"no MLflow store at {path} (from {uri})")
    if not _has_file_store_data(path):
        raise StoreError(f"{path} holds no MLflow experiments (no <id>/meta.yaml)")
    if not (path / ".trash").is_dir():
        raise StoreError(
            f"{path} has no .trash folder and MLflow's file store creates one when opened, which "
            f"would change the store; create it (mkdir {path / '.trash'}) or audit a copy"
        )
    return TrackingStore(uri, "file", path.as_uri(), str(path), path)


def _looks_like_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC
    except OSError:
        return False


# --------------------------------------------------------------------------- schema revision


def read_schema_revision(store: TrackingStore) -> str | None:
    """The alembic revision a SQL store is at, read without writing anything."""
    if store.kind == "sqlite":
        assert store.path is not None
        try:
            connection = sqlite3.connect(f"file:{quote(str(store.path))}?mode=ro", uri=True)
        except sqlite3.DatabaseError as error:
            raise _unreadable_sqlite(store, error) from None
        try:
            return read_sqlite_revision(connection, store)
        finally:
            connection.close()
    if store.kind == "database":
        return _read_database_revision(store)
    return None


def read_sqlite_revision(connection: sqlite3.Connection, store: TrackingStore) -> str | None:
    """The alembic revision of a SQLite store, read on a connection to it (the SQL source's, in
    its read transaction)."""
    try:
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.DatabaseError as error:
        raise _unreadable_sqlite(store, error) from None
    return None if row is None else str(row[0])


def _unreadable_sqlite(store: TrackingStore, error: sqlite3.DatabaseError) -> StoreError:
    message = str(error)
    if "no such table" in message:
        return StoreError(f"{store.display} is not an MLflow tracking database")
    return StoreError(f"{store.display} is not a readable SQLite database: {message}")


#: The package that installs each database driver SQLAlchemy imports, where the names differ.
_DRIVER_PACKAGES = {"MySQLdb": "mysqlclient", "psycopg2": "psycopg2-binary"}


def _read_database_revision(store: TrackingStore) -> str | None:
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(store.uri, pool_pre_ping=False)
    except ModuleNotFoundError as error:
        driver = error.name or "its driver"
        package = _DRIVER_PACKAGES.get(driver, driver)
        raise StoreError(
            f"cannot open {store.display}: SQLAlchemy's driver for it is not installed "
            f"(pip install {package})"
        ) from None
    except Exception as error:
        raise StoreError(f"cannot open {store.display}: {first_line(error)}") from None
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                connection.execute(sqlalchemy.text("SET TRANSACTION READ ONLY"))
            row = connection.execute(
                sqlalchemy.text("SELECT version_num FROM alembic_version")
            ).fetchone()
            connection.rollback()
    except Exception as error:
        raise StoreError(
            f"cannot read the MLflow schema of {store.display}: {first_line(error)}"
        ) from None
    finally:
        engine.dispose()
    return None if row is None else str(row[0])


def installed_mlflow_version() -> str:
    """The installed MLflow's version, from its package metadata: importing MLflow takes
    seconds, and a SQL read of a local store never needs it."""
    from importlib import metadata

    for distribution in ("mlflow", "mlflow-skinny"):
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    import mlflow

    return str(mlflow.__version__)


#: What installs an MLflow whose client opens SQL stores, for the messages that need it.
FULL_MLFLOW_INSTALL = "pip install 'mlflow-audit[mlflow]'"


def mlflow_opens_sql_stores() -> bool:
    """Whether the installed MLflow's client can open SQLite, PostgreSQL and MySQL stores.

    The full `mlflow` package can. mlflow-skinny, which is all the core install has, lacks
    SQLAlchemy and alembic, and MLflow then registers no store for those schemes (it asks
    `find_spec("sqlalchemy")` too). Looked up without importing anything."""
    from importlib.util import find_spec

    return find_spec("sqlalchemy") is not None and find_spec("alembic") is not None


def require_mlflow_sql_client(store: TrackingStore, doing: str) -> None:
    """Refuse in one line, naming the install that fixes it, what would otherwise fail deep in
    MLflow with mlflow-skinny: its client opening a SQL store. ``doing`` says what needed it."""
    if store.kind in ("sqlite", "database") and not mlflow_opens_sql_stores():
        raise StoreError(
            f"{doing} needs the full MLflow package, whose client opens SQL stores "
            f"(mlflow-skinny's cannot): {FULL_MLFLOW_INSTALL}"
        )


@functools.lru_cache(maxsize=1)
def installed_schema_revision() -> str:
    """The schema revision the installed MLflow writes: the head of its alembic migrations.

    Read from the migration scripts of the installed package (their `revision` and
    `down_revision` assignments, parsed, never executed) rather than by importing MLflow, which
    alone costs longer than a SQL read of thousands of runs. Should the package ever not have
    that layout, MLflow's own answer is used.

    With mlflow-skinny alone, no installed MLflow opens a SQL store, let alone writes one, and
    the SQL source is the only reader: the revision it was checked against is returned, so that
    it keeps reading stores (checking each one's tables itself) after an MLflow release whose
    migrations, which mlflow-skinny ships too, name a newer revision."""
    if not mlflow_opens_sql_stores():
        return SCHEMA_REVISION
    versions = _migrations_folder()
    head = _single_head(versions) if versions is not None else None
    if head is not None:
        return head
    from mlflow.store.db.utils import _get_latest_schema_revision

    return str(_get_latest_schema_revision())  # type: ignore[no-untyped-call]


def _migrations_folder() -> Path | None:
    from importlib.util import find_spec

    # find_spec of a top-level package locates it without importing it.
    spec = find_spec("mlflow")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "store/db_migrations/versions"
    return folder if folder.is_dir() else None


def _single_head(versions: Path) -> str | None:
    """The one revision no other revision names as its parent, or None if that is not clear."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in versions.glob("*.py"):
        try:
            assigned = _revision_assignments(script.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            return None
        if assigned is None:
            return None
        if "revision" not in assigned:
            continue  # not a migration (__init__.py)
        if len(assigned["revision"]) != 1:
            return None
        revisions.update(assigned["revision"])
        parents.update(assigned.get("down_revision", ()))
    heads = revisions - parents
    return next(iter(heads)) if len(heads) == 1 else None


# `revision = "x"`, `down_revision: str | None = ("a", "b")`, possibly over several lines. Only
# these two lines are evaluated, and only as literals: parsing every script whole costs 30 ms.
_REVISION_LINE = re.compile(
    r"^(revision|down_revision)\b[^=\n]*=\s*(\([^)]*\)|\[[^\]]*\]|[^\n]*)", re.MULTILINE
)


def _revision_assignments(text: str) -> dict[str, tuple[str, ...]] | None:
    found: dict[str, tuple[str, ...]] = {}
    for name, expression in _REVISION_LINE.findall(text):
        try:
            value = ast.literal_eval(expression.split("#", 1)[0].strip())
        except (ValueError, SyntaxError):
            return None
        if isinstance(value, str):
            found[name] = (value,)
        elif isinstance(value, tuple | list) and all(isinstance(v, str) for v in value):
            found[name] = tuple(value)
        elif value is None:
            found[name] = ()
        else:
            return None
    return found


def check_schema_revision(store: TrackingStore) -> None:
    """Refuse a SQL store whose schema the installed MLflow would migrate when opening it, or
    that the installed MLflow cannot open at all (mlflow-skinny)."""
    if store.kind not in ("sqlite", "database"):
        return
    # The SQL source reads SQLite and PostgreSQL stores without it, except for these two.
    reached = " (--source client)" if store.dialect in ("sqlite", "postgresql") else ""
    require_mlflow_sql_client(store, f"reading {store.display} through MLflow's client{reached}")
    found = read_schema_revision(store)
    expected = installed_schema_revision()
    if found != expected:
        if store.dialect in ("sqlite", "postgresql"):
            # The SQL source reads the tables as they are (audit/sources/sql.py).
            remedy = (
                "`--source sql` (the default for SQLite and PostgreSQL) reads "
                "stores of MLflow 2.9 and later untouched; or audit it with the MLflow version "
                "that wrote it, or audit a copy"
            )
        else:
            remedy = "Audit it with the MLflow version that wrote it, or audit a copy"
        raise StoreError(
            f"{store.display} is at MLflow schema revision {found or 'none'}, but the installed "
            f"MLflow {installed_mlflow_version()} expects {expected} and would migrate the store "
            f"when opening it; an audit never changes the store. {remedy}"
        )
