"""Auditing through a tracking server that fails: every fault is exit 2 with one line naming the
server and the reason, never a traceback and never a partial pass; retries, timeouts, MLflow's
auth variables and paging while runs are written.

The faults come from real HTTP: a small proxy in front of a real `mlflow server` answers 500,
delays, drops connections, kills the server, records what reached it, or edits what passes (a
server that breaks MLflow's protocol). No Python function of the audit or of MLflow is
replaced.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import http.client
import http.server
import itertools
import json
import os
import re
import shutil
import signal
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from audit.api import collect, make_selection
from audit.evidence import sha256_hex
from audit.sources import CollectionNeeds
from tests.conftest import Server, running_mlflow_server
from tests.stores import probe_cli


@dataclass(frozen=True)
class Edit:
    """A server that breaks MLflow's protocol: the request's JSON body as forwarded, and the
    JSON of a successful answer as returned (given the body the audit sent)."""

    request: Callable[[dict[str, Any]], dict[str, Any]] = lambda body: body
    #: The answer's JSON, or bytes sent as they are.
    answer: Callable[[Any, dict[str, Any]], Any] = lambda answer, asked: answer


#: What the proxy does with one request: forward it (None), answer with this status, wait this
#: many seconds and then forward, drop the connection without an answer, or forward it and its
#: answer edited.
Action = None | int | float | str | Edit


@dataclass
class Seen:
    method: str
    path: str
    authorization: str | None
    #: The client's end of the connection the request came on.
    connection: tuple[str, int]


@dataclass
class Proxy:
    """An HTTP proxy on a free loopback port in front of `upstream` (host, port)."""

    upstream: tuple[str, int]
    rule: Callable[[Seen, int], Action] = lambda seen, index: None
    tls: ssl.SSLContext | None = None
    #: HTTP/1.1: connections are kept alive unless the client asks otherwise, as a real
    #: server's are (HTTP/1.0: closed after each answer).
    keep_alive: bool = False
    seen: list[Seen] = field(default_factory=list)
    search_pages: list[list[str]] = field(default_factory=list)
    artifacts_in_flight: int = 0
    most_artifacts_in_flight: int = 0
    searches_in_flight: int = 0
    most_searches_in_flight: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy._handle(self)

            do_POST = do_GET

            def log_message(self, *args: Any) -> None:
                pass  # the audit's stderr is what the tests read

        if self.keep_alive:
            Handler.protocol_version = "HTTP/1.1"

        class Quiet(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # clients that gave up (timeouts) close their end; that is the point

        self._server = Quiet(("127.0.0.1", 0), Handler)
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def uri(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        """Close the listening socket: from now on connections are refused."""
        self._server.shutdown()
        self._server.server_close()

    def count(self, endpoint: str) -> int:
        return sum(1 for seen in self.seen if endpoint in seen.path)

    def _handle(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        seen = Seen(
            handler.command,
            handler.path,
            handler.headers.get("Authorization"),
            handler.client_address,
        )
        with self._lock:
            index = sum(1 for s in self.seen if s.path.split("?")[0] == seen.path.split("?")[0])
            self.seen.append(seen)
            search = "runs/search" in seen.path
            artifact = "mlflow-artifacts" in seen.path
            self.artifacts_in_flight += artifact
            self.searches_in_flight += search
            self.most_artifacts_in_flight = max(
                self.most_artifacts_in_flight, self.artifacts_in_flight
            )
            self.most_searches_in_flight = max(
                self.most_searches_in_flight, self.searches_in_flight
            )
        try:
            self._answer(handler, seen, self.rule(seen, index))
        finally:
            with self._lock:
                self.artifacts_in_flight -= artifact
                self.searches_in_flight -= search

    def _answer(
        self, handler: http.server.BaseHTTPRequestHandler, seen: Seen, action: Action
    ) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else None
        if action == "drop":
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
            return
        if isinstance(action, int):
            content = b"injected by the test proxy"
            handler.send_response(action)
            handler.send_header("Content-Type", "text/plain")
            handler.send_header("Content-Length", str(len(content)))
            handler.end_headers()
            handler.wfile.write(content)
            return
        if isinstance(action, float):
            time.sleep(action)
        asked = json.loads(body) if isinstance(action, Edit) and body else {}
        if isinstance(action, Edit) and body:
            body = json.dumps(action.request(dict(asked))).encode()
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_BY_HOP}
        connection = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            connection.request(seen.method, seen.path, body=body, headers=headers)
            response = connection.getresponse()
            content = response.read()
        except OSError:
            # The server is gone: so is the answer, as a client of the server itself sees it.
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
            return
        finally:
            connection.close()
        if "runs/search" in seen.path and response.status == 200:
            runs = json.loads(content).get("runs", [])
            with self._lock:
                self.search_pages.append([run["info"]["run_id"] for run in runs])
        if isinstance(action, Edit) and response.status == 200:
            edited = action.answer(json.loads(content), asked)
            content = edited if isinstance(edited, bytes) else json.dumps(edited).encode()
        handler.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in _HOP_BY_HOP:
                handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(content)))
        if handler.close_connection:
            handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(content)


_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


def _upstream(uri: str) -> tuple[str, int]:
    host, port = uri.removeprefix("http://").split(":")
    return host, int(port)


@pytest.fixture
def proxy(mlflow_server: Server) -> Iterator[Callable[..., Proxy]]:
    """Proxies in front of the session's `mlflow server`, stopped after the test."""
    made: list[Proxy] = []

    def make(rule: Callable[[Seen, int], Action] = lambda seen, index: None, **kw: Any) -> Proxy:
        made.append(Proxy(_upstream(mlflow_server.uri), rule, **kw))
        return made[-1]

    yield make
    for each in made:
        with contextlib.suppress(OSError):
            each.stop()


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries without the seconds of backoff in between (the user's setting, which the audit
    keeps): the retries are still made, the tests take less time."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0")


