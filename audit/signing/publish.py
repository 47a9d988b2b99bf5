"""`--log-to-mlflow`: put the signed bundle back on the runs it documents.

This is the only code of mlflow-audit that writes to a tracking store, and it runs only when a
user asks for it. It goes through MLflow's own client, after checking that the store's schema is
the one the installed MLflow writes (MLflow's client would otherwise migrate an older store).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from audit.errors import AuditError, StoreError, first_line
from audit.signing.bundle import SignedBundle
from audit.sources.store import TrackingStore, check_schema_revision

ARTIFACT_PATH = "audit"


def tags_for(bundle: SignedBundle, run: Mapping[str, Any]) -> dict[str, str]:
    policy = bundle.result.get("policy") or {}
    name, version, digest = policy.get("name"), policy.get("version"), policy.get("sha256")
    return {
        "audit.status": str(run.get("status")),
        "audit.policy": f"{name}@{version} (sha256 {digest})",
        "audit.report_sha256": bundle.envelope_sha256,
        "audit.signed_by": f"{bundle.signer} (sha256 {bundle.fingerprint})",
    }


def log_to_mlflow(
    store: TrackingStore,
    bundle: SignedBundle,
    on_run: Callable[[int], None] | None = None,
) -> int:
    """Upload the bundle under `audit/` of every run it documents and tag each run; return the
    number of runs written."""
    check_schema_revision(store)
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    # The original URI, not the read-only one the audit used.
    client = MlflowClient(tracking_uri=store.uri)
    runs = bundle.result.get("runs") or []
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
