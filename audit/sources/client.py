"""The source that reads any tracking store through MLflow's public client."""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import os
import threading
import time
import warnings
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import GeneratorType
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar
from urllib.parse import urlsplit

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
    mlflow_logs,
    rest_runs,
)
from audit.sources.artifacts import (
    ArtifactFolder,
    MlflowArtifacts,
    ModelLocation,
    RunFiles,
    is_local,
    no_files,
    read_run_files,
)
from audit.sources.common import (
    RegistryIndex,
    charted_metric_keys,
    describe_http_failure,
    model_id_of,
    runs_that_fit,
)
from audit.sources.store import TrackingStore, check_schema_revision

if TYPE_CHECKING:
    from mlflow.entities import Run

_T = TypeVar("_T")

#: Run ids per `search_logged_models` query (the filter is an IN list).
_LOGGED_MODEL_BATCH = 500
_REGISTRY_PAGE = 1_000
_EXPERIMENT_PAGE = 1_000
#: Concurrent artifact reads from a remote store; below MLflow's HTTP connection pool (10), so
#: that no connection is opened and thrown away per request.
_ARTIFACT_WORKERS = 8
#: Runs per search request through MLflow's client, whatever the store. The client holds a whole
#: page about 20 times over while it builds it (JSON text, dicts, protobuf messages, entities:
#: about 25 KB per run of 10 params, 5 metrics and 6 tags, 290 MB at 6,000 runs; MLflow's
#: maximum of 50,000 took 2.4 GB on a SQLite store), and a tracking server answers nothing until
#: it has built the page (about 5 s per 5,000 runs on 2 cores). Pages above a few thousand runs
#: are no faster (docs/performance.md): at 2,000, an audit of 100,000 runs through the client
#: took as long as at 5,000 and stayed under 450 MB instead of 571 MB.
CLIENT_PAGE_SIZE = 2_000
#: Rows of params, tags and metrics a page through MLflow's client is sized for (judged by the
#: page before; not for `./mlruns` folders, whose store reads every run of the experiments for
#: each page): runs of 10 params, 5 metrics and 6 tags still come 2,000 at a time, while pages
#: of 2,000 runs with 210 params took the audit to 893 MB, and with 2,000 params to 3.0 GB.
CLIENT_PAGE_ROWS = 50_000
#: Runs per search request to a tracking server at most, whose answers are read without MLflow's
#: client (`rest_runs`: a few KB held per run). The server builds a page in one go, and pays per
#: page as well as per run (100,000 runs: 132 s of the server's time in pages of 2,000, 117 s
#: in pages of 5,000, 100 s in pages of 50,000, which take it about 50 s each): 5,000 keeps a
#: page well inside the request timeout. Pages of large runs hold fewer (`_pages_ahead`).
SERVER_PAGE_SIZE = 5_000
#: Runs in the first page asked of a tracking server or through MLflow's client, before the
#: size of its runs and the time it takes for them are known: runs with hundreds of params make
#: pages of 5,000 that a server takes over the 30 s timeout to build; 500 runs with 2,000 params
#: take it 24 s alone and 181 MB (the audit then took 1.1 GB), 100 of them 6 s and 36 MB. A
#: page of 100 ordinary runs is mostly the server's fixed cost (0.11 s, of which 0.06 for any
#: page), which makes its time per run, and so the time-sized pages after it, err on the small
#: side (docs/performance.md).
FIRST_PAGE = 100
#: Bytes of a server's answer a page is sized for (judged by the answers before): a page held
#: as runs takes about three times its size of the process's memory (a 16 MB answer: 54 MB,
#: 75 MB while parsed), and SERVER_REQUESTS of them may wait besides the one in use. The
#: benchmark's runs (10 params, 5 metrics, 6 tags) take 19 MB per 5,000, runs with 200 params
#: 37 MB per 1,000; pages of 16 MB took the 100,000-run audit to 454 to 535 MB, of 12 MB to 416
#: to 433 MB in the same time (docs/performance.md).
SERVER_PAGE_BYTES = 12 * 2**20
#: Search pages asked of a tracking server at once (`_pages_ahead`). A server builds several
#: pages at once on its workers; 100,000 runs in pages of 5,000 from `mlflow server --workers 2`
#: on 2 cores: 129 s one page at a time, 92 s two at a time, 76 s three at a time.
SERVER_REQUESTS = 3
#: The share of the request timeout that pages asked for at once may take each: a server with
#: one worker answers three requests at once in three times the time of one (5,000 runs: 6.5 s
#: alone, 16 to 21 s three at a time), which must not become a timeout that paging one page
#: after the other would not have met. A page alone is sized to take at most a third of it.
SERVER_SECONDS_AHEAD = 2 / 3
#: Each search page on a connection of its own. A kept-alive connection takes every request to
#: the server process that accepted it (or the replica a load balancer chose for it): against
#: `mlflow server --workers 2`, the 100,000-run audit took 90 to 145 s, as its connections
#: happened to land (145 s with one worker doing 98% of the server's work, the other idle);
#: closed after each page, 89 to 93 s, the workers' shares within 10% (docs/performance.md).
#: A connection costs a millisecond or a TLS handshake; a page, seconds.
_A_CONNECTION_EACH_PAGE = {"Connection": "close"}
#: Seconds a request to a tracking server may wait for the server (MLFLOW_HTTP_REQUEST_TIMEOUT,
#: connecting and between bytes of the answer). MLflow's own default is 120 s with 7 retries.
DEFAULT_TIMEOUT = 30

