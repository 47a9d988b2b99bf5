# Databricks notebook source
# The approval task of an MLflow 3 deployment job (Unity Catalog models): approve the model
# version only when mlflow-audit finds a passing verdict on it whose evidence still matches.
#
# Job parameters, as a deployment job passes them: model_name, model_version, and
# approval_tag_name (the approval task's name by default). The job's cluster needs
#   %pip install mlflow-audit   (from this repository: pip install /path/to/checkout)
# and, when the verdict comes from a signed report folder rather than the version's audit.*
# tags, the folder and the certificate on a volume (report_folder, report_cert parameters).
# Exit: the task fails (raises) when the version may not be deployed, so the job stops.

# COMMAND ----------

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from pathlib import Path

from mlflow import MlflowClient

from audit.gate.deploy import check_deploy
from audit.signing.keys import load_certificates

dbutils.widgets.text("model_name", "")  # type: ignore[name-defined]  # noqa: F821
dbutils.widgets.text("model_version", "")  # type: ignore[name-defined]  # noqa: F821
dbutils.widgets.text("approval_tag_name", "")  # type: ignore[name-defined]  # noqa: F821
dbutils.widgets.text("report_folder", "")  # type: ignore[name-defined]  # noqa: F821
dbutils.widgets.text("report_cert", "")  # type: ignore[name-defined]  # noqa: F821
get = dbutils.widgets.get  # type: ignore[name-defined]  # noqa: F821

model_name, model_version = get("model_name"), get("model_version")
report = Path(get("report_folder")) if get("report_folder") else None
trusted = load_certificates(Path(get("report_cert"))) if get("report_cert") else []

# COMMAND ----------

check = check_deploy(f"{model_name}/{model_version}", "databricks", report=report, trusted=trusted)
for problem in check.problems:
    print(f"NO  {problem}")
if not check.deployable:
    raise Exception(f"mlflow-audit: do not deploy {check.version}")
MlflowClient(registry_uri="databricks-uc").set_model_version_tag(
    model_name, model_version, get("approval_tag_name"), "Approved"
)
print(f"mlflow-audit: {check.version} approved ({check.source})")
