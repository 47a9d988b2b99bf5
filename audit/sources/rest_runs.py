"""Runs from the JSON of a tracking server's `runs/search`, without protobuf.

MLflow's client turns each page into protobuf messages (`json_format.ParseDict`, pure Python)
and then into `Run` entities: about 0.4 ms a run, a third of what paging a tracking server
costs the auditing machine. These classes carry the attributes of MLflow's `Run` that the client
source reads, straight from the parsed JSON, with MLflow's own conversions: protobuf's default
for a field the server left out (proto2: "" for strings, 0 for numbers, RUNNING for the status),
an end time of 0 as None (`RunInfo.from_proto`), a dataset's schema and profile None when
absent (`Dataset.from_proto`), and the latest metrics in the order the server sent them.
tests/test_server.py checks that every record is the same as through MLflow's entities.

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


def runs_of(document: Mapping[str, Any]) -> list[Run]:
    """The runs of a `runs/search` answer."""
    return [_run(run) for run in document.get("runs") or ()]


def next_token(document: Mapping[str, Any]) -> str | None:
    """The next page's token; None on the last page (MLflow's client reads "" so too)."""
    token = document.get("next_page_token")
    return str(token) if token else None


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


def _run(run: Mapping[str, Any]) -> Run:
    info = run.get("info") or {}
    data = run.get("data") or {}
    inputs = run.get("inputs") or {}
    outputs = run.get("outputs") or {}
    end_time = int(info.get("end_time") or 0)
    return Run(
        info=RunInfo(
            run_id=info.get("run_id", ""),
            run_name=info.get("run_name", ""),
            experiment_id=str(info.get("experiment_id", "")),
            user_id=info.get("user_id", ""),
            status=info.get("status", "RUNNING"),
            start_time=int(info.get("start_time") or 0),
            end_time=end_time or None,
            lifecycle_stage=info.get("lifecycle_stage", ""),
            artifact_uri=info.get("artifact_uri", ""),
        ),
        data=RunData(
            _metric_objs=[
                Metric(
                    metric.get("key", ""),
                    # float() reads protobuf's "NaN", "Infinity" and "-Infinity" too.
                    float(metric.get("value", 0.0)),
                    int(metric.get("timestamp") or 0),
                    int(metric.get("step") or 0),
                )
                for metric in data.get("metrics") or ()
            ],
            params={p.get("key", ""): p.get("value", "") for p in data.get("params") or ()},
            tags={t.get("key", ""): t.get("value", "") for t in data.get("tags") or ()},
        ),
        inputs=RunInputs([_dataset_input(entry) for entry in inputs.get("dataset_inputs") or ()]),
        outputs=RunOutputs(
            [ModelOutput(entry.get("model_id", "")) for entry in outputs.get("model_outputs") or ()]
        ),
    )


def _dataset_input(entry: Mapping[str, Any]) -> DatasetInput:
    dataset = entry.get("dataset") or {}
    return DatasetInput(
        Dataset(
            name=dataset.get("name", ""),
            digest=dataset.get("digest", ""),
            source_type=dataset.get("source_type", ""),
            source=dataset.get("source", ""),
            schema=dataset.get("schema"),
            profile=dataset.get("profile"),
        ),
        [InputTag(tag.get("key", ""), tag.get("value", "")) for tag in entry.get("tags") or ()],
    )