# An audit should fail within a minute or two, not retry for the 10+ minutes MLflow's defaults
# allow: 3 attempts of at most DEFAULT_TIMEOUT seconds each, about 3 s of backoff in between
# (urllib3 sleeps 0 s, then 2 s, plus up to 1 s of jitter), Retry-After honoured on 429 and 503.
# A refused connection fails in about 3 s. Users who set these variables keep their values.
_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": str(DEFAULT_TIMEOUT),
}


class ClientSource:
    """Reads runs with `MlflowClient`: local SQLite, ./mlruns, SQL databases, tracking servers."""

    name = "client"

    def __init__(
        self,
        store: TrackingStore,
        *,
        page_size: int = MAX_PAGE_SIZE,
        timeout: int | None = None,
    ) -> None:
        """`timeout`: seconds each request to a tracking server may wait (default: the
        MLFLOW_HTTP_REQUEST_TIMEOUT variable, else DEFAULT_TIMEOUT)."""
        self.store = store
        self.page_size = max(
            1, min(page_size, SERVER_PAGE_SIZE if store.kind == "http" else CLIENT_PAGE_SIZE)
        )
        if timeout is not None and timeout < 1:
            raise AuditError(f"the timeout must be at least 1 second, not {timeout}")
        self.timeout = timeout
        self._experiment_names: dict[str, str | None] = {}
        self._registry: RegistryIndex | None = None

    # ----------------------------------------------------------------------- public

    def collect(self, selection: Selection, needs: CollectionNeeds) -> Iterator[CollectedRun]:
        with self._session(selection) as logs:
            for collected in self._collect(selection, needs):
                logs.check(self.store.display)
                yield collected
            logs.check(self.store.display)

    @contextlib.contextmanager
    def _session(self, selection: Selection) -> Iterator[mlflow_logs.MlflowLogs]:
        """MLflow's client, opened with the audit's settings, its errors in one line and its
        log lines held back (`logs.check` ends the audit on one that says it skipped data)."""
        with (
            _environment(self._settings()),
            _mlflow_errors(self.store, selection),
            warnings.catch_warnings(),
            mlflow_logs.held() as logs,
        ):
            # Without verification, urllib3 warns on stderr about every new server connection:
            # the user asked for it by name (MLFLOW_TRACKING_INSECURE_TLS).
            warnings.filterwarnings("ignore", message="Unverified HTTPS request")
            self._client = self._open()
            yield logs

    def collect_each(
        self, selection: Selection, needs: CollectionNeeds, finish: Callable[[CollectedRun], _T]
    ) -> Iterator[_T]:
        return map(finish, self.collect(selection, needs))

    def lineage_facts(self, version: ModelVersionRef, parent_run_id: str | None) -> LineageFacts:
        """The registry's facts about a version's model, the metrics other runs linked to its
        logged model, and how many trials the sweep `parent_run_id` ran."""
        selection = Selection(models=(ModelSpec(version.name, version=version.version),))
        with self._session(selection) as logs:
            facts = self._lineage_facts(version, parent_run_id)
            logs.check(self.store.display)
            return facts

    def _lineage_facts(self, version: ModelVersionRef, parent_run_id: str | None) -> LineageFacts:
        client = self._client
        model = client.get_registered_model(version.name)
        aliases: dict[str, list[str]] = {}
        for alias, number in sorted((getattr(model, "aliases", None) or {}).items()):
            aliases.setdefault(str(number), []).append(alias)
        found = list(
            _paged(
                client.search_model_versions,
                filter_string=f"name = {_quote(version.name)}",
                max_results=_REGISTRY_PAGE,
            )
        )
        found.sort(key=lambda v: int(v.version))
        registered = tuple(
            RegistryVersion(
                version=str(v.version),
                run_id=v.run_id or None,
                model_id=getattr(v, "model_id", None) or model_id_of(v.source),
                source=v.source,
                status=v.status,
                stage=v.current_stage,
                description=v.description,
                created=v.creation_timestamp,
                updated=v.last_updated_timestamp,
                registered_by=v.user_id or None,
                aliases=tuple(aliases.get(str(v.version), ())),
                tags=dict(v.tags or {}),
            )
            for v in found
        )
        this = next((v for v in registered if v.version == version.version), None)
        links: tuple[MetricLink, ...] = ()
        if this is not None and this.model_id and hasattr(client, "get_logged_model"):
            logged = client.get_logged_model(this.model_id)
            links = tuple(
                MetricLink(
                    m.key,
                    m.value,
                    m.step,
                    m.timestamp,
                    m.run_id,
                    getattr(m, "dataset_name", None),
                    getattr(m, "dataset_digest", None),
                )
                for m in (logged.metrics or [])
                if getattr(m, "run_id", None)
            )
        trials = None
        if parent_run_id is not None:
            experiment = self._get_run(parent_run_id).info.experiment_id
            trials = sum(
                1
                for _ in _paged(
                    client.search_runs,
                    experiment_ids=[experiment],
                    filter_string=f"tags.mlflow.parentRunId = {_quote(parent_run_id)}",
                    max_results=_REGISTRY_PAGE,
                )
            )
        return LineageFacts(
            name=version.name,
            version=version.version,
            model_description=model.description,
            model_tags=dict(model.tags or {}),
            versions=registered,
            links=links,
            trials=trials,
        )

    # ----------------------------------------------------------------------- setup

    def _settings(self) -> dict[str, str]:
        """MLflow settings for the duration of the audit (restored afterwards)."""
        if self.store.kind == "file":
            # MLflow >= 3.13 refuses ./mlruns stores unless told otherwise; auditing old projects
            # is exactly what they are kept for.
            return {"MLFLOW_ALLOW_FILE_STORE": "true"}
        if self.store.kind in ("http", "databricks"):
            settings = {k: v for k, v in _HTTP_DEFAULTS.items() if k not in os.environ}
            if self.timeout is not None:
                settings["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(self.timeout)
            return settings
        return {}

    def _open(self) -> Any:
        check_schema_revision(self.store)
        from mlflow.tracking import MlflowClient

        # Databricks: MLflow's own choice of registry (Unity Catalog since MLflow 3, or
        # MLFLOW_REGISTRY_URI); elsewhere the registry is the tracking store's.
        registry = None if self.store.kind == "databricks" else self.store.client_uri
        client = MlflowClient(tracking_uri=self.store.client_uri, registry_uri=registry)
        # The first call doubles as the reachability check for servers.
        if self.store.kind == "databricks":
            _within_deadline(lambda: client.search_experiments(max_results=1), self.store)
        else:
            client.search_experiments(max_results=1)
        return client

    # ----------------------------------------------------------------------- selection

    def _collect(self, selection: Selection, needs: CollectionNeeds) -> Iterator[CollectedRun]:
        seen: set[str] = set()
        emitted = 0
        limit = selection.max_runs

        def pages() -> Iterator[list[_Selected]]:
            explicit = [_Selected(self._get_run(r), ("run id",)) for r in selection.run_ids]
            for spec in selection.models:
                for version, alias in self._model_versions(spec):
                    ref = ModelVersionRef(version.name, str(version.version), alias)
                    if not version.run_id:
                        raise SelectionError(
                            f"registered model version {ref} has no source run to audit"
                        )
                    explicit.append(
                        _Selected(self._get_run(version.run_id), (f"model {spec}",), (ref,))
                    )
            if explicit:
                yield _merge_explicit(explicit)
            if selection.searches:
                for page in self._search(selection):
                    yield [_Selected(run, ("search",)) for run in page]

        for page in pages():
            fresh: list[_Selected] = []
            for item in page:
                if item.run.info.run_id in seen:
                    continue
                if limit is not None and emitted + len(fresh) >= limit:
                    break
                seen.add(item.run.info.run_id)
                fresh.append(item)
            for collected in self._collect_page(fresh, needs):
                emitted += 1
                yield collected
            if limit is not None and emitted >= limit:
                return

    def _get_run(self, run_id: str) -> Run:
        from mlflow.exceptions import MlflowException

        try:
            run: Run = self._client.get_run(run_id)
            return run
        except MlflowException as error:
            if _error_code(error) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise SelectionError(f"unknown run id {run_id!r} in {self.store.display}") from None
            raise

    def _model_versions(self, spec: ModelSpec) -> list[tuple[Any, str | None]]:
        from mlflow.exceptions import MlflowException

        unknown = SelectionError(
            f"unknown registered model version {str(spec)!r} in {self.store.display}"
        )
        if not self.store.has_registry_folder:
            # A ./mlruns store without `models/` has no registered model, and MLflow's file
            # registry would create the folder when opened.
            raise unknown
        client = self._client
        try:
            if spec.alias:
                return [(client.get_model_version_by_alias(spec.name, spec.alias), spec.alias)]
            if spec.version and spec.version != "latest":
                return [(client.get_model_version(spec.name, spec.version), None)]
            client.get_registered_model(spec.name)
        except MlflowException as error:
            if _error_code(error) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise unknown from None
            raise
        versions = list(
            _paged(
                client.search_model_versions,
                filter_string=f"name = {_quote(spec.name)}",
                max_results=_REGISTRY_PAGE,
            )
        )
        versions.sort(key=lambda v: int(v.version))
        if not versions:
            raise SelectionError(f"registered model {spec.name!r} has no versions")
        if spec.version == "latest":
            versions = versions[-1:]
        return [(version, None) for version in versions]

    def _experiment_ids(self, selection: Selection) -> list[str]:
        from mlflow.entities import ViewType
        from mlflow.exceptions import MlflowException

        client = self._client
        if not selection.experiments:
            view = ViewType.ALL if selection.include_deleted else ViewType.ACTIVE_ONLY
            experiments = _paged(
                client.search_experiments, view_type=view, max_results=_EXPERIMENT_PAGE
            )
            ids = []
            for experiment in experiments:
                self._experiment_names[experiment.experiment_id] = experiment.name
                ids.append(experiment.experiment_id)
            return ids
        ids = []
        for reference in selection.experiments:
            experiment = client.get_experiment_by_name(reference)
            if experiment is None and reference.isdigit():
                try:
                    experiment = client.get_experiment(reference)
                except MlflowException as error:
                    if _error_code(error) != "RESOURCE_DOES_NOT_EXIST":
                        raise
            if experiment is None:
                raise SelectionError(
                    f"unknown experiment {reference!r} in {self.store.display} "
                    "(give its name or id)"
                )
            self._experiment_names[experiment.experiment_id] = experiment.name
            ids.append(experiment.experiment_id)
        return list(dict.fromkeys(ids))

    def _search(self, selection: Selection) -> Iterator[list[Run]]:
        experiment_ids = self._experiment_ids(selection)
        if not experiment_ids:
            return
        size = self._page_size(selection)
        first = min(size, FIRST_PAGE)
        pages: Iterator[list[Any]]
        if self.store.kind in ("http", "databricks"):
            read, weight = (
                (self._server_page, SERVER_PAGE_BYTES)
                if self.store.kind == "http"
                else (self._client_page, CLIENT_PAGE_ROWS)
            )
            pages = _pages_ahead(
                functools.partial(read, experiment_ids, selection),
                SERVER_REQUESTS,
                selection.max_runs,
                sizes=_PageSizes(first, size, weight),
                seconds_ahead=_request_timeout() * SERVER_SECONDS_AHEAD,
            )
        else:
            sizes = (
                _PageSizes(size, size, 0)
                if self.store.kind == "file"
                else _PageSizes(first, size, CLIENT_PAGE_ROWS)
            )
            pages = _pages_in_turn(
                functools.partial(self._client_page, experiment_ids, selection), sizes
            )
        for page in pages:
            active = [run for run in page if run.info.lifecycle_stage == "active"]
            if len(active) < len(page):
                for run in page:
                    if run.info.lifecycle_stage not in ("active", "deleted"):
                        # Neither selected nor left out by MLflow's own searches: no silent drop.
                        raise StoreError(
                            f"reading {self.store.display} failed: run {run.info.run_id} has the "
                            f"lifecycle stage {run.info.lifecycle_stage!r}, neither active nor "
                            "deleted"
                        )
            if not selection.include_deleted:
                # Searched with deleted runs (see `_client_page`), left out here.
                page = active
            if page:
                yield page

    def _page_size(self, selection: Selection) -> int:
        """No more runs per page than the audit stops at: `--max-runs 10` need not wait for a
        server to build pages of thousands, nor for the next one, asked for ahead."""
        if selection.max_runs is None:
            return self.page_size
        return min(self.page_size, selection.max_runs)

    def _client_page(
        self, experiment_ids: list[str], selection: Selection, token: str | None, size: int
    ) -> _Page:
        """One page of the search through MLflow's client, and the next page's token."""
        from mlflow.entities import ViewType

        # Deleted runs too, whatever the selection: MLflow pages by offset, and a run deleted
        # during the audit would otherwise move every later run back by one, hiding one of them
        # for good. Deleted runs keep their place; `_search` leaves them out.
        page = self._client.search_runs(
            experiment_ids,
            filter_string=selection.filter or "",
            run_view_type=ViewType.ALL,
            max_results=size,
            page_token=token,
        )
        runs = list(page)
        rows = sum(len(r.data.params) + len(r.data.tags) + len(r.data.metrics) for r in runs)
        return _Page(runs, page.token or None, rows)

    def _server_page(
        self, experiment_ids: list[str], selection: Selection, token: str | None, size: int
    ) -> _Page:
        """`_client_page` for a tracking server: the same request through mlflow-skinny's HTTP
        helpers (retries, timeouts, authentication, TLS), the runs read from the JSON without
        protobuf (`rest_runs`: objects with the attributes read of MLflow's Run)."""
        import orjson
        from mlflow.utils.credentials import get_default_host_creds
        from mlflow.utils.rest_utils import http_request, verify_rest_response

        credentials = get_default_host_creds(self.store.client_uri)  # type: ignore[no-untyped-call]
        endpoint = rest_runs.SEARCH_ENDPOINT
        body = rest_runs.search_body(experiment_ids, selection.filter or "", "ALL", size, token)
        response = http_request(  # type: ignore[no-untyped-call]
            credentials, endpoint, "POST", json=body, extra_headers=_A_CONNECTION_EACH_PAGE
        )
        if response.status_code != 200:
            verify_rest_response(response, endpoint)  # MLflow's error for the answer
        # Not verify_rest_response on success: it parses the whole page once more.
        try:
            document = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise rest_runs.MalformedAnswer("runs/search with an answer that is not JSON") from None
        return _Page(
            rest_runs.runs_of(document), rest_runs.next_token(document), len(response.content)
        )

    # ----------------------------------------------------------------------- evidence

    def _collect_page(
        self,
        page: Sequence[_Selected],
        needs: CollectionNeeds,
    ) -> Iterator[CollectedRun]:
        if not page:
            return
        runs = [item.run for item in page]
        logged_models = self._logged_models(runs)
        registry = self._registry_index() if needs.registry else None
        stop = threading.Event()
        read_files: Callable[[Run, Sequence[Any]], RunFiles] = (
            functools.partial(self._run_files, stop=stop) if needs.artifacts else no_files
        )
        models_of_runs = [logged_models.get(run.info.run_id, []) for run in runs]
        # Remote artifact stores answer in parallel; local folders are read faster in one thread.
        remote = needs.artifacts and not all(is_local(run.info.artifact_uri) for run in runs)
        files: Iterator[RunFiles] = (
            _ordered_map(read_files, runs, models_of_runs, workers=_ARTIFACT_WORKERS)
            if remote
            else map(read_files, runs, models_of_runs)
        )
        try:
            for item, run_files in zip(page, files, strict=True):
                run_id = item.run.info.run_id
                facts = self._facts(
                    item.run, logged_models.get(run_id, []), registry, run_files, needs
                )
                record, digest = record_and_digest(facts)
                histories = self._metric_histories(record) if needs.metric_history else {}
                yield CollectedRun(record, item.selected_by, item.versions, histories, digest)
        finally:
            stop.set()
            if isinstance(files, GeneratorType):
                files.close()

    def _metric_histories(
        self, record: Mapping[str, Any]
    ) -> dict[str, tuple[tuple[float, float], ...]]:
        """Every logged value of the run's metrics that have more than one step."""
        keys = charted_metric_keys(record)
        run_id = record["run"]["id"]
        histories = {}
        for key in keys:
            points = tuple(
                (float(m.step), float(m.value))
                for m in self._client.get_metric_history(run_id, key)
            )
            if len(points) > 1:
                histories[key] = points
        return histories

    def _experiment_name(self, experiment_id: str) -> str | None:
        if experiment_id not in self._experiment_names:
            from mlflow.exceptions import MlflowException

            try:
                self._experiment_names[experiment_id] = self._client.get_experiment(
                    experiment_id
                ).name
            except MlflowException:
                self._experiment_names[experiment_id] = None
        return self._experiment_names[experiment_id]

    def _logged_models(self, runs: Sequence[Run]) -> dict[str, list[Any]]:
        """MLflow 3 logged models produced by these runs, fetched in batches, not per run."""
        by_run: dict[str, list[Any]] = {}
        if not hasattr(self._client, "search_logged_models"):
            return by_run
        experiment_ids = sorted({run.info.experiment_id for run in runs})
        run_ids = [run.info.run_id for run in runs]
        for start in range(0, len(run_ids), _LOGGED_MODEL_BATCH):
            batch = run_ids[start : start + _LOGGED_MODEL_BATCH]
            quoted = ", ".join(_quote(run_id) for run_id in batch)
            for model in _paged(
                self._client.search_logged_models,
                experiment_ids=experiment_ids,
                filter_string=f"source_run_id IN ({quoted})",
                max_results=_REGISTRY_PAGE,
            ):
                by_run.setdefault(model.source_run_id, []).append(model)
        # A run can also record models it output without being their source run.
        for run in runs:
            known = {m.model_id for m in by_run.get(run.info.run_id, [])}
            outputs = getattr(getattr(run, "outputs", None), "model_outputs", None) or []
            for output in outputs:
                if output.model_id not in known:
                    by_run.setdefault(run.info.run_id, []).append(
                        self._client.get_logged_model(output.model_id)
                    )
                    known.add(output.model_id)
        return by_run

    def _registry_index(self) -> RegistryIndex:
        if self._registry is None:
            if not self.store.has_registry_folder:
                self._registry = RegistryIndex([], {})
            else:
                client = self._client
                versions = list(_paged(client.search_model_versions, max_results=_REGISTRY_PAGE))
                aliases: dict[tuple[str, str], list[str]] = {}
                for model in _paged(client.search_registered_models, max_results=_REGISTRY_PAGE):
                    for alias, version in (getattr(model, "aliases", None) or {}).items():
                        aliases.setdefault((model.name, str(version)), []).append(alias)
                self._registry = RegistryIndex(versions, aliases)
        return self._registry

    def _facts(
        self,
        run: Run,
        logged_models: Sequence[Any],
        registry: RegistryIndex | None,
        files: RunFiles,
        needs: CollectionNeeds,
    ) -> RunFacts:
        info, data = run.info, run.data
        metric_objects = getattr(data, "_metric_objs", None)
        if metric_objects is not None:
            metrics = [MetricFacts(m.key, m.value, m.step, m.timestamp) for m in metric_objects]
        else:
            metrics = [MetricFacts(k, v, None, None) for k, v in data.metrics.items()]
        datasets = []
        inputs = getattr(run, "inputs", None)
        for dataset_input in getattr(inputs, "dataset_inputs", None) or []:
            dataset = dataset_input.dataset
            context = next(
                (t.value for t in dataset_input.tags or [] if t.key == "mlflow.data.context"), None
            )
            datasets.append(
                DatasetFacts(
                    name=dataset.name,
                    digest=dataset.digest,
                    source_type=dataset.source_type,
                    source=dataset.source,
                    schema=dataset.schema,
                    profile=dataset.profile,
                    context=context,
                )
            )
        models = [
            LoggedModelFacts(
                model_id=model.model_id,
                name=model.name,
                status=_enum_name(model.status),
                creation_time=model.creation_timestamp,
                metrics=tuple(
                    ModelMetricFacts(m.key, m.value, m.step, m.dataset_name, m.dataset_digest)
                    for m in (model.metrics or [])
                    if m.run_id in (None, info.run_id)
                ),
                files=files.models.get(model.model_id),
            )
            for model in logged_models
        ]
        versions = (
            registry.for_run(info.run_id, [m.model_id for m in logged_models]) if registry else []
        )
        return RunFacts(
            run_id=info.run_id,
            run_name=info.run_name,
            experiment_id=info.experiment_id,
            experiment_name=self._experiment_name(info.experiment_id),
            status=info.status,
            start_time=info.start_time,
            end_time=info.end_time,
            user=info.user_id,
            lifecycle_stage=info.lifecycle_stage,
            params=dict(data.params),
            metrics=metrics,
            tags=dict(data.tags),
            datasets=datasets,
            logged_models=models,
            registered_versions=versions,
            run_files=files.run,
            history_model_files=files.history,
            artifacts_read=needs.artifacts,
        )

    # ----------------------------------------------------------------------- artifacts

    def _run_files(
        self, run: Run, logged_models: Sequence[Any], *, stop: threading.Event
    ) -> RunFiles:
        """Environment files of the run root, of each 2.x model folder and of each logged model."""
        return read_run_files(
            _Stoppable(MlflowArtifacts(self.store), stop),
            run.info.run_id,
            run.info.artifact_uri,
            run.data.tags,
            [
                ModelLocation(m.model_id, m.artifact_location, _enum_name(m.status))
                for m in logged_models
            ],
        )


# --------------------------------------------------------------------------- helpers


class _Stopped(Exception):
    """The audit ended (failed or stopped reading) while this read was still queued."""


class _Stoppable:
    """Artifact stores that start no request once `stop` is set: a read already running when
    the audit fails ends with its request, instead of going on to the run's next files under
    MLflow's defaults of minutes of retries, restored by then, while the process waits for it."""

    def __init__(self, stores: MlflowArtifacts, stop: threading.Event) -> None:
        self._stores = stores
        self._stop = stop

    def missing(self, uri: str | None) -> bool:
        return self._stores.missing(uri)

    def open(self, uri: str | None) -> ArtifactFolder:
        self._check()
        folder = self._stores.open(uri)
        stoppable = self

        class Folder:
            def list_artifacts(self, path: str | None = None) -> Iterable[Any]:
                stoppable._check()
                return folder.list_artifacts(path)

            def read_head(self, path: str, limit: int) -> bytes:
                stoppable._check()
                return folder.read_head(path, limit)

        return Folder()

    def _check(self) -> None:
        if self._stop.is_set():
            raise _Stopped


@dataclass(frozen=True)
class _Selected:
    """A run the selection reached, and how."""

    run: Run
    selected_by: tuple[str, ...]
    versions: tuple[ModelVersionRef, ...] = ()


class _Page(NamedTuple):
    """A page of a search: its runs, the next page's token (None after the last page), and what
    it weighs in the unit its pages are sized by (`_PageSizes.weight`): the bytes of a server's
    answer, or the rows (params, tags and metrics) of the runs MLflow's client read."""

    runs: list[Any]
    token: str | None
    weight: int = 0


def _merge_explicit(items: list[_Selected]) -> list[_Selected]:
    """One entry per run, keeping every way the selection reached it."""
    merged: dict[str, _Selected] = {}
    for item in items:
        key = item.run.info.run_id
        previous = merged.get(key)
        if previous is not None:
            item = _Selected(
                item.run,
                tuple(dict.fromkeys(previous.selected_by + item.selected_by)),
                tuple(dict.fromkeys(previous.versions + item.versions)),
            )
        merged[key] = item
    return list(merged.values())


def _pages_in_turn(
    fetch: Callable[[str | None, int], _Page],
    sizes: _PageSizes,
    progress: _Progress | None = None,
) -> Iterator[list[Any]]:
    """Every non-empty page of a search, each asked for once the one before has been used:
    `sizes.first` runs in the first, then as many as `_weighed` allows. `progress` (by default
    over runs) ends a search that would go on for ever."""
    token = None
    size = sizes.first
    progress = progress or _Progress()
    while True:
        page = fetch(token, size)
        progress.check(token, page)
        token = page.token
        size = _weighed(page, sizes, sizes.largest)
        if page.runs:
            yield page.runs
        if token is None:
            return


def _weighed(page: _Page, sizes: _PageSizes, largest: int) -> int:
    """Runs in the page after `page`: up to `largest`, and as many as fit in `sizes.weight` by
    the weight per run of `page`."""
    return runs_that_fit(sizes.weight, len(page.runs), page.weight, largest)


class _Progress:
    """What would make a search page for ever: a next page token given before (the pages go
    round in a circle), one of MLflow's offset tokens that does not move past the page it came
    with, or pages in a row holding no run the search had not had (MLflow's offset pages repeat
    a run for each run started during the audit, whole pages only when as many are started
    between two requests). Checked on each page used, with the token it was asked with."""

    #: Pages in a row without a new run before the search is given up.
    STALE_PAGES = 10

    def __init__(self, identity: Callable[[Any], Hashable] = lambda run: run.info.run_id) -> None:
        self._identity = identity
        self._tokens: set[str] = set()
        self._runs: set[Hashable] = set()
        self._stale = 0

    def check(self, asked: str | None, page: _Page) -> None:
        token = page.token
        if token is not None:
            if token in self._tokens:
                raise rest_runs.MalformedAnswer(
                    "runs/search with a next page token it gave before: its pages go round in "
                    "a circle"
                )
            self._tokens.add(token)
            start = 0 if asked is None else rest_runs.offset_of(asked)
            end = rest_runs.offset_of(token)
            if start is not None and end is not None and end <= start:
                raise rest_runs.MalformedAnswer(
                    f"runs/search with a next page token at offset {end} for the page at offset "
                    f"{start}: its pages do not move on"
                )
        known = len(self._runs)
        self._runs.update(map(self._identity, page.runs))
        self._stale = 0 if len(self._runs) > known else self._stale + 1
        if token is not None and self._stale >= self.STALE_PAGES:
            raise rest_runs.MalformedAnswer(
                f"runs/search with {self._stale} pages in a row that held no run it had not "
                "answered before: its pages do not move on"
            )


class _PageSizes(NamedTuple):
    """Runs per page of a search: in the first page; at most; and the weight a page is sized for
    (`_Page.weight`; 0: none)."""

    first: int
    largest: int
    weight: int


def _pages_ahead(
    fetch: Callable[[str | None, int], _Page],
    requests: int,
    limit: int | None,
    *,
    sizes: _PageSizes,
    seconds_ahead: float,
    progress: _Progress | None = None,
) -> Iterator[list[Any]]:
    """Every non-empty page of a search, in order, while the server builds the next ones.

    A server builds a page in one go (seconds for thousands of runs) and can build several at
    once, but a page token comes only with the page before. MLflow's stores spell a token as
    the offset its page starts at: once the server has answered a page with a token spelled
    exactly so (`rest_runs.offset_of`), the following pages are asked for with the tokens of
    the following offsets, `requests` at a time, each starting where the one before ends, and
    every answer is checked: its own next token must be the one the page after it was asked
    with, else the pages asked for ahead are dropped and the search goes on from the server's
    token. With any other tokens, one page is asked for ahead. No page starting at or after
    `limit` runs (--max-runs) is asked for ahead.

    Pages are sized by what the answers before showed: `sizes.first` runs in the first page,
    asked for alone; then as many as fit in `sizes.weight` (by the weight per run of the last
    answer: its bytes, or its rows) and as the server would answer alone in a `requests`th of
    `seconds_ahead` (by the first page's time per run), up to `sizes.largest` or the fewest runs
    the server answered for a full page. Were the server to build pages one after the other,
    `requests` of them at once would then each be answered within `seconds_ahead`; after an
    answer over that time one fewer is asked for at once, after one fast enough for it one
    more. At most `requests` pages are held beyond the one in use; an error fetching a page is
    raised where that page would be. `progress` (by default over runs) checks each page used,
    and ends a search that would go on for ever.
    """

    def timed(token: str | None, size: int) -> tuple[_Page, float]:
        start = time.monotonic()
        return fetch(token, size), time.monotonic() - start

    with ThreadPoolExecutor(max_workers=requests, thread_name_prefix="mlflow-audit-search") as pool:
        pending: collections.deque[_Asked] = collections.deque()

        def ask(token: str | None, size: int) -> None:
            pending.append(_Asked(token, size, pool.submit(timed, token, size)))

        largest = sizes.largest
        size = min(sizes.first, largest)
        ask(None, size)
        by_time = requests
        seconds_per_run = 0.0
        progress = progress or _Progress()
        try:
            while pending:
                asked = pending.popleft()
                page, seconds = asked.answer.result()
                progress.check(asked.token, page)
                runs, token = page.runs, page.token
                if token is None or (pending and pending[0].token != token):
                    for each in pending:
                        each.answer.cancel()  # those running already finish unused
                    pending.clear()
                if token is not None:
                    span = _page_span(asked.token, token)
                    if span is not None and span < asked.size:
                        largest = span  # the server's own limit on runs per page
                    if runs and asked.token is None:
                        # The first page, asked for alone: the server's time per run.
                        seconds_per_run = seconds / len(runs)
                    size = _weighed(page, sizes, largest)
                    if seconds_per_run:
                        # Were the server to build pages one after the other, `requests` of
                        # them at once would each be answered within seconds_ahead.
                        size = min(size, int(seconds_ahead / requests / seconds_per_run))
                    size = max(1, size)
                    if asked.token is not None:
                        if seconds > seconds_ahead:
                            by_time = max(1, by_time - 1)  # slower than that after all
                        elif seconds * (by_time + 1) <= seconds_ahead:
                            # Fast enough for one more: no page takes the server less time
                            # than its answer took.
                            by_time = min(requests, by_time + 1)
                    if not pending:
                        ask(token, size)
                    last = pending[-1]
                    following = rest_runs.offset_of(last.token)
                    while (
                        span is not None
                        and following is not None
                        and len(pending) < by_time
                        and (limit is None or following + last.size < limit)
                    ):
                        following += last.size
                        ask(rest_runs.offset_token(following), size)
                        last = pending[-1]
                if runs:
                    yield runs
        finally:
            for each in pending:
                each.answer.cancel()


class _Asked(NamedTuple):
    """A page asked for: the token and page size it was asked with, the answer to come with
    the seconds it took."""

    token: str | None
    size: int
    answer: Future[tuple[_Page, float]]


def _within_deadline(call: Callable[[], object], store: TrackingStore) -> None:
    """`call`, given as long as three requests may take. The Databricks SDK, which MLflow asks
    for the workspace's credentials, retries an unreachable host for 5 minutes whatever
    MLFLOW_HTTP_REQUEST_* say; past the deadline the audit stops (the thread is a daemon)."""
    deadline = 3 * _request_timeout() + 5
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as error:  # re-raised below, in the audit's thread
            outcome.append(error)

    worker = threading.Thread(target=run, name="databricks-sign-in", daemon=True)
    worker.start()
    worker.join(deadline)
    if not outcome:
        raise StoreError(
            f"cannot reach Databricks ({store.display}): no answer within {deadline:g} s "
            "(--timeout sets the seconds per request)"
        )
    if outcome[0] is not None:
        raise outcome[0]


def _request_timeout() -> float:
    """Seconds a request may wait for the server, as MLflow's HTTP helpers read them."""
    try:
        return float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT") or DEFAULT_TIMEOUT)
    except ValueError:
        return DEFAULT_TIMEOUT


def _page_span(asked: str | None, token: str) -> int | None:
    """How many offsets a page asked for with `asked` spans, given the token that came with it;
    None unless both are offset tokens (`rest_runs.offset_of`)."""
    start = 0 if asked is None else rest_runs.offset_of(asked)
    end = rest_runs.offset_of(token)
    if start is None or end is None or end <= start:
        return None
    return end - start


def _ordered_map(
    function: Callable[..., _T], *iterables: Iterable[Any], workers: int
) -> Iterator[_T]:
    """`function` over the items, `workers` calls at a time, results in the items' order.

    Only a few calls run ahead of the consumer, so that when one fails (a server gone, an
    unreadable artifact) or the consumer stops, the audit does not first wait for a whole page
    of requests to a server that no longer answers: calls not started yet are cancelled, and
    the few running ones are waited for, so that no thread outlives the audit.
    """
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mlflow-audit-artifacts")
    arguments = zip(*iterables, strict=True)
    pending: collections.deque[Future[_T]] = collections.deque(
        pool.submit(function, *item) for item in itertools.islice(arguments, 2 * workers)
    )
    try:
        while pending:
            result = pending.popleft().result()
            pending.extend(pool.submit(function, *item) for item in itertools.islice(arguments, 1))
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _paged(search: Callable[..., Any], **arguments: Any) -> Iterator[Any]:
    """Every item of an MLflow search, page by page; `MalformedAnswer` for a page token given
    before, or for `_Progress.STALE_PAGES` pages in a row with nothing new under fresh tokens:
    either would page for ever."""
    token = None
    given: set[str] = set()
    seen: set[str] = set()
    stale = 0
    name = getattr(search, "__name__", "a search")
    while True:
        page = search(page_token=token, **arguments)
        known = len(seen)
        for item in page:
            seen.add(_item_identity(item))
            yield item
        stale = 0 if len(seen) > known else stale + 1
        token = getattr(page, "token", None)
        if not token:
            return
        if token in given:
            raise rest_runs.MalformedAnswer(
                f"{name} with a next page token it gave before: its pages go round in a circle"
            )
        if stale >= _Progress.STALE_PAGES:
            raise rest_runs.MalformedAnswer(
                f"{name} with {stale} pages in a row that held nothing it had not answered "
                "before: its pages do not move on"
            )
        given.add(token)


def _item_identity(item: Any) -> str:
    """What tells an experiment, a registered model, a version, a logged model or a run
    apart."""
    keys = ("experiment_id", "model_id", "name", "version")
    run_id = getattr(getattr(item, "info", None), "run_id", None)
    return repr([type(item).__name__, run_id, *(getattr(item, key, None) for key in keys)])


def _quote(value: str) -> str:
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise SelectionError(f"cannot search for {value!r}: it contains both quote characters")


def _enum_name(value: Any) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "value", value))


