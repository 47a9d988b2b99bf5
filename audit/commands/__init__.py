"""Commands with a module of their own (`audit.cli` registers them), and the options every
command that reads a tracking store shares (`options`)."""

from __future__ import annotations

import argparse
from typing import Any, Protocol


class Command(Protocol):
    """What a command module offers the command line."""

    def add_parser(self, commands: Any) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...
