"""Which remote artifact locations an audit reads: credentials go only to the tracking server.

MLflow's artifact repositories sign in to whatever location they are given, with the
credentials MLflow holds for it: an http(s) location gets MLFLOW_TRACKING_TOKEN (or
MLFLOW_TRACKING_USERNAME and PASSWORD) in an Authorization header, s3: the AWS credentials, gs:
Google's, dbfs: the Databricks token. Artifact locations are written by whoever logs to the
store (an experiment's `artifact_location` is its creator's to choose, a logged model's
location can be anything a client sends), so the audit reads a remote location only when it is
the tracking server the user named (the same scheme, host and port; `mlflow-artifacts:`, which
MLflow resolves to it; `dbfs:/` on Databricks), or starts with a prefix the user allowed
(--allow-artifact-location). Any other location is not contacted at all: its evidence is
unreadable, with the reason. Local folders are not decided here: they are read as files by the
user running the audit, and no credential goes anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from audit.errors import AuditError
from audit.sources.store import TrackingStore

__all__ = ["FLAG", "allowed_prefixes", "allowing", "refusal"]

#: The option that allows more locations, as messages name it.
FLAG = "--allow-artifact-location"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:")
#: Characters of an artifact location shown in a message; the rest is elided.
_SHOWN = 200


def allowed_prefixes(prefixes: Iterable[str]) -> tuple[str, ...]:
    """The prefixes the user allows, checked: each must start with a URI scheme (two
    characters or more, so that a Windows drive is not one)."""
    checked = []
    for prefix in prefixes:
        text = prefix.strip()
        if not _SCHEME.match(text):
            raise AuditError(
                f"{FLAG} {prefix!r}: not a URI prefix such as s3://bucket/ or "
                "https://host/ (local folders are read without it)"
            )
        checked.append(text)
    return tuple(dict.fromkeys(checked))


def allowing(store: TrackingStore, prefixes: Iterable[str]) -> TrackingStore:
    """`store`, whose audit also reads the remote artifact locations under `prefixes`."""
    import dataclasses

    allowed = allowed_prefixes(prefixes)
    return dataclasses.replace(store, artifact_locations=allowed) if allowed else store


def refusal(store: TrackingStore, uri: str) -> str | None:
    """Why the audit does not read the remote artifact location `uri` of `store`, or None
    when it may."""
    if _is_tracking_server(store, uri) or any(
        _starts_with(uri, prefix) for prefix in store.artifact_locations
    ):
        return None
    shown = uri if len(uri) <= _SHOWN else f"{uri[:_SHOWN]}…"
    what = (
        "is not the tracking server"
        if store.kind in ("http", "databricks")
        else "is remote (the tracking store is local)"
    )
    return f"artifact location {shown} {what} and not allowed by {FLAG}"


def _is_tracking_server(store: TrackingStore, uri: str) -> bool:
    scheme = uri.partition(":")[0].lower()
    if store.kind == "http":
        server = _origin(store.uri)
        if server is None:
            return False
        if scheme == "mlflow-artifacts":
            # MLflow reaches it with the tracking server's scheme, at the host and port the URI
            # names, if any (MlflowArtifactsRepository.resolve_uri).
            netloc = _netloc(uri)
            return netloc == "" or _origin(f"{server[0]}://{netloc}") == server
        return scheme in _DEFAULT_PORTS and _origin(uri) == server
    if store.kind == "databricks":
        # dbfs:/ is the workspace the tracking URI names; dbfs://PROFILE@databricks/ another.
        return scheme == "dbfs" and _netloc(uri) == ""
    return False


def _origin(uri: str) -> tuple[str, str, int] | None:
    """Scheme, host and port of an http(s) URI (default ports filled in); None if it has none."""
    try:
        parts = urlsplit(uri)
        scheme = parts.scheme.lower()
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        return None
    if scheme not in _DEFAULT_PORTS or not parts.hostname or port is None:
        return None
    return scheme, parts.hostname, port


def _netloc(uri: str) -> str | None:
    try:
        return urlsplit(uri).netloc
    except ValueError:
        return None


def _starts_with(uri: str, prefix: str) -> bool:
    """`uri` is `prefix` or lies under it: the prefix ends at a `/` (or is a bare scheme such
    as `s3:`), so that https://host does not allow https://host.example.org nor
    https://host:8443, and s3://bucket not s3://bucket-2. Scheme and host compare in any case;
    a location that steps back up with `..` is never under a prefix."""
    location, allowed = _folded(uri), _folded(prefix)
    if "/../" in f"{location}/":
        return False
    if location == allowed:
        return True
    return location.startswith(allowed) and (
        allowed.endswith(("/", ":")) or location[len(allowed)] == "/"
    )


def _folded(uri: str) -> str:
    """`uri` with its scheme and authority in lower case."""
    scheme, _, rest = uri.partition(":")
    if not rest.startswith("//"):
        return f"{scheme.lower()}:{rest}"
    authority, slash, path = rest[2:].partition("/")
    return f"{scheme.lower()}://{authority.lower()}{slash}{path}"
