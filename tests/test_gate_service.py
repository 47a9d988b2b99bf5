"""`mlflow-audit serve` behind a real `mlflow server` (SQL backend) that delivers its registry
webhooks to it on 127.0.0.1: verdict tags, the ledger, verify-deploy, forged and replayed
deliveries, /healthz and /metrics."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests import stores
from tests.conftest import LineageStore, running_mlflow_server

SECRET = "a webhook secret for the tests"
PASSPHRASE = "a passphrase for the gate's key"


@dataclass(frozen=True)
class Gate:
    tracking: str
    url: str
    ledger: Path
    keys: Path
    log: Path
    docs: Path
    #: How the gate was started, and its process (a test kills it).
    command: tuple[str, ...]
    process: subprocess.Popen[bytes]


def _wait(condition, what: str, log: Path, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout} s; gate log:\n{log.read_text()[-3000:]}")


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - loopback
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture(scope="module")
def gate(lineage_store: LineageStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    directory = tmp_path_factory.mktemp("gate")
    shutil.copy2(lineage_store.root, directory / "mlflow.db")
    previous = {k: os.environ.get(k) for k in ("MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS",
                                                "MLFLOW_WEBHOOK_ALLOWED_SCHEMES")}  # fmt: skip
    # MLflow refuses loopback targets and plain http unless told otherwise (tests only).
    os.environ["MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS"] = "true"
    os.environ["MLFLOW_WEBHOOK_ALLOWED_SCHEMES"] = "http,https"
    env = {**stores.environment(), "MLFLOW_AUDIT_WEBHOOK_SECRET": SECRET,
           "GATE_PASSPHRASE": PASSPHRASE}  # fmt: skip
    keys = directory / "keys"
    subprocess.run(
        [sys.executable, "-m", "audit", "keygen", "--subject", "CN=Registry Gate",
         "--out", str(keys), "--passphrase-env", "GATE_PASSPHRASE"],
        check=True, capture_output=True, env=env,
    )  # fmt: skip
    try:
        with running_mlflow_server(directory, f"sqlite:///{directory / 'mlflow.db'}") as tracking:
            port = stores.free_port()
            ledger = directory / "ledger.jsonl"
            log = directory / "gate.log"
            with log.open("w") as output:
                command = (
                    sys.executable, "-m", "audit", "serve", "--tracking-uri", tracking,
                    "--port", str(port), "--state", str(directory / "state"),
                    "--ledger", str(ledger), "--sign", str(keys / "signer.p12"),
                    "--passphrase-env", "GATE_PASSPHRASE", "--docs", str(directory / "docs"),
                    "--register-webhook", f"http://127.0.0.1:{port}/webhook",
                )  # fmt: skip
                process = subprocess.Popen(
                    command, stdout=output, stderr=subprocess.STDOUT, env=env, cwd=directory
                )
                url = f"http://127.0.0.1:{port}"
                try:
                    _wait(lambda: _healthy(url), "the gate answering /healthz", log)
                    yield Gate(
                        tracking, url, ledger, keys, log, directory / "docs", command, process
                    )
                finally:
                    process.terminate()
                    try:
                        process.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _healthy(url: str) -> bool:
    try:
        return _get(f"{url}/healthz")[0] == 200
    except OSError:
        return False


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "audit", *args],
        capture_output=True, text=True, env=stores.environment(), timeout=120,
    )  # fmt: skip


def test_a_new_version_gets_its_verdict_and_an_alias_move_a_ledger_entry(
    gate: Gate, lineage_store: LineageStore
) -> None:
    client = MlflowClient(gate.tracking, gate.tracking)
    model = lineage_store.model
    # A new version of the sweep's best model (evaluated in evaluate-v3) and of v1's model
    # (never evaluated), registered as a pipeline would.
    good = client.create_model_version(
        model, f"models:/{lineage_store.model_ids['v3']}",
        run_id=lineage_store.run_ids["trial-2"], model_id=lineage_store.model_ids["v3"],
    ).version  # fmt: skip
    bad = client.create_model_version(
        model, f"models:/{lineage_store.model_ids['v1']}",
        run_id=lineage_store.run_ids["train-v1"], model_id=lineage_store.model_ids["v1"],
    ).version  # fmt: skip

    def status(version: str) -> str | None:
        return client.get_model_version(model, version).tags.get("audit.status")

    _wait(lambda: status(good) and status(bad), "verdict tags on both versions", gate.log)
    assert status(good) == "warn"  # no system card: declared warnings only
    assert status(bad) == "fail"  # never evaluated
    tags = client.get_model_version(model, good).tags
    assert {"audit.score", "audit.policy", "audit.policy_sha256", "audit.result_sha256",
            "audit.evidence_sha256", "audit.checked_at"} <= set(tags)  # fmt: skip

    client.set_registered_model_alias(model, "production", good)
    _wait(lambda: gate.ledger.exists() and gate.ledger.read_text().count("\n") >= 1,
          "a ledger entry", gate.log)  # fmt: skip
    client.set_registered_model_alias(model, "production", bad)
    _wait(lambda: gate.ledger.read_text().count("\n") >= 2, "a second entry", gate.log)
    shown = _cli("ledger", "show", str(gate.ledger), "-f", "json")
    moves = json.loads(shown.stdout)
    assert [(m["alias"], m["old_version"], m["new_version"]) for m in moves] == [
        ("production", None, good),
        ("production", good, bad),
    ]
    assert [m["verdict"]["status"] for m in moves] == ["warn", "fail"]
    verified = _cli("ledger", "verify", str(gate.ledger), "--cert", str(gate.keys / "signer.pem"))
    assert verified.returncode == 0, verified.stdout + verified.stderr

    refused = _cli("verify-deploy", f"{model}@production", "--tracking-uri", gate.tracking)
    assert refused.returncode == 1 and f"DO NOT DEPLOY {model}/{bad}" in refused.stdout
    client.set_registered_model_alias(model, "production", good)
    _wait(lambda: gate.ledger.read_text().count("\n") >= 3, "a third entry", gate.log)
    deployed = _cli("verify-deploy", f"{model}@production", "--tracking-uri", gate.tracking)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    # Each version's documentation, signed with the gate's key, verifies against the store.
    folder = gate.docs / f"churn-classifier-v{good}"
    _wait(lambda: (folder / "audit.intoto.jsonl").exists(), "the signed documentation", gate.log)
    assert (folder / f"churn-classifier-v{good}.pdf").is_file()
    verified = _cli("verify", str(folder), "--cert", str(gate.keys / "signer.pem"),
                    "--against-store", "--tracking-uri", gate.tracking)  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_the_webhook_is_registered_once(gate: Gate) -> None:
    from audit.gate.service import register_webhook

    hooks = MlflowClient(gate.tracking, gate.tracking).list_webhooks()
    assert [(h.name, h.url) for h in hooks] == [("mlflow-audit", f"{gate.url}/webhook")]
    assert "already delivers" in register_webhook(gate.tracking, f"{gate.url}/webhook", SECRET)
    assert len(MlflowClient(gate.tracking, gate.tracking).list_webhooks()) == 1


def test_forged_and_replayed_deliveries_are_rejected(gate: Gate) -> None:
    from mlflow.webhooks.delivery import _generate_hmac_signature

    body = json.dumps({"entity": "model_version", "action": "created",
                       "timestamp": "2026-12-03T00:00:00Z",
                       "data": {"name": "x", "version": "1", "source": "s", "run_id": None,
                                "tags": {}, "description": None}}).encode()  # fmt: skip
    stamp = str(int(time.time()))
    delivery = "d-forged-1"
    forged = {"X-MLflow-Delivery-Id": delivery, "X-MLflow-Timestamp": stamp,
              "X-MLflow-Signature": _generate_hmac_signature("not the secret", delivery, stamp,
                                                             body.decode()),
              "Content-Type": "application/json"}  # fmt: skip
    status, answer = _post(f"{gate.url}/webhook", body, forged)
    assert status == 401 and "signature does not match" in answer
    stale = str(int(time.time()) - 3600)
    status, answer = _post(f"{gate.url}/webhook", body, {
        **forged, "X-MLflow-Timestamp": stale,
        "X-MLflow-Signature": _generate_hmac_signature(SECRET, delivery, stale, body.decode()),
    })  # fmt: skip
    assert status == 401 and "stale" in answer
    metrics = _get(f"{gate.url}/metrics")[1]
    assert 'mlflow_audit_deliveries_total{outcome="rejected_401"}' in metrics
    assert "mlflow_audit_queue_depth" in metrics


def test_a_replayed_delivery_is_rejected_and_a_repeated_one_answered_alike(gate: Gate) -> None:
    from mlflow.webhooks.delivery import _generate_hmac_signature

    def delivery(value: str, stamp: str) -> tuple[bytes, dict[str, str]]:
        # The gate's own tag: accepted and remembered, nothing to audit.
        body = json.dumps({"entity": "model_version_tag", "action": "set",
                           "timestamp": "2026-12-03T00:00:00Z",
                           "data": {"name": "m", "version": "1", "key": "audit.status",
                                    "value": value}}).encode()  # fmt: skip
        signature = _generate_hmac_signature(SECRET, "d-replay-1", stamp, body.decode())
        return body, {
            "X-MLflow-Delivery-Id": "d-replay-1",
            "X-MLflow-Timestamp": stamp,
            "X-MLflow-Signature": signature,
            "Content-Type": "application/json",
        }

    stamp = str(int(time.time()))
    body, headers = delivery("pass", stamp)
    assert _post(f"{gate.url}/webhook", body, headers)[0] == 200
    status, answer = _post(f"{gate.url}/webhook", body, headers)  # MLflow's retry: the same
    assert status == 200 and "already queued" in answer
    status, answer = _post(f"{gate.url}/webhook", *delivery("fail", stamp))  # another body
    assert status == 401 and "replayed delivery d-replay-1" in answer


def test_poll_mode_finds_versions_and_alias_moves_without_webhooks(
    lineage_store: LineageStore, tmp_path: Path
) -> None:
    """A SQLite store sends no webhooks: `serve --poll` reads the registry instead."""
    database = tmp_path / "mlflow.db"
    shutil.copy2(lineage_store.root, database)
    uri = f"sqlite:///{database}"
    env = {**stores.environment(), "GATE_PASSPHRASE": PASSPHRASE}
    env.pop("MLFLOW_AUDIT_WEBHOOK_SECRET", None)
    keys = tmp_path / "keys"
    subprocess.run(
        [sys.executable, "-m", "audit", "keygen", "--subject", "CN=Poller", "--out", str(keys),
         "--passphrase-env", "GATE_PASSPHRASE"],
        check=True, capture_output=True, env=env,
    )  # fmt: skip
    port = stores.free_port()
    ledger, log = tmp_path / "ledger.jsonl", tmp_path / "gate.log"
    client = MlflowClient(uri, uri)
    model = lineage_store.model

    def status(version: str) -> str | None:
        return client.get_model_version(model, version).tags.get("audit.status")

    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "audit", "serve", "--tracking-uri", uri, "--port", str(port),
             "--state", str(tmp_path / "state"), "--poll", "1", "--ledger", str(ledger),
             "--sign", str(keys / "signer.p12"), "--passphrase-env", "GATE_PASSPHRASE"],
            stdout=output, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            _wait(lambda: _healthy(url), "the gate answering /healthz", log)
            _wait(lambda: all(status(v) for v in ("1", "2", "3")), "verdicts on 1 to 3", log)
            assert [status(v) for v in ("1", "2", "3")] == ["fail", "warn", "warn"]
            _wait(lambda: ledger.exists() and ledger.read_text().count("\n") >= 2,
                  "the aliases first seen on the ledger", log)  # fmt: skip
            client.set_registered_model_alias(model, "champion", "2")
            _wait(lambda: ledger.read_text().count("\n") >= 3, "the move on the ledger", log)
            assert _post(f"{url}/webhook", b"{}", {})[0] == 404  # webhooks are off
        finally:
            process.terminate()
            process.wait(timeout=30)
    moves = json.loads(_cli("ledger", "show", str(ledger), "-f", "json").stdout)
    assert [(m["alias"], m["old_version"], m["new_version"]) for m in moves] == [
        ("challenger", None, "2"),
        ("champion", None, "3"),
        ("champion", "3", "2"),
    ]
    verified = _cli("ledger", "verify", str(ledger), "--cert", str(keys / "signer.pem"))
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_gate_killed_mid_audit_audits_the_version_once_after_a_restart(
    gate: Gate, lineage_store: LineageStore
) -> None:
    """Last in this module: it replaces the module's gate process with a new one."""
    client = MlflowClient(gate.tracking, gate.tracking)
    model = lineage_store.model
    jobs = gate.docs.parent / "state" / "jobs"

    def running() -> bool:
        return any('"running"' in job.read_text() for job in jobs.glob("*.json"))

    version = client.create_model_version(
        model, f"models:/{lineage_store.model_ids['v2']}",
        run_id=lineage_store.run_ids["train-v2"], model_id=lineage_store.model_ids["v2"],
    ).version  # fmt: skip
    _wait(running, "a job running", gate.log, timeout=30)
    gate.process.kill()  # mid-audit: the job is neither done nor failed
    gate.process.wait(timeout=30)
    assert "audit.status" not in client.get_model_version(model, version).tags
    env = {**stores.environment(), "MLFLOW_AUDIT_WEBHOOK_SECRET": SECRET,
           "GATE_PASSPHRASE": PASSPHRASE}  # fmt: skip
    log = gate.log.with_name("gate-restarted.log")
    with log.open("w") as output:
        restarted = subprocess.Popen(
            gate.command, stdout=output, stderr=subprocess.STDOUT, env=env,
            cwd=gate.docs.parent,
        )  # fmt: skip
        try:
            _wait(
                lambda: "audit.status" in client.get_model_version(model, version).tags,
                "the verdict after the restart", log,
            )  # fmt: skip

            def audits() -> float:
                return sum(
                    float(line.rsplit(" ", 1)[1])
                    for line in _get(f"{gate.url}/metrics")[1].splitlines()
                    if line.startswith("mlflow_audit_audits_total{")
                )

            # Done once its documentation is written; audited by the new process once.
            _wait(lambda: audits() >= 1, "the job done after the restart", log)
            assert audits() == 1
            assert (gate.docs / f"churn-classifier-v{version}" / "audit.intoto.jsonl").exists()
        finally:
            restarted.terminate()
            restarted.wait(timeout=30)
