"""The CI samples in samples/ci work as the README says."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from mlflow import MlflowClient

from audit.waivers import load_waivers
from tests import stores
from tests.conftest import REPO, Store

CI = REPO / "samples" / "ci"


def test_sample_waivers_file_is_valid() -> None:
    waivers = load_waivers(CI / "audit-waivers.yaml")
    assert {w.scope for w in waivers.waivers} == {"experiment", "all", "model"}
    assert all(w.reason and w.approved_by for w in waivers.waivers)


def test_ci_definitions_run_the_gate_and_publish_junit() -> None:
    github = yaml.safe_load((CI / "github-actions.yml").read_text())
    steps = github["jobs"]["audit"]["steps"]
    gate = next(step["run"] for step in steps if "mlflow-audit check" in step.get("run", ""))
    assert "--junit-xml" in gate and "--sarif" in gate and "--format github" in gate
    gitlab = yaml.safe_load((CI / "gitlab-ci.yml").read_text())["mlflow-audit"]
    assert any("--junit-xml" in line for line in gitlab["script"])
    assert gitlab["artifacts"]["reports"]["junit"] == "reports/mlflow-audit.xml"


def test_promotion_moves_the_alias_only_when_the_candidate_passes(
    demo_store: Store, tmp_path: Path
) -> None:
    # A copy: promotion writes an alias, and the session's demo store is shared.
    database = tmp_path / "mlflow.db"
    shutil.copy2(demo_store.root, database)
    uri = f"sqlite:///{database}"

    def promote(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(CI / "promote.py"), "churn-classifier", "--tracking-uri", uri,
             *args],
            capture_output=True, text=True, env=stores.environment(),
        )  # fmt: skip

    client = MlflowClient(uri, uri)
    refused = promote("--from", "challenger", "--to", "champion")
    assert refused.returncode == 1, refused.stderr
    assert "model.signature" in refused.stdout and "stays where it is" in refused.stderr
    # The demo's champion is version 3, the best trial of its tuning sweep.
    assert str(client.get_model_version_by_alias("churn-classifier", "champion").version) == "3"

    promoted = promote("--from", "champion", "--to", "production")
    assert promoted.returncode == 0, promoted.stderr
    assert str(client.get_model_version_by_alias("churn-classifier", "production").version) == "3"


def test_deploy_samples_refuse_before_they_deploy() -> None:
    """The GitHub Actions deploy job runs verify-deploy before its deploy step; the Databricks
    approval task is Python that calls the same check and approves only when it passes."""
    import ast
    import inspect

    from audit.gate.deploy import check_deploy

    workflow = yaml.safe_load((CI / "deploy-gate.yml").read_text())
    runs = [step.get("run", "") for step in workflow["jobs"]["deploy"]["steps"]]
    gate = next(i for i, run in enumerate(runs) if "mlflow-audit verify-deploy" in run)
    deploy = next(i for i, run in enumerate(runs) if "deploy.sh" in run)
    assert gate < deploy
    task = ast.parse((CI / "databricks_approval_task.py").read_text())
    calls = [
        node
        for node in ast.walk(task)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "check_deploy"
    ]
    (call,) = calls
    parameters = inspect.signature(check_deploy).parameters
    assert {keyword.arg for keyword in call.keywords} <= set(parameters)
