"""Auditing through a real `mlflow server` (REST, proxied artifacts)."""

from __future__ import annotations

import base64
import functools
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from audit.api import check, collect, make_selection
from audit.evidence import sha256_hex
from audit.sources import CollectionNeeds
from tests import stores
from tests.conftest import Server


def test_server_records_match_a_direct_read_of_its_database(mlflow_server: Server) -> None:
    """Same MLflow data, two paths (REST, SQLite): byte-identical evidence records. Artifacts
    live behind the server's proxy, so this comparison reads runs and registry only."""
    needs = CollectionNeeds(artifacts=False, registry=True)
    everything = make_selection(include_deleted=True)
    over_http = {
        c.record["run"]["id"]: sha256_hex(c.record)
        for c in collect(mlflow_server.uri, selection=everything, needs=needs)
    }
    direct = {c.record["run"]["id"]: sha256_hex(c.record)
              for c in collect(f"sqlite:///{mlflow_server.database}", selection=everything,
                               needs=needs)}  # fmt: skip
    assert len(over_http) == len(mlflow_server.run_ids)
    assert over_http == direct


def test_server_audit_reads_artifacts_through_the_proxy(mlflow_server: Server) -> None:
    result = check(mlflow_server.uri, keep_records=True)
    assert result.store == mlflow_server.uri and result.source == "client"
    assert result.records is not None
    logged = result.records[mlflow_server.run_ids["logged-model"]]
    model = logged["models"][0]
    assert model["signature"] is not None and model["input_example"] is True
    assert logged["environment"]["requirements_from"] == f"{model['uri']}/requirements.txt"
    complete = result.records[mlflow_server.run_ids["complete"]]
    assert complete["environment"]["requirements_from"].endswith("/requirements.txt")


def test_server_selection_and_gate(cli, mlflow_server: Server) -> None:
    result = cli(
        "check", "--tracking-uri", mlflow_server.uri, "--model", "audit-test-model@champion",
        "-f", "json",
    )  # fmt: skip
    assert result.code == 0, result.out
    assert [run["run_name"] for run in result.json()["runs"]] == ["logged-model"]
    truth = cli(
        "check", "--tracking-uri", mlflow_server.uri, "-e", "truth-table", "--policy", "baseline"
    )
    assert truth.code == 1
    unknown = cli("check", "--tracking-uri", mlflow_server.uri, "-e", "nope")
    assert unknown.code == 2 and "unknown experiment 'nope'" in unknown.err


def test_server_store_is_unchanged_by_audits(cli, mlflow_server: Server) -> None:
    before = stores.tree_digest(mlflow_server.database)
    cli("check", "--tracking-uri", mlflow_server.uri)
    assert stores.tree_digest(mlflow_server.database) == before


