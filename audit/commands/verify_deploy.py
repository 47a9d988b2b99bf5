"""`mlflow-audit verify-deploy NAME@ALIAS`: may a deployment serve the version an alias points
to now?"""

from __future__ import annotations

import argparse
from typing import Any

from audit.cliparser import fill
from audit.commands.options import POLICY_HELP, add_config_arguments, add_store_arguments, configure

_EPILOG = """\
examples:
  mlflow-audit verify-deploy churn-classifier@production
  mlflow-audit verify-deploy churn-classifier@production \\
      --report docs/churn-v3 --cert signer.pem

exit codes:
  0  deploy: a passing verdict whose evidence still matches the store
  1  do not deploy: no verdict, a failing one, another policy's, or the
     evidence changed since (each reason on its own line)
  2  it could not be checked (unknown alias, store unreachable, bad folder)
"""


def add_parser(commands: Any) -> None:
    from audit.result import FAIL_ON_CHOICES

    parser = commands.add_parser(
        "verify-deploy",
        help="may the version an alias points to be deployed? (exit 0/1)",
        description=fill(
            "Audit the model version an alias points to now and check the verdict recorded "
            "on it by 'mlflow-audit serve' (its audit.* tags), or the signed report folder "
            "given with --report: it must pass under the policy given, and the version's "
            "evidence (with its lineage) must still be what was judged. The check a "
            "deployment job runs before it serves a model."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("spec", metavar="NAME@ALIAS", help="or NAME/VERSION")
    add_config_arguments(parser)
    add_store_arguments(parser)
    gate = parser.add_argument_group("verdict")
    gate.add_argument("--policy", metavar="NAME|FILE", help=POLICY_HELP)
    gate.add_argument(
        "--system-card",
        metavar="FILE",
        help="the system card the verdict was reached with (its fields are part of the "
        "version's evidence)",
    )
    gate.add_argument(
        "--fail-on",
        choices=FAIL_ON_CHOICES,
        default=None,
        help="lowest severity a verdict may not have: error (default) accepts a version "
        "with warnings, warning accepts only a clean pass",
    )
    gate.add_argument(
        "--report",
        metavar="DIR",
        help="judge by this signed report folder instead of the version's tags: it must "
        "document the version, pass, verify with --cert and still match the store",
    )
    gate.add_argument(
        "--cert",
        action="append",
        default=[],
        metavar="PEM",
        help="with --report: a certificate the folder must be signed with (repeatable)",
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from audit.commands.output import emit
    from audit.formats.text import safe_line
    from audit.gate.deploy import check_deploy

    configure(args, "verify-deploy")
    trusted = []
    if args.cert:
        from audit.signing.keys import load_certificates

        for path in args.cert:
            trusted += load_certificates(Path(path))
    check = check_deploy(
        args.spec,
        args.tracking_uri,
        policy=args.policy,
        fail_on=args.fail_on or "error",
        report=Path(args.report) if args.report else None,
        trusted=trusted,
        source=args.source,
        timeout=args.timeout,
        allow_artifact_locations=args.allow_artifact_location,
        system_card=args.system_card,
    )
    lines = [f"{check.spec} is {check.version}; judged by its {check.source}"]
    if check.verdict is not None:
        verdict = check.verdict
        lines.append(
            f"verdict: {verdict.status}, score {verdict.score:g}%, policy {verdict.policy}, "
            f"checked at {verdict.checked_at}"
        )
    lines += [f"NO  {problem}" for problem in check.problems]
    lines.append(
        f"DEPLOY {check.version}" if check.deployable else f"DO NOT DEPLOY {check.version}"
    )
    emit(["".join(safe_line(line) + "\n" for line in lines)], None)
    return 0 if check.deployable else 1
