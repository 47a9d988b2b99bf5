"""`mlflow-audit system-card`: write the template of a system card, and check a card."""

from __future__ import annotations

import argparse
import os
from collections import Counter
from pathlib import Path
from typing import Any

from audit.cliparser import fill
from audit.errors import AuditError

EXIT_COMPLETE, EXIT_MISSING = 0, 1

_VALIDATE_EPILOG = """\
exit codes:
  0  every field is declared
  1  fields are missing or hold a placeholder (TODO, TBD, lorem ipsum, <...>,
     the template's own text)
  2  the card cannot be read: not found, not a regular file, too large, not
     YAML, an unknown field or a wrong type
"""


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "system-card",
        help="write or check a system card (what MLflow cannot hold)",
        description="A system card is a YAML file (or Markdown with YAML front matter) in "
        "which the provider declares what MLflow cannot hold: provider, intended purpose, "
        "human oversight, risk management and the other points of Annex IV "
        "(schemas/system-card.schema.json).",
    )
    actions = parser.add_subparsers(dest="card_command", metavar="ACTION", required=True)
    init = actions.add_parser(
        "init",
        help="write a commented template",
        description="Write a commented template of a system card: each field says what to "
        "write and which provision it serves.",
    )
    init.add_argument(
        "path",
        nargs="?",
        default=None,
        metavar="PATH",
        help="where to write it (default: system-card.yaml)",
    )
    init.add_argument("--force", action="store_true", help="replace an existing file")
    validate = actions.add_parser(
        "validate",
        help="list a card's fields: declared, placeholder, missing",
        description=fill(
            "Read a system card and list each field as declared (with its value), "
            "placeholder or missing, as the policy's declared rules see it."
        ),
        epilog=_VALIDATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    validate.add_argument("file", metavar="FILE", help="the system card")


def run(args: argparse.Namespace) -> int:
    if args.card_command == "init":
        return _init(Path(args.path or _default_path()), force=args.force)
    return _validate(Path(args.file))


def _default_path() -> str:
    from audit.systemcard import DEFAULT_PATH

    return DEFAULT_PATH


def _init(path: Path, *, force: bool) -> int:
    from audit.formats.text import safe_line
    from audit.systemcard import TEMPLATE

    if path.is_dir():
        raise AuditError(f"{path}: is a folder; name the file to write")
    if (path.exists() or path.is_symlink()) and not force:
        raise AuditError(f"{path}: exists; give --force to replace it")
    if path.exists() and not path.is_file():
        raise AuditError(f"{path}: not a regular file; not replaced")
    # Written beside the target and renamed over it: never half a template.
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        partial.write_text(TEMPLATE, encoding="utf-8")
        partial.replace(path)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise AuditError(f"cannot write {path}: {error.strerror or error}") from None
    print(f"Wrote {safe_line(str(path))}: fill in every <...>, then run")
    print(f"  mlflow-audit system-card validate {safe_line(str(path))}")
    return EXIT_COMPLETE


def _validate(path: Path) -> int:
    from audit.formats.text import plural, safe_line, shorten
    from audit.systemcard import declared_section, field_states, load_system_card

    card = load_system_card(path)
    section = declared_section(card)
    states = field_states(section)
    print(f"{safe_line(card.file)}  sha256 {card.sha256}")
    for pointer, state in states.items():
        line = f"{state:<12}{pointer}"
        if state == "declared":
            line += f"  {_shown(section, pointer)}"
        print(shorten(safe_line(line), 400))
    for pointer in section["placeholders"]:
        if pointer not in states:  # a part of a field: an item of a list, a person's role
            print(safe_line(f"{'placeholder':<12}{pointer}  (left out)"))
    counts = Counter(states.values())
    print(
        f"{counts['declared']} of {len(states)} fields declared, "
        f"{plural(counts['placeholder'], 'placeholder')}, {counts['missing']} missing"
    )
    return EXIT_COMPLETE if counts["declared"] == len(states) else EXIT_MISSING


def _shown(section: dict[str, Any], pointer: str) -> str:
    node: Any = section
    for part in pointer.strip("/").split("/"):
        node = node[part]
    if isinstance(node, list):
        return "; ".join(
            ", ".join(item.values()) if isinstance(item, dict) else str(item) for item in node
        )
    return str(node)
