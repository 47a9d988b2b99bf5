"""Auditing through a real `mlflow server` (REST, proxied artifacts)."""

from __future__ import annotations

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
    from audit.sources.client import ClientSource

    def records() -> list[tuple[str, bytes]]:
        return [
            (c.record["run"]["id"], canonical_json(c.record))
            for c in collect(mlflow_server.uri, selection=make_selection(include_deleted=True),
                             page_size=3)
        ]  # fmt: skip

    read_from_json = records()

    def through_mlflows_client(self: ClientSource, selection: Any) -> Any:
        return self._search_client(self._experiment_ids(selection), selection)

    monkeypatch.setattr(ClientSource, "_search", through_mlflows_client)
    assert read_from_json == records()
    assert len(read_from_json) == len(mlflow_server.run_ids)


def test_runs_search_json_read_as_mlflows_entities_read_it() -> None:
    """Fields a server leaves out take protobuf's defaults, as MLflow's `Run.from_proto` gives
    them: an empty name, a start time of 0, RUNNING, no end time, no schema or profile."""
    from mlflow.entities import Run as MlflowRun
    from mlflow.protos.service_pb2 import SearchRuns
    from mlflow.utils.proto_json_utils import parse_dict

    from audit.sources import rest_runs

    document = {
        "runs": [
            {"info": {"run_id": "a" * 32, "experiment_id": "7"}},
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
