"""The provisions catalog: the legal and standards texts a finding can cite. Data, not code:
`schemas/provisions/*.json`, one file per framework, validated against
`schemas/provisions.schema.json`."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from audit.resources import schema_path


@dataclass(frozen=True)
class Framework:
    id: str
    title: str
    text_version: str
    link: str
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Provision:
    id: str
    framework: str
    citation: str
    title: str
    summary: str
    link: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Group:
    """A heading provisions are grouped under in reports: an article, an annex point."""

    id: str
    heading: str


@dataclass(frozen=True)
class Catalog:
    frameworks: dict[str, Framework]
    provisions: dict[str, Provision]
    groups: dict[str, Group]

    def __contains__(self, provision_id: object) -> bool:
        return provision_id in self.provisions

    def __getitem__(self, provision_id: str) -> Provision:
        return self.provisions[provision_id]

    @functools.cached_property
    def _position(self) -> dict[str, int]:
        return {provision_id: index for index, provision_id in enumerate(self.provisions)}

    def sort(self, ids: Iterable[str]) -> tuple[str, ...]:
        """Provision ids in catalog order; unknown ids last."""
        return tuple(sorted(ids, key=lambda p: self._position.get(p, len(self._position))))

    def ordered(self, ids: set[str] | frozenset[str] | None = None) -> list[Provision]:
        """Provisions in catalog order (framework files, then the text's own order)."""
        return [p for p in self.provisions.values() if ids is None or p.id in ids]

    def frameworks_of(self, ids: Iterable[str]) -> list[Framework]:
        """The frameworks the provisions belong to, in catalog order, each naming the version
        of its text the catalog follows."""
        used = {self.provisions[p].framework for p in ids if p in self.provisions}
        return [framework for key, framework in self.frameworks.items() if key in used]

    def group_of(self, provision_id: str) -> Group:
        """The group with the longest id that prefixes the provision's id at a separator
        (``eu-ai-act/art-10`` for ``eu-ai-act/art-10/2/b``, ``iso-iec-42001/a.7`` for
        ``iso-iec-42001/a.7.5``); else its framework."""
        matches = [
            group
            for group in self.groups.values()
            if provision_id == group.id
            or (provision_id.startswith(group.id) and provision_id[len(group.id)] in "/.-")
        ]
        if matches:
            return max(matches, key=lambda group: len(group.id))
        framework_id = provision_id.split("/")[0]
        framework = self.frameworks.get(framework_id)
        return Group(framework_id, framework.title if framework else framework_id)


@functools.cache
def load_catalog() -> Catalog:
    import jsonschema_rs

    validator = jsonschema_rs.validator_for(
        json.loads(schema_path("provisions.schema.json").read_text(encoding="utf-8"))
    )
    frameworks: dict[str, Framework] = {}
    provisions: dict[str, Provision] = {}
    groups: dict[str, Group] = {}
    for path in sorted(schema_path("provisions").glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        validator.validate(document)
        framework = Framework(
            id=document["framework"],
            title=document["title"],
            text_version=document["text_version"],
            link=document["link"],
            note=document.get("note"),
        )
        frameworks[framework.id] = framework
        for entry in document.get("groups", []):
            groups[entry["id"]] = Group(entry["id"], entry["heading"])
        for entry in document["provisions"]:
            if entry["id"] in provisions:
                raise ValueError(f"{path.name}: provision {entry['id']} is defined twice")
            provisions[entry["id"]] = Provision(framework=framework.id, **entry)
    return Catalog(frameworks, provisions, groups)
