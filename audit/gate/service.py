"""The registry gate as a service: MLflow's webhook deliveries in, verdicts on model versions
out. `mlflow-audit serve` runs it behind uvicorn (`create_app`; FastAPI and uvicorn come with
mlflow-skinny, and only `serve` imports this module). The work happens in one worker thread,
from a persistent queue, so a delivery is answered at once and a killed process picks its work
up again on the next start.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import JSONResponse, PlainTextResponse

from audit.errors import AuditError
from audit.formats.text import safe_line
from audit.gate.deliveries import DeliveryRejected, SeenDeliveries, check_delivery
from audit.gate.poll import Poller
from audit.gate.queue import Job, QueueFull, WorkQueue
from audit.gate.statefiles import StateError
from audit.gate.verdict import PREFIX, Verdict

if TYPE_CHECKING:
    from audit.policy import Policy
    from audit.systemcard import SystemCard

log = logging.getLogger("mlflow_audit.gate")

#: The events the gate acts on, as MLflow names them.
EVENTS = ("model_version.created", "model_version_alias.created", "model_version_tag.set")


@dataclass
class GateSettings:
    """What the service audits with and where it keeps its state."""

    state: Path
    secrets: Sequence[str]
    tracking_uri: str | None = None
    policy: str | None = None
    #: The system card, read when the service starts (a bad one stops it there).
    system_card: SystemCard | None = None
    source: str = "auto"
    timeout: int | None = None
    #: The alias ledger, and the key its entries are signed with (both or neither).
    ledger: Path | None = None
    key: Any = None
    #: Where each version's documentation goes (a folder per version), signed with `key`
    #: when there is one.
    docs: Path | None = None


@dataclass
class Metrics:
    """Counters for /metrics, in Prometheus' text format."""

    deliveries: Counter[str] = field(default_factory=Counter)
    audits: Counter[str] = field(default_factory=Counter)
    failures: int = 0
    latency_sum: float = 0.0
    latency_count: int = 0

    def text(self, queue_depth: int, dead: int) -> str:
        lines = [
            "# HELP mlflow_audit_deliveries_total Webhook deliveries, by outcome.",
            "# TYPE mlflow_audit_deliveries_total counter",
            *(
                f'mlflow_audit_deliveries_total{{outcome="{outcome}"}} {count}'
                for outcome, count in sorted(self.deliveries.items())
            ),
            "# HELP mlflow_audit_audits_total Model versions audited, by verdict status.",
            "# TYPE mlflow_audit_audits_total counter",
            *(
                f'mlflow_audit_audits_total{{status="{status}"}} {count}'
                for status, count in sorted(self.audits.items())
            ),
            "# HELP mlflow_audit_failures_total Jobs that failed an attempt.",
            "# TYPE mlflow_audit_failures_total counter",
            f"mlflow_audit_failures_total {self.failures}",
            "# HELP mlflow_audit_queue_depth Jobs pending or running.",
            "# TYPE mlflow_audit_queue_depth gauge",
            f"mlflow_audit_queue_depth {queue_depth}",
            "# HELP mlflow_audit_dead_letters Jobs given up on.",
            "# TYPE mlflow_audit_dead_letters gauge",
            f"mlflow_audit_dead_letters {dead}",
            "# HELP mlflow_audit_audit_seconds Time to audit a version and record its verdict.",
            "# TYPE mlflow_audit_audit_seconds summary",
            f"mlflow_audit_audit_seconds_sum {self.latency_sum:.6f}",
            f"mlflow_audit_audit_seconds_count {self.latency_count}",
        ]
        return "\n".join(lines) + "\n"


