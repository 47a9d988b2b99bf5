"""Pre-promotion gate: move a registered model's alias only when the candidate is documented.

    python promote.py churn-classifier --from challenger --to champion [--waivers FILE]

Audits NAME@challenger with mlflow-audit (read-only: the version with its lineage), prints the
findings, and only when the gate passes points NAME@champion at the same version. The alias
change is this script's own write to the registry: mlflow-audit itself never writes to the
store.
Exit codes follow mlflow-audit's: 0 promoted, 1 gaps (nothing moved), 2 audit incomplete.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import audit
from audit.formats import render


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="registered model name")
    parser.add_argument("--from", dest="source", default="challenger", help="alias to audit")
    parser.add_argument("--to", dest="target", default="champion", help="alias to move")
    parser.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI")
    parser.add_argument("--policy", help="default: eu-ai-act-high-risk")
    parser.add_argument("--waivers", help="accepted gaps (YAML or TOML)")
    args = parser.parse_args()

    candidate = f"{args.model}@{args.source}"
    try:
        result = audit.check(
            args.tracking_uri, model=candidate, policy=args.policy, waivers=args.waivers
        )
    except audit.AuditError as error:
        print(f"promote: cannot audit {candidate}: {error}", file=sys.stderr)
        return 2
    print(render(result, "table"))
    if result.exit_code != 0:
        print(f"promote: {candidate} has gaps; @{args.target} stays where it is", file=sys.stderr)
        return 1

    from mlflow import MlflowClient

    client = MlflowClient(args.tracking_uri, args.tracking_uri)
    version = client.get_model_version_by_alias(args.model, args.source).version
    client.set_registered_model_alias(args.model, args.target, version)
    print(f"promote: {args.model} version {version} is now @{args.target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
