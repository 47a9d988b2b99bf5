"""`mlflow-audit serve`: the registry gate beside a tracking server."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from audit.cliparser import fill
from audit.commands.options import (
    POLICY_HELP,
    add_config_arguments,
    add_store_arguments,
    configure,
    positive_int,
    signing_key,
)
from audit.gate import WEBHOOK_SECRET_ENV

_EPILOG = """\
Set the webhook up in MLflow (its secret the same as the service's):
  MlflowClient().create_webhook(
      "mlflow-audit", "https://gate.example/webhook",
      events=["model_version.created", "model_version_alias.created",
              "model_version_tag.set"],
      secret=os.environ["MLFLOW_AUDIT_WEBHOOK_SECRET"])

endpoints:
  POST /webhook   MLflow's deliveries (signed; 401 forged, stale or replayed)
  GET  /healthz   liveness and the queue's depth
  GET  /metrics   Prometheus counters: deliveries, audits, failures, queue

See docs/registry-gate.md (running it behind a reverse proxy, the state
folder, the ledger).
"""


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "serve",
        help="the registry gate: audit every new model version on MLflow's webhooks",
        description=fill(
            "Receive MLflow's registry webhooks, audit each new model version (and the "
            "version an alias moves to) with its lineage, write the verdict back as audit.* "
            "tags on the version, and append every alias move to a signed ledger. Deliveries "
            "are answered at once; the audits run from a queue kept in --state."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(parser)
    add_store_arguments(parser)
    service = parser.add_argument_group("service")
    service.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    service.add_argument("--port", type=positive_int, default=8787, help="default: 8787")
    service.add_argument(
        "--state",
        metavar="DIR",
        default="mlflow-audit-state",
        help="folder for the queue, the deliveries seen and the dead letters (default: "
        "./mlflow-audit-state)",
    )
    service.add_argument(
        "--secret-env",
        metavar="VAR",
        default=WEBHOOK_SECRET_ENV,
        help="environment variable holding the webhook's secret; several, comma-separated, "
        "while it is rotated (default: MLFLOW_AUDIT_WEBHOOK_SECRET)",
    )
    service.add_argument(
        "--poll",
        metavar="SECONDS",
        type=positive_int,
        help="no webhooks: read the registry every SECONDS for versions without a verdict "
        "and moved aliases (stores that cannot send webhooks); /webhook is then off",
    )
    service.add_argument(
        "--register-webhook",
        metavar="URL",
        help="first create the webhook in MLflow that delivers to URL (this service's "
        "/webhook as MLflow reaches it), with the secret; kept when one with that URL exists",
    )
    verdicts = parser.add_argument_group("verdicts")
    verdicts.add_argument("--policy", metavar="NAME|FILE", help=POLICY_HELP)
    verdicts.add_argument(
        "--system-card", metavar="FILE", help="the system card of the versions audited"
    )
    verdicts.add_argument(
        "--ledger",
        metavar="FILE",
        help="append every alias move to this signed ledger (JSON Lines; needs --sign)",
    )
    verdicts.add_argument(
        "--docs",
        metavar="DIR",
        help="also write each version's Annex IV documentation into DIR/NAME-vVERSION "
        "(signed with --sign when given)",
    )
    verdicts.add_argument(
        "--sign", metavar="KEY", help="key that signs ledger entries and documentation (.p12)"
    )
    verdicts.add_argument(
        "--passphrase-env", metavar="VAR", help="environment variable holding the key's passphrase"
    )


def run(args: argparse.Namespace) -> int:
    from audit.errors import AuditError
    from audit.gate.service import Gate, GateSettings, create_app, require_secrets

    configure(args, "serve")
    given = [secret for secret in os.environ.get(args.secret_env, "").split(",") if secret]
    secrets = given if args.poll else require_secrets(given)
    if args.poll and args.register_webhook:
        raise AuditError("--poll reads the registry instead of webhooks: no --register-webhook")
    if args.ledger and not args.sign:
        raise AuditError("--ledger needs --sign: ledger entries are signed")
    key = None
    if args.sign:
        # PDFs are signed only for --docs; ledger entries are DSSE envelopes.
        key = signing_key(Path(args.sign), None, args.passphrase_env, pdf=bool(args.docs))
    card = None
    if args.system_card:
        from audit.systemcard import load_system_card

        card = load_system_card(args.system_card)  # refused now, not at the first delivery
    gate = Gate(
        GateSettings(
            state=Path(args.state),
            secrets=secrets,
            tracking_uri=args.tracking_uri,
            policy=args.policy,
            system_card=card,
            source=args.source,
            timeout=args.timeout,
            ledger=Path(args.ledger) if args.ledger else None,
            key=key,
            docs=Path(args.docs) if args.docs else None,
        )
    )
    if args.register_webhook:
        from audit.gate.service import register_webhook

        print(register_webhook(args.tracking_uri, args.register_webhook, secrets[0]))
    import uvicorn

    poller = None
    if args.poll:
        from audit.gate.poll import Poller, registry_of

        poller = Poller(
            gate.queue, gate.notify, Path(args.state), registry_of(args.tracking_uri), args.poll
        )
    uvicorn.run(create_app(gate, poller), host=args.host, port=args.port, log_level="info")
    return 0
