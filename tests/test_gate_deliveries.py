"""Webhook deliveries as MLflow sends them: MLflow's own delivery code POSTs each one to a real
HTTP server on 127.0.0.1, and what arrived is checked. Forged ones are signed with MLflow's own
signing function, so the scheme under test is MLflow's, not a copy of it."""

from __future__ import annotations

import http.server
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from audit.gate.deliveries import (
    MAX_BODY,
    Delivery,
    DeliveryRejected,
    SeenDeliveries,
    check_delivery,
)
from audit.gate.statefiles import StateError

SECRET = "s3cret-current"
OLD_SECRET = "s3cret-previous"


class _Receiver(http.server.BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((dict(self.headers.items()), body))  # type: ignore[attr-defined]
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def mlflow_sends() -> Iterator[Any]:
    """A function that makes MLflow deliver one event, signed with a secret, to a real server,
    and returns the headers and body that arrived."""
    allow = {"MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true", "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http"}
    before = {key: os.environ.get(key) for key in allow}
    os.environ.update(allow)
    from mlflow.entities.webhook import Webhook, WebhookEvent
    from mlflow.webhooks.delivery import _create_webhook_session, _send_webhook_request
    from mlflow.webhooks.types import get_example_payload_for_event

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    session = _create_webhook_session()
    url = f"http://127.0.0.1:{server.server_address[1]}/webhook"

    def send(event: str, secret: str = SECRET, payload: Any = None) -> tuple[dict[str, str], bytes]:
        kind = WebhookEvent.from_str(event)
        webhook = Webhook("wh-1", "audit", url, [kind], 0, 0, secret=secret)
        payload = payload or get_example_payload_for_event(kind)
        response = _send_webhook_request(webhook, payload, kind, session)
        assert response.status_code == 200
        return server.received.pop()  # type: ignore[attr-defined,no-any-return]

    yield send
    server.shutdown()
    server.server_close()
    session.close()
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def mlflow_signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    from mlflow.webhooks.delivery import _generate_hmac_signature

    return str(_generate_hmac_signature(secret, delivery_id, timestamp, body.decode()))


def signed(delivery_id: str, timestamp: int, body: bytes, secret: str = SECRET) -> dict[str, str]:
    stamp = str(timestamp)
    return {
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": stamp,
        "X-MLflow-Signature": mlflow_signature(secret, delivery_id, stamp, body),
    }


@pytest.fixture
def seen(tmp_path: Path) -> SeenDeliveries:
    return SeenDeliveries(tmp_path / "state")


def rejected(headers: dict[str, str], body: bytes, seen: SeenDeliveries, **options: Any) -> Any:
    options.setdefault("secrets", [SECRET])
    options.setdefault("now", time.time())
    with pytest.raises(DeliveryRejected) as caught:
        check_delivery(headers, body, seen=seen, **options)
    assert "\n" not in caught.value.reason
    return caught.value


# --------------------------------------------------------------------------- accepted


@pytest.mark.parametrize(
    ("event", "fields"),
    [
        ("model_version.created", {"name": "example_model", "run_id": "abcd1234abcd5678"}),
        ("model_version_alias.created", {"name": "example_model", "alias": "example_alias"}),
        ("model_version_tag.set", {"name": "example_model", "version": "1", "key": "example_key"}),
    ],
)  # fmt: skip
def test_a_delivery_mlflow_signed_is_accepted(
    mlflow_sends: Any, seen: SeenDeliveries, event: str, fields: dict[str, str]
) -> None:
    headers, body = mlflow_sends(event)
    delivery = check_delivery(headers, body, [SECRET], time.time(), seen)
    assert delivery.id == headers["X-MLflow-Delivery-Id"]
    assert delivery.timestamp == int(headers["X-MLflow-Timestamp"])
    assert delivery.event == event
    assert fields.items() <= delivery.data.items()
    import hashlib

    assert delivery.body_sha256 == hashlib.sha256(body).hexdigest()


def test_header_names_are_matched_without_case(mlflow_sends: Any, seen: SeenDeliveries) -> None:
    headers, body = mlflow_sends("model_version.created")
    lowered = {key.lower(): value for key, value in headers.items()}
    assert (
        check_delivery(lowered, body, [SECRET], time.time(), seen).id
        == lowered["x-mlflow-delivery-id"]
    )


# --------------------------------------------------------------------------- signatures


def test_the_wrong_secret_is_rejected(mlflow_sends: Any, seen: SeenDeliveries) -> None:
    headers, body = mlflow_sends("model_version.created", secret="someone-else")
    problem = rejected(headers, body, seen)
    assert problem.status == 401
    assert "signature does not match" in problem.reason


def test_a_body_changed_after_signing_is_rejected(mlflow_sends: Any, seen: SeenDeliveries) -> None:
    headers, body = mlflow_sends("model_version.created")
    forged = body.replace(b'"version": "1"', b'"version": "2"')
    assert forged != body
    assert "signature does not match" in rejected(headers, forged, seen).reason


def test_a_new_id_or_time_on_a_signed_delivery_is_rejected(
    mlflow_sends: Any, seen: SeenDeliveries
) -> None:
    headers, body = mlflow_sends("model_version.created")
    new_id = {**headers, "X-MLflow-Delivery-Id": "0f0e0d0c-aaaa-bbbb-cccc-000000000000"}
    assert "signature does not match" in rejected(new_id, body, seen).reason
    later = {**headers, "X-MLflow-Timestamp": str(int(headers["X-MLflow-Timestamp"]) + 1)}
    assert "signature does not match" in rejected(later, body, seen).reason


def test_secrets_rotate_old_and_new_both_accepted(mlflow_sends: Any, tmp_path: Path) -> None:
    seen = SeenDeliveries(tmp_path)
    for secret in (OLD_SECRET, SECRET):
        headers, body = mlflow_sends("model_version.created", secret=secret)
        assert check_delivery(headers, body, [SECRET, OLD_SECRET], time.time(), seen)
    headers, body = mlflow_sends("model_version.created", secret=OLD_SECRET)
    assert "signature does not match" in rejected(headers, body, seen, secrets=[SECRET]).reason


@pytest.mark.parametrize(
    "missing", ["X-MLflow-Delivery-Id", "X-MLflow-Timestamp", "X-MLflow-Signature"]
)
def test_an_unsigned_delivery_is_rejected(
    mlflow_sends: Any, seen: SeenDeliveries, missing: str
) -> None:
    headers, body = mlflow_sends("model_version.created")
    del headers[missing]
    problem = rejected(headers, body, seen)
    assert (problem.status, problem.reason) == (401, f"unsigned delivery: no {missing} header")


def test_mlflow_sends_no_signature_without_a_secret(
    mlflow_sends: Any, seen: SeenDeliveries
) -> None:
    headers, body = mlflow_sends("model_version.created", secret=None)
    assert "X-MLflow-Signature" not in headers
    assert "no X-MLflow-Signature header" in rejected(headers, body, seen).reason


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-MLflow-Signature", "v1,not base64!"),
        ("X-MLflow-Signature", "v1,c2hvcnQ="),  # base64, but not 32 bytes
        ("X-MLflow-Signature", "sha256=abcdef"),
        ("X-MLflow-Timestamp", "1764783000.5"),
        ("X-MLflow-Timestamp", "-1"),
        ("X-MLflow-Delivery-Id", "../../jobs/evil"),
        ("X-MLflow-Delivery-Id", "x" * 200),
    ],
)
def test_a_malformed_header_is_rejected(
    mlflow_sends: Any, seen: SeenDeliveries, header: str, value: str
) -> None:
    headers, body = mlflow_sends("model_version.created")
    problem = rejected({**headers, header: value}, body, seen)
    assert problem.status == 401
    assert problem.reason.startswith(f"malformed {header} header")


