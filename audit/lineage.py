"""A registered model version's lineage, and the evidence record of the version built from it.

A version is documented from more than the run that trained it: the sweep that run was a trial
of, the runs that evaluated its logged model (MLflow 3 links each metric to the model and the
dataset it was computed on, from any run: `mlflow.models.evaluate` in a separate job), and the
registry. `version_record` merges them into one evidence record, in the shape policies already
check, where every metric and dataset another run logged names that run (`run_id`), plus a
`lineage` section (and a `declared` one, the system card's).

Pure functions of what the sources read (`LineageFacts`) and of run records: no store access.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from audit.evidence import bounded, iso_time, json_number, sealed

__all__ = ["LineageFacts", "MetricLink", "RegistryVersion", "version_record"]


@dataclass(frozen=True)
class MetricLink:
    """A metric MLflow linked to a logged model, from whichever run logged it."""

    key: str
    value: float
    step: int | None
    timestamp: int | None
    run_id: str
    dataset_name: str | None
    dataset_digest: str | None


@dataclass(frozen=True)
class RegistryVersion:
    """One version of a registered model, as the registry holds it."""

    version: str
    run_id: str | None
    model_id: str | None
    source: str | None
    status: str | None
    stage: str | None
    description: str | None
    created: int | None
    updated: int | None
    #: MLflow's `user_id` of the version; open-source MLflow leaves it empty.
    registered_by: str | None
    aliases: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LineageFacts:
    """What a source read about a version beyond its source run: the registry, the metrics
    linked to its logged model, and the size of the sweep its source run belonged to."""

    name: str
    version: str
    model_description: str | None
    model_tags: Mapping[str, str]
    #: Every live version of the model, in version order.
    versions: tuple[RegistryVersion, ...]
    #: Metrics linked to the version's logged model (none for a model without an id).
    links: tuple[MetricLink, ...]
    #: Runs whose parent is the source run's parent: the sweep's trials; None without a parent.
    trials: int | None = None

    @property
    def this(self) -> RegistryVersion:
        for candidate in self.versions:
            if candidate.version == self.version:
                return candidate
        raise LookupError(f"{self.name}/{self.version} is not among the model's versions")

    @property
    def previous(self) -> RegistryVersion | None:
        """The version registered before this one (the highest lower number)."""
        number = int(self.version)
        earlier = [v for v in self.versions if v.version.isdigit() and int(v.version) < number]
        return max(earlier, key=lambda v: int(v.version)) if earlier else None

    def evaluation_run_ids(self, source_run_id: str) -> tuple[str, ...]:
        """The runs other than the source run that logged metrics linked to the model."""
        return tuple(sorted({link.run_id for link in self.links} - {source_run_id}))


def version_record(
    source: Mapping[str, Any],
    facts: LineageFacts,
    *,
    parent: Mapping[str, Any] | None = None,
    evaluations: Sequence[Mapping[str, Any]] = (),
    declared: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The evidence record of a model version: its source run's record, with the metrics other
    runs linked to its logged model and the datasets they were computed on added, each naming
    the run that logged it (`run_id`), and the `lineage` and `declared` sections."""
    source = copy.deepcopy(source)
    run_id = source["run"]["id"]
    by_run = {record["run"]["id"]: record for record in evaluations}
    training_digests = {
        entry.get("digest") for entry in source["data"]["training"] if entry.get("digest")
    }
    metrics = list(source["metrics"])
    data = {role: list(entries) for role, entries in source["data"].items()}
    linked = _latest_links(facts.links, run_id)
    seen_datasets: set[tuple[str, str | None, str | None]] = set()
    for link in linked:
        training = link.dataset_digest is not None and link.dataset_digest in training_digests
        dataset = (
            None
            if link.dataset_name is None and link.dataset_digest is None
            else {"name": _text(link.dataset_name), "digest": link.dataset_digest}
        )
        metrics.append(
            {
                "key": bounded(link.key, 1024),
                "value": json_number(link.value),
                "step": None if link.step is None else json_number(link.step),
                "timestamp": iso_time(link.timestamp),
                # MLflow's link says which data the metric was computed on: held-out data
                # unless it is the training set itself.
                "context": ("training" if training else "evaluation") if dataset else None,
                "context_from": "dataset" if dataset else None,
                "dataset": dataset,
                "run_id": link.run_id,
            }
        )
        key = (link.run_id, link.dataset_name, link.dataset_digest)
        if dataset is None or training or key in seen_datasets:
            continue
        seen_datasets.add(key)
        data["evaluation"].append(
            _evaluation_dataset(by_run.get(link.run_id), link.run_id, dataset)
        )
    # The source run's own entries (without `run_id`) before those of other runs.
    metrics.sort(key=lambda m: (m["key"], m.get("run_id") or ""))
    for entries in data.values():
        entries.sort(
            key=lambda d: (
                d["name"] or "",
                d["digest"] or "",
                d["context"] or "",
                d.get("run_id") or "",
            )
        )
    record = {**source, "metrics": metrics, "data": data}
    record["lineage"] = _lineage_section(source, facts, parent, evaluations, linked)
    record["declared"] = copy.deepcopy(dict(declared)) if declared is not None else {"card": None}
    return sealed(record)[0]


