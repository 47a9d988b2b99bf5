"""Collect a registered model version as the subject of an audit: its source run's record,
extended with its lineage (`audit.lineage`) read from the same store.

A run selected through a model version (`--model NAME/VERSION`, `NAME@ALIAS`) becomes that
version's record; every other run stays a run record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any

from audit.errors import SelectionError
from audit.lineage import LineageFacts, version_record
from audit.sources import CollectedRun, CollectionNeeds, ModelVersionRef, Selection, Source

__all__ = ["Declare", "version_of", "with_lineage"]

#: Makes a version's `declared` section from what the registry holds about its model (its
#: description and tags may fill fields of the system card).
Declare = Callable[[LineageFacts], Mapping[str, Any]]


def with_lineage(
    runs: Iterable[CollectedRun], source: Source, declare: Declare | None = None
) -> Iterator[CollectedRun]:
    """Each collected run, as its model version's record when a version selected it.

    `source` reads the lineage; give it a source of its own, not the one `runs` come from
    (a source's state belongs to the collection it is running)."""
    for collected in runs:
        yield version_of(collected, source, declare) if collected.model_versions else collected


def version_of(
    collected: CollectedRun, source: Source, declare: Declare | None = None
) -> CollectedRun:
    """The collected source run of a version, as the version's record (the first version when
    several selected versions were registered from the same run)."""
    ref: ModelVersionRef = collected.model_versions[0]
    record = collected.record
    run_id = record["run"]["id"]
    parent_id = record["run"].get("parent_run_id")
    facts = source.lineage_facts(ref, parent_id)
    evaluations = _records(source, facts.evaluation_run_ids(run_id))
    parent = None
    if parent_id:
        try:
            (parent,) = _records(source, (parent_id,))
        except SelectionError:
            parent = None  # deleted for good: the tag outlives it
    merged = version_record(
        record,
        facts,
        parent=parent,
        evaluations=evaluations,
        declared=declare(facts) if declare else None,
    )
    if parent_id and parent is None:
        merged["collection"]["notes"] = sorted(
            {*merged["collection"]["notes"], f"parent run {parent_id} is no longer in the store"}
        )
    return replace(collected, record=merged, evidence_sha256=None)


def _records(source: Source, run_ids: tuple[str, ...]) -> list[Mapping[str, Any]]:
    """The records of runs of the lineage, in the order asked; only their datasets, metrics
    and parameters are used, so neither artifacts nor the registry are read."""
    if not run_ids:
        return []
    by_id = {
        other.record["run"]["id"]: other.record
        for other in source.collect(
            Selection(run_ids=run_ids, include_deleted=True),
            CollectionNeeds(artifacts=False, registry=False),
        )
    }
    return [by_id[run_id] for run_id in run_ids if run_id in by_id]
