"""`--log-to-mlflow`: put the signed bundle back on the runs it documents.

This is the only code of mlflow-audit that writes to a tracking store, and it runs only when a
user asks for it. It goes through MLflow's own client, after checking that the store's schema is
the one the installed MLflow writes (MLflow's client would otherwise migrate an older store).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from audit.errors import AuditError, StoreError, first_line
from audit.signing.bundle import SignedBundle
from audit.sources.store import TrackingStore, check_schema_revision, require_mlflow_sql_client

ARTIFACT_PATH = "audit"
_ALLOW_FILE_STORE = "MLFLOW_ALLOW_FILE_STORE"


def tags_for(bundle: SignedBundle, run: Mapping[str, Any]) -> dict[str, str]:
    policy = bundle.result.get("policy") or {}
    name, version, digest = policy.get("name"), policy.get("version"), policy.get("sha256")
    return {
        "audit.status": str(run.get("status")),
        "audit.policy": f"{name}@{version} (sha256 {digest})",
        "audit.report_sha256": bundle.envelope_sha256,
        "audit.signed_by": f"{bundle.signer} (sha256 {bundle.fingerprint})",
    }


def check_can_log(store: TrackingStore) -> None:
    """Raise what would stop `log_to_mlflow` before it starts, so that a caller can ask before
    a long audit: with mlflow-skinny alone, MLflow's client cannot write to a SQL store."""
    require_mlflow_sql_client(store, f"--log-to-mlflow to {store.display}")


def log_to_mlflow(
    store: TrackingStore,
    bundle: SignedBundle,
    on_run: Callable[[int], None] | None = None,
) -> int:
    """Upload the bundle under `audit/` of every run it documents and tag each run; return the
    number of runs written."""
    check_can_log(store)
    check_schema_revision(store)
    with _file_store_allowed(store):
        return _log(store, bundle, on_run)


@contextlib.contextmanager
def _file_store_allowed(store: TrackingStore) -> Iterator[None]:
    """MLflow >= 3.13 opens a ./mlruns store only when told to; the audit read this one that
    way (the client source), and the user asked for this write. A user's own setting stands."""
    if store.kind != "file" or _ALLOW_FILE_STORE in os.environ:
        yield
        return
    os.environ[_ALLOW_FILE_STORE] = "true"
    try:
        yield
    finally:
        os.environ.pop(_ALLOW_FILE_STORE, None)


def _log(store: TrackingStore, bundle: SignedBundle, on_run: Callable[[int], None] | None) -> int:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        # The original URI, not the read-only one the audit used.
        client = MlflowClient(tracking_uri=store.uri)
    except MlflowException as error:
        raise StoreError(f"cannot open {store.display}: {first_line(error)}") from None
    runs = bundle.result.get("runs") or []
    _check_destinations(client, store, [str(run.get("run_id")) for run in runs])
    for count, run in enumerate(runs, start=1):
        run_id = str(run.get("run_id"))
        try:
            client.log_artifacts(run_id, str(bundle.folder), artifact_path=ARTIFACT_PATH)
            for key, value in tags_for(bundle, run).items():
                client.set_tag(run_id, key, value)
        except MlflowException as error:
            raise StoreError(
                f"cannot log the signed bundle to run {run_id} in {store.display}: "
                f"{first_line(error)} ({count - 1} of {len(runs)} runs written)"
            ) from None
        except OSError as error:
            raise AuditError(
                f"cannot upload the signed bundle to run {run_id}: {error.strerror or error} "
                f"({count - 1} of {len(runs)} runs written)"
            ) from None
        if on_run:
            on_run(count)
    return len(runs)


def _check_destinations(client: Any, store: TrackingStore, run_ids: list[str]) -> None:
    """Refuse, before writing anything, to upload to an artifact location the audit would not
    read: MLflow would sign in there with the credentials it holds for it, and the location is
    the run author's to choose (`audit.sources.locations`)."""
    from mlflow.exceptions import MlflowException

    from audit.sources.artifacts import is_local
    from audit.sources.locations import refusal

    for run_id in run_ids:
        try:
            location = client.get_run(run_id).info.artifact_uri
        except MlflowException as error:
            raise StoreError(
                f"cannot read run {run_id} in {store.display}: {first_line(error)}"
            ) from None
        if location and not is_local(location) and (refused := refusal(store, location)):
            raise AuditError(f"will not upload the signed bundle to run {run_id}: {refused}")
