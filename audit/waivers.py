"""Waivers: known gaps accepted on the record, with who approved them, why, and until when.

A waivers file (YAML or TOML, schemas/waivers.schema.json) lists waivers; each names a rule id
and a scope: a run id, an experiment (name or id), a registered model version (NAME/VERSION or
NAME@ALIAS) or everything. A finding a waiver matches is *waived*: it is still reported, marked
as waived, and it no longer fails the gate. A waiver past its `expires` date stops applying and
is reported; so is a waiver that matched nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from audit.datafiles import check_against, read_data_file
from audit.errors import AuditError

ScopeKind = Literal["run", "experiment", "model", "all"]
WaiverState = Literal["applied", "unused", "expired"]
_MAX_WAIVERS_BYTES = 1 << 20


class WaiverError(AuditError):
    """The waivers file cannot be used: the audit stops (exit 2) rather than guess."""


@dataclass(frozen=True)
class Waiver:
    rule_id: str
    scope: ScopeKind
    target: str | None  # the run id, experiment, or model version; None for "all"
    reason: str
    approved_by: str
    expires: dt.date
    origin: str  # where it is written, e.g. "waivers.yaml: waivers[2]"

    @property
    def scope_text(self) -> str:
        return "everything" if self.scope == "all" else f"{self.scope} {self.target}"

    def expired(self, today: dt.date) -> bool:
        return today > self.expires

    def covers(self, run: RunScope) -> bool:
        if self.scope == "all":
            return True
        if self.scope == "run":
            return run.run_id == self.target
        if self.scope == "experiment":
            return self.target in (run.experiment_id, run.experiment_name)
        return self.target in run.model_versions

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "scope": self.scope,
            "target": self.target,
            "reason": self.reason,
            "approved_by": self.approved_by,
            "expires": self.expires.isoformat(),
            "origin": self.origin,
        }


@dataclass(frozen=True)
class RunScope:
    """What a waiver scope is matched against: a run, its experiment, its registered versions
    (``NAME/VERSION`` and ``NAME@ALIAS``)."""

    run_id: str
    experiment_id: str
    experiment_name: str | None
    model_versions: frozenset[str]

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> RunScope:
        run = record["run"]
        versions: set[str] = set()
        for model in record.get("models", []):
            for version in model.get("registered_versions", []):
                versions.add(f"{version['name']}/{version['version']}")
                versions.update(f"{version['name']}@{alias}" for alias in version["aliases"])
        return cls(run["id"], run["experiment_id"], run["experiment_name"], frozenset(versions))


@dataclass(frozen=True)
class WaiverUse:
    """How one waiver fared in an audit."""

    waiver: Waiver
    state: WaiverState
    findings: int  # findings it waived (applied) or would have waived (expired)

    @property
    def message(self) -> str:
        where = f"{self.waiver.origin} ({self.waiver.rule_id}, {self.waiver.scope_text})"
        if self.state == "expired":
            return (
                f"{where} expired on {self.waiver.expires.isoformat()}; it no longer applies "
                f"to {self.findings} finding{'s' if self.findings != 1 else ''}"
            )
        if self.state == "unused":
            return f"{where} matched no finding; remove it or fix its rule id or scope"
        return f"{where} waived {self.findings} finding{'s' if self.findings != 1 else ''}"

    def to_dict(self) -> dict[str, Any]:
        return {**self.waiver.to_dict(), "state": self.state, "findings": self.findings}


@dataclass
class WaiverSet:
    """The waivers of an audit, and the findings each one matched so far."""

    waivers: tuple[Waiver, ...]
    origin: str
    today: dt.date = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).date())
    _matched: dict[int, int] = field(default_factory=dict, repr=False)

    def lookup(self, rule_id: str, run: RunScope) -> tuple[Waiver | None, tuple[int, ...]]:
        """The first active waiver of the rule covering the run, and the indexes of every
        waiver (expired ones too) that matched, for `count`. Not counted here: worker processes
        evaluate with their own copy of the set, so matches are counted where results are
        gathered."""
        chosen = None
        matched = []
        for index, waiver in enumerate(self.waivers):
            if waiver.rule_id != rule_id or not waiver.covers(run):
                continue
            matched.append(index)
            if chosen is None and not waiver.expired(self.today):
                chosen = waiver
        return chosen, tuple(matched)

    def count(self, matched: Iterable[int]) -> None:
        """Count matches `lookup` returned: `uses` reports them (and waivers that matched none)."""
        for index in matched:
            self._matched[index] = self._matched.get(index, 0) + 1

    def uses(self) -> tuple[WaiverUse, ...]:
        uses = []
        for index, waiver in enumerate(self.waivers):
            count = self._matched.get(index, 0)
            if waiver.expired(self.today):
                state: WaiverState = "expired"
            else:
                state = "applied" if count else "unused"
            uses.append(WaiverUse(waiver, state, count))
        return tuple(uses)


def load_waivers(path: str | Path, *, today: dt.date | None = None) -> WaiverSet:
    """Read and check a waivers file; WaiverError (exit 2) names the waiver and the field."""
    source = Path(path)
    label = f"waivers file {source}"
    document = read_data_file(source, label, limit=_MAX_WAIVERS_BYTES, error=WaiverError)
    check_against("waivers.schema.json", document, label, error=WaiverError)
    waivers = tuple(
        _waiver(entry, f"{source.name}: waivers[{index}]")
        for index, entry in enumerate(document["waivers"])
    )
    if today is None:
        return WaiverSet(waivers=waivers, origin=str(source))
    return WaiverSet(waivers=waivers, origin=str(source), today=today)


def _waiver(entry: Mapping[str, Any], origin: str) -> Waiver:
    scope = entry["scope"]
    if scope == "all":
        kind: ScopeKind = "all"
        target = None
    else:
        ((name, target),) = scope.items()
        kind = name
    expires = entry["expires"]
    if not isinstance(expires, dt.date):
        try:
            expires = dt.date.fromisoformat(str(expires))
        except ValueError:
            raise WaiverError(f"{origin}: expires {expires!r} is not a date (YYYY-MM-DD)") from None
    return Waiver(
        rule_id=entry["rule"],
        scope=kind,
        target=None if target is None else str(target),
        reason=entry["reason"].strip(),
        approved_by=entry["approved_by"].strip(),
        expires=expires,
        origin=origin,
    )
