"""What every source does the same way once it has read MLflow's rows: tell a run id, size the
next page or batch by the last, index the model registry, pick the metrics whose histories a
report charts, and say in a few words why a request to a server failed."""

from __future__ import annotations

import http
import os
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from audit.evidence import RegisteredVersionFacts
from audit.sources import MAX_CHARTED_METRICS

__all__ = [
    "RUN_ID",
    "HttpFailure",
    "RegistryIndex",
    "charted_metric_keys",
    "describe_http_failure",
    "model_id_of",
    "runs_that_fit",
]


#: A run id as MLflow's `_validate_run_id` takes it: its client refuses others before looking
#: them up.
RUN_ID = re.compile(r"^[a-zA-Z0-9][\w\-]{0,255}$")


def runs_that_fit(budget: int, runs: int, weight: int, largest: int) -> int:
    """Runs in the next page or batch: as many as fit in `budget` by the weight per run of the
    last (`runs` runs that weighed `weight`: bytes of an answer, or rows), at least one and at
    most `largest`; `largest` where either weight is unknown (0)."""
    if runs and weight and budget:
        return max(1, min(largest, budget * runs // weight))
    return largest


class RegistryIndex:
    """Registered model versions by source run and by logged model id.

    `versions` are MLflow `ModelVersion`s or anything with the same attributes (name, version,
    source, run_id, current_stage, status, description, creation_timestamp, tags and, optionally,
    model_id)."""

    def __init__(self, versions: Iterable[Any], aliases: dict[tuple[str, str], list[str]]) -> None:
        self._by_run: dict[str, list[RegisteredVersionFacts]] = {}
        self._by_model: dict[str, list[RegisteredVersionFacts]] = {}
        for version in versions:
            source = version.source or ""
            model_id = getattr(version, "model_id", None) or model_id_of(source)
            facts = RegisteredVersionFacts(
                name=version.name,
                version=str(version.version),
                aliases=tuple(aliases.get((version.name, str(version.version)), ())),
                stage=version.current_stage,
                status=version.status,
                description=version.description,
                creation_time=version.creation_timestamp,
                source=version.source,
                run_id=version.run_id,
                model_id=model_id,
                tags=dict(version.tags or {}),
            )
            if version.run_id:
                self._by_run.setdefault(version.run_id, []).append(facts)
            if model_id:
                self._by_model.setdefault(model_id, []).append(facts)

    def for_run(self, run_id: str, model_ids: Iterable[str]) -> list[RegisteredVersionFacts]:
        found = {(v.name, v.version): v for v in self._by_run.get(run_id, [])}
        for model_id in model_ids:
            for version in self._by_model.get(model_id, []):
                found.setdefault((version.name, version.version), version)
        return list(found.values())


def model_id_of(source: str | None) -> str | None:
    """The MLflow 3 logged model a version was registered from (`models:/m-...`), if it was."""
    if source and source.startswith("models:/m-"):
        return source[len("models:/") :].strip("/")
    return None


def charted_metric_keys(record: Mapping[str, Any]) -> list[str]:
    """The run's metrics logged at more than one step, whose histories a report draws."""
    return sorted(
        {
            metric["key"]
            for metric in record["metrics"]
            if isinstance(metric["step"], int) and metric["step"] > 0
        }
    )[:MAX_CHARTED_METRICS]


# --------------------------------------------------------------------------- HTTP failures

_API_PATH = re.compile(r"/api/2\.0/(?:mlflow/|mlflow-artifacts/)?(?P<endpoint>[^?\s'\"]*)")
_URL = re.compile(r"https?://[^\s/'\"?]+")
_STATUS_IN_TEXT = re.compile(r"failed with error code (?P<status>\d{3})|too many (?P<many>\d{3})")


@dataclass(frozen=True)
class HttpFailure:
    """Why a request to a tracking server or artifact store failed, in a few words."""

    reason: str
    #: True when the server could not be reached or stopped answering, as opposed to an answer
    #: that was an error.
    unreachable: bool
    #: The REST endpoint, e.g. ``runs/search``, when the error names it.
    endpoint: str | None = None
    #: ``scheme://host:port`` of the server, when the error names it (never credentials).
    server: str | None = None

    def with_server(self) -> str:
        """The reason, naming the server (for errors whose message does not already)."""
        if self.server is None:
            return self.reason
        if self.unreachable:
            return f"cannot reach {self.server}: {self.reason}"
        return f"{self.server} answered {self.reason}"


def describe_http_failure(error: BaseException) -> HttpFailure | None:
    """What went wrong in a request MLflow's REST helpers made, or None when `error` is not
    about HTTP. MLflow wraps the `requests` and `urllib3` errors in messages hundreds of
    characters long that are cut before their cause; the cause is in the exception chain."""
    chain = _exception_chain(error)
    names = {type(e).__name__ for e in chain}
    text = " ".join(str(e) for e in chain)
    classified = _classify(error, names, text)
    if classified is None:
        return None
    reason, unreachable = classified
    match = _API_PATH.search(text)
    return HttpFailure(
        reason,
        unreachable=unreachable,
        endpoint=match["endpoint"].strip("/") if match else None,
        server=_server(text),
    )


def _classify(error: BaseException, names: set[str], text: str) -> tuple[str, bool] | None:
    """(reason, unreachable) of an HTTP failure."""
    retried = "MaxRetryError" in names or "Max retries exceeded" in text
    tries = f" ({_attempts()} attempts)" if retried and _attempts() > 1 else ""
    if "SSLCertVerificationError" in names or "CERTIFICATE_VERIFY_FAILED" in text:
        return (
            "TLS certificate verification failed (MLFLOW_TRACKING_SERVER_CERT_PATH names a CA "
            "bundle; MLFLOW_TRACKING_INSECURE_TLS=true skips the check)",
            True,
        )
    if "SSLError" in names:
        return f"TLS error{tries}", True
    if "ConnectionRefusedError" in names or "Connection refused" in text:
        return f"connection refused{tries}", True
    if names & _TIMEOUTS or "timed out" in text:
        timeout = os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")
        return f"no answer within {timeout} s{tries}", True
    if names & _DROPPED:
        return f"the connection was closed without an answer{tries}", True
    if names & {"NameResolutionError", "gaierror"}:
        return f"unknown host{tries}", True
    status = _STATUS_IN_TEXT.search(text)
    code = int(status["status"] or status["many"]) if status else None
    if code is None:
        status_code = getattr(getattr(error, "response", None), "status_code", None)
        code = status_code if isinstance(status_code, int) and status_code >= 400 else None
    if code is not None:
        return _status_reason(code, tries), False
    if names & {"NewConnectionError", "ConnectionError", "MaxRetryError"}:
        return f"cannot connect{tries}", True
    return None


_TIMEOUTS = {
    "ReadTimeout",
    "ConnectTimeout",
    "Timeout",
    "ReadTimeoutError",
    "ConnectTimeoutError",
    "TimeoutError",
    "timeout",
}
_DROPPED = {
    "RemoteDisconnected",
    "ConnectionResetError",
    "ConnectionAbortedError",
    "BrokenPipeError",
    "ProtocolError",
    "ChunkedEncodingError",
    "IncompleteRead",
}


def _status_reason(code: int, tries: str) -> str:
    if code == 401:
        return (
            "HTTP 401, not authenticated (MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME "
            "and MLFLOW_TRACKING_PASSWORD)"
        )
    if code == 403:
        return "HTTP 403, permission denied"
    try:
        phrase = http.HTTPStatus(code).phrase
    except ValueError:
        phrase = "error"
    return f"HTTP {code} {phrase}{tries}"


def _server(text: str) -> str | None:
    match = _URL.search(text)
    if match is None:
        return None
    try:
        parts = urllib.parse.urlsplit(match[0])
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return None
    return f"{parts.scheme}://{parts.hostname}{port}" if parts.hostname else None


def _attempts() -> int:
    retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")
    return int(retries) + 1 if retries.isdigit() else 1


def _exception_chain(error: BaseException) -> list[BaseException]:
    """`error`, its causes and contexts, and the errors `requests` and `urllib3` carry in their
    arguments (`MaxRetryError.reason`)."""
    found: list[BaseException] = []
    pending = [error]
    while pending and len(found) < 32:
        current = pending.pop()
        if any(current is seen for seen in found):
            continue
        found.append(current)
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        linked.extend(current.args)
        pending.extend(e for e in linked if isinstance(e, BaseException))
    return found
