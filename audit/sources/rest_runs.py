"""Runs from the JSON of a tracking server's `runs/search`, without protobuf.

MLflow's client turns each page into protobuf messages (`json_format.ParseDict`, pure Python)
and then into `Run` entities: about 0.4 ms a run, a third of what paging a tracking server
costs the auditing machine. These classes carry the attributes of MLflow's `Run` that the client
source reads, straight from the parsed JSON, with MLflow's own conversions: protobuf's default
for a field the server left out (proto2: "" for strings, 0 for numbers, RUNNING for the status),
an end time of 0 as None (`RunInfo.from_proto`), a dataset's schema and profile None when
absent (`Dataset.from_proto`), and the latest metrics in the order the server sent them.
tests/test_server.py checks that every record is the same as through MLflow's entities.

An answer MLflow's protocol does not allow is refused (`MalformedAnswer`), where MLflow's client
would refuse it too (a field of another type) and where it would lose or misread runs: a run
without a run id or experiment, with a lifecycle stage other than active or deleted (the audit
would leave it out), or an unknown status (protobuf reads it as RUNNING).

The request itself goes through mlflow-skinny's `http_request`: its retries, timeouts,
authentication and TLS settings, and its error for an error response.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from audit.sources.common import RUN_ID

SEARCH_ENDPOINT = "/api/2.0/mlflow/runs/search"


@dataclass(frozen=True, slots=True)
class RunInfo:
    run_id: str
    run_name: str
    experiment_id: str
    user_id: str
    status: str
    start_time: int
    end_time: int | None
    lifecycle_stage: str
    artifact_uri: str


@dataclass(frozen=True, slots=True)
class Metric:
    key: str
    value: float
    timestamp: int
    step: int


@dataclass(frozen=True, slots=True)
class RunData:
    _metric_objs: list[Metric]
    params: dict[str, str]
    tags: dict[str, str]


@dataclass(frozen=True, slots=True)
class Dataset:
    name: str
    digest: str
    source_type: str
    source: str
    schema: str | None
    profile: str | None


@dataclass(frozen=True, slots=True)
class InputTag:
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class DatasetInput:
    dataset: Dataset
    tags: list[InputTag]


@dataclass(frozen=True, slots=True)
class RunInputs:
    dataset_inputs: list[DatasetInput]


@dataclass(frozen=True, slots=True)
class ModelOutput:
    model_id: str


@dataclass(frozen=True, slots=True)
class RunOutputs:
    model_outputs: list[ModelOutput]


@dataclass(frozen=True, slots=True)
class Run:
    info: RunInfo
    data: RunData
    inputs: RunInputs
    outputs: RunOutputs


def search_body(
    experiment_ids: Sequence[str],
    filter_string: str,
    view: str,
    max_results: int,
    page_token: str | None,
) -> dict[str, Any]:
    """The request `RestStore.search_runs` sends (`view`: ACTIVE_ONLY, DELETED_ONLY or ALL)."""
    body: dict[str, Any] = {
        "experiment_ids": [str(e) for e in experiment_ids],
        "filter": filter_string,
        "run_view_type": view,
        "max_results": max_results,
    }
    if page_token:
        body["page_token"] = page_token
    return body


def runs_of(document: Any) -> list[Run]:
    """The runs of a `runs/search` answer; `MalformedAnswer` for one MLflow's protocol does not
    allow."""
    if not isinstance(document, dict):
        raise MalformedAnswer(f"{_ENDPOINT} with {_shown(document)}, not a JSON object")
    runs = document.get("runs")
    if runs is None:
        return []
    if not isinstance(runs, list):
        raise MalformedAnswer(f"{_ENDPOINT} with runs that are {_shown(runs)}, not a list")
    found = []
    for index, run in enumerate(runs):
        try:
            found.append(_run(run))
        except _Malformed as error:
            raise MalformedAnswer(
                f"{_ENDPOINT} with a malformed run (number {index + 1} of its page): {error}"
            ) from None
    return found


def next_token(document: Mapping[str, Any]) -> str | None:
    """The next page's token; None on the last page (MLflow's client reads "" so too)."""
    token = document.get("next_page_token")
    if token is not None and type(token) is not str:
        raise MalformedAnswer(f"{_ENDPOINT} with a next page token that is {_shown(token)}")
    return token or None


def offset_token(offset: int) -> str:
    """The page token MLflow's stores give the page that starts at `offset` (base64 of
    `{"offset": N}`, `SearchUtils.create_page_token`). MLflow calls the format unstable: it is
    only ever used after the server itself answered with a token spelled exactly so
    (`offset_of`), and each page asked for with it is checked against the server's next token.
    """
    return base64.b64encode(json.dumps({"offset": offset}).encode()).decode()


def offset_of(token: str | None) -> int | None:
    """The offset `token` stands for if it is spelled exactly as `offset_token` spells it, else
    None (another server, another format)."""
    if not token:
        return None
    try:
        decoded = json.loads(base64.b64decode(token, validate=True))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(decoded, dict) or decoded.keys() != {"offset"}:
        return None
    offset = decoded["offset"]
    if type(offset) is not int or offset < 0 or offset_token(offset) != token:
        return None
    return offset


class MalformedAnswer(ValueError):
    """An answer of a tracking server that MLflow's protocol does not allow, which read as
    MLflow's client reads it would lose or misread runs. The message names the endpoint and
    says what is wrong ("runs/search with ...")."""


class _Malformed(ValueError):
    """What is wrong with one run of an answer."""


_ENDPOINT = "runs/search"
#: RunInfo.lifecycle_stage: MLflow's LifecycleStage; a run of another stage would be left out.
_STAGES = frozenset({"active", "deleted"})
#: RunStatus; protobuf would read another name as RUNNING, its default.
_STATUSES = frozenset({"RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"})
#: protobuf's JSON spelling of the doubles JSON has no number for.
_SPECIAL_FLOATS = frozenset({"NaN", "Infinity", "-Infinity"})


def _run(run: Any) -> Run:
    """A run, with the defaults protobuf gives a field left out (or null), and each field of
    the type MLflow's protocol gives it, else `_Malformed`."""
    run = _object(run, "the run")
    info = _object(run.get("info"), "info")
    data = _object(run.get("data"), "data")
    inputs = _object(run.get("inputs"), "inputs")
    outputs = _object(run.get("outputs"), "outputs")
    run_id = info.get("run_id")
    if type(run_id) is not str or not RUN_ID.fullmatch(run_id):
        raise _Malformed(f"its run_id is {_shown(run_id)}, not a run id")
    stage = info.get("lifecycle_stage")
    if stage is None:
        raise _Malformed(f"run {run_id} has no lifecycle_stage")
    if type(stage) is not str or stage not in _STAGES:
        raise _Malformed(
            f"run {run_id}'s lifecycle_stage is {_shown(stage)}, neither active nor deleted"
        )
    experiment_id = info.get("experiment_id")
    if type(experiment_id) is not str or not experiment_id:
        shown = "missing" if experiment_id == "" else _shown(experiment_id)
        raise _Malformed(f"run {run_id}'s experiment_id is {shown}")
    status = info.get("status")
    if status is None:
        status = "RUNNING"
    elif type(status) is not str or status not in _STATUSES:
        raise _Malformed(f"run {run_id}'s status is {_shown(status)}")
    try:
        end_time = _integer(info.get("end_time"), "end_time")
        return Run(
            info=RunInfo(
                run_id=run_id,
                run_name=_text(info.get("run_name"), "run_name"),
                experiment_id=experiment_id,
                user_id=_text(info.get("user_id"), "user_id"),
                status=status,
                start_time=_integer(info.get("start_time"), "start_time"),
                end_time=end_time or None,
                lifecycle_stage=stage,
                artifact_uri=_text(info.get("artifact_uri"), "artifact_uri"),
            ),
            data=RunData(
                _metric_objs=[_metric(metric) for metric in _list(data.get("metrics"), "metrics")],
                params=_pairs(data.get("params"), "params"),
                tags=_pairs(data.get("tags"), "tags"),
            ),
            inputs=RunInputs(
                [_dataset_input(e) for e in _list(inputs.get("dataset_inputs"), "dataset_inputs")]
            ),
            outputs=RunOutputs(
                [
                    ModelOutput(_text(_object(e, "a model output").get("model_id"), "model_id"))
                    for e in _list(outputs.get("model_outputs"), "model_outputs")
                ]
            ),
        )
    except _Malformed as error:
        raise _Malformed(f"run {run_id}'s {error}") from None


