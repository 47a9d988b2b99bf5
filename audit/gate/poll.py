"""The gate without webhooks: `serve --poll INTERVAL` finds new model versions and alias moves
by reading the registry every INTERVAL seconds, and queues the same work a webhook delivery
would (stores that cannot send webhooks: `./mlruns`, MLflow before 3.3, Databricks' workspace
registry)."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from audit.formats.text import safe_line
from audit.gate.queue import Job, QueueFull, WorkQueue
from audit.gate.statefiles import StateError, write_atomically
from audit.gate.verdict import STATUS

log = logging.getLogger("mlflow_audit.gate")

#: The aliases as last seen, in the state folder: a move is what differs from it.
ALIASES_FILE = "poll-aliases.json"
_MAX_STATE_BYTES = 16 << 20


class Poller:
    """Reads the registry every `interval` seconds and queues a job for each version without a
    verdict and each alias that points elsewhere than when last seen."""

    def __init__(
        self,
        queue: WorkQueue,
        notify: Callable[[], None],
        state: Path,
        registry: Callable[[], Registry],
        interval: float,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.queue = queue
        self._notify = notify
        self.interval = interval
        self._registry = registry
        self._clock = clock
        self._path = state / ALIASES_FILE
        self._aliases = self._load()
        self._queued: set[tuple[str, str]] = set()
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception as error:  # a registry that cannot be read now is read next time
                log.warning("polling the registry failed: %s", safe_line(str(error)))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()

    def poll_once(self) -> int:
        """One look at the registry; the number of jobs queued."""
        queued = 0
        seen: dict[str, str] = {}
        versions, aliases = self._registry()
        for name, version, tags in versions:
            if STATUS not in tags and (name, version) not in self._queued:
                queued += self._submit("model_version.created", {"name": name, "version": version})
                self._queued.add((name, version))
        for name, targets in sorted(aliases.items()):
            for alias, target in sorted(targets.items()):
                key = json.dumps([name, alias])
                seen[key] = target
                if self._aliases.get(key) != target:
                    data = {"name": name, "alias": alias, "version": target}
                    queued += self._submit("model_version_alias.created", data)
        if seen != self._aliases:
            self._aliases = seen
            write_atomically(self._path, json.dumps(seen, sort_keys=True).encode())
        if queued:
            self._notify()
        return queued

    def _submit(self, event: str, data: dict[str, Any]) -> int:
        # Job ids have a fixed shape; model names and aliases do not.
        text = json.dumps([event, data, self._clock()], sort_keys=True)
        job_id = "poll-" + hashlib.sha256(text.encode()).hexdigest()[:40]
        try:
            return int(self.queue.submit(Job(id=job_id, event=event, data=data)))
        except QueueFull:
            log.warning("queue full: %s %s waits for the next poll", event, safe_line(str(data)))
            return 0

    def _load(self) -> dict[str, str]:
        try:
            if not self._path.is_file():
                return {}
            if self._path.stat().st_size > _MAX_STATE_BYTES:
                raise StateError(f"{self._path}: larger than {_MAX_STATE_BYTES} bytes")
            loaded = json.loads(self._path.read_bytes())
        except (OSError, ValueError) as error:
            raise StateError(f"{self._path}: cannot be read ({error})") from None
        if not isinstance(loaded, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in loaded.items()
        ):
            raise StateError(f"{self._path}: not the aliases this gate wrote")
        return loaded


#: What the poller reads: every live version with its tags, and every model's aliases.
Registry = tuple[list[tuple[str, str, dict[str, str]]], dict[str, dict[str, str]]]


def registry_of(tracking_uri: str | None) -> Callable[[], Registry]:
    """A reader of the registry through MLflow's client: ([(name, version, tags)],
    {name: {alias: version}})."""

    def read() -> Registry:
        from mlflow.tracking import MlflowClient

        from audit.sources import resolve_store

        store = resolve_store(tracking_uri)
        client = MlflowClient(tracking_uri=store.uri, registry_uri=store.uri)
        aliases = {
            model.name: {alias: str(v) for alias, v in (model.aliases or {}).items()}
            for model in _pages(client.search_registered_models)
        }
        versions = [
            (v.name, str(v.version), dict(v.tags or {}))
            for v in _pages(client.search_model_versions)
        ]
        return versions, aliases

    return read


def _pages(search: Callable[..., Any]) -> Iterator[Any]:
    token = None
    for _ in range(10_000):  # a registry whose pages never end is not read for ever
        page = search(max_results=1000, page_token=token)
        yield from page
        token = getattr(page, "token", None)
        if not token:
            return
