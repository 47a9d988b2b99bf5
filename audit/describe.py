"""Evidence in words: what a place in an evidence record holds, for a reader.

One spelling for findings ("what was found"), for the evidence a passing rule shows ("what
satisfied it") and for reports. Everything here reads an evidence record
(schemas/evidence-record.schema.json) and returns plain text; callers escape it for their
output.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: Entries shown of a list before "and N more".
SHOWN = 3


def clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def brief(value: Any) -> str:
    """A value as JSON, cut short: what a reader needs to recognise it."""
    if isinstance(value, str):
        return json.dumps(clip(value), ensure_ascii=False)
    if value is None or isinstance(value, bool | int | float):
        return json.dumps(value)
    return type(value).__name__


def unescape(part: str) -> str:
    return part.replace("~1", "/").replace("~0", "~")


def escape(part: str) -> str:
    """A key as one segment of a JSON Pointer (RFC 6901)."""
    return part.replace("~", "~0").replace("/", "~1")


def node_at(record: Any, pointer: str) -> Any:
    """The value at a JSON Pointer, or None when nothing is there."""
    node = record
    for part in pointer.split("/")[1:]:
        part = unescape(part)
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            return None
    return node


def item_label(record: Mapping[str, Any], pointer: str) -> str | None:
    """Name the list entry a pointer goes through (a dataset, a requirement, a metric)."""
    if not _through_a_list(pointer):
        return None  # a label names a list entry, which only an index reaches
    parts = pointer.split("/")[1:]
    node: Any = record
    label = None
    for part in parts:
        part = unescape(part)
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
            if isinstance(node, Mapping):
                label = _label(node) or label
        elif isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            break
    return label


def _label(entry: Mapping[str, Any]) -> str | None:
    """What names a list entry: a requirement's line, a metric's key, a name, a URI."""
    for key in ("line", "key", "name", "uri"):
        if isinstance(entry.get(key), str):
            return clip(entry[key])
    return None


@functools.lru_cache(maxsize=4096)  # the places a policy fails at recur run after run
def _through_a_list(pointer: str) -> bool:
    return any(part.isdigit() for part in pointer.split("/")[1:])


def number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# --------------------------------------------------------------------------- entities

_ROLE_FROM = {
    "context": "its context",
    "digest": "same digest as the training data",
    "metric": "metrics computed on it",
    "name": "its name only",
}


def dataset_text(dataset: Mapping[str, Any]) -> str:
    """``iris-train (digest 883e1818, context "training")``."""
    name = dataset.get("name") or "(unnamed)"
    parts = [f"digest {dataset.get('digest') or 'not recorded'}"]
    role_from = dataset.get("role_from")
    context = dataset.get("context")
    if role_from in _ROLE_FROM and role_from != "context":
        parts.append(f"role from {_ROLE_FROM[role_from]}")
    parts.append(f"context {json.dumps(context)}" if context else "no context")
    return f"{clip(str(name))} ({', '.join(parts)}){_in_run(dataset)}"


def _in_run(entry: Mapping[str, Any]) -> str:
    """Where an entry of a model version's record came from, when another run than the
    version's source run logged it."""
    run_id = entry.get("run_id")
    return f", in run {clip(str(run_id))}" if run_id else ""


def metric_text(metric: Mapping[str, Any]) -> str:
    """``accuracy = 0.9737 on iris-test (7e66b598)``, ``f1_score_X_test = 0.972, evaluation
    data by its name``."""
    text = f"{clip(str(metric.get('key')))} = {number(metric.get('value'))}"
    dataset = metric.get("dataset")
    context = metric.get("context")
    if isinstance(dataset, Mapping):
        on = f"{dataset.get('name') or '(unnamed)'} ({dataset.get('digest') or 'no digest'})"
        by = "" if metric.get("context_from") == "dataset" else " by the metric's name"
        text += f" on {clip(on)}" + (f", {context} data{by}" if context else "")
    elif context:
        text += f", {context} data by the metric's name"
    else:
        text += ", data not recorded"
    return text + _in_run(metric)


