"""The command line's parser: argparse with errors in the tool's own voice.

A mistyped command, flag or choice gets the usage of the command it was typed for and a
"did you mean" (argparse itself reports a subcommand's stray flag with the top-level usage and
no hint).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from audit.errors import did_you_mean

EXIT_USAGE = 2  # as argparse exits, and as an audit that could not run

# argparse's own wording (Python 3.10 to 3.13) of the two mistakes a hint can help with.
_INVALID_CHOICE = re.compile(r"invalid choice: '(?P<value>[^']*)' \(choose from (?P<choices>.*)\)")
_QUOTED = re.compile(r"'([^']*)'")


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2, as argparse does) that suggest the nearest
    command, flag or choice, under the usage of the (sub)command they belong to."""

    def error(self, message: str) -> NoReturn:
        from audit.formats.text import safe_line

        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"mlflow-audit: error: {safe_line(self._hinted(message))}\n")

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        # A subcommand's parser is called with the rest of the command line; what it does not
        # know is reported here, with its own usage and flags, not later by the top level.
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras

    def _hinted(self, message: str) -> str:
        choice = _INVALID_CHOICE.search(message)
        if choice:
            hint = did_you_mean(choice["value"], _QUOTED.findall(choice["choices"]))
            return f"{message}{hint}"
        if message.startswith("unrecognized arguments: "):
            flags = [word for word in message.split()[2:] if word.startswith("-")]
            known = [option for option in self._option_string_actions if option.startswith("--")]
            for flag in flags:
                hint = did_you_mean(flag.split("=", 1)[0], known)
                if hint:
                    return f"{message}{hint}"
        return message

    def add_subparsers(self, **kwargs: Any) -> Any:
        kwargs.setdefault("parser_class", Parser)
        return super().add_subparsers(**kwargs)


def fill(text: str) -> str:
    """A description wrapped to fit 80 columns, for a parser whose epilog keeps its lines
    (`RawDescriptionHelpFormatter`, which also leaves the description as written)."""
    import textwrap

    return textwrap.fill(text, width=78, break_on_hyphens=False)
