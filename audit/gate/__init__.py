"""The registry gate: audit every new model version and alias move, record the verdict on the
version, keep a signed ledger of alias moves, and let a deployment check the version it serves.
"""

#: The variable that holds the webhook's secret (several, comma-separated, while it is rotated):
#: never a setting a configuration file could hold.
WEBHOOK_SECRET_ENV = "MLFLOW_AUDIT_WEBHOOK_SECRET"  # noqa: S105 - the name of a variable