def model_text(model: Mapping[str, Any]) -> str:
    name = model.get("name") or model.get("model_id") or "model"
    facts = []
    if model.get("flavors"):
        facts.append(", ".join(model["flavors"][:3]))
    signature = model.get("signature")
    if isinstance(signature, Mapping):
        inputs = signature.get("inputs")
        count = f" with {len(inputs)} inputs" if isinstance(inputs, list) else ""
        facts.append(f"signature{count}")
    elif model.get("flavors") is not None:
        facts.append("no signature")
    if model.get("input_example") is True:
        facts.append("input example")
    elif model.get("input_example") is False:
        facts.append("no input example")
    versions = [
        f"{v.get('name')} v{v.get('version')}" for v in model.get("registered_versions") or []
    ]
    facts.append("registered as " + ", ".join(versions[:2]) if versions else "not registered")
    return f"{clip(str(name))} ({'; '.join(facts)})" if facts else clip(str(name))


def entry_name(section: str, entry: Any) -> str:
    """One list entry by its name and what kind it is, without values that differ from run
    to run: what a finding says it found nearby, so that runs with the same gap share it."""
    if isinstance(entry, Mapping):
        if section == "metrics":
            context = entry.get("context")
            if not context:
                return f"{clip(str(entry.get('key')))} (data not recorded)"
            how = " by its name" if entry.get("context_from") == "name" else ""
            return f"{clip(str(entry.get('key')))} ({context} data{how})"
        if section == "data":
            context = entry.get("context")
            said = f"context {json.dumps(context)}" if context else "no context"
            return f"{clip(str(entry.get('name') or '(unnamed)'))} ({said})"
        if section == "models":
            facts = [
                "signature" if isinstance(entry.get("signature"), Mapping) else "no signature",
                "input example" if entry.get("input_example") else "no input example",
                "registered" if entry.get("registered_versions") else "not registered",
            ]
            name = clip(str(entry.get("name") or entry.get("model_id") or "model"))
            return f"{name} ({', '.join(facts)})"
    return entry_text(section, entry)


def entry_text(section: str, entry: Any) -> str:
    """One list entry of a record section, in words."""
    if isinstance(entry, Mapping):
        if section == "data":
            return dataset_text(entry)
        if section == "metrics":
            return metric_text(entry)
        if section == "models":
            return model_text(entry)
        label = _label(entry)
        if label is not None:
            return label
    return brief(entry)


def entry_names(section: str, entries: Sequence[Any]) -> str:
    """`entries_text` by `entry_name`: what a failing `contains` found. Runs share their gaps,
    so the words for entries alike in what `entry_name` reads are made once."""
    for entry in entries:
        if not isinstance(entry, dict):
            return entries_text(section, entries, names=True)
    if section == "metrics":
        key: tuple[Any, ...] = tuple(
            (m.get("key"), m.get("context"), m.get("context_from")) for m in entries
        )
    elif section == "data":
        key = tuple((d.get("name"), d.get("context")) for d in entries)
    elif section == "models":
        key = tuple(
            (
                m.get("name"),
                m.get("model_id"),
                isinstance(m.get("signature"), Mapping),
                m.get("input_example"),
                bool(m.get("registered_versions")),
            )
            for m in entries
        )
    else:
        return entries_text(section, entries, names=True)
    try:
        held = _NAMES.get((section, key))
    except TypeError:  # a value that cannot be a key: nothing to share
        return entries_text(section, entries, names=True)
    if held is None:
        if len(_NAMES) >= 4096:
            _NAMES.clear()
        held = _NAMES[(section, key)] = entries_text(section, entries, names=True)
    return held


_NAMES: dict[tuple[str, tuple[Any, ...]], str] = {}


def entries_text(
    section: str, entries: Sequence[Any], limit: int = SHOWN, *, names: bool = False
) -> str:
    """Entries of a record section in words, the first `limit`; by `entry_name` with
    `names`."""
    describe = entry_name if names else entry_text
    if section == "metrics":
        # The metrics nearest to evaluation evidence first: those said to be on evaluation data.
        order = {"evaluation": 0, None: 1, "training": 2}
        entries = sorted(
            entries,
            key=lambda m: order.get(m.get("context"), 1) if isinstance(m, Mapping) else 1,
        )
    shown = "; ".join(describe(section, entry) for entry in entries[:limit])
    more = f"; and {len(entries) - limit} more" if len(entries) > limit else ""
    return shown + more


