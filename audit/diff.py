"""What changed between two evidence records: two runs, or two versions of a registered model
(Annex IV 6: the changes made to the system through its lifecycle).

`diff_records(old, new)` is a pure function of the two records and, when both are given, of
their audit results. It says, section by section, what was added, removed or changed: the
hyperparameters, the datasets of each role, the metrics, the environment, the code, the model's
flavors and signature, and the outcome of each policy rule. A metric's delta is given only
when both values were computed on the same data; otherwise the two values are listed as not
comparable, since a score on other data says nothing about the change.

Everything in a record is untrusted text: values are bounded here, and each rendering
(`audit.formats.diff`) escapes them for its medium.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from typing import TYPE_CHECKING, Any, Literal

from audit.evidence import bounded

if TYPE_CHECKING:
    from audit.policy import Outcome
    from audit.result import RunResult

#: The version of the JSON form (`schemas/diff.schema.json`).
SCHEMA_VERSION = "1.0"
#: The sections of a diff, in the order every rendering lists them.
SECTIONS = ("params", "datasets", "metrics", "environment", "code", "model", "policy")
#: Characters kept of any one value from a record (the rest is counted, not kept).
VALUE_LIMIT = 1024

ChangeKind = Literal["added", "removed", "changed"]
MetricKind = Literal["added", "removed", "changed", "not_comparable"]
DATASET_ROLES = ("training", "evaluation", "other")

#: The code facts compared, as the record names them and as a diff labels them.
_CODE_FIELDS = (
    ("git_commit", "commit"),
    ("git_branch", "branch"),
    ("git_repo_url", "repository"),
    ("git_dirty", "uncommitted changes"),
    ("entry_point", "entry point"),
    ("name", "source"),
    ("type", "source type"),
)
_ENVIRONMENT_FIELDS = (
    ("python_version", "python"),
    ("mlflow_version", "mlflow"),
    ("platform", "platform"),
)


# --------------------------------------------------------------------------- the diff


@dataclass(frozen=True)
class Change:
    """One item that differs: only in the new record (added), only in the old (removed), or in
    both with another value (changed). `old` and `new` are the values as text, None where the
    item is absent or MLflow recorded nothing."""

    kind: ChangeKind
    name: str
    old: str | None = None
    new: str | None = None


@dataclass(frozen=True)
class DatasetSide:
    digest: str | None
    source: str | None
    #: The run that logged it, in a version's record (which merges several runs).
    run_id: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class DatasetChange:
    """A dataset of one role, by name: added, removed, or with another digest or source."""

    kind: ChangeKind
    role: str
    name: str | None
    old: DatasetSide | None
    new: DatasetSide | None


@dataclass(frozen=True)
class MetricDataset:
    name: str | None
    digest: str | None


@dataclass(frozen=True)
class MetricSide:
    #: As the record holds it: a number, or "NaN", "Infinity", "-Infinity", or a long integer
    #: as a string.
    value: float | int | str
    context: str | None
    #: The dataset MLflow linked the metric to; None without a link.
    dataset: MetricDataset | None
    #: The run that logged it, in a version's record.
    run_id: str | None


@dataclass(frozen=True)
class MetricChange:
    """The latest value of a metric on each side. `changed` is on the same data, with `delta`
    (new - old) and `relative` (percent of old) when both are finite numbers; `not_comparable`
    is on different data (`reason`), with both values and no delta."""

    kind: MetricKind
    key: str
    old: MetricSide | None
    new: MetricSide | None
    delta: float | None = None
    relative: float | None = None
    reason: str | None = None


@dataclass(frozen=True)
class RuleChange:
    rule_id: str
    old: Outcome
    new: Outcome


@dataclass(frozen=True)
class PolicyDiff:
    """How the audit's verdict moved. Scores are the percentage of the run's applicable rules
    that pass or are waived, as `AuditResult.score` counts them; None when the policy's rules
    were not given, without which the passing rules cannot be counted (a result names only the
    rules that fail, are waived, unknown or not applicable)."""

    old_status: str
    new_status: str
    old_score: float | None
    new_score: float | None
    rules: tuple[RuleChange, ...]


@dataclass(frozen=True)
class RunRef:
    id: str
    name: str | None


@dataclass(frozen=True)
class VersionRef:
    name: str
    version: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Subject:
    """What one side is: a run, and the registered versions of its model. For a version's
    record, also its lineage: the sweep its source run was a trial of and the runs that
    evaluated it."""

    run_id: str
    run_name: str | None
    experiment_id: str | None
    experiment_name: str | None
    registered_versions: tuple[VersionRef, ...] = ()
    model_version: VersionRef | None = None
    sweep: RunRef | None = None
    evaluations: tuple[RunRef, ...] = ()


@dataclass(frozen=True)
class RecordDiff:
    old: Subject
    new: Subject
    params: tuple[Change, ...]
    datasets: tuple[DatasetChange, ...]
    metrics: tuple[MetricChange, ...]
    environment: tuple[Change, ...]
    code: tuple[Change, ...]
    model: tuple[Change, ...]
    #: None when the two audit results were not given.
    policy: PolicyDiff | None = None

    def section(self, name: str) -> tuple[Any, ...]:
        """The changes of one section (`SECTIONS`); for "policy", its rule changes."""
        if name == "policy":
            return self.policy.rules if self.policy else ()
        return tuple(getattr(self, name))

    @property
    def changed(self) -> bool:
        """Whether anything differs (a change of status or score counts)."""
        if any(self.section(name) for name in SECTIONS):
            return True
        policy = self.policy
        return policy is not None and (
            policy.old_status != policy.new_status or policy.old_score != policy.new_score
        )

    def to_dict(self) -> dict[str, Any]:
        """The diff as published in schemas/diff.schema.json."""
        plain = _plain(self)
        return {"schema_version": SCHEMA_VERSION, "changed": self.changed, **plain}


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return value


# --------------------------------------------------------------------------- building it


def diff_records(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    *,
    old_result: RunResult | None = None,
    new_result: RunResult | None = None,
    rule_ids: Sequence[str] = (),
) -> RecordDiff:
    """Everything that differs from `old` to `new` (evidence records,
    schemas/evidence-record.schema.json, or a version's record with its `lineage`). With both
    audit results (of the same policy), also each rule whose outcome differs, in the order of
    `rule_ids` (the policy's rules, `AuditResult.rules`), which also gives each side's score."""
    if (old_result is None) != (new_result is None):
        raise ValueError("diff_records compares policy outcomes only with both audit results")
    return RecordDiff(
        old=_subject(old),
        new=_subject(new),
        params=tuple(_param_changes(old, new)),
        datasets=tuple(_dataset_changes(old, new)),
        metrics=tuple(_metric_changes(old, new)),
        environment=tuple(_environment_changes(old, new)),
        code=tuple(_code_changes(old, new)),
        model=tuple(_model_changes(old, new)),
        policy=None
        if old_result is None or new_result is None
        else _policy_diff(old_result, new_result, tuple(rule_ids)),
    )


def keyed_differences(
    old: Mapping[str, Any], new: Mapping[str, Any]
) -> Iterator[tuple[ChangeKind, str, Any, Any]]:
    """(kind, key, old value, new value) for each key whose value differs, in key order."""
    for key in sorted(set(old) | set(new), key=str):
        if key not in new:
            yield "removed", key, old[key], None
        elif key not in old:
            yield "added", key, None, new[key]
        elif old[key] != new[key]:
            yield "changed", key, old[key], new[key]


def _text(value: Any) -> str | None:
    """A record's value as bounded text: strings as they are, anything else as JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        return bounded(value, VALUE_LIMIT)
    return bounded(json.dumps(value, ensure_ascii=False, sort_keys=True), VALUE_LIMIT)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _field_changes(
    old: Mapping[str, Any], new: Mapping[str, Any], labels: Iterable[tuple[str, str]]
) -> Iterator[Change]:
    """Fields that MLflow may leave unrecorded (None): recorded only now is added, no longer
    recorded is removed."""
    for key, label in labels:
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        kind: ChangeKind = "added" if before is None else "removed" if after is None else "changed"
        yield Change(kind, label, _text(before), _text(after))


def _changes(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> Iterator[Change]:
    for kind, key, before, after in keyed_differences(old, new):
        yield Change(kind, bounded(f"{prefix}{key}", VALUE_LIMIT), _text(before), _text(after))


# --------------------------------------------------------------------------- subject


def _subject(record: Mapping[str, Any]) -> Subject:
    run = _mapping(record.get("run"))
    versions = tuple(
        _version_ref(version.get("name"), version.get("version"), version.get("aliases"))
        for model in _list(record.get("models"))
        for version in _list(_mapping(model).get("registered_versions"))
        if isinstance(version, Mapping)
    )
    lineage = _mapping(record.get("lineage"))
    this = _mapping(lineage.get("version"))
    model_version = (
        _version_ref(
            _mapping(lineage.get("model")).get("name"), this.get("version"), this.get("aliases")
        )
        if this
        else None
    )
    return Subject(
        run_id=_text(run.get("id")) or "",
        run_name=_text(run.get("name")),
        experiment_id=_text(run.get("experiment_id")),
        experiment_name=_text(run.get("experiment_name")),
        registered_versions=versions,
        model_version=model_version,
        sweep=_run_ref(lineage.get("sweep")),
        evaluations=tuple(
            ref for ref in map(_run_ref, _list(lineage.get("evaluations"))) if ref is not None
        ),
    )


def _version_ref(name: Any, version: Any, aliases: Any) -> VersionRef:
    return VersionRef(
        name=_text(name) or "",
        version=_text(version) or "",
        aliases=tuple(_text(alias) or "" for alias in _list(aliases)),
    )


def _run_ref(value: Any) -> RunRef | None:
    if not isinstance(value, Mapping) or not value.get("id"):
        return None
    return RunRef(id=_text(value["id"]) or "", name=_text(value.get("name")))


# --------------------------------------------------------------------------- params, code


def _param_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> Iterator[Change]:
    return _changes(_mapping(old.get("hyperparameters")), _mapping(new.get("hyperparameters")))


def _code_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> Iterator[Change]:
    return _field_changes(_mapping(old.get("source")), _mapping(new.get("source")), _CODE_FIELDS)


# --------------------------------------------------------------------------- datasets


def _dataset_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> Iterator[DatasetChange]:
    for role in DATASET_ROLES:
        before = _datasets_by_name(_mapping(old.get("data")).get(role))
        after = _datasets_by_name(_mapping(new.get("data")).get(role))
        for name in sorted(set(before) | set(after), key=lambda n: (n is None, n or "")):
            was, now = before.get(name, []), after.get(name, [])
            gone = [side for side in was if side not in now]
            came = [side for side in now if side not in was]
            if len(gone) == 1 and len(came) == 1:
                yield DatasetChange("changed", role, name, gone[0], came[0])
                continue
            yield from (DatasetChange("removed", role, name, side, None) for side in gone)
            yield from (DatasetChange("added", role, name, None, side) for side in came)


def _datasets_by_name(entries: Any) -> dict[str | None, list[DatasetSide]]:
    by_name: dict[str | None, list[DatasetSide]] = {}
    for entry in _list(entries):
        if not isinstance(entry, Mapping):
            continue
        source = entry.get("source_uri")
        side = DatasetSide(
            digest=_text(entry.get("digest")),
            source=_text(source if source is not None else entry.get("source")),
            run_id=_text(entry.get("run_id")),
        )
        sides = by_name.setdefault(_text(entry.get("name")), [])
        if side not in sides:
            sides.append(side)
    return by_name


# --------------------------------------------------------------------------- metrics


def _metric_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> Iterator[MetricChange]:
    """Per key, each old value paired with a new one computed on the same data (a delta), then
    the rest paired in order (not comparable), then what is left (added or removed)."""
    before, after = _metrics_by_key(old), _metrics_by_key(new)
    for key in sorted(set(before) | set(after)):
        was, now = list(before.get(key, ())), list(after.get(key, ()))
        for old_side, old_basis in list(was):
            match = next((pair for pair in now if pair[1] == old_basis), None)
            if old_basis is None or match is None:
                continue
            was.remove((old_side, old_basis))
            now.remove(match)
            if old_side.value != match[0].value:
                yield _compared(key, old_side, match[0])
        for (old_side, old_basis), (new_side, new_basis) in zip(was, now, strict=False):
            if (old_side.value, old_side.dataset, old_side.context) == (
                new_side.value,
                new_side.dataset,
                new_side.context,
            ) and old_basis == new_basis:
                continue  # the same undigested dataset and value: nothing changed
            reason = "no dataset digest" if None in (old_basis, new_basis) else "different datasets"
            yield MetricChange("not_comparable", key, old_side, new_side, reason=reason)
        paired = min(len(was), len(now))
        yield from (MetricChange("removed", key, side, None) for side, _ in was[paired:])
        yield from (MetricChange("added", key, None, side) for side, _ in now[paired:])


# What a metric was computed on, as far as the record shows: the dataset MLflow linked it to
# (None when that has no digest: no two such can be told apart), else its context and the
# datasets of that role the run logged (all of them when the context is not known).
_Basis = tuple[Any, ...] | None


def _metrics_by_key(record: Mapping[str, Any]) -> dict[str, list[tuple[MetricSide, _Basis]]]:
    data = _mapping(record.get("data"))
    by_key: dict[str, list[tuple[MetricSide, _Basis]]] = {}
    for entry in _list(record.get("metrics")):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("key"), str):
            continue
        linked = entry.get("dataset")
        dataset = (
            MetricDataset(_text(linked.get("name")), _text(linked.get("digest")))
            if isinstance(linked, Mapping)
            else None
        )
        value = entry.get("value")
        side = MetricSide(
            value=value
            if isinstance(value, int | float) and not isinstance(value, bool)
            else _text(value) or "",
            context=_text(entry.get("context")),
            dataset=dataset,
            run_id=_text(entry.get("run_id")),
        )
        if dataset is not None:
            basis: _Basis = ("dataset", dataset.digest) if dataset.digest else None
        else:
            basis = ("context", side.context, _data_of(data, side.context, side.run_id))
        by_key.setdefault(bounded(entry["key"], VALUE_LIMIT), []).append((side, basis))
    return by_key


def _data_of(data: Mapping[str, Any], context: str | None, run_id: str | None) -> frozenset[Any]:
    """The datasets an unlinked metric may have been computed on: those of its role (all roles
    when it has none) that its run logged."""
    roles = (context,) if context in ("training", "evaluation") else DATASET_ROLES
    return frozenset(
        (entry.get("name"), entry.get("digest"))
        for role in roles
        for entry in _list(data.get(role))
        if isinstance(entry, Mapping) and (run_id is None or entry.get("run_id") in (None, run_id))
    )


def _compared(key: str, old: MetricSide, new: MetricSide) -> MetricChange:
    before, after = _number(old.value), _number(new.value)
    delta = relative = None
    if before is not None and after is not None and math.isfinite(after - before):
        delta = after - before
        relative = 100.0 * delta / abs(before) if before else None
    return MetricChange("changed", key, old, new, delta=delta, relative=relative)


def _number(value: float | int | str) -> float | None:
    """A finite float, or None ("NaN", infinities, an integer too large for a float)."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


# --------------------------------------------------------------------------- environment


def _environment_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> Iterator[Change]:
    before, after = _mapping(old.get("environment")), _mapping(new.get("environment"))
    yield from _field_changes(before, after, _ENVIRONMENT_FIELDS)
    was, now = before.get("requirements"), after.get("requirements")
    if isinstance(was, list) and isinstance(now, list):
        yield from _changes(_packages(was), _packages(now), prefix="package ")
    elif isinstance(was, list) or isinstance(now, list):
        # Unknown on one side: every package "added" would claim more than the record shows.
        yield Change(
            "added" if isinstance(now, list) else "removed",
            "requirements",
            _requirements_text(before) if isinstance(was, list) else None,
            _requirements_text(after) if isinstance(now, list) else None,
        )


def _packages(requirements: list[Any]) -> dict[str, str]:
    """Requirement lines by package name (`audit.evidence.parse_requirements`' entries); a line
    that is not a valid requirement stands for itself."""
    lines: dict[str, list[str]] = {}
    for entry in requirements:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("line"), str):
            continue
        name = entry.get("name")
        line = bounded(entry["line"], VALUE_LIMIT)
        lines.setdefault(name if isinstance(name, str) else line, []).append(line)
    return {name: "; ".join(sorted(each)) for name, each in lines.items()}


def _requirements_text(environment: Mapping[str, Any]) -> str:
    count = len(_list(environment.get("requirements")))
    found = environment.get("requirements_from")
    return f"{count} requirements" + (f" from {found}" if isinstance(found, str) else "")


# --------------------------------------------------------------------------- model


def _model_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> Iterator[Change]:
    before, after = _models_by_name(old), _models_by_name(new)
    several = len(before) > 1 or len(after) > 1
    for name in sorted(set(before) | set(after)):
        prefix = f"{name}: " if several else ""
        if name not in after:
            yield Change("removed", f"model {name}", _text(before[name].get("uri")), None)
        elif name not in before:
            yield Change("added", f"model {name}", None, _text(after[name].get("uri")))
        else:
            yield from _one_model_changes(before[name], after[name], prefix)


def _models_by_name(record: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    models: dict[str, Mapping[str, Any]] = {}
    for model in _list(record.get("models")):
        if isinstance(model, Mapping):
            models.setdefault(_text(model.get("name")) or "(unnamed)", model)
    return models


def _one_model_changes(
    old: Mapping[str, Any], new: Mapping[str, Any], prefix: str
) -> Iterator[Change]:
    flavors = (
        {str(f): "" for f in _list(old.get("flavors"))},
        {str(f): "" for f in _list(new.get("flavors"))},
    )
    for kind, flavor, _, _ in keyed_differences(*flavors):
        yield Change(kind, bounded(f"{prefix}flavor {flavor}", VALUE_LIMIT))
    was, now = old.get("signature"), new.get("signature")
    if not isinstance(was, Mapping) or not isinstance(now, Mapping):
        if was != now:
            yield Change(
                "added" if was is None else "removed" if now is None else "changed",
                f"{prefix}signature",
                None if was is None else "recorded",
                None if now is None else "recorded",
            )
        return
    for part, label in (("inputs", "input"), ("outputs", "output"), ("params", "param")):
        yield from _changes(_columns(was.get(part)), _columns(now.get(part)), f"{prefix}{label} ")


def _columns(spec: Any) -> dict[str, str]:
    """A signature's columns (or tensors, or params) by name (#index when unnamed): type."""
    if spec is None:
        return {}
    if not isinstance(spec, list):
        return {"(whole)": _text(spec) or ""}
    columns = {}
    for index, column in enumerate(spec):
        name = column.get("name") if isinstance(column, Mapping) else None
        columns[str(name) if name is not None else f"#{index}"] = _column_type(column)
    return columns


def _column_type(column: Any) -> str:
    if not isinstance(column, Mapping):
        return _text(column) or ""
    extras = "".join(
        f" {key}={json.dumps(column[key], ensure_ascii=False, sort_keys=True)}"
        for key in sorted(column, key=str)
        if key not in ("name", "type", "required")
    )
    optional = " (optional)" if column.get("required") is False else ""
    return bounded(f"{column.get('type')}{extras}{optional}", VALUE_LIMIT)


# --------------------------------------------------------------------------- policy


def _policy_diff(old: RunResult, new: RunResult, rule_ids: tuple[str, ...]) -> PolicyDiff:
    named = _named(old) | _named(new)
    order = {rule_id: index for index, rule_id in enumerate(rule_ids)}
    every = sorted(named | set(rule_ids), key=lambda r: (order.get(r, len(order)), r))
    return PolicyDiff(
        old_status=old.status,
        new_status=new.status,
        old_score=_score(old, every) if rule_ids else None,
        new_score=_score(new, every) if rule_ids else None,
        rules=tuple(
            RuleChange(rule_id, old.outcome_of(rule_id), new.outcome_of(rule_id))
            for rule_id in every
            if old.outcome_of(rule_id) != new.outcome_of(rule_id)
        ),
    )


def _named(run: RunResult) -> set[str]:
    """The rules a run's result names; a rule of the policy it does not name passes."""
    return {*(f.rule_id for f in run.findings), *run.not_applicable, *run.unknown}


def _score(run: RunResult, rule_ids: Iterable[str]) -> float:
    """The percentage of the run's applicable rules that pass or are waived (unknown ones do
    not), as `AuditResult.score` counts them."""
    outcomes = [run.outcome_of(rule_id) for rule_id in rule_ids]
    applicable = [o for o in outcomes if o != "not_applicable"]
    passing = sum(o in ("pass", "waived") for o in applicable)
    return round(100.0 * passing / len(applicable), 1) if applicable else 100.0
