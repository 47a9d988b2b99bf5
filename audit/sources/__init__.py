"""Sources: where evidence records come from.

A source reads runs from one tracking store and yields one `CollectedRun` per selected run. The
MLflow client source works for every store MLflow supports; the direct read-only SQL source reads
SQLite and PostgreSQL stores, much faster, with identical records (`open_source` chooses).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from audit.errors import SelectionError
from audit.sources.store import TrackingStore, resolve_store

if TYPE_CHECKING:
    from audit.lineage import LineageFacts

__all__ = [
    "CollectedRun",
    "CollectionNeeds",
    "ModelSpec",
    "Selection",
    "Source",
    "TrackingStore",
    "open_source",
    "resolve_store",
]

T = TypeVar("T")

#: MLflow's largest page for `search_runs` (SEARCH_MAX_RESULTS_THRESHOLD).
MAX_PAGE_SIZE = 50_000
#: Metric histories read per run for a report's charts; more would not be read by anyone.
MAX_CHARTED_METRICS = 24


@dataclass(frozen=True)
class ModelSpec:
    """A registered model selection: ``NAME`` (every version), ``NAME/VERSION``,
    ``NAME/latest`` or ``NAME@ALIAS``."""

    name: str
    version: str | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        spec = text.strip()
        if "@" in spec:
            name, _, alias = spec.rpartition("@")
            if name and alias:
                return cls(name=name, alias=alias)
        match = re.fullmatch(r"(?P<name>.+)/(?P<version>[0-9]+|latest)", spec)
        if match:
            return cls(name=match["name"], version=match["version"])
        if not spec or spec.endswith(("/", "@")):
            raise SelectionError(
                f"--model {text!r} is not NAME, NAME/VERSION, NAME/latest or NAME@ALIAS"
            )
        return cls(name=spec)

    def __str__(self) -> str:
        if self.alias:
            return f"{self.name}@{self.alias}"
        return f"{self.name}/{self.version}" if self.version else self.name


@dataclass(frozen=True)
class Selection:
    """Which runs to audit.

    Runs named by ``run_ids`` and the source runs of ``models`` are audited as given. A search
    (``experiments``, ``filter``) runs when either is given, or when nothing else is: then it
    covers every active experiment. ``include_deleted`` adds deleted runs and experiments to the
    search. Runs are deduplicated by id; ``max_runs`` stops the audit after that many.
    """

    experiments: tuple[str, ...] = ()
    run_ids: tuple[str, ...] = ()
    models: tuple[ModelSpec, ...] = ()
    filter: str | None = None
    include_deleted: bool = False
    max_runs: int | None = None

    @property
    def searches(self) -> bool:
        return bool(self.experiments or self.filter or not (self.run_ids or self.models))

    def describe(self) -> str:
        parts: list[str] = []
        if self.experiments:
            parts.append("experiments " + ", ".join(repr(e) for e in self.experiments))
        elif self.searches:
            parts.append(
                "all active experiments" if not self.include_deleted else "all experiments"
            )
        if self.filter:
            parts.append(f"filter {self.filter!r}")
        if self.run_ids:
            parts.append("run ids " + ", ".join(self.run_ids))
        if self.models:
            parts.append("models " + ", ".join(str(m) for m in self.models))
        if self.include_deleted:
            parts.append("including deleted runs")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "experiments": list(self.experiments),
            "run_ids": list(self.run_ids),
            "models": [str(m) for m in self.models],
            "filter": self.filter,
            "include_deleted": self.include_deleted,
            "max_runs": self.max_runs,
        }


@dataclass(frozen=True)
class CollectionNeeds:
    """What a policy looks at beyond the run itself. Artifacts and the model registry cost extra
    round trips per run, so they are read only when the policy needs them."""

    artifacts: bool = True
    registry: bool = True
    #: Every logged value of each metric, for the charts of a report; not part of the evidence
    #: record (a gate never needs it, and it is one more read per metric).
    metric_history: bool = False


@dataclass(frozen=True)
class ModelVersionRef:
    name: str
    version: str
    alias: str | None = None

    def __str__(self) -> str:
        suffix = f" (@{self.alias})" if self.alias else ""
        return f"{self.name}/{self.version}{suffix}"


@dataclass(frozen=True)
class CollectedRun:
    """One run's evidence record and how the selection reached it."""

    record: Mapping[str, Any]
    selected_by: tuple[str, ...] = ()
    model_versions: tuple[ModelVersionRef, ...] = field(default_factory=tuple)
    #: metric key -> (step, value) points, when `CollectionNeeds.metric_history` asked for them.
    metric_histories: Mapping[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)
    #: The record's sha256 (`audit.evidence.sha256_hex`), when the source computed it already.
    evidence_sha256: str | None = None


class Source(Protocol):
    name: str
    store: TrackingStore

    def collect(self, selection: Selection, needs: CollectionNeeds) -> Iterator[CollectedRun]:
        """Yield one collected run per selected run; raise AuditError if the audit cannot
        complete."""
        ...

    def collect_each(
        self, selection: Selection, needs: CollectionNeeds, finish: Callable[[CollectedRun], T]
    ) -> Iterator[T]:
        """`collect`, each run passed through `finish` where it was built: in the worker
        processes of a large SQL audit, so that only what `finish` returns crosses processes.
        `finish` must not depend on state it changes: each worker has its own copy."""
        ...

    def lineage_facts(self, version: ModelVersionRef, parent_run_id: str | None) -> LineageFacts:
        """What the registry holds about a version's model, the metrics runs linked to the
        version's logged model, and the number of trials of the sweep `parent_run_id`."""
        ...


def open_source(
    store: TrackingStore,
    *,
    page_size: int = MAX_PAGE_SIZE,
    prefer: str = "auto",
    timeout: int | None = None,
) -> Source:
    """The source for a store.

    ``prefer="auto"`` reads a SQLite or PostgreSQL store with SQL (`SqlSource`: several times
    faster than MLflow's client, and MLflow is not even imported when the artifacts are local
    files) and every other store through MLflow's client (`ClientSource`). A SQL store goes
    through the client too when the installed MLflow writes another schema revision than the
    one the SQL source was verified against, or, for PostgreSQL, when psycopg is not installed.
    Both sources select the same runs (a ``filter`` too: the SQL source writes MLflow's search
    as MLflow's SQL store does) and give identical evidence records. A store written by an
    older MLflow (2.9 on) is read by the SQL source as it is; the client source refuses it,
    since MLflow's client would migrate it.

    ``timeout`` bounds each request to a tracking server (`ClientSource`).

    ``prefer="client"`` always uses the client; ``prefer="sql"`` insists on SQL and is an
    error where it cannot be used.

    The core install has mlflow-skinny, whose client opens no SQL store: there the SQL source
    reads SQLite and PostgreSQL stores whichever MLflow release is installed, and the client
    source refuses a SQL store in one line that names the `mlflow` extra
    (`store.check_schema_revision`).
    """
    from audit.errors import AuditError

    if prefer not in ("auto", "sql", "client"):
        raise AuditError(f"unknown source {prefer!r}: auto, sql or client")
    if prefer != "client":
        from audit.sources.sql import SqlSource, check_sql_usable

        try:
            check_sql_usable(store)
        except AuditError:
            if prefer == "sql":
                raise
        else:
            return SqlSource(store, page_size=page_size)
    from audit.sources.client import ClientSource

    return ClientSource(store, page_size=page_size, timeout=timeout)