class Gate:
    """Receives deliveries and does their work. `receive` is called by the web app's threads;
    `run` is the one worker."""

    def __init__(
        self,
        settings: GateSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._clock = clock
        # The queue first: its lock guards the state folder for the seen deliveries too.
        self.queue = WorkQueue(settings.state, clock=clock)
        self.seen = SeenDeliveries(settings.state, clock=clock)
        self.metrics = Metrics()
        self._stop = threading.Event()
        #: Set when a job is queued, so that the worker starts on it at once.
        self._work = threading.Event()
        self._policy: Policy | None = None

    # ----------------------------------------------------------------------- receiving

    def receive(self, headers: Mapping[str, str], body: bytes) -> tuple[int, str]:
        """The HTTP status and a one-line answer for one delivery."""
        if not self.settings.secrets:
            return 404, "webhooks are off: this gate polls the registry (serve --poll)"
        try:
            delivery = check_delivery(
                headers, body, self.settings.secrets, self._clock(), self.seen
            )
        except DeliveryRejected as rejected:
            self.metrics.deliveries[f"rejected_{rejected.status}"] += 1
            log.warning("delivery rejected (%s): %s", rejected.status, safe_line(rejected.reason))
            return rejected.status, rejected.reason
        if self.seen.accepted(delivery.id):
            self.metrics.deliveries["repeated"] += 1
            return 200, f"delivery {delivery.id} already queued"
        if delivery.event == "model_version_tag.set" and str(
            delivery.data.get("key", "")
        ).startswith(PREFIX):
            # The gate's own verdict tags: nothing changed in the evidence.
            self.seen.remember(delivery)
            self.metrics.deliveries["ignored"] += 1
            return 200, f"delivery {delivery.id}: the gate's own tag, ignored"
        try:
            self.queue.submit(Job.of(delivery))
        except (QueueFull, StateError) as full:
            self.metrics.deliveries["refused"] += 1
            return 503, f"delivery {delivery.id} not queued: {full}"
        self.seen.remember(delivery)
        self.metrics.deliveries["accepted"] += 1
        self._work.set()
        return 202, f"delivery {delivery.id} queued"

    def notify(self) -> None:
        """A job was queued from elsewhere (the poller): start on it."""
        self._work.set()

    # ----------------------------------------------------------------------- working

    def run(self) -> None:
        """Take jobs until `stop`; a job cut short by stopping goes back to the queue."""
        while not self._stop.is_set():
            self._work.clear()
            if not self.work_once():
                wait = self.queue.due_in()
                # Woken at once by a new job (or by stopping); else when a retry is due.
                self._work.wait(min(wait if wait is not None else 5.0, 5.0))

    def stop(self) -> None:
        self._stop.set()
        self._work.set()

    def work_once(self) -> bool:
        """Do the next due job, if any; whether there was one."""
        job = self.queue.next()
        if job is None:
            return False
        try:
            started = time.perf_counter()
            status = self._do(job)
        except Exception as error:  # every failure is retried, then dead-lettered
            self.metrics.failures += 1
            delay = self.queue.failed(job.id, f"{type(error).__name__}: {error}")
            log.warning(
                "job %s failed (%s); %s",
                job.id,
                safe_line(str(error)),
                f"retried in {delay:g} s" if delay is not None else "given up (dead letter)",
            )
        else:
            self.metrics.latency_sum += time.perf_counter() - started
            self.metrics.latency_count += 1
            if status:
                self.metrics.audits[status] += 1
            self.queue.done(job.id)
        return True

    def _do(self, job: Job) -> str | None:
        data = job.data
        name, version = str(data["name"]), str(data["version"])
        if job.event not in EVENTS:
            return None
        verdict = self._audit_and_record(name, version)
        if job.event == "model_version_alias.created" and self.settings.ledger is not None:
            self._record_move(name, str(data["alias"]), version, verdict)
        return verdict.status

    def _record_move(self, name: str, alias: str, version: str, verdict: Verdict) -> None:
        """Append the alias move to the ledger with the new version's verdict, unless the
        ledger's last entry for the alias records it already (a job run again after a kill)."""
        from datetime import datetime, timezone

        from audit.ledger import append_entry, read_entries

        ledger = self.settings.ledger
        assert ledger is not None
        before = None
        if ledger.exists():
            for _, entry, _ in read_entries(ledger):
                if entry is not None and (entry.model, entry.alias) == (name, alias):
                    before = entry.new_version
        if before == version:
            return
        moved_at = datetime.fromtimestamp(self._clock(), timezone.utc)
        append_entry(
            ledger,
            {
                "model": name,
                "alias": alias,
                "old_version": before,
                "new_version": version,
                "moved_at": moved_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "verdict": dataclasses.asdict(verdict),
            },
            self.settings.key,
        )

    def _audit_and_record(self, name: str, version: str) -> Verdict:
        from audit.gate.judge import audit_version, record_verdict

        settings = self.settings
        if self._policy is None:
            from audit.policy import load_policy

            self._policy = load_policy(settings.policy)  # once, not per version
        verdict, _ = audit_version(
            f"{name}/{version}",
            settings.tracking_uri,
            policy=self._policy,
            system_card=settings.system_card,
            source=settings.source,
            timeout=settings.timeout,
        )
        record_verdict(settings.tracking_uri, name, version, verdict)
        log.info("%s/%s: %s (score %g)", safe_line(name), version, verdict.status, verdict.score)
        if settings.docs is not None:
            self._document(name, version)
        return verdict

    def _document(self, name: str, version: str) -> Path:
        """The version's Annex IV documentation in a folder of its own under `docs`."""
        from datetime import datetime, timezone

        from audit.api import report
        from audit.report import ReportSettings
        from audit.report.document import slug

        settings = self.settings
        assert settings.docs is not None
        folder = settings.docs / f"{slug(name) or 'model'}-v{version}"
        report(
            folder,
            settings.tracking_uri,
            model=f"{name}/{version}",
            policy=self._policy,
            system_card=settings.system_card,
            source=settings.source,
            timeout=settings.timeout,
            settings=ReportSettings(date=datetime.fromtimestamp(self._clock(), timezone.utc)),
            jobs=1,
            sign_with=settings.key,
        )
        log.info("%s/%s: documentation in %s", safe_line(name), version, folder)
        return folder

    def close(self) -> None:
        self.queue.close()


def create_app(gate: Gate, poll: Poller | None = None) -> Any:
    """The web app: POST /webhook, GET /healthz, GET /metrics. The worker (and the poller, in
    poll mode) runs while it does."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI

    @asynccontextmanager
    async def lifespan(_app: Any) -> Any:
        worker = threading.Thread(target=gate.run, name="mlflow-audit-gate", daemon=True)
        worker.start()
        poller = None
        if poll is not None:
            poller = threading.Thread(target=poll.run, name="mlflow-audit-poll", daemon=True)
            poller.start()
        try:
            yield
        finally:
            if poll is not None:
                poll.stop()
            gate.stop()
            worker.join(timeout=60)
            if poller is not None:
                poller.join(timeout=60)
            gate.close()

    app = FastAPI(title="mlflow-audit gate", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.post("/webhook")
    async def webhook(request: Request) -> JSONResponse:
        body = await request.body()
        status, message = gate.receive(dict(request.headers), body)
        return JSONResponse({"status": status, "message": message}, status_code=status)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok", "queue_depth": gate.queue.depth()})

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(gate.metrics.text(gate.queue.depth(), gate.queue.dead()))

    return app


def require_secrets(secrets: Sequence[str]) -> list[str]:
    kept = [secret for secret in secrets if secret]
    if not kept:
        raise AuditError(
            "serve needs the webhook's secret: set it in the variable --secret-env names "
            "(MLFLOW_AUDIT_WEBHOOK_SECRET by default)"
        )
    return kept


def register_webhook(tracking_uri: str | None, url: str, secret: str) -> str:
    """Create the webhook that delivers the gate's events to `url`, unless one does already;
    what was done, in a line."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from audit.errors import StoreError, first_line
    from audit.sources import resolve_store

    store = resolve_store(tracking_uri)
    client = MlflowClient(tracking_uri=store.uri, registry_uri=store.uri)
    events: list[Any] = list(EVENTS)
    try:
        token = None
        for _ in range(1000):  # pages of webhooks: a server whose pages never end is not waited on
            page = client.list_webhooks(page_token=token)
            for webhook in page:
                if webhook.url == url:
                    return f"webhook {webhook.name} already delivers to {url}"
            token = getattr(page, "token", None)
            if not token:
                break
        client.create_webhook("mlflow-audit", url, events=events, secret=secret)
    except MlflowException as error:
        raise StoreError(
            f"cannot set up the webhook in {store.display}: {first_line(error)}"
        ) from None
    return f"webhook mlflow-audit created: {', '.join(EVENTS)} -> {url}"
