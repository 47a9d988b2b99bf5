"""Auditing through a real `mlflow server` (REST, proxied artifacts)."""

from __future__ import annotations

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
