"""`mlflow-audit ledger verify|show FILE`: check the alias ledger's chain and signatures, list
its entries."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from audit.cliparser import fill

_VERIFY_EPILOG = """\
Removing the last entries, or the whole file, leaves a valid chain: compare
the entry count and head SHA-256 printed here with a copy kept elsewhere.

exit codes:
  0  every line is an entry signed by a given certificate's key, and each
     follows the one before (sequence and SHA-256 of the previous line)
  1  a line is not JSON or not an entry, its signature does not verify, its
     signer is unknown, the chain breaks, or the last write is torn
  2  the ledger cannot be checked (missing, not a regular file, unreadable,
     or a certificate unreadable)
"""

_SHOW_EPILOG = """\
exit codes:
  0  every line is an entry
  1  some lines are not entries (they are listed)
  2  the ledger cannot be read
"""


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "ledger",
        help="check or list the signed ledger of alias moves",
        description=fill(
            "The alias ledger is a JSON Lines file: each line a DSSE envelope, signed, "
            "holding one alias move and the SHA-256 of the line before it "
            "(docs/registry-gate.md)."
        ),
    )
    actions = parser.add_subparsers(dest="ledger_command", metavar="ACTION", required=True)
    verify = actions.add_parser(
        "verify",
        help="check every signature and the chain",
        description=fill(
            "Check that every line of the ledger is an entry signed by the key of one of the "
            "given certificates, and that the entries form one unbroken chain: a deleted, "
            "edited, inserted or reordered line is named with its line number."
        ),
        epilog=_VERIFY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument("file", metavar="FILE", help="the ledger")
    verify.add_argument(
        "--cert",
        action="append",
        required=True,
        metavar="PEM",
        help="a certificate whose key may sign entries (the signer's own, e.g. signer.pem "
        "from 'mlflow-audit keygen'; repeatable, e.g. across a key rotation)",
    )
    verify.add_argument(
        "-f",
        "--format",
        choices=("text", "json"),
        default="text",
        help="text for people (default), or json",
    )
    show = actions.add_parser(
        "show",
        help="list the entries (signatures unchecked)",
        description=fill(
            "List the ledger's entries, one line each. Signatures and the chain are not "
            "checked here: use 'mlflow-audit ledger verify'."
        ),
        epilog=_SHOW_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show.add_argument("file", metavar="FILE", help="the ledger")
    show.add_argument(
        "-f",
        "--format",
        choices=("table", "json"),
        default="table",
        help="table for people (default), or json (a list of entries with their line)",
    )


def run(args: argparse.Namespace) -> int:
    if args.ledger_command == "verify":
        return _verify(Path(args.file), [Path(p) for p in args.cert], args.format)
    return _show(Path(args.file), args.format)


def _verify(path: Path, certificate_paths: list[Path], output: str) -> int:
    from audit.formats.text import plural, safe_line
    from audit.ledger import verify_ledger
    from audit.signing.keys import load_certificates

    certificates = [c for p in certificate_paths for c in load_certificates(p)]
    outcome = verify_ledger(path, certificates)
    if output == "json":
        sys.stdout.write(json.dumps(outcome.to_dict(), indent=2) + "\n")
        return outcome.exit_code
    lines = [f"FAIL  {problem}" for problem in outcome.problems]
    if outcome.signers:
        lines.append(f"Signed by {', '.join(outcome.signers)}")
    if outcome.valid:
        lines.append(f"OK: {plural(outcome.entries, 'entry', 'entries')}, chain intact")
    else:
        lines.append(
            f"INVALID: {plural(len(outcome.problems), 'problem')} in "
            f"{plural(outcome.lines, 'line')}"
        )
    lines.append(f"head sha256 {outcome.head}")
    sys.stdout.write("".join(safe_line(line) + "\n" for line in lines))
    return outcome.exit_code


def _show(path: Path, output: str) -> int:
    from audit.formats.text import safe_line
    from audit.ledger import read_entries

    unreadable = 0
    if output == "json":
        # Streamed as a JSON array: a ledger may be larger than memory.
        sys.stdout.write("[")
        for count, (number, entry, why) in enumerate(read_entries(path)):
            item = {"line": number, **entry.to_dict()} if entry else {"line": number, "error": why}
            unreadable += entry is None
            sys.stdout.write(("," if count else "") + "\n  " + json.dumps(item))
        sys.stdout.write("\n]\n")
        return 1 if unreadable else 0
    for number, entry, why in read_entries(path):
        if entry is None:
            unreadable += 1
            text = f"line {number}: {why}"
        else:
            verdict = entry.verdict or {}
            status = verdict.get("status", "no verdict")
            score = f" {verdict['score']}" if "score" in verdict else ""
            text = (
                f"{entry.sequence:>5}  {entry.moved_at}  {entry.model}@{entry.alias}  "
                f"{entry.old_version or '-'} -> {entry.new_version or '-'}  {status}{score}"
            )
        sys.stdout.write(safe_line(text) + "\n")
    return 1 if unreadable else 0
