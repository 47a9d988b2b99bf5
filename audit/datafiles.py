"""Reading the files users write for the tool: policies, waivers, configuration.

One reader for JSON, YAML and TOML, bounded in size, with errors that name the file and the
line; and one way to check a document against a schema of ours and name the failing field.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from audit.errors import AuditError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def read_data_file(
    path: Path, label: str, *, limit: int, error: type[AuditError] = AuditError
) -> Any:
    """The parsed contents of a .json, .toml or YAML file (any other suffix is read as YAML)."""
    try:
        size = path.stat().st_size
        if size > limit:
            raise error(f"{label}: {size:,} bytes is too large (at most {limit:,})")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{label}: not found") from None
    except OSError as problem:
        raise error(f"{label}: cannot read: {problem.strerror or problem}") from None
    except UnicodeDecodeError:
        raise error(f"{label}: not UTF-8 text") from None
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            return _within_depth(json.loads(text), label, error)
        except json.JSONDecodeError as problem:
            raise error(
                f"{label}: invalid JSON at line {problem.lineno} column {problem.colno}: "
                f"{problem.msg}"
            ) from None
        except RecursionError:
            raise error(f"{label}: {_too_deep()}") from None
    if suffix == ".toml":
        try:
            return _within_depth(tomllib.loads(text), label, error)
        except tomllib.TOMLDecodeError as problem:
            raise error(f"{label}: invalid TOML: {problem}") from None
        except RecursionError:
            raise error(f"{label}: {_too_deep()}") from None
    import yaml

    from audit import safeyaml

    try:
        return safeyaml.load(text)
    except yaml.YAMLError as problem:
        mark = getattr(problem, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        detail = getattr(problem, "problem", None) or str(problem).splitlines()[0]
        raise error(f"{label}: invalid YAML{where}: {detail}") from None


def _too_deep() -> str:
    from audit.safeyaml import MAX_DEPTH

    return f"it nests deeper than {MAX_DEPTH} levels"


def _within_depth(document: Any, label: str, error: type[AuditError]) -> Any:
    """The document, if it nests no deeper than YAML files may (`audit.safeyaml`): the same
    bound for every syntax, so that walking a policy can never exhaust Python's stack."""
    from audit.safeyaml import MAX_DEPTH

    level: list[Any] = [document]
    for _ in range(MAX_DEPTH + 1):
        level = [
            child
            for node in level
            if isinstance(node, (dict, list))
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, (dict, list))
        ]
        if not level:
            return document
    raise error(f"{label}: {_too_deep()}")


def check_against(
    schema_name: str, document: Any, label: str, *, error: type[AuditError] = AuditError
) -> None:
    """Validate against schemas/<schema_name>; the error names the first failing field."""
    import jsonschema_rs

    from audit.resources import schema_path

    schema = json.loads(schema_path(schema_name).read_text(encoding="utf-8"))
    # YAML and TOML read an unquoted 2027-03-31 as a date; the schemas check the text form.
    problems = list(jsonschema_rs.validator_for(schema).iter_errors(_plain(document)))
    if not problems:
        return
    first = min(problems, key=lambda p: (len(list(p.instance_path)), str(p.message)))
    where = "".join(
        f"[{part}]" if isinstance(part, int) else f".{part}" for part in first.instance_path
    ).lstrip(".")
    kind = getattr(first, "kind", None)
    if kind is not None and hasattr(kind, "property"):
        detail = f"missing required field {kind.property!r}"
    elif kind is not None and hasattr(kind, "unexpected"):
        detail = f"unknown field(s) {', '.join(repr(k) for k in kind.unexpected)}"
    else:
        detail = " ".join(str(first.message).split())[:200]
    raise error(f"{label}: {where or 'the document'}: {detail}")


def _plain(value: Any) -> Any:
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value