def _dataset_input(entry: Any) -> DatasetInput:
    entry = _object(entry, "a dataset input")
    dataset = _object(entry.get("dataset"), "a dataset")
    return DatasetInput(
        Dataset(
            name=_text(dataset.get("name"), "dataset name"),
            digest=_text(dataset.get("digest"), "dataset digest"),
            source_type=_text(dataset.get("source_type"), "dataset source_type"),
            source=_text(dataset.get("source"), "dataset source"),
            schema=_optional_text(dataset.get("schema"), "dataset schema"),
            profile=_optional_text(dataset.get("profile"), "dataset profile"),
        ),
        [
            InputTag(key, value)
            for key, value in _pairs(entry.get("tags"), "dataset input tags").items()
        ],
    )


def _metric(metric: Any) -> Metric:
    metric = _object(metric, "a metric")
    key, value = metric.get("key"), metric.get("value")
    timestamp, step = metric.get("timestamp"), metric.get("step")
    if type(key) is str and type(value) is float and type(timestamp) is int and type(step) is int:
        return Metric(key, value, timestamp, step)  # as MLflow's server writes them
    if value is None:
        number = 0.0
    elif type(value) in (float, int) or (type(value) is str and value in _SPECIAL_FLOATS):
        number = float(value)
    else:
        raise _Malformed(f"metric value is {_shown(value)}, not a number")
    return Metric(
        _text(key, "metric key"),
        number,
        _integer(timestamp, "metric timestamp"),
        _integer(step, "metric step"),
    )