def _one_line_failure(result: Any) -> str:
    """The audit's error line, after checking it is the only output and exit 2."""
    assert result.code == 2, (result.code, result.err)
    assert result.out == ""
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert "Traceback" not in result.err
    return str(result.err.strip())


def _everything(uri: str, **options: Any) -> list[str]:
    needs = CollectionNeeds(artifacts=False, registry=False)
    selection = make_selection(include_deleted=True)
    return [
        c.record["run"]["id"] for c in collect(uri, selection=selection, needs=needs, **options)
    ]


# --------------------------------------------------------------------------- answers that fail


def test_server_answering_500_is_exit_2_after_retries(cli, proxy) -> None:
    failing = proxy(lambda seen, index: 500 if "runs/search" in seen.path else None)
    result = cli("check", "--tracking-uri", failing.uri, "--search-page-size", "2")
    line = _one_line_failure(result)
    assert line == (
        f"mlflow-audit: error: the tracking server {failing.uri} failed (runs/search): "
        "HTTP 500 Internal Server Error (3 attempts)"
    )
    assert failing.count("runs/search") == 3  # MLFLOW_HTTP_REQUEST_MAX_RETRIES=2 by default


def test_server_answering_500_on_a_later_page_is_no_partial_pass(cli, no_backoff, proxy) -> None:
    failing = proxy(lambda seen, index: 500 if "runs/search" in seen.path and index > 0 else None)
    result = cli("check", "--tracking-uri", failing.uri, "--search-page-size", "2", "-f", "json")
    assert "HTTP 500 Internal Server Error" in _one_line_failure(result)
    assert len(failing.search_pages) == 1  # one page was read, and is not reported


def test_rate_limited_and_unavailable_answers_are_retried(
    cli, proxy, mlflow_server: Server
) -> None:
    def flaky(seen: Seen, index: int) -> Action:
        if "runs/search" in seen.path and index == 0:
            return 429
        if "mlflow-artifacts" in seen.path and index == 0:
            return 503
        return None

    retried = proxy(flaky)
    result = cli("check", "--tracking-uri", retried.uri, "-e", "truth-table", "-f", "json")
    assert result.code == 1, result.err
    assert len(result.json()["runs"]) == 5
    assert retried.count("runs/search") == 2


@pytest.mark.parametrize("how", ["variable", "flag"])
def test_server_slower_than_the_timeout_is_exit_2(
    cli, no_backoff, proxy, monkeypatch, how: str
) -> None:
    slow = proxy(lambda seen, index: 3.0 if "runs/search" in seen.path else None)
    if how == "variable":
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
        flags: tuple[str, ...] = ()
    else:
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")  # --timeout wins
        flags = ("--timeout", "1")
    start = time.monotonic()
    result = cli("check", "--tracking-uri", slow.uri, *flags)
    assert _one_line_failure(result) == (
        f"mlflow-audit: error: cannot reach the tracking server {slow.uri} (runs/search): "
        "no answer within 1 s (3 attempts)"
    )
    assert time.monotonic() - start < 15


