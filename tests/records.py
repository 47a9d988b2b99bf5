"""A hand-written evidence record that passes the default policy, for policy unit tests."""

from __future__ import annotations

from typing import Any


def _dataset(name: str, context: str) -> dict[str, Any]:
    return {
        "name": name, "digest": "1a2b3c4d", "context": context, "source_type": "s3",
        "source_uri": f"s3://bucket/{name}.parquet?versionId=3HL4kqtJlcpXroDTDmJ",
        "source": {"uri": f"s3://bucket/{name}.parquet?versionId=3HL4kqtJlcpXroDTDmJ"},
        "schema": None, "profile": {"num_rows": 10}, "rows": 10, "columns": 3,
    }  # fmt: skip


def complete_record() -> dict[str, Any]:
    return {
        "schema_version": "1.0",
        "run": {
            "id": "0" * 32, "name": "r", "experiment_id": "1", "experiment_name": "e",
            "status": "FINISHED", "start_time": "2026-01-01T00:00:00.000Z",
            "end_time": "2026-01-01T00:01:00.000Z", "user": "u", "lifecycle_stage": "active",
            "parent_run_id": None,
        },
        "source": {
            "type": "LOCAL", "name": "train.py", "entry_point": None,
            "git_commit": "3f1c2a9b7d4e5f60718293a4b5c6d7e8f9012345", "git_branch": "main",
            "git_repo_url": None, "git_dirty": False, "interactive": False,
        },
        "data": {"training": [_dataset("train", "training")],
                 "evaluation": [_dataset("test", "testing")], "other": []},
        "hyperparameters": {"alpha": "0.1"},
        "metrics": [{"key": "test_accuracy", "value": 0.9, "step": 0,
                     "timestamp": "2026-01-01T00:01:00.000Z", "context": "evaluation",
                     "context_from": "dataset", "dataset": {"name": "test", "digest": "1a2b3c4d"}}],
        "system_metrics": [],
        "environment": {
            "python_version": "3.11.7", "python_version_from": "tag:python_version",
            "mlflow_version": "3.17.2", "platform": "Linux", "platform_from": "tag:platform",
            "requirements": [{"name": "numpy", "specifier": "==2.1.1", "pinned": True,
                              "line": "numpy==2.1.1"}],
            "requirements_from": "runs:/x/requirements.txt",
        },
        "models": [{
            "model_id": "m-1", "name": "model", "uri": "models:/m-1", "origin": "logged_model",
            "status": "READY", "created": None, "flavors": ["python_function"],
            "mlflow_version": "3.17.2", "signature": {"inputs": [], "outputs": [], "params": None},
            "input_example": True,
            "registered_versions": [{"name": "m", "version": "1", "aliases": [], "stage": None,
                                     "status": "READY", "description": None, "created": None,
                                     "tags": {}}],
        }],
        "tags": {},
        "collection": {"artifacts_read": True, "notes": []},
    }  # fmt: skip