def _error_code(error: Exception) -> str:
    return str(getattr(error, "error_code", ""))


@contextlib.contextmanager
def _environment(settings: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _mlflow_errors(store: TrackingStore, selection: Selection) -> Iterator[None]:
    """Turn MLflow's exceptions into one-line audit errors (exit 2)."""
    try:
        yield
    except AuditError:
        raise
    except Exception as error:
        from mlflow.exceptions import MlflowException

        if isinstance(error, rest_runs.MalformedAnswer):
            if store.kind in ("http", "databricks"):
                raise StoreError(f"the tracking server {store.display} answered {error}") from None
            raise StoreError(f"reading {store.display} failed: MLflow answered {error}") from None
        message = first_line(error)
        if isinstance(error, MlflowException):
            code = _error_code(error)
            if (
                code == "INVALID_PARAMETER_VALUE"
                and selection.filter
                and ("filter" in message.lower() or "invalid" in message.lower())
            ):
                raise SelectionError(f"invalid --filter {selection.filter!r}: {message}") from None
        if store.kind == "databricks" and "credential" in message.lower():
            raise StoreError(_databricks_sign_in(store)) from None
        failure = describe_http_failure(error) if store.kind in ("http", "databricks") else None
        if failure is not None:
            where = f" ({failure.endpoint})" if failure.endpoint else ""
            if failure.unreachable:
                raise StoreError(
                    f"cannot reach the tracking server {store.display}{where}: {failure.reason}"
                ) from None
            raise StoreError(
                f"the tracking server {store.display} failed{where}: {failure.reason}"
            ) from None
        raise StoreError(f"reading {store.display} failed: {message}") from None


def _databricks_sign_in(store: TrackingStore) -> str:
    """What a Databricks tracking URI needs, when MLflow found no credentials for it."""
    profile = urlsplit(store.client_uri).netloc.partition(":")[0].rpartition("@")[2]
    where = f"profile {profile!r} in" if profile else "a DEFAULT profile in"
    login = f" --profile {profile}" if profile else ""
    return (
        f"cannot sign in to Databricks ({store.display}): no credentials found; set "
        f"DATABRICKS_HOST and DATABRICKS_TOKEN, or add {where} ~/.databrickscfg "
        f"(databricks auth login{login})"
    )