def test_default_timeout_and_retries_are_bounded(monkeypatch) -> None:
    """Without the user's settings, a request is tried 3 times for at most 30 s each (MLflow's
    own defaults: 8 times, 120 s each, with backoff up to 2 minutes in between)."""
    from audit.sources.client import ClientSource
    from audit.sources.store import resolve_store

    for variable in ("MAX_RETRIES", "BACKOFF_FACTOR", "TIMEOUT"):
        monkeypatch.delenv(f"MLFLOW_HTTP_REQUEST_{variable}", raising=False)
    source = ClientSource(resolve_store("http://127.0.0.1:1"))
    assert source._settings() == {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    }
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "300")
    assert "MLFLOW_HTTP_REQUEST_TIMEOUT" not in source._settings()  # the user's value stays
    explicit = ClientSource(resolve_store("http://127.0.0.1:1"), timeout=5)
    assert explicit._settings()["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "5"
    # Read without MLflow's client, a page holds a few KB per run, not 25 (MLflow's 50,000 would
    # hold about 1.2 GB); through MLflow's client (Databricks), pages stay at 2,000.
    assert explicit.page_size == 5_000
    assert ClientSource(resolve_store("databricks://profile")).page_size == 2_000


def test_dropped_connections_are_exit_2(cli, no_backoff, proxy) -> None:
    dropping = proxy(lambda seen, index: "drop" if "runs/search" in seen.path else None)
    line = _one_line_failure(cli("check", "--tracking-uri", dropping.uri))
    assert line == (
        f"mlflow-audit: error: cannot reach the tracking server {dropping.uri} (runs/search): "
        "the connection was closed without an answer (3 attempts)"
    )


# --------------------------------------------------------------------------- artifacts


def test_artifact_that_cannot_be_read_is_exit_2(
    cli, no_backoff, proxy, mlflow_server: Server
) -> None:
    def broken(seen: Seen, index: int) -> Action:
        return 500 if seen.path.endswith("/requirements.txt") else None

    failing = proxy(broken)
    line = _one_line_failure(cli("check", "--tracking-uri", failing.uri, "-e", "truth-table"))
    assert line.startswith("mlflow-audit: error: cannot read runs:/")
    assert line.endswith(
        f"/requirements.txt: {failing.uri} answered HTTP 500 Internal Server Error (3 attempts)"
    )
    run_id = line.split("runs:/")[1].split("/")[0]
    assert run_id in mlflow_server.run_ids.values()


def test_artifact_listing_that_fails_is_exit_2(cli, no_backoff, proxy) -> None:
    dropping = proxy(lambda seen, index: "drop" if "mlflow-artifacts" in seen.path else None)
    line = _one_line_failure(cli("check", "--tracking-uri", dropping.uri, "-e", "truth-table"))
    assert line.startswith("mlflow-audit: error: cannot list artifacts of runs:/")
    assert line.endswith(
        f": cannot reach {dropping.uri}: the connection was closed without an answer (3 attempts)"
    )


def test_artifacts_are_read_concurrently_in_order_without_extra_round_trips(
    proxy, mlflow_server: Server, monkeypatch, tmp_path: Path
) -> None:
    from audit.api import check
    from audit.sources import client

    slow = proxy(lambda seen, index: 0.2 if "mlflow-artifacts" in seen.path else None)
    concurrent = check(slow.uri, include_deleted=True, keep_records=True)
    # Other requests of the audit may overlap them (one did: 9 in flight): reads are counted.
    assert 1 < slow.most_artifacts_in_flight <= client._ARTIFACT_WORKERS
    downloads = [s.path for s in slow.seen if s.path.startswith("/api/2.0/mlflow-artifacts/")]
    listings = [path for path in downloads if "?path=" in path]
    files = [path for path in downloads if "?path=" not in path]
    # One listing per artifact folder, one download per file read: no listing per file.
    assert len(listings) == len(set(listings)) and len(files) == len(set(files)) > 0

    monkeypatch.setattr(client, "_ARTIFACT_WORKERS", 1)
    one_at_a_time = check(mlflow_server.uri, include_deleted=True, keep_records=True)
    assert concurrent.records is not None and one_at_a_time.records is not None
    assert list(concurrent.records) == list(one_at_a_time.records)
    assert [sha256_hex(r) for r in concurrent.records.values()] == [
        sha256_hex(r) for r in one_at_a_time.records.values()
    ]
    # A policy that looks at no artifact reads none.
    policy = tmp_path / "params-only.json"
    rule = {
        "id": "hyperparameters.logged",
        "title": "Hyperparameters are logged",
        "severity": "error",
        "category": "hyperparameters",
        "provisions": [],
        "remediation": "mlflow.log_params(...)",
    }
    policy.write_text(
        json.dumps(
            {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "properties": {"hyperparameters": {"minProperties": 1, "x-audit": rule}},
            }
        )
    )
    counting = proxy()
    check(counting.uri, include_deleted=True, policy=policy)
    assert counting.count("mlflow-artifacts") == 0


# --------------------------------------------------------------------------- answers MLflow's
# protocol does not allow: paging that never ends, runs that would be lost or misread


def _within(seconds: float, audit: Callable[[], Any]) -> tuple[Any, float]:
    """What `audit()` returns, which must be within `seconds`, and the seconds it took: a
    search that pages for ever fails the test instead of hanging it (its thread ends when the
    test's proxy stops)."""
    done: list[Any] = []
    thread = threading.Thread(target=lambda: done.append(audit()), daemon=True)
    start = time.monotonic()
    thread.start()
    thread.join(seconds)
    assert done, f"no result within {seconds} s"
    return done[0], time.monotonic() - start


def _without_token(body: dict[str, Any]) -> dict[str, Any]:
    """The request for the first page, whatever page was asked for."""
    body.pop("page_token", None)
    return body


def _first_page_each_time(next_token: Callable[[str | None], str]) -> Callable[..., Action]:
    """A server answering runs/search with its first page each time, and the next page token
    `next_token(token asked with)`."""

    def rule(seen: Seen, index: int) -> Action:
        if "runs/search" not in seen.path:
            return None
        return Edit(
            request=_without_token,
            answer=lambda answer, asked: {
                **answer,
                "next_page_token": next_token(asked.get("page_token")),
            },
        )

    return rule


_CYCLE = {None: "A", "A": "B", "B": "A"}
_CIRCLE = "runs/search with a next page token it gave before: its pages go round in a circle"
_fresh_tokens = itertools.count()


@pytest.mark.parametrize(
    ("next_token", "said"),
    [
        (lambda asked: "again", _CIRCLE),
        (_CYCLE.get, _CIRCLE),
        (
            lambda asked: f"fresh-{next(_fresh_tokens)}",
            "runs/search with 10 pages in a row that held no run it had not answered before: "
            "its pages do not move on",
        ),
    ],
    ids=["the same token", "tokens A, B, A", "new tokens, the same runs"],
)
def test_a_server_whose_pages_never_end_is_exit_2(
    cli, proxy, next_token: Callable[[str | None], str], said: str
) -> None:
    endless = proxy(_first_page_each_time(next_token))
    result, seconds = _within(
        60, lambda: cli("check", "--tracking-uri", endless.uri, "--search-page-size", "2")
    )
    from audit.sources.client import SERVER_REQUESTS, _Progress

    line = _one_line_failure(result)
    assert line == f"mlflow-audit: error: the tracking server {endless.uri} answered {said}"
    assert seconds < 20
    # Given up after the pages that showed it (and those asked for ahead of them).
    assert endless.count("runs/search") <= _Progress.STALE_PAGES + 1 + SERVER_REQUESTS


def test_offset_tokens_that_go_back_are_exit_2(cli, proxy) -> None:
    """A token spelled as MLflow's offsets, for an offset before the page it came with."""
    from audit.sources.rest_runs import offset_of, offset_token

    def back(seen: Seen, index: int) -> Action:
        if "runs/search" not in seen.path:
            return None

        def answer(page: dict[str, Any], asked: dict[str, Any]) -> dict[str, Any]:
            start = offset_of(asked.get("page_token"))
            return {**page, "next_page_token": offset_token(1)} if start else page

        return Edit(answer=answer)

    going_back = proxy(back)
    result, seconds = _within(
        60, lambda: cli("check", "--tracking-uri", going_back.uri, "--search-page-size", "2")
    )
    assert _one_line_failure(result) == (
        f"mlflow-audit: error: the tracking server {going_back.uri} answered runs/search with a "
        "next page token at offset 1 for the page at offset 2: its pages do not move on"
    )
    assert seconds < 20


def test_experiments_paged_in_a_circle_are_exit_2(cli, proxy) -> None:
    def circle(seen: Seen, index: int) -> Action:
        if "experiments/search" not in seen.path:
            return None
        return Edit(
            request=_without_token,
            answer=lambda answer, asked: {**answer, "next_page_token": "again"},
        )

    endless = proxy(circle)
    result, seconds = _within(60, lambda: cli("check", "--tracking-uri", endless.uri))
    assert _one_line_failure(result) == (
        f"mlflow-audit: error: the tracking server {endless.uri} answered search_experiments "
        "with a next page token it gave before: its pages go round in a circle"
    )
    assert seconds < 20


def test_experiments_paged_with_fresh_tokens_and_nothing_new_are_exit_2(cli, proxy) -> None:
    def treadmill(seen: Seen, index: int) -> Action:
        if "experiments/search" not in seen.path:
            return None
        return Edit(
            request=_without_token,  # the same first page, under a new token each time
            answer=lambda answer, asked: {**answer, "next_page_token": f"fresh-{index}"},
        )

    endless = proxy(treadmill)
    result, seconds = _within(60, lambda: cli("check", "--tracking-uri", endless.uri))
    assert _one_line_failure(result) == (
        f"mlflow-audit: error: the tracking server {endless.uri} answered search_experiments "
        "with 10 pages in a row that held nothing it had not answered before: its pages do not "
        "move on"
    )
    assert seconds < 20


def _second_run(edit: Callable[[dict[str, Any]], Any]) -> Callable[..., Action]:
    """A server answering runs/search with the second run of each page edited."""

    def rule(seen: Seen, index: int) -> Action:
        if "runs/search" not in seen.path:
            return None

        def answer(page: dict[str, Any], asked: dict[str, Any]) -> dict[str, Any]:
            if len(page.get("runs", [])) > 1:
                edit(page["runs"][1])
            return page

        return Edit(answer=answer)

    return rule


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        (lambda run: run["info"].pop("lifecycle_stage"), "run {run_id} has no lifecycle_stage"),
        (
            lambda run: run["info"].update(lifecycle_stage="zombie"),
            "run {run_id}'s lifecycle_stage is 'zombie', neither active nor deleted",
        ),
        (
            lambda run: run["info"].update(lifecycle_stage="active\n\x1b[8m::add-mask::x"),
            "run {run_id}'s lifecycle_stage is 'active\\n\\x1b[8m::add-mask::x', neither "
            "active nor deleted",
        ),
        (
            lambda run: run["info"].update(run_id=12345, run_uuid=12345),
            "its run_id is a number, not a run id",
        ),
        (
            lambda run: run["info"].update(run_id="../../etc", run_uuid="../../etc"),
            "its run_id is '../../etc', not a run id",
        ),
        (lambda run: run["info"].pop("experiment_id"), "run {run_id}'s experiment_id is missing"),
        (
            lambda run: run["info"].update(status="ZOMBIE"),
            "run {run_id}'s status is 'ZOMBIE'",
        ),
        (
            lambda run: run["info"].update(start_time="yesterday"),
            "run {run_id}'s start_time is 'yesterday', not an integer",
        ),
        (
            lambda run: run["info"].update(lifecycle_stage=["active"]),
            "run {run_id}'s lifecycle_stage is a list, neither active nor deleted",
        ),
        (
            lambda run: run["data"].update(params=[{"key": "lr", "value": 0.1}]),
            "run {run_id}'s params hold 'lr' with a value that is a number, not a string",
        ),
    ],
    ids=[
        "no lifecycle stage",
        "an unknown lifecycle stage",
        "a lifecycle stage with escapes",
        "a run id that is a number",
        "a run id that is a path",
        "no experiment",
        "an unknown status",
        "a start time that is text",
        "a lifecycle stage that is a list",
        "a param value that is a number",
    ],
)
def test_a_run_mlflow_would_lose_or_misread_is_exit_2(
    cli, proxy, mlflow_server: Server, edit: Callable[[dict[str, Any]], Any], said: str
) -> None:
    """Runs with a missing or unknown lifecycle stage were left out, 200 of 202 audited and a
    pass; MLflow's client reads an unknown status as RUNNING. The server is named, the run and
    what is wrong with it said on one escaped line."""
    malformed = proxy(_second_run(edit))
    result, seconds = _within(
        60,
        lambda: cli(
            "check", "--tracking-uri", malformed.uri, "--search-page-size", "2",
            "--include-deleted",
        ),
    )  # fmt: skip
    line = _one_line_failure(result)
    run_id = malformed.search_pages[0][1]
    assert line == (
        f"mlflow-audit: error: the tracking server {malformed.uri} answered runs/search with a "
        f"malformed run (number 2 of its page): {said.format(run_id=run_id)}"
    )
    assert "\x1b" not in result.err
    assert seconds < 20


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (b"<html>Bad gateway</html>", "an answer that is not JSON"),
        (["runs"], "a list, not a JSON object"),
        ({"runs": {"run": 1}}, "runs that are an object, not a list"),
        ({"runs": [], "next_page_token": 7}, "a next page token that is a number"),
    ],
)
def test_an_answer_that_is_not_a_page_of_runs_is_exit_2(cli, proxy, answer: Any, said: str) -> None:
    odd = proxy(
        lambda seen, index: Edit(answer=lambda *_: answer) if "runs/search" in seen.path else None
    )
    result, _ = _within(60, lambda: cli("check", "--tracking-uri", odd.uri))
    assert _one_line_failure(result) == (
        f"mlflow-audit: error: the tracking server {odd.uri} answered runs/search with {said}"
    )


