"""What changed in a run between the evidence record that was signed and the store today, in
words a reviewer reads: "param lr: '0.1' -> '0.2'", "tag team added", "run deleted", and in the
metric histories its document charts."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from audit.diff import keyed_differences

#: Tags `mlflow-audit report --log-to-mlflow` sets on the runs it signed. Setting them changes
#: the run after signing, so they are not a change to report.
OWN_TAGS = frozenset({"audit.status", "audit.policy", "audit.report_sha256", "audit.signed_by"})

#: Changes listed per section before the rest is counted.
_MAX_PER_SECTION = 5


def changes(signed: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Every difference between two evidence records of one run, signed record first."""
    found: list[str] = []
    signed_run, current_run = signed.get("run") or {}, current.get("run") or {}
    if signed_run.get("lifecycle_stage") != current_run.get("lifecycle_stage"):
        if current_run.get("lifecycle_stage") == "deleted":
            found.append("run deleted (in MLflow's trash)")
        else:
            found.append(
                f"run lifecycle: {signed_run.get('lifecycle_stage')} -> "
                f"{current_run.get('lifecycle_stage')}"
            )
    found += _mapping_changes(
        "param", signed.get("hyperparameters"), current.get("hyperparameters")
    )
    found += _mapping_changes(
        "tag", _without_own(signed.get("tags")), _without_own(current.get("tags"))
    )
    found += _mapping_changes("metric", _metrics(signed), _metrics(current))
    sections = ("schema_version", "run", "source", "data", "environment", "models", "lineage")
    for section in (*sections, "system_metrics", "declared", "collection"):
        old, new = signed.get(section), current.get(section)
        if section == "run":
            old, new = _without(old, "lifecycle_stage"), _without(new, "lifecycle_stage")
        found += _section_changes(section, old, new)
    return found


def history_changes(signed: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """How the metric histories a run's document charts changed, from their digests
    (`audit.reportfolder.history_digests`): the record keeps only each metric's latest value,
    so a point edited earlier in a history shows only here."""
    lines = []
    for key in sorted(set(signed) | set(current)):
        before, after = _points(signed.get(key)), _points(current.get(key))
        if key not in current:
            lines.append(f"metric history {key} removed (was {before} points)")
        elif key not in signed:
            lines.append(f"metric history {key} added: {after} points")
        elif signed[key] != current[key]:
            lines.append(
                f"metric history {key}: points changed ({before} points signed, {after} now)"
            )
    return lines


def _points(digest: Any) -> object:
    return digest.get("points") if isinstance(digest, Mapping) else None


def without_own_tags(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record as it was before mlflow-audit tagged its run."""
    return {**record, "tags": _without_own(record.get("tags"))}


def _without(mapping: Any, key: str) -> Any:
    if not isinstance(mapping, Mapping):
        return mapping
    return {k: v for k, v in mapping.items() if k != key}


def _without_own(tags: Any) -> dict[str, Any]:
    return {k: v for k, v in (tags or {}).items() if k not in OWN_TAGS}


def _metrics(record: Mapping[str, Any]) -> dict[str, Any]:
    """The latest value of each metric, as the record lists them."""
    values: dict[str, Any] = {}
    for entry in record.get("metrics") or []:
        if isinstance(entry, Mapping):
            values[str(entry.get("key"))] = entry.get("value")
    return values


def _mapping_changes(kind: str, old: Any, new: Any) -> list[str]:
    lines: list[str] = []
    for change, key, before, after in keyed_differences(old or {}, new or {}):
        if change == "removed":
            lines.append(f"{kind} {key} removed (was {_show(before)})")
        elif change == "added":
            lines.append(f"{kind} {key} added: {_show(after)}")
        else:
            lines.append(f"{kind} {key}: {_show(before)} -> {_show(after)}")
    return lines


def _section_changes(section: str, old: Any, new: Any) -> list[str]:
    differences = list(_walk(f"/{section}", old, new))
    lines = [
        f"{pointer}: {_show(before)} -> {_show(after)}"
        for pointer, before, after in differences[:_MAX_PER_SECTION]
    ]
    if len(differences) > _MAX_PER_SECTION:
        lines.append(f"/{section}: {len(differences) - _MAX_PER_SECTION} more changes")
    return lines


def _walk(pointer: str, old: Any, new: Any) -> Iterator[tuple[str, Any, Any]]:
    if old == new:
        return
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in sorted(set(old) | set(new), key=str):
            escaped = str(key).replace("~", "~0").replace("/", "~1")
            yield from _walk(f"{pointer}/{escaped}", old.get(key), new.get(key))
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for index, (before, after) in enumerate(zip(old, new, strict=True)):
            yield from _walk(f"{pointer}/{index}", before, after)
    else:
        yield pointer, old, new


def _show(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
