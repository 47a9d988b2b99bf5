"""`--format json`: the whole result, as published in schemas/audit-result.schema.json.

Written in chunks, one line per top-level member and per run, by orjson (about 10 times faster
than the json module's C encoder): a result of 100,000 runs (483 MB) is never held as one
document or one string. A finding shared by many runs is encoded once: 100,000 runs with five
gaps each are written in 1.3 s, 1.9 s before; so are a run's lists of outcomes (the rule ids
that pass, fail, do not apply...), which most runs share.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from audit.result import AuditResult, Finding, RunResult


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
            yield from _array(_runs(result))
        elif isinstance(value, list) and value:
            yield from _array(value)
        else:
            yield _encode(value)
        yield f"{comma}\n"
    yield "}\n"


#: Findings encoded at most once per this many distinct ones: runs share a finding object for
#: each gap they have in common (`evaluation._finding`), often hundreds of thousands of times.
_ENCODED_HELD = 10_000


def _runs(result: AuditResult) -> Iterator[dict[str, Any]]:
    """Each run's `to_dict`, with every finding it shares with the runs before written once."""
    encoded: dict[int, tuple[Finding, orjson.Fragment]] = {}

    def finding(each: Finding) -> orjson.Fragment:
        held = encoded.get(id(each))
        if held is None or held[0] is not each:  # holding the finding keeps its id unique
            if len(encoded) >= _ENCODED_HELD:
                encoded.clear()
            held = encoded[id(each)] = (each, orjson.Fragment(orjson.dumps(each.to_dict())))
        return held[1]

    outcome_lists: dict[tuple[Any, ...], orjson.Fragment] = {}
    rule_ids = tuple(rule.id for rule in result.rules)

    def outcomes(run: RunResult) -> orjson.Fragment:
        # Most runs share their outcomes (the same rules pass, fail, do not apply): one
        # encoding for all of them.
        key = run.outcomes_key
        held = outcome_lists.get(key)
        if held is None:
            if len(outcome_lists) >= _ENCODED_HELD:
                outcome_lists.clear()
            held = outcome_lists[key] = orjson.Fragment(orjson.dumps(run.outcomes(rule_ids)))
        return held

    for run in result.runs:
        yield run.to_dict(finding, outcomes=outcomes)


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