def value_text(record: Mapping[str, Any], pointer: str) -> str:
    """The value at a place in the record, in words: a list entry described, a list counted
    and named, a mapping's first entries, a scalar as it is."""
    parts = [unescape(part) for part in pointer.split("/")[1:]]
    section = parts[0] if parts else ""
    value = node_at(record, pointer)
    if isinstance(value, list):
        if not value:
            return "none recorded"
        return f"{len(value)} recorded: {entries_text(section, value)}"
    if isinstance(value, Mapping):
        if parts and parts[-1].isdigit():
            return entry_text(section, value)
        if not value:
            return "none recorded"
        shown = ", ".join(f"{k}={clip(str(v), 30)}" for k, v in list(value.items())[:4])
        more = ", ..." if len(value) > 4 else ""
        return f"{len(value)} recorded: {shown}{more}"
    if value is None:
        return "not recorded"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return clip(str(value), 80) if isinstance(value, str) else number(value)


#: Fields of a dataset entry as a reader calls them.
_FIELD_WORDS = {"source_uri": "source", "role_from": "role from", "rows": "rows"}


def evidence_text(record: Mapping[str, Any], pointers: Iterable[str], limit: int = SHOWN) -> str:
    """What satisfied a rule: the places it found its evidence, in words. A metric or a model
    is described whole; a field of a dataset or a requirement with the entry's name
    (``iris-train: source s3://...``); a field outside lists by its name (``status:
    FINISHED``). Places within one entry's field are shown once."""
    shown: list[str] = []
    seen: set[str] = set()
    for pointer in pointers:
        parts = pointer.split("/")
        section = unescape(parts[1]) if len(parts) > 1 else ""
        entry = _entry_pointer(pointer)
        if entry is not None and (entry == pointer or section in ("metrics", "models")):
            key, text = entry, entry_text(section, node_at(record, entry))
        elif entry is not None:
            field = unescape(pointer[len(entry) + 1 :].split("/")[0])
            key = f"{entry}/{field}"
            value = node_at(record, key)
            words = (
                _ROLE_FROM.get(str(value), str(value))
                if field == "role_from"
                else value_text(record, key)
            )
            text = (
                f"{item_label(record, pointer) or entry}: {_FIELD_WORDS.get(field, field)} {words}"
            )
        else:
            key = pointer
            value = node_at(record, pointer)
            text = value_text(record, pointer)
            if not isinstance(value, list | Mapping) and len(parts) > 1:
                text = f"{unescape(parts[-1])}: {text}"
        if key not in seen:
            seen.add(key)
            shown.append(text)
    more = f"; and {len(shown) - limit} more" if len(shown) > limit else ""
    return "; ".join(shown[:limit]) + more


def _entry_pointer(pointer: str) -> str | None:
    """The list entry of a record section a pointer is in: /data/training/0 for
    /data/training/0/digest, /models/0 for /models/0/registered_versions/1."""
    parts = pointer.split("/")
    for index in range(1, len(parts)):
        if parts[index].isdigit():
            return "/".join(parts[: index + 1])
    return None


#: The places `nearby` has something to say about.
NEARBY = frozenset({"/data/training", "/data/evaluation"})


def nearby(record: Mapping[str, Any], pointer: str) -> str | None:
    """Evidence next to a gap that a reader should know of: the datasets logged without a
    training or evaluation role when one is missing."""
    if pointer in NEARBY:
        data = record.get("data")
        others = data.get("other") if isinstance(data, Mapping) else None
        if isinstance(others, list) and others:
            without = [d for d in others if isinstance(d, Mapping) and not d.get("context")]
            if len(without) == len(others):
                names = ", ".join(clip(str(d.get("name") or "(unnamed)")) for d in others[:SHOWN])
                return f"{_count(len(others), 'dataset')} without a context: {names}"
            described = entry_names("data", others)
            return f"{_count(len(others), 'other dataset')}: {described}"
    return None


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