def test_server_pages_read_without_protobuf_match_mlflows_client(
    mlflow_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages of runs/search are read from their JSON (`rest_runs`), the next one fetched while
    one is audited: the same records, in the same order, as MLflow's client and entities give,
    over several pages, artifacts included."""
    from audit.evidence import canonical_json
    from audit.sources.client import ClientSource, _pages_in_turn, _PageSizes

    def records() -> list[tuple[str, bytes]]:
        return [
            (c.record["run"]["id"], canonical_json(c.record))
            for c in collect(mlflow_server.uri, selection=make_selection(include_deleted=True),
                             page_size=3)
        ]  # fmt: skip

    read_from_json = records()

    def through_mlflows_client(self: ClientSource, selection: Any) -> Any:
        experiment_ids = self._experiment_ids(selection)
        size = self._page_size(selection)
        return _pages_in_turn(
            functools.partial(self._client_page, experiment_ids, selection),
            _PageSizes(size, size, 0),
        )

    monkeypatch.setattr(ClientSource, "_search", through_mlflows_client)
    assert read_from_json == records()
    assert len(read_from_json) == len(mlflow_server.run_ids)


def test_runs_search_json_read_as_mlflows_entities_read_it() -> None:
    """Fields a server leaves out take protobuf's defaults, as MLflow's `Run.from_proto` gives
    them: an empty name, a start time of 0, RUNNING, no end time, no schema or profile. (Not a
    run's id, experiment or lifecycle stage: without them it would be lost, and the answer is
    refused, tests/test_rest_faults.py.)"""
    from mlflow.entities import Run as MlflowRun
    from mlflow.protos.service_pb2 import SearchRuns
    from mlflow.utils.proto_json_utils import parse_dict

    from audit.sources import rest_runs

    document = {
        "runs": [
            {"info": {"run_id": "a" * 32, "experiment_id": "7", "lifecycle_stage": "active"}},
            {
                "info": {"run_id": "b" * 32, "experiment_id": "0", "status": "FINISHED",
                         "start_time": 1700000000000, "end_time": 0, "run_name": "r",
                         "user_id": "u", "lifecycle_stage": "deleted", "artifact_uri": "s3://x"},
                "data": {
                    "metrics": [{"key": "loss", "value": "NaN", "timestamp": 5, "step": 2},
                                {"key": "acc", "value": 1, "timestamp": 6},
                                {"key": "inf", "value": "-Infinity"}],
                    "params": [{"key": "lr", "value": "0.1"}, {"key": "empty"}],
                    "tags": [{"key": "mlflow.runName", "value": "r"}],
                },
                "inputs": {"dataset_inputs": [
                    {"dataset": {"name": "d", "digest": "1", "source_type": "local",
                                 "source": "{}", "profile": "{\"num_rows\": 3}"},
                     "tags": [{"key": "mlflow.data.context", "value": "training"}]},
                    {"dataset": {}},
                ]},
                "outputs": {"model_outputs": [{"model_id": "m-1", "step": 0}]},
            },
        ],
        "next_page_token": "",
    }  # fmt: skip
    ours, token = rest_runs.runs_of(document), rest_runs.next_token(document)
    proto = SearchRuns.Response()
    parse_dict(js_dict=document, message=proto)
    theirs = [MlflowRun.from_proto(run) for run in proto.runs]
    assert token is None and len(ours) == len(theirs) == 2
    for mine, run in zip(ours, theirs, strict=True):
        for name in ("run_id", "run_name", "experiment_id", "user_id", "status", "start_time",
                     "end_time", "lifecycle_stage", "artifact_uri"):  # fmt: skip
            assert getattr(mine.info, name) == getattr(run.info, name), name
        assert mine.data.params == run.data.params and mine.data.tags == run.data.tags
        assert repr([(m.key, m.value, m.timestamp, m.step) for m in mine.data._metric_objs]) == (
            repr([(m.key, m.value, m.timestamp, m.step) for m in run.data._metric_objs])
        )
        assert [
            (d.dataset.name, d.dataset.digest, d.dataset.source_type, d.dataset.source,
             d.dataset.schema, d.dataset.profile, [(t.key, t.value) for t in d.tags])
            for d in mine.inputs.dataset_inputs
        ] == [
            (d.dataset.name, d.dataset.digest, d.dataset.source_type, d.dataset.source,
             d.dataset.schema, d.dataset.profile, [(t.key, t.value) for t in d.tags])
            for d in run.inputs.dataset_inputs
        ]  # fmt: skip
        assert [o.model_id for o in mine.outputs.model_outputs] == [
            o.model_id for o in run.outputs.model_outputs
        ]


# --------------------------------------------------------------------------- paging ahead


def test_offset_tokens_are_spelled_as_mlflows_stores_spell_them() -> None:
    from mlflow.utils.search_utils import SearchUtils

    from audit.sources import rest_runs

    for offset in (0, 1, 2_000, 5_000, 10**9):
        token = SearchUtils.create_page_token(offset).decode()
        assert rest_runs.offset_token(offset) == token
        assert rest_runs.offset_of(token) == offset
    other_spellings = [
        None,
        "",
        "not base64!",
        "CAESBgoEdGVzdA",  # an opaque token of another server
        base64.b64encode(b'{"offset":5}').decode(),  # spelled otherwise: not MLflow's
        base64.b64encode(b'{"offset": 5, "order": 1}').decode(),
        base64.b64encode(b'{"offset": "5"}').decode(),
        base64.b64encode(b'{"offset": -5}').decode(),
        base64.b64encode(b'{"offset": 5.0}').decode(),
        base64.b64encode(b"[5]").decode(),
        rest_runs.offset_token(5) + "\n",
    ]
    assert [rest_runs.offset_of(token) for token in other_spellings] == [None] * 11


class PagedList:
    """A search over `items` as a server answers it, page by page, each answer taking a little
    time; it records the offsets and page sizes asked for and how many requests it answered at
    once."""

    def __init__(
        self,
        items: int,
        offsets: bool = True,
        run_bytes: Callable[[int], int] = lambda start: 0,
        cap: int | None = None,
        serial: float = 0,
        later: Callable[[int], float] = lambda start: 0.02,
    ) -> None:
        self.items = list(range(items))
        self.offsets = offsets  # page tokens spelled as MLflow's stores spell them, or opaque
        self.run_bytes = run_bytes  # bytes per run of the page at an offset (0: unknown)
        self.cap = cap  # the most runs the server puts in a page, whatever is asked
        self.serial = serial  # seconds per run of a server that builds one page at a time
        self.later = later  # seconds the page at an offset takes (built in parallel)
        self.latencies: list[float] = []
        self.busy_at_start: list[int] = []
        self._building = threading.Lock()
        self.failing: int | None = None  # the offset of a page whose request fails
        self.asked: list[int] = []
        self.sizes: dict[int, int] = {}  # the page size last asked for at each offset
        self.busy = self.most_busy = 0
        self._lock = threading.Lock()

    def fetch(self, token: str | None, size: int) -> Any:
        from audit.sources import rest_runs
        from audit.sources.client import _Page

        with self._lock:
            self.busy += 1
            self.most_busy = max(self.most_busy, self.busy)
            self.busy_at_start.append(self.busy)
        began = time.monotonic()
        try:
            if token is None:
                start = 0
            elif self.offsets:
                offset = rest_runs.offset_of(token)
                assert offset is not None, token  # only ever its own tokens, or forged ones
                start = offset
            else:
                start = int(token.removeprefix("opaque-"))
            end = start + min(size, self.cap or size)
            if self.serial:
                with self._building:
                    time.sleep(self.serial * len(self.items[start:end]))
            else:
                time.sleep(0.02 if token is None else self.later(start))
            with self._lock:
                self.asked.append(start)
                self.sizes[start] = size
            if start == self.failing:
                raise RuntimeError(f"page at {start} failed")
            page = self.items[start:end]
            answer_bytes = self.run_bytes(start) * len(page)
            if end >= len(self.items):
                return _Page(page, None, answer_bytes)
            next_token = rest_runs.offset_token(end) if self.offsets else f"opaque-{end}"
            return _Page(page, next_token, answer_bytes)
        finally:
            with self._lock:
                self.busy -= 1
                self.latencies.append(time.monotonic() - began)


def _pages(
    paged: PagedList,
    first: int = 5,
    largest: int = 5,
    answer_bytes: int = 0,
    limit: int | None = None,
    seconds_ahead: float = 60,
) -> Iterator[list[int]]:
    from audit.sources.client import _pages_ahead, _PageSizes, _Progress

    sizes = _PageSizes(first, largest, answer_bytes)
    progress = _Progress(identity=lambda item: item)  # items are numbers, not runs
    return _pages_ahead(
        paged.fetch, 3, limit, sizes=sizes, seconds_ahead=seconds_ahead, progress=progress
    )


def _all_pages(paged: PagedList, **sizes: Any) -> list[list[int]]:
    pages = []
    for page in _pages(paged, **sizes):
        time.sleep(0.01)  # the audit's work on a page
        pages.append(page)
    return pages


def test_offset_pages_are_asked_for_several_at_once_in_order() -> None:
    paged = PagedList(23)
    pages = _all_pages(paged)
    assert pages == [paged.items[i : i + 5] for i in range(0, 23, 5)]
    assert paged.most_busy == 3
    # Past the last page, at most the pages already asked for ahead.
    assert sorted(paged.asked)[:5] == [0, 5, 10, 15, 20] and len(paged.asked) <= 5 + 2


def test_pages_hold_as_many_runs_as_the_answers_allow() -> None:
    """A first page of 5, then as many runs as 100 bytes of answer hold (10 bytes a run: 10),
    fewer once runs grow larger (25 bytes from offset 45 on: 4), one when a run is larger than
    that; never more than the largest page (30)."""
    paged = PagedList(100, run_bytes=lambda start: 10 if start < 45 else 25)
    pages = _all_pages(paged, first=5, largest=30, answer_bytes=100)
    assert [item for page in pages for item in page] == paged.items
    assert [len(page) for page in pages[:6]] == [5, 10, 10, 10, 10, 10]
    assert {len(page) for page in pages[8:-1]} == {4}  # three pages of 10 were asked already
    small = PagedList(40, run_bytes=lambda start: 1)
    assert [len(page) for page in _all_pages(small, first=5, largest=30, answer_bytes=100)] == [
        5, 30, 5,
    ]  # fmt: skip
    huge = PagedList(12, run_bytes=lambda start: 10**9)
    assert _all_pages(huge, first=5, largest=30, answer_bytes=100) == [
        [0, 1, 2, 3, 4],
        *([i] for i in range(5, 12)),
    ]


def test_pages_are_sized_for_a_server_building_one_at_a_time() -> None:
    """A server that builds one page at a time, 0.05 s a run: its first page of 2 runs shows
    that three pages asked for at once are each answered within the 0.25 s allowed only if they
    hold one run each (whatever the machine's speed: a run takes at least 0.05 s). Without the
    limit, a server taking 0.06 s a run gets pages of 10 (0.6 s each), the second answered
    after 1.2 s."""
    paged = PagedList(12, serial=0.05)
    pages = _all_pages(paged, first=2, largest=10, seconds_ahead=0.25)
    assert pages == [[0, 1], *([i] for i in range(2, 12))]
    unbounded = PagedList(22, serial=0.06)
    assert len(_all_pages(unbounded, first=2, largest=10, seconds_ahead=60)[1]) == 10
    assert unbounded.most_busy == 3 and max(unbounded.latencies) > 1.2 - 0.01


def test_fewer_pages_are_asked_for_at_once_when_answers_grow_slower() -> None:
    """The first page in 0.02 s, the others in 0.3 s: past 0.25 s, one fewer at a time, down
    to one page ahead."""
    paged = PagedList(45, later=lambda start: 0.3)
    pages = _all_pages(paged, first=3, largest=3, seconds_ahead=0.25)
    assert [item for page in pages for item in page] == paged.items
    assert paged.most_busy == 3
    assert paged.busy_at_start[-4:] == [1, 1, 1, 1]


def test_more_pages_are_asked_for_at_once_again_when_answers_are_fast_again() -> None:
    """Pages at offsets below 30 take 0.3 s, over the 0.25 s allowed; later ones 0.05 s, so
    that even built one after the other three would be in time."""
    paged = PagedList(90, later=lambda start: 0.3 if start < 30 else 0.05)
    pages = _all_pages(paged, first=3, largest=3, seconds_ahead=0.25)
    assert [item for page in pages for item in page] == paged.items
    assert 1 in paged.busy_at_start[5:12]  # slowed down to one page ahead
    assert max(paged.busy_at_start[-8:]) >= 2  # and sped up again


def test_pages_asked_for_ahead_are_checked_against_the_servers_tokens() -> None:
    """A server that puts at most 7 runs in a page: asked for pages of 10 after a first page
    of 3, its page at offset 3 ends at 10, not 13: the pages asked for at 13 and 23 are
    dropped, the search goes on from the server's token in pages of 7. Nothing is lost or
    doubled."""
    paged = PagedList(40, cap=7)
    pages = _all_pages(paged, first=3, largest=10)
    assert [item for page in pages for item in page] == paged.items
    assert pages[:3] == [[0, 1, 2], [3, 4, 5, 6, 7, 8, 9], list(range(10, 17))]
    assert 13 in paged.asked  # asked for ahead, dropped
    assert {paged.sizes[start] for start in (17, 24, 31)} == {7}


def test_opaque_tokens_are_followed_one_page_ahead() -> None:
    paged = PagedList(23, offsets=False)
    pages = _all_pages(paged)
    assert [item for page in pages for item in page] == paged.items
    assert paged.most_busy == 1 and paged.asked == [0, 5, 10, 15, 20]


def test_no_page_at_or_past_the_limit_is_asked_for_ahead() -> None:
    """--max-runs 12 in pages of 5: the pages at 0, 5 and 10 are what the audit uses; only the
    server's own next token (15) is followed one page ahead, as with any server."""
    paged = PagedList(100)
    pages = _pages(paged, limit=12)
    assert list(itertools.islice(pages, 3)) == [paged.items[i : i + 5] for i in (0, 5, 10)]
    pages.close()
    assert sorted(paged.asked) in ([0, 5, 10], [0, 5, 10, 15])  # 15: if not cancelled in time


def test_a_page_that_fails_raises_where_it_would_be() -> None:
    paged = PagedList(40)
    paged.failing = 15
    received = []
    with pytest.raises(RuntimeError, match="page at 15 failed"):
        for page in _pages(paged):
            received.append(page)
    assert received == [paged.items[0:5], paged.items[5:10], paged.items[10:15]]