# --------------------------------------------------------------------------- auth and TLS


@pytest.mark.parametrize(
    ("variables", "header"),
    [
        ({"MLFLOW_TRACKING_TOKEN": "t0ken"}, "Bearer t0ken"),
        (
            {"MLFLOW_TRACKING_USERNAME": "auditor", "MLFLOW_TRACKING_PASSWORD": "s3cret"},
            "Basic " + base64.b64encode(b"auditor:s3cret").decode(),
        ),
    ],
)
def test_mlflow_auth_variables_reach_the_server(
    cli, proxy, monkeypatch, variables: dict[str, str], header: str
) -> None:
    recording = proxy()
    for key, value in variables.items():
        monkeypatch.setenv(key, value)
    result = cli("check", "--tracking-uri", recording.uri, "-e", "truth-table", "-f", "json")
    assert result.code == 1, result.err
    assert recording.count("runs/search") >= 1 and recording.count("mlflow-artifacts") >= 1
    assert {seen.authorization for seen in recording.seen} == {header}
    assert "s3cret" not in result.out and "t0ken" not in result.out


def test_unauthenticated_is_exit_2_naming_the_variables(cli, proxy) -> None:
    denying = proxy(lambda seen, index: None if seen.authorization else 401)
    line = _one_line_failure(cli("check", "--tracking-uri", denying.uri))
    assert line == (
        f"mlflow-audit: error: the tracking server {denying.uri} failed (experiments/search): "
        "HTTP 401, not authenticated (MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and "
        "MLFLOW_TRACKING_PASSWORD)"
    )


