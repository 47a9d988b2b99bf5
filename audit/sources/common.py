"""What every source does the same way once it has read MLflow's rows: index the model registry,
and pick the metrics whose histories a report charts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from audit.evidence import RegisteredVersionFacts
from audit.sources import MAX_CHARTED_METRICS

__all__ = ["RegistryIndex", "charted_metric_keys"]


class RegistryIndex:
    """Registered model versions by source run and by logged model id.

    `versions` are MLflow `ModelVersion`s or anything with the same attributes (name, version,
    source, run_id, current_stage, status, description, creation_timestamp, tags and, optionally,
    model_id)."""

    def __init__(self, versions: Iterable[Any], aliases: dict[tuple[str, str], list[str]]) -> None:
        self._by_run: dict[str, list[RegisteredVersionFacts]] = {}
        self._by_model: dict[str, list[RegisteredVersionFacts]] = {}
        for version in versions:
            source = version.source or ""
            model_id = getattr(version, "model_id", None) or (
                source[len("models:/") :].strip("/") if source.startswith("models:/m-") else None
            )
            facts = RegisteredVersionFacts(
                name=version.name,
                version=str(version.version),
                aliases=tuple(aliases.get((version.name, str(version.version)), ())),
                stage=version.current_stage,
                status=version.status,
                description=version.description,
                creation_time=version.creation_timestamp,
                source=version.source,
                run_id=version.run_id,
                model_id=model_id,
                tags=dict(version.tags or {}),
            )
            if version.run_id:
                self._by_run.setdefault(version.run_id, []).append(facts)
            if model_id:
                self._by_model.setdefault(model_id, []).append(facts)

    def for_run(self, run_id: str, model_ids: Iterable[str]) -> list[RegisteredVersionFacts]:
        found = {(v.name, v.version): v for v in self._by_run.get(run_id, [])}
        for model_id in model_ids:
            for version in self._by_model.get(model_id, []):
                found.setdefault((version.name, version.version), version)
        return list(found.values())


def charted_metric_keys(record: Mapping[str, Any]) -> list[str]:
    """The run's metrics logged at more than one step, whose histories a report draws."""
    return sorted(
        {
            metric["key"]
            for metric in record["metrics"]
            if isinstance(metric["step"], int) and metric["step"] > 0
        }
    )[:MAX_CHARTED_METRICS]