def test_a_signature_of_another_version_only_is_rejected(
    mlflow_sends: Any, seen: SeenDeliveries
) -> None:
    headers, body = mlflow_sends("model_version.created")
    v2 = headers["X-MLflow-Signature"].replace("v1,", "v2,")
    assert "no v1 signature" in rejected({**headers, "X-MLflow-Signature": v2}, body, seen).reason
    # Standard Webhooks: several signatures, one of them valid, is accepted.
    several = {**headers, "X-MLflow-Signature": f"{v2} {headers['X-MLflow-Signature']}"}
    assert check_delivery(several, body, [SECRET], time.time(), seen)


def test_control_characters_of_a_header_do_not_reach_the_reason(
    mlflow_sends: Any, seen: SeenDeliveries
) -> None:
    headers, body = mlflow_sends("model_version.created")
    problem = rejected({**headers, "X-MLflow-Delivery-Id": "\x1b[31mred\u202e"}, body, seen)
    assert "\x1b" not in problem.reason and "\u202e" not in problem.reason
    assert "\\x1b" in problem.reason


# --------------------------------------------------------------------------- time and replay


def test_the_timestamp_window(mlflow_sends: Any, seen: SeenDeliveries) -> None:
    headers, body = mlflow_sends("model_version.created")
    sent = int(headers["X-MLflow-Timestamp"])
    assert check_delivery(headers, body, [SECRET], sent + 300, seen)
    assert check_delivery(headers, body, [SECRET], sent - 60, seen)
    stale = rejected(headers, body, seen, now=sent + 301)
    assert (stale.status, stale.reason.split(":")[0]) == (
        401,
        f"stale delivery {headers['X-MLflow-Delivery-Id']}",
    )
    assert "from the future" in rejected(headers, body, seen, now=sent - 61).reason
    assert check_delivery(headers, body, [SECRET], sent + 500, seen, tolerance=600)