# What the user asked for, and urllib3 says so on every request.
@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_self_signed_tls_needs_mlflow_tracking_insecure_tls(
    cli, no_backoff, proxy, monkeypatch, tmp_path: Path
) -> None:
    secured = proxy(tls=_self_signed_context(tmp_path))
    refused = _one_line_failure(cli("check", "--tracking-uri", secured.uri, "-e", "truth-table"))
    assert refused.startswith(
        f"mlflow-audit: error: cannot reach the tracking server {secured.uri}"
    )
    assert "TLS certificate verification failed" in refused
    assert "MLFLOW_TRACKING_INSECURE_TLS=true" in refused
    monkeypatch.setenv("MLFLOW_TRACKING_INSECURE_TLS", "true")
    accepted = cli("check", "--tracking-uri", secured.uri, "-e", "truth-table", "-f", "json")
    assert accepted.code == 1, accepted.err
    assert len(accepted.json()["runs"]) == 5
    # urllib3 warns on stderr about every connection without verification, asked for by name.
    quiet = probe_cli("check", "--tracking-uri", secured.uri, "-e", "truth-table", watched=())
    assert quiet.code == 1 and quiet.err == "", quiet.err


def _self_signed_context(directory: Path) -> ssl.SSLContext:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    (directory / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return context


# --------------------------------------------------------------------------- a server of its own


@dataclass
class OwnServer:
    uri: str
    run_ids: set[str]


@contextlib.contextmanager
def _copy_of_server(source: Server, directory: Path) -> Iterator[OwnServer]:
    """A real `mlflow server` on a copy of the session server's store and artifacts."""
    shutil.copy2(source.database, directory / "server.db")
    shutil.copytree(source.database.parent / "artifacts", directory / "artifacts")
    with running_mlflow_server(directory, f"sqlite:///{directory / 'server.db'}") as uri:
        yield OwnServer(uri, set(_everything(uri)))


@pytest.fixture(scope="module")
def own_server(
    mlflow_server: Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OwnServer]:
    with _copy_of_server(mlflow_server, tmp_path_factory.mktemp("own-server")) as server:
        yield server


def test_runs_written_while_paging_are_neither_lost_nor_doubled(own_server: OwnServer) -> None:
    """MLflow pages by offset over (start_time DESC, run id): a run started during the audit
    sorts first and shifts every later run by one, so the next page repeats a run; one created
    with an old start time sorts last. Every run that existed before the audit is audited
    exactly once, a run created during it at most once."""
    from mlflow import MlflowClient

    recording = Proxy(_upstream(own_server.uri))
    writer = MlflowClient(own_server.uri)
    experiment = writer.get_experiment_by_name("truth-table").experiment_id
    created: list[str] = []
    needs = CollectionNeeds(artifacts=False, registry=False)
    selection = make_selection(include_deleted=True)
    audited: list[str] = []
    try:
        for collected in collect(recording.uri, selection=selection, needs=needs, page_size=2):
            audited.append(collected.record["run"]["id"])
            if len(audited) in (1, 4):
                for start_time in (None, None, 1):
                    run = writer.create_run(experiment, start_time=start_time)
                    created.append(run.info.run_id)
    finally:
        recording.stop()
    counts = Counter(audited)
    assert all(counts[run_id] == 1 for run_id in own_server.run_ids)
    assert set(audited) <= own_server.run_ids | set(created)
    assert max(counts.values()) == 1
    served = Counter(run_id for page in recording.search_pages for run_id in page)
    assert max(served.values()) > 1  # the server did repeat runs across pages
    assert set(created) & set(audited)  # the ones with an old start time were reached


def test_pages_are_asked_for_several_at_once_and_audited_in_order(
    mlflow_server: Server, proxy
) -> None:
    """The server answers offset page tokens: the following pages are asked for with the
    tokens of the following offsets, SERVER_REQUESTS at a time, and the runs come in MLflow's
    order, each once, as paging one page after the other gives them."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    from audit.sources.client import SERVER_REQUESTS

    reference = MlflowClient(mlflow_server.uri)
    experiments = [e.experiment_id for e in reference.search_experiments()]
    in_order = [
        run.info.run_id
        for run in reference.search_runs(experiments, run_view_type=ViewType.ALL, max_results=1000)
    ]
    assert len(in_order) > 2 * (1 + SERVER_REQUESTS)  # pages of 2: one, then the others at once
    slow = proxy(lambda seen, index: 0.2 if "runs/search" in seen.path else None)
    assert _everything(slow.uri, page_size=2) == in_order
    assert slow.most_searches_in_flight == SERVER_REQUESTS
    served = Counter(run_id for page in slow.search_pages for run_id in page)
    assert set(served) == set(in_order) and max(served.values()) == 1


def test_each_search_page_comes_on_a_connection_of_its_own(mlflow_server: Server, proxy) -> None:
    """A server's processes, or a load balancer's replicas, take connections, not requests: on
    a kept-alive connection every page would go to the one that accepted it. Each page asks
    for its connection to be closed; the audit's other requests keep theirs alive."""
    from audit.sources.client import SERVER_REQUESTS

    keeping = proxy(keep_alive=True)
    _everything(keeping.uri, page_size=2)
    searches = [seen.connection for seen in keeping.seen if "runs/search" in seen.path]
    assert len(searches) > 1 + SERVER_REQUESTS
    assert len(set(searches)) == len(searches)
    others = [seen.connection for seen in keeping.seen if "runs/search" not in seen.path]
    assert len(others) > 1 and len(set(others)) < len(others)  # kept alive where it may be


def test_pages_of_large_runs_hold_fewer_runs(
    mlflow_server: Server, proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a first page of 4 runs, pages hold as many runs as SERVER_PAGE_BYTES of the
    server's answer do, judged by the answer before: with 1 byte, one run each. The runs come
    in MLflow's order, each once."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    import audit.sources.client

    monkeypatch.setattr(audit.sources.client, "FIRST_PAGE", 4)
    monkeypatch.setattr(audit.sources.client, "SERVER_PAGE_BYTES", 1)
    reference = MlflowClient(mlflow_server.uri)
    experiments = [e.experiment_id for e in reference.search_experiments()]
    in_order = [
        run.info.run_id
        for run in reference.search_runs(experiments, run_view_type=ViewType.ALL, max_results=1000)
    ]
    recording = proxy()
    assert _everything(recording.uri, page_size=50) == in_order
    sizes = [len(page) for page in recording.search_pages]
    assert sizes[0] == 4 and set(sizes[1:]) <= {0, 1}  # 0: asked for past the last run
    assert sum(sizes) == len(in_order)


def test_max_runs_bounds_the_pages_asked_for(cli, proxy) -> None:
    """`--max-runs 2` asks the server for pages of 2 runs, not of thousands (the next page is
    asked for ahead, and waited for when the audit stops)."""
    recording = proxy()
    result = cli("check", "--tracking-uri", recording.uri, "--max-runs", "2", "-f", "json")
    assert len(result.json()["runs"]) == 2
    assert recording.search_pages
    assert all(len(page) <= 2 for page in recording.search_pages)


def test_a_run_deleted_while_paging_hides_no_other_run(
    mlflow_server: Server, tmp_path: Path
) -> None:
    """MLflow pages by offset: a run deleted after it was served would shift every later run
    back by one, and the first of the next page would never be served. The audit pages through
    deleted runs too (they keep their place) and leaves them out itself."""
    from mlflow import MlflowClient

    with _copy_of_server(mlflow_server, tmp_path) as server:
        writer = MlflowClient(server.uri)
        experiments = [e.experiment_id for e in writer.search_experiments()]
        active = {run.info.run_id for run in writer.search_runs(experiments, max_results=1000)}
        assert len(active) > 6
        audited: list[str] = []
        needs = CollectionNeeds(artifacts=False, registry=False)
        for collected in collect(server.uri, selection=make_selection(), needs=needs, page_size=2):
            audited.append(collected.record["run"]["id"])
            if len(audited) in (1, 3):
                writer.delete_run(audited[-1])  # served already: every later run moves back
    assert sorted(audited) == sorted(active)


def test_server_killed_mid_audit_is_exit_2(
    cli, no_backoff, mlflow_server: Server, tmp_path: Path
) -> None:
    with _copy_of_server(mlflow_server, tmp_path) as server:
        process_ids = _listening_processes(_upstream(server.uri)[1])
        assert process_ids
        proxy: Proxy | None = None

        def kill_on_second_page(seen: Seen, index: int) -> Action:
            if "runs/search" in seen.path and index == 1:
                for pid in process_ids:
                    os.kill(pid, signal.SIGKILL)
                assert proxy is not None
                threading.Thread(target=proxy.stop, daemon=True).start()
            return None

        proxy = Proxy(_upstream(server.uri), kill_on_second_page)
        result = cli("check", "--tracking-uri", proxy.uri, "--search-page-size", "2", "-f", "json")
        line = _one_line_failure(result)
        # The next page is asked for while the first is audited: either request meets the
        # dead server first.
        assert re.match(
            rf"mlflow-audit: error: cannot reach the tracking server {re.escape(proxy.uri)} "
            r"\((runs|logged-models)/search\): ",
            line,
        ), line
        assert line.endswith("(3 attempts)")
        assert len(proxy.search_pages) == 1


def _listening_processes(port: int) -> list[int]:
    """Ids of the processes with a socket listening on `port` (the server and its workers)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as handle:  # noqa: PTH123
            for line in handle.readlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                    inodes.add(fields[9])
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                target = str(fd.readlink())
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    found.append(int(entry.name))
                    break
    return found