def _pairs(entries: Any, what: str) -> dict[str, str]:
    """Params or tags: `{"key": ..., "value": ...}` objects, in order (the last of a key wins,
    as in MLflow's entities)."""
    pairs = {}
    for entry in _list(entries, what):
        if type(entry) is not dict:
            raise _Malformed(f"{what} hold {_shown(entry)}, not a key and value")
        key = entry.get("key", "")
        value = entry.get("value", "")
        if type(key) is not str or type(value) is not str:
            # null is protobuf's default, ""; anything else is not a string.
            key = "" if key is None else key
            value = "" if value is None else value
            if type(key) is not str:
                raise _Malformed(f"{what} hold a key that is {_shown(key)}, not a string")
            if type(value) is not str:
                raise _Malformed(
                    f"{what} hold {_shown(key)} with a value that is {_shown(value)}, not a string"
                )
        pairs[key] = value
    return pairs


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if type(value) is not dict:
        raise _Malformed(f"{what} is {_shown(value)}, not an object")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if type(value) is not list:
        raise _Malformed(f"{what} are {_shown(value)}, not a list")
    return value


def _text(value: Any, what: str) -> str:
    if value is None:
        return ""
    if type(value) is not str:
        raise _Malformed(f"{what} is {_shown(value)}, not a string")
    return value


def _optional_text(value: Any, what: str) -> str | None:
    return None if value is None else _text(value, what)


def _integer(value: Any, what: str) -> int:
    """An int64: a JSON integer, or a string of one (protobuf's JSON spells int64 so)."""
    if value is None:
        return 0
    if type(value) is int:
        return value
    if type(value) is str and value.removeprefix("-").isdigit() and value.isascii():
        return int(value)
    raise _Malformed(f"{what} is {_shown(value)}, not an integer")


def _shown(value: Any) -> str:
    """A value of an answer in a message: its JSON type, and a short excerpt of a string."""
    if value is None:
        return "missing"
    if type(value) is str:
        return repr(value[:40] + ("..." if len(value) > 40 else ""))
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)
