"""`mlflow-audit diff A B`: what changed between two runs or two model versions."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from audit.cliparser import fill
from audit.commands.options import (
    POLICY_HELP,
    add_config_arguments,
    add_store_arguments,
    configure,
)
from audit.commands.output import emit, use_color

FORMATS = ("table", "json", "markdown")

_EPILOG = """\
A and B are each a run id, or one version of a registered model: NAME/VERSION,
NAME/latest or NAME@ALIAS. A version is compared with its lineage: the metrics
of the runs that evaluated it and the sweep it came from.

examples:
  mlflow-audit diff churn-classifier/2 churn-classifier@champion
  mlflow-audit diff 3f1c2a9b... 7d4e5f60... -f markdown -o diff.md

exit codes:
  0  no changes
  1  the two differ
  2  the comparison could not be made (unknown run or version, store
     unreachable, bad policy)
"""


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "diff",
        help="what changed between two runs or model versions",
        description=fill(
            "Audit two runs or two registered model versions against the policy and list "
            "what changed from A to B: parameters (old -> new), datasets (name, digest, "
            "source), metrics with their delta when both were computed on the same data, "
            "packages, code commit, model signature, and the policy's outcomes. The same "
            "comparison is section 6 of a version's documentation (Annex IV 6)."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("old", metavar="A", help="the run or version to compare from")
    parser.add_argument("new", metavar="B", help="the run or version to compare to")
    add_config_arguments(parser)
    add_store_arguments(parser)
    output = parser.add_argument_group("output")
    output.add_argument("--policy", metavar="NAME|FILE", help=POLICY_HELP)
    output.add_argument(
        "--system-card",
        metavar="FILE",
        help="the system card of the model versions compared (its fields are the same on "
        "both sides: the policy's declared rules then compare alike)",
    )
    output.add_argument(
        "-f",
        "--format",
        choices=FORMATS,
        default="table",
        help="table for people (default), json (schemas/diff.schema.json), markdown for a "
        "pull-request comment",
    )
    output.add_argument("-o", "--output", metavar="FILE", help="write to FILE, not stdout")
    output.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour the table (default: auto, when stdout is a terminal)",
    )


def run(args: argparse.Namespace) -> int:
    from audit.api import diff
    from audit.formats.diff import render_diff_json, render_diff_markdown, render_diff_text

    configure(args, "diff")
    changes = diff(
        args.old,
        args.new,
        args.tracking_uri,
        policy=args.policy,
        source=args.source,
        timeout=args.timeout,
        allow_artifact_locations=args.allow_artifact_location,
        system_card=args.system_card,
    )
    if args.format == "json":
        text = render_diff_json(changes)
    elif args.format == "markdown":
        text = render_diff_markdown(changes)
    else:
        color = args.output is None and use_color(args.color, sys.stdout)
        text = render_diff_text(changes, color=color)
    emit([text], args.output)
    return 1 if changes.changed else 0
