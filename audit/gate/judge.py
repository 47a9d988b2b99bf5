"""Audit one model version and record its verdict on it: what the gate does for each new
version (and `verify-deploy`'s tests do by hand)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from audit.errors import StoreError, first_line
from audit.gate.verdict import Verdict, verdict_of
from audit.policy import Policy, load_policy

if TYPE_CHECKING:
    from audit.api import AuditedSubject
    from audit.systemcard import SystemCard


def audit_version(
    spec: str,
    tracking_uri: str | None = None,
    *,
    policy: str | Path | Policy | None = None,
    system_card: SystemCard | None = None,
    source: str = "auto",
    timeout: int | None = None,
    allow_artifact_locations: str | Iterable[str] | None = None,
) -> tuple[Verdict, AuditedSubject]:
    """The verdict on a model version (NAME/VERSION, NAME@ALIAS), audited with its lineage."""
    from audit.api import audit_subject
    from audit.formats.json import render_json

    loaded = policy if isinstance(policy, Policy) else load_policy(policy)
    subject = audit_subject(
        spec,
        tracking_uri,
        loaded,
        source=source,
        timeout=timeout,
        allow_artifact_locations=allow_artifact_locations,
        system_card=system_card,
    )
    result_json = render_json(subject.result).encode("utf-8")
    return verdict_of(subject.result, subject.record, result_json), subject


def record_verdict(tracking_uri: str | None, name: str, version: str, verdict: Verdict) -> None:
    """Write the verdict's tags on the version: the gate's one write to the registry."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from audit.signing.publish import check_can_log
    from audit.sources import resolve_store

    store = resolve_store(tracking_uri)
    check_can_log(store)
    try:
        client = MlflowClient(tracking_uri=store.uri, registry_uri=store.uri)
        for key, value in verdict.tags().items():
            client.set_model_version_tag(name, version, key, value)
    except MlflowException as error:
        raise StoreError(
            f"cannot tag {name}/{version} in {store.display}: {first_line(error)}"
        ) from None
