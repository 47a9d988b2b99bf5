"""Reading the files users write for the tool: policies, waivers, configuration.

One reader for JSON, YAML and TOML, bounded in size, with errors that name the file and the
line; and one way to check a document against a schema of ours and name the failing field.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
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
    text = read_text_file(path, label, limit=limit, error=error)
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
    return parse_yaml(text, label, error=error)


def read_text_file(
    path: Path, label: str, *, limit: int, error: type[AuditError] = AuditError
) -> str:
    """The UTF-8 text of a regular file of at most `limit` bytes. Opened without blocking and
    refused unless a regular file: a named pipe with no writer would block the open, and a
    pipe or device the read, for ever; the size is checked on what was read, not on `stat`."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
    try:
        descriptor = os.open(path, flags)
        with os.fdopen(descriptor, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise error(f"{label}: not a regular file")
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise error(f"{label}: not found") from None
    except OSError as problem:
        raise error(f"{label}: cannot read: {problem.strerror or problem}") from None
    if len(data) > limit:
        size = max(len(data), _size(path))
        raise error(f"{label}: {size:,} bytes is too large (at most {limit:,})")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{label}: not UTF-8 text") from None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def parse_yaml(
    text: str, label: str, *, error: type[AuditError] = AuditError, first_line: int = 1
) -> Any:
    """A YAML document through the bounded loader (`audit.safeyaml`); errors name the line,
    counted from `first_line` (the line of the file the text starts on)."""
    import yaml

    from audit import safeyaml

    try:
        return safeyaml.load(text)
    except yaml.YAMLError as problem:
        mark = getattr(problem, "problem_mark", None)
        where = f" at line {mark.line + first_line} column {mark.column + 1}" if mark else ""
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
    schema_name: str,
    document: Any,
    label: str,
    *,
    error: type[AuditError] = AuditError,
    pointer: bool = False,
) -> None:
    """Validate against schemas/<schema_name>; the error names the first failing field, as
    `a.b[0]` or, with `pointer`, as the JSON Pointer `/a/b/0`, and the nearest known field
    for an unknown one."""
    import jsonschema_rs

    from audit.errors import did_you_mean
    from audit.resources import schema_path

    schema = json.loads(schema_path(schema_name).read_text(encoding="utf-8"))
    # YAML and TOML read an unquoted 2027-03-31 as a date; the schemas check the text form.
    problems = list(jsonschema_rs.validator_for(schema).iter_errors(plain(document)))
    if not problems:
        return
    first = min(problems, key=lambda p: (len(list(p.instance_path)), str(p.message)))
    if pointer:
        where = "".join(
            "/" + str(part).replace("~", "~0").replace("/", "~1") for part in first.instance_path
        )
    else:
        where = "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in first.instance_path
        ).lstrip(".")
    kind = getattr(first, "kind", None)
    if kind is not None and hasattr(kind, "property"):
        detail = f"missing required field {kind.property!r}"
    elif kind is not None and hasattr(kind, "unexpected"):
        known = _known_fields(schema, list(first.schema_path)[:-1])
        hints = "".join(did_you_mean(str(key), known) for key in kind.unexpected)
        detail = f"unknown field(s) {', '.join(repr(k) for k in kind.unexpected)}{hints}"
    else:
        detail = " ".join(str(first.message).split())[:200]
    raise error(f"{label}: {where or ('/' if pointer else 'the document')}: {detail}")


def _known_fields(schema: Any, path: list[Any]) -> list[str]:
    """The property names of the subschema at `path` (where `additionalProperties` failed)."""
    node = schema
    for part in path:
        if part == "$ref" and isinstance(node, Mapping) and str(node.get(part)).startswith("#/"):
            target = str(node[part])
            node = schema
            for segment in target.split("/")[1:]:
                node = node.get(segment) if isinstance(node, Mapping) else None
            continue
        try:
            node = node[part] if isinstance(node, Mapping) else node[int(part)]
        except (KeyError, IndexError, ValueError, TypeError):
            return []
    properties = node.get("properties") if isinstance(node, Mapping) else None
    return [str(name) for name in properties] if isinstance(properties, Mapping) else []


def plain(value: Any) -> Any:
    """`value` with the dates YAML and TOML read from unquoted text as that text again."""
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value
