"""`verify-deploy` and the verdict tags the gate writes, on copies of a real store with a
registered model's lineage (tests/fixtures/lineage_store.py)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow import MlflowClient

from audit.gate.judge import audit_version, record_verdict
from audit.gate.verdict import TAGS, read_verdict
from tests.conftest import LineageStore


@pytest.fixture(scope="module")
def cli_main() -> Callable[..., int]:
    from audit.cli import main

    return lambda *args: main(list(args))


@pytest.fixture
def store(lineage_store: LineageStore, tmp_path: Path) -> str:
    """A copy of the lineage store's database (its artifacts stay where they are, read only)."""
    database = tmp_path / "mlflow.db"
    shutil.copy2(lineage_store.root, database)
    return f"sqlite:///{database}"


def _judge(store: str, model: str, version: str) -> None:
    verdict, _ = audit_version(f"{model}/{version}", store)
    record_verdict(store, model, version, verdict)


def _deploy(cli_main, capsys, store: str, *args: str) -> tuple[int, str]:
    code = cli_main("verify-deploy", "--tracking-uri", store, *args)
    return code, capsys.readouterr().out


def test_a_version_without_a_verdict_is_not_deployed(
    store: str, lineage_store: LineageStore, cli_main, capsys
) -> None:
    code, out = _deploy(cli_main, capsys, store, f"{lineage_store.model}@champion")
    assert code == 1
    assert "churn-classifier/3 carries no verdict" in out
    assert out.splitlines()[-1] == "DO NOT DEPLOY churn-classifier/3"


def test_a_recorded_passing_verdict_deploys_while_the_evidence_holds(
    store: str, lineage_store: LineageStore, cli_main, capsys
) -> None:
    model = lineage_store.model
    _judge(store, model, "3")
    tags = MlflowClient(store, store).get_model_version(model, "3").tags
    verdict = read_verdict(tags)
    assert verdict is not None and set(TAGS) <= set(tags)
    # No system card: the declared rules warn, and the gate at --fail-on error passes.
    assert verdict.status == "warn" and verdict.policy.startswith("eu-ai-act-high-risk")
    code, out = _deploy(cli_main, capsys, store, f"{model}@champion")
    assert code == 0, out
    assert out.splitlines()[-1] == "DEPLOY churn-classifier/3"
    assert _deploy(cli_main, capsys, store, f"{model}@champion", "--fail-on", "warning")[0] == 1
    code, out = _deploy(cli_main, capsys, store, f"{model}@champion", "--policy", "baseline")
    assert code == 1 and "not the policy given (baseline" in out
    # A new evaluation linked to the model changes the version's evidence.
    client = MlflowClient(store, store)
    client.log_metric(
        lineage_store.run_ids["evaluate-v3"],
        "recall_score",
        0.5,
        model_id=lineage_store.model_ids["v3"],
    )
    code, out = _deploy(cli_main, capsys, store, f"{model}@champion")
    assert code == 1 and "the evidence of churn-classifier/3 changed in MLflow" in out


def test_an_alias_moved_to_a_failing_version_is_not_deployed(
    store: str, lineage_store: LineageStore, cli_main, capsys
) -> None:
    model = lineage_store.model
    _judge(store, model, "3")
    client = MlflowClient(store, store)
    client.set_registered_model_alias(model, "champion", "1")
    code, out = _deploy(cli_main, capsys, store, f"{model}@champion")
    assert code == 1 and "churn-classifier/1 carries no verdict" in out
    _judge(store, model, "1")  # never evaluated: errors
    code, out = _deploy(cli_main, capsys, store, f"{model}@champion")
    assert code == 1 and "is fail (--fail-on error)" in out


def test_a_partial_or_forged_verdict_is_no_verdict(
    store: str, lineage_store: LineageStore, cli_main, capsys
) -> None:
    model = lineage_store.model
    client = MlflowClient(store, store)
    client.set_model_version_tag(model, "3", "audit.status", "pass")
    assert _deploy(cli_main, capsys, store, f"{model}/3")[0] == 1
    _judge(store, model, "3")
    client.set_model_version_tag(model, "3", "audit.evidence_sha256", "not a digest")
    code, out = _deploy(cli_main, capsys, store, f"{model}/3")
    assert code == 1 and "carries no verdict" in out


def test_a_run_id_is_not_a_model_version(
    store: str, lineage_store: LineageStore, cli_main, capsys
) -> None:
    code = cli_main("verify-deploy", "--tracking-uri", store, lineage_store.run_ids["trial-2"])
    assert code == 2
    assert "is not a model version" in capsys.readouterr().err


def test_a_signed_report_folder_can_stand_for_the_verdict(
    store: str, lineage_store: LineageStore, tmp_path: Path, cli_main, capsys, monkeypatch
) -> None:
    model = lineage_store.model
    monkeypatch.setenv("GATE_KEY_PASSPHRASE", "a passphrase for the tests")
    keys = tmp_path / "keys"
    assert cli_main("keygen", "--subject", "CN=Gate", "--out", str(keys),
                    "--passphrase-env", "GATE_KEY_PASSPHRASE") == 0  # fmt: skip
    folder = tmp_path / "signed"
    assert cli_main(
        "report", "--tracking-uri", store, "--model", f"{model}@champion", "--out", str(folder),
        "--no-pdf", "--sign", str(keys / "signer.p12"), "--passphrase-env", "GATE_KEY_PASSPHRASE",
    ) == 0  # fmt: skip
    args = (f"{model}@champion", "--report", str(folder), "--cert", str(keys / "signer.pem"))
    capsys.readouterr()
    code, out = _deploy(cli_main, capsys, store, *args)
    assert code == 0, out
    MlflowClient(store, store).set_registered_model_alias(model, "champion", "2")
    code, out = _deploy(cli_main, capsys, store, *args)
    assert code == 1 and "does not document churn-classifier/2" in out