def _latest_links(links: Sequence[MetricLink], source_run_id: str) -> list[MetricLink]:
    """The latest value of each metric each other run linked to the model, per dataset
    (`mlflow.models.evaluate` logs each metric twice at the same step)."""
    latest: dict[tuple[str, str, str | None, str | None], MetricLink] = {}
    for link in links:
        if link.run_id == source_run_id:
            continue  # the source run's own record already holds them
        key = (link.run_id, link.key, link.dataset_name, link.dataset_digest)
        held = latest.get(key)
        if held is None or _order(link) > _order(held):
            latest[key] = link
    return sorted(
        latest.values(),
        key=lambda m: (m.key, m.run_id, m.dataset_name or "", m.dataset_digest or ""),
    )


def _order(link: MetricLink) -> tuple[int, int, float]:
    return (link.step or 0, link.timestamp or 0, link.value)


def _evaluation_dataset(
    record: Mapping[str, Any] | None, run_id: str, dataset: Mapping[str, Any]
) -> dict[str, Any]:
    """The evaluating run's input that a linked metric names, else what the link alone says."""
    if record is not None:
        for entries in record["data"].values():
            for entry in entries:
                if (entry.get("name"), entry.get("digest")) == (
                    dataset["name"],
                    dataset["digest"],
                ):
                    return {**entry, "role_from": "metric", "run_id": run_id}
    return {
        "name": dataset["name"],
        "digest": dataset["digest"],
        "context": None,
        "source_type": None,
        "source_uri": None,
        "source": None,
        "schema": None,
        "profile": None,
        "rows": None,
        "columns": None,
        "role_from": "metric",
        "run_id": run_id,
    }


def _lineage_section(
    source: Mapping[str, Any],
    facts: LineageFacts,
    parent: Mapping[str, Any] | None,
    evaluations: Sequence[Mapping[str, Any]],
    linked: Sequence[MetricLink],
) -> dict[str, Any]:
    this = facts.this
    previous = facts.previous
    keys_by_run: dict[str, list[str]] = {}
    datasets_by_run: dict[str, list[dict[str, Any]]] = {}
    for link in linked:
        keys = keys_by_run.setdefault(link.run_id, [])
        if link.key not in keys:
            keys.append(link.key)
        if link.dataset_name is not None or link.dataset_digest is not None:
            dataset = {"name": _text(link.dataset_name), "digest": link.dataset_digest}
            if dataset not in datasets_by_run.setdefault(link.run_id, []):
                datasets_by_run[link.run_id].append(dataset)
    records = {record["run"]["id"]: record for record in evaluations}
    return {
        "model": {
            "name": bounded(facts.name, 1024),
            "description": _text(facts.model_description),
            "tags": {bounded(k, 1024): bounded(v) for k, v in sorted(facts.model_tags.items())},
        },
        "version": _version_entry(this),
        "previous_version": previous.version if previous else None,
        "versions": [_version_entry(v) for v in facts.versions],
        "source_run": _run_reference(source),
        "sweep": None
        if parent is None
        else {
            **_run_reference(parent),
            "search_space": dict(parent["hyperparameters"]),
            "trials": facts.trials,
        },
        "evaluations": [
            {
                **(
                    _run_reference(records[run_id])
                    if run_id in records
                    else {
                        "id": run_id,
                        "name": None,
                        "experiment_id": None,
                        "experiment_name": None,
                    }
                ),
                "metrics": sorted(keys),
                "datasets": datasets_by_run.get(run_id, []),
            }
            for run_id, keys in sorted(keys_by_run.items())
        ],
    }


def _run_reference(record: Mapping[str, Any]) -> dict[str, Any]:
    run = record["run"]
    return {
        "id": run["id"],
        "name": run.get("name"),
        "experiment_id": run.get("experiment_id"),
        "experiment_name": run.get("experiment_name"),
    }


def _version_entry(version: RegistryVersion) -> dict[str, Any]:
    return {
        "version": version.version,
        "aliases": sorted(bounded(a, 256) for a in version.aliases),
        "run_id": version.run_id,
        "model_id": version.model_id,
        "source": _text(version.source),
        "status": _text(version.status),
        "stage": _text(version.stage),
        "description": _text(version.description),
        "created": iso_time(version.created),
        "updated": iso_time(version.updated),
        "registered_by": _text(version.registered_by),
        "tags": {bounded(k, 1024): bounded(v) for k, v in sorted(version.tags.items())},
    }


def _text(value: object) -> str | None:
    return None if value is None else bounded(value)
