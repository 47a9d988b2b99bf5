"""One webhook delivery as MLflow sends it, checked before anything acts on it.

MLflow (mlflow/webhooks/delivery.py) POSTs a JSON body ``{"entity", "action", "timestamp",
"data"}`` with three headers: ``X-MLflow-Delivery-Id`` (a fresh UUID per event),
``X-MLflow-Timestamp`` (Unix seconds) and ``X-MLflow-Signature``, ``v1,`` and the base64
HMAC-SHA256, keyed with the webhook's secret, of ``{delivery_id}.{timestamp}.{body}``. The
signature covers the id and the time, so a captured delivery cannot be given a new id or a new
time: it can only be sent again as it was, which the timestamp window and the ids of accepted
deliveries (`SeenDeliveries`) catch.

MLflow retries a delivery, unchanged, when the answer was a 429 or 5xx or never came. A retry
of a delivery that was accepted is therefore not an attack but a lost answer: it passes the
check, and `SeenDeliveries.accepted` tells the service to answer "already queued" again
instead of queueing it twice. The service's order: `check_delivery`; if `seen.accepted(id)`,
answer as before; else queue the job and then `seen.remember(delivery)`, so that a delivery
refused because the queue was full is not remembered and MLflow's retry gets in.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit.datafiles import read_text_file
from audit.formats.text import one_line, shorten
from audit.gate.statefiles import (
    StateError,
    append_line,
    cannot_write,
    make_folder,
    remove_temporaries,
    write_atomically,
)

DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
SIGNATURE_HEADER = "X-MLflow-Signature"

#: Seconds a delivery may be old: MLflow resends it with the first attempt's timestamp, by
#: default 3 times after 1, 2 and 4 s, each attempt waiting up to 30 s for an answer.
TOLERANCE = 300
#: Seconds a delivery may come from the future: clocks of two hosts differ a little.
FUTURE_SKEW = 60
#: Bytes of body: a registry event is a few hundred bytes; tags and descriptions make it more.
MAX_BODY = 1024 * 1024
#: Signatures in one header (Standard Webhooks allows several, space-separated).
MAX_SIGNATURES = 8

#: The events the gate acts on, with the fields of `data` it needs from each (all strings).
EVENTS: Mapping[tuple[str, str], tuple[str, ...]] = {
    ("model_version", "created"): ("name", "version", "source"),
    ("model_version_alias", "created"): ("name", "alias", "version"),
    ("model_version_tag", "set"): ("name", "version", "key", "value"),
}

#: A delivery id names files in the state folder: no dots, no separators, bounded.
DELIVERY_ID_SHAPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Delivery:
    """A delivery whose signature, time and content were checked."""

    id: str
    #: Unix seconds, from the signed header.
    timestamp: int
    entity: str
    action: str
    #: The event's payload, e.g. name, version, source and run_id of a new model version.
    data: Mapping[str, Any]
    #: sha256 of the raw body as received, hex.
    body_sha256: str

    @property
    def event(self) -> str:
        """The event as MLflow names it, e.g. ``model_version.created``."""
        return f"{self.entity}.{self.action}"


class DeliveryRejected(Exception):
    """A delivery that must not be acted on. `status` is the HTTP answer: 401 when it is not
    shown to come from MLflow now (signature, headers, time, replay), 400 when it is signed but
    not something the gate can act on, 503 when it cannot be remembered now (MLflow retries
    later)."""

    def __init__(self, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def check_delivery(
    headers: Mapping[str, str],
    body: bytes,
    secrets: Sequence[str],
    now: float,
    seen: SeenDeliveries,
    tolerance: int = TOLERANCE,
) -> Delivery:
    """The delivery, if `body` with `headers` is signed with one of `secrets` (several while a
    secret is rotated), is recent, is a JSON object naming an event the gate acts on, and is not
    a replay; else DeliveryRejected with the reason. Header names are matched without regard to
    case, as HTTP does. A delivery accepted before comes back unchanged (check
    `seen.accepted(delivery.id)` before queueing it)."""
    if not secrets or not all(secrets):
        raise ValueError("check_delivery needs at least one non-empty secret")
    named = {key.lower(): value for key, value in headers.items()}
    delivery_id = _header(named, DELIVERY_ID_HEADER, DELIVERY_ID_SHAPE)
    stamp = _header(named, TIMESTAMP_HEADER, _TIMESTAMP)
    signatures = _signatures(named)
    if len(body) > MAX_BODY:
        raise DeliveryRejected(
            f"body of {len(body):,} bytes is too large (at most {MAX_BODY:,})", 400
        )
    timestamp = int(stamp)
    if timestamp < now - tolerance:
        raise DeliveryRejected(
            f"stale delivery {delivery_id}: timestamp {timestamp} is {int(now - timestamp)} s "
            f"old (at most {tolerance})"
        )
    if timestamp > now + FUTURE_SKEW:
        raise DeliveryRejected(
            f"delivery {delivery_id} from the future: timestamp {timestamp} is "
            f"{int(timestamp - now)} s ahead (at most {FUTURE_SKEW})"
        )
    signed = b"%s.%s.%s" % (delivery_id.encode(), stamp.encode(), body)
    if not _signed_by_any(signed, signatures, secrets):
        raise DeliveryRejected(f"delivery {delivery_id}: signature does not match")
    entity, action, data = _event(body, delivery_id)
    delivery = Delivery(
        id=delivery_id,
        timestamp=timestamp,
        entity=entity,
        action=action,
        data=data,
        body_sha256=hashlib.sha256(body).hexdigest(),
    )
    seen.check_not_replayed(delivery)
    return delivery


def _header(named: Mapping[str, str], name: str, shape: re.Pattern[str]) -> str:
    value = named.get(name.lower())
    if value is None:
        raise DeliveryRejected(f"unsigned delivery: no {name} header")
    value = value.strip()
    if not shape.fullmatch(value):
        raise _malformed(name, value)
    return value


def _signatures(named: Mapping[str, str]) -> list[bytes]:
    """The v1 signatures of the header, decoded; other versions are ignored, as Standard
    Webhooks says, but at least one v1 signature must be there."""
    value = named.get(SIGNATURE_HEADER.lower())
    if value is None:
        raise DeliveryRejected(f"unsigned delivery: no {SIGNATURE_HEADER} header")
    entries = value.split()
    if not entries or len(entries) > MAX_SIGNATURES:
        raise _malformed(SIGNATURE_HEADER, value)
    decoded = []
    for entry in entries:
        version, comma, encoded = entry.partition(",")
        if not comma:
            raise _malformed(SIGNATURE_HEADER, value)
        if version != "v1":
            continue
        try:
            signature = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise _malformed(SIGNATURE_HEADER, value) from None
        if len(signature) != hashlib.sha256().digest_size:
            raise _malformed(SIGNATURE_HEADER, value)
        decoded.append(signature)
    if not decoded:
        raise DeliveryRejected(f"{SIGNATURE_HEADER} header has no v1 signature")
    return decoded


def _malformed(name: str, value: str) -> DeliveryRejected:
    return DeliveryRejected(f"malformed {name} header: {_quote(value)}")


def _signed_by_any(signed: bytes, signatures: list[bytes], secrets: Sequence[str]) -> bool:
    """Whether a signature matches under any secret; every pair is compared, in constant time,
    so the time taken does not tell which secret or which byte was wrong."""
    matched = False
    for secret in secrets:
        expected = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).digest()
        for signature in signatures:
            matched |= hmac.compare_digest(expected, signature)
    return matched


def _event(body: bytes, delivery_id: str) -> tuple[str, str, dict[str, Any]]:
    where = f"delivery {delivery_id}"
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise DeliveryRejected(f"{where}: body is not JSON", 400) from None
    if not isinstance(document, dict):
        raise DeliveryRejected(f"{where}: body is not a JSON object", 400)
    entity, action, data = document.get("entity"), document.get("action"), document.get("data")
    if not isinstance(entity, str) or not isinstance(action, str):
        raise DeliveryRejected(f"{where}: body names no entity and action", 400)
    required = EVENTS.get((entity, action))
    if required is None:
        raise DeliveryRejected(
            f"{where}: event {_quote(entity + '.' + action)} is not one the gate acts on", 400
        )
    if not isinstance(data, dict):
        raise DeliveryRejected(f"{where}: data of {entity}.{action} is not a JSON object", 400)
    missing = [field for field in required if not isinstance(data.get(field), str)]
    if missing:
        raise DeliveryRejected(
            f"{where}: data of {entity}.{action} lacks {', '.join(missing)} (strings)", 400
        )
    return entity, action, data


def _quote(text: str) -> str:
    """Untrusted header text for a one-line reason."""
    return repr(shorten(one_line(text), 80))


# --------------------------------------------------------------------------- seen deliveries

#: Accepted deliveries remembered at once: the replay window (2 x tolerance) holds this many
#: only at hundreds of registry events a second.
MAX_SEEN = 50_000
#: One remembered delivery is about 140 bytes of JSON; a file may hold expired ones too.
_MAX_SEEN_FILE = 4 * MAX_SEEN * 160


@dataclass(frozen=True)
class _Seen:
    timestamp: int
    body_sha256: str


class SeenDeliveries:
    """The ids of accepted deliveries whose timestamp is within twice the tolerance, in
    ``seen-deliveries.jsonl`` of the state folder. A delivery older than the tolerance is
    rejected as stale anyway, so forgetting it after twice that loses nothing; the margin covers
    a clock that was set back. Safe to use from several threads; one process at a time, which
    the queue's lock on the same folder ensures when the `WorkQueue` is opened first."""

    FILE = "seen-deliveries.jsonl"

    def __init__(
        self,
        folder: Path,
        *,
        tolerance: int = TOLERANCE,
        clock: Callable[[], float] = time.time,
        limit: int = MAX_SEEN,
    ) -> None:
        make_folder(folder)
        remove_temporaries(folder)
        self.path = folder / self.FILE
        self._tolerance = tolerance
        self._clock = clock
        self._limit = limit
        self._lock = threading.Lock()
        self._seen: dict[str, _Seen] = {}
        self._lines = 0
        with self._lock:
            self._load()
            self._prune()
            self._rewrite()

    def accepted(self, delivery_id: str) -> bool:
        """Whether this delivery was accepted before: answer as then, do not queue it again."""
        with self._lock:
            return delivery_id in self._seen

    def check_not_replayed(self, delivery: Delivery) -> None:
        """Reject an id accepted before with another body or time (only a holder of the secret
        could sign that), and any delivery while the window is full."""
        with self._lock:
            before = self._seen.get(delivery.id)
            if before is None:
                self._prune()
                if len(self._seen) >= self._limit:
                    raise DeliveryRejected(
                        f"delivery {delivery.id}: {len(self._seen):,} deliveries accepted in "
                        f"the last {2 * self._tolerance} s, at most {self._limit:,}; retry later",
                        503,
                    )
            elif before != _Seen(delivery.timestamp, delivery.body_sha256):
                raise DeliveryRejected(
                    f"replayed delivery {delivery.id}: this id was accepted before for "
                    "another body or time"
                )

    def remember(self, delivery: Delivery) -> None:
        """Record `delivery` as accepted (after it was queued), durably."""
        entry = _Seen(delivery.timestamp, delivery.body_sha256)
        with self._lock:
            if self._seen.get(delivery.id) == entry:
                return
            self._seen[delivery.id] = entry
            line = json.dumps(
                {"id": delivery.id, "timestamp": entry.timestamp, "sha256": entry.body_sha256},
                separators=(",", ":"),
            )
            try:
                append_line(self.path, line.encode())
            except OSError as problem:
                del self._seen[delivery.id]
                raise cannot_write(self.path, problem) from None
            self._lines += 1
            if self._lines > 2 * len(self._seen) + 1000:
                self._prune()
                self._rewrite()

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)

    def _load(self) -> None:
        """Read the file back, skipping lines that are not a well-formed entry (a torn last
        line after a kill, or anything else someone put there)."""
        if not self.path.exists():
            return
        text = read_text_file(self.path, str(self.path), limit=_MAX_SEEN_FILE, error=StateError)
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if (
                isinstance(entry, dict)
                and isinstance(entry.get("id"), str)
                and DELIVERY_ID_SHAPE.fullmatch(entry["id"])
                and type(entry.get("timestamp")) is int
                and isinstance(entry.get("sha256"), str)
                and _SHA256.fullmatch(entry["sha256"])
            ):
                self._seen[entry["id"]] = _Seen(entry["timestamp"], entry["sha256"])

    def _prune(self) -> None:
        oldest = self._clock() - 2 * self._tolerance
        self._seen = {key: seen for key, seen in self._seen.items() if seen.timestamp >= oldest}

    def _rewrite(self) -> None:
        lines = [
            json.dumps(
                {"id": key, "timestamp": seen.timestamp, "sha256": seen.body_sha256},
                separators=(",", ":"),
            )
            for key, seen in self._seen.items()
        ]
        try:
            write_atomically(self.path, "".join(line + "\n" for line in lines).encode())
        except OSError as problem:
            raise cannot_write(self.path, problem) from None
        self._lines = len(lines)