def test_a_retry_of_an_accepted_delivery_is_answered_as_already_queued(
    mlflow_sends: Any, tmp_path: Path
) -> None:
    seen = SeenDeliveries(tmp_path)
    headers, body = mlflow_sends("model_version.created")
    first = check_delivery(headers, body, [SECRET], time.time(), seen)
    assert not seen.accepted(first.id)
    seen.remember(first)
    assert seen.accepted(first.id)
    # MLflow resends the same request when the answer was lost; so would an attacker: both
    # are told "already queued" and neither causes work.
    again = check_delivery(headers, body, [SECRET], time.time(), seen)
    assert again == first
    assert SeenDeliveries(tmp_path).accepted(first.id)  # remembered across a restart


def test_a_used_id_with_another_body_is_a_replay(mlflow_sends: Any, seen: SeenDeliveries) -> None:
    headers, body = mlflow_sends("model_version.created")
    seen.remember(check_delivery(headers, body, [SECRET], time.time(), seen))
    other = body.replace(b'"version": "1"', b'"version": "7"')
    resigned = signed(headers["X-MLflow-Delivery-Id"], int(headers["X-MLflow-Timestamp"]), other)
    problem = rejected(resigned, other, seen)
    assert (problem.status, problem.reason.split(" ")[0]) == (401, "replayed")


# --------------------------------------------------------------------------- bodies


def _body(document: Any) -> bytes:
    return json.dumps(document).encode()


def _event(entity: str, data: Any) -> dict[str, Any]:
    return {"entity": entity, "action": "created", "data": data}


def test_a_huge_body_is_rejected(seen: SeenDeliveries) -> None:
    data = {"name": "m", "version": "1", "source": "s", "description": "x" * MAX_BODY}
    body = _body(_event("model_version", data))
    problem = rejected(signed("d-huge", int(time.time()), body), body, seen)
    assert problem.status == 400 and "too large" in problem.reason


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"not json at all", "not JSON"),
        (b"{\"entity\": ", "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
        (b"[]", "not a JSON object"),
        (_body({"entity": "model_version"}), "no entity and action"),
        (_body(_event("model_version", [])), "not a JSON object"),
        (_body(_event("model_version", {"name": "m"})), "lacks version, source"),
        (_body(_event("model_version_alias", {"name": "m", "alias": "a", "version": 3})),
         "lacks version"),
    ],
)  # fmt: skip
def test_a_signed_body_the_gate_cannot_act_on_is_rejected(
    seen: SeenDeliveries, body: bytes, says: str
) -> None:
    problem = rejected(signed("d-body", int(time.time()), body), body, seen)
    assert problem.status == 400
    assert says in problem.reason


def test_an_event_the_gate_does_not_act_on_is_rejected(
    mlflow_sends: Any, seen: SeenDeliveries
) -> None:
    headers, body = mlflow_sends("registered_model.created")
    problem = rejected(headers, body, seen)
    assert problem.status == 400
    assert "'registered_model.created' is not one the gate acts on" in problem.reason


# --------------------------------------------------------------------------- the seen file


def _delivery(number: int, timestamp: int) -> Delivery:
    return Delivery(f"d-{number}", timestamp, "model_version", "created", {}, f"{number:064x}")


def test_seen_deliveries_are_forgotten_after_twice_the_tolerance(tmp_path: Path) -> None:
    clock = [1_800_000_000.0]
    seen = SeenDeliveries(tmp_path, tolerance=300, clock=lambda: clock[0])
    seen.remember(_delivery(1, 1_800_000_000))
    seen.remember(_delivery(2, 1_800_000_500))
    clock[0] += 601
    reopened = SeenDeliveries(tmp_path, tolerance=300, clock=lambda: clock[0])
    assert not reopened.accepted("d-1")
    assert reopened.accepted("d-2")
    assert len(reopened.path.read_text().splitlines()) == 1  # compacted on start


def test_a_torn_or_foreign_line_in_the_seen_file_is_skipped(tmp_path: Path) -> None:
    now = time.time()
    seen = SeenDeliveries(tmp_path)
    seen.remember(_delivery(1, int(now)))
    with seen.path.open("a") as handle:
        handle.write('["not", "an", "entry"]\n')
        handle.write('{"id": "../x", "timestamp": 1, "sha256": "00"}\n')
        handle.write('{"id": "d-2", "time')  # torn by a kill
    reopened = SeenDeliveries(tmp_path)
    assert reopened.accepted("d-1") and len(reopened) == 1


def test_a_seen_file_too_large_stops_the_service(tmp_path: Path) -> None:
    (tmp_path / SeenDeliveries.FILE).write_bytes(b" " * (33 * 1024 * 1024))
    with pytest.raises(StateError, match="too large"):
        SeenDeliveries(tmp_path)


def test_a_full_replay_window_refuses_new_deliveries_for_now(tmp_path: Path) -> None:
    now = int(time.time())
    seen = SeenDeliveries(tmp_path, limit=2)
    seen.remember(_delivery(1, now))
    seen.remember(_delivery(2, now))
    seen.check_not_replayed(_delivery(1, now))  # known ones still answer
    with pytest.raises(DeliveryRejected) as caught:
        seen.check_not_replayed(_delivery(3, now))
    assert caught.value.status == 503
