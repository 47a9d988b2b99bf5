"""Policies: JSON Schema 2020-12 documents over the evidence record, with `x-audit` annotations.

A validation error is mapped to the nearest `x-audit` on its evaluation path (the path through
the schema, `$ref`s included), which names the rule, its severity, the provisions it serves and
the fix. Policies compose with plain `$ref` / `allOf`: a user policy refers to a built-in one as
``urn:mlflow-audit:policy:<name>`` or to a neighbouring file by relative path.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, NamedTuple
from urllib.parse import unquote, urlsplit

from audit.datafiles import read_data_file
from audit.errors import PolicyError
from audit.evidence import sha256_hex
from audit.provisions import load_catalog
from audit.resources import schema_path
from audit.sources import CollectionNeeds

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")
SEVERITY_RANK = {"error": 3, "warning": 2, "info": 1}
CATEGORIES = ("data", "hyperparameters", "metrics", "environment", "source", "model", "run")

DEFAULT_POLICY = "eu-ai-act-high-risk"
BUILTIN_PREFIX = "urn:mlflow-audit:policy:"
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
_MAX_POLICY_BYTES = 4 << 20
# Keywords whose values are data, not subschemas: never searched for annotations.
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples", "x-audit", "x-audit-policy"})
_MAX_LOCATION_DEPTH = 12
# Keywords whose subschemas apply to the items (or values) of the instance, not to itself.
_ITEM_KEYWORDS = frozenset(
    {
        "items",
        "prefixItems",
        "contains",
        "additionalProperties",
        "unevaluatedItems",
        "unevaluatedProperties",
        "propertyNames",
    }
)


@dataclass(frozen=True)
class Rule:
    id: str
    category: str
    severity: Severity
    provisions: tuple[str, ...]
    title: str
    remediation: str
    annotated: bool = True
    #: Where in an evidence record the rule looks, as JSON Pointers with ``*`` for every item
    #: or key (e.g. ``/data/training/*/digest``); reports show the evidence found there.
    locations: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "category": self.category,
            "severity": self.severity,
            "provisions": list(self.provisions),
            "title": self.title,
            "remediation": self.remediation,
        }


class Violation(NamedTuple):
    """One failing constraint of a record, mapped to its rule. (A named tuple: made for every
    gap of every run.)"""

    rule: Rule
    pointer: str
    keyword: str
    instance: Any
    message: str


@dataclass
class Policy:
    name: str
    version: str | None
    title: str | None
    description: str | None
    origin: str
    sha256: str
    document: Mapping[str, Any]
    rules: tuple[Rule, ...]
    needs: CollectionNeeds
    _validator: Any = field(repr=False)
    _registry: Any = field(repr=False)
    _base_uri: str = field(repr=False)
    _rule_cache: dict[tuple[Any, ...], Rule] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "title": self.title,
            "origin": self.origin,
            "sha256": self.sha256,
        }

    @functools.cached_property
    def rule_order(self) -> dict[str, int]:
        """Each rule's place in the policy document, the order its author gave."""
        return {rule.id: index for index, rule in enumerate(self.rules)}

    def violations(self, record: Mapping[str, Any]) -> Iterator[Violation]:
        """Every failing constraint of the record, each with its rule and JSON Pointer."""
        for error in self._validator.iter_errors(record):
            path = tuple(error.evaluation_path)
            instance_path = tuple(error.instance_path)
            pointer = _cached_pointer(instance_path)
            keyword = str(path[-1]) if path else ""
            if keyword == "required":
                kind = getattr(error, "kind", None)
                if kind is not None and hasattr(kind, "property"):
                    pointer = f"{pointer}/{_escape(str(kind.property))}"
            yield Violation(
                self.rule_at(path, instance_path), pointer, keyword, error.instance, error.message
            )

    def rule_at(self, evaluation_path: tuple[Any, ...], instance_path: Sequence[Any] = ()) -> Rule:
        """The rule of the nearest x-audit annotation on an evaluation path."""
        rule = self._rule_cache.get(evaluation_path)
        if rule is None:
            rule = self._nearest_annotation(evaluation_path) or _unannotated_rule(
                evaluation_path, instance_path
            )
            self._rule_cache[evaluation_path] = rule
        return rule

    def _nearest_annotation(self, evaluation_path: tuple[Any, ...]) -> Rule | None:
        node: Any = self.document
        resolver = self._registry.resolver(self._base_uri)
        found = _annotation_rule(node)
        try:
            for segment in evaluation_path:
                if segment in ("$ref", "$dynamicRef") and isinstance(node, Mapping):
                    resolved = resolver.lookup(node[segment])
                    node, resolver = resolved.contents, resolved.resolver
                else:
                    node = node[segment]
                found = _annotation_rule(node) or found
        except (KeyError, IndexError, TypeError, ValueError):
            return found
        return found


def _annotation_rule(node: Any) -> Rule | None:
    if not isinstance(node, Mapping) or not isinstance(node.get("x-audit"), Mapping):
        return None
    note = node["x-audit"]
    return Rule(
        id=note["id"],
        category=note["category"],
        severity=note["severity"],
        provisions=load_catalog().sort(note["provisions"]),
        title=note["title"],
        remediation=note["remediation"],
    )


_CATEGORY_OF_SECTION = {
    "data": "data",
    "hyperparameters": "hyperparameters",
    "metrics": "metrics",
    "system_metrics": "metrics",
    "environment": "environment",
    "source": "source",
    "models": "model",
    "run": "run",
    "tags": "run",
}


def _unannotated_rule(evaluation_path: tuple[Any, ...], instance_path: Sequence[Any]) -> Rule:
    """A failing constraint with no x-audit above it is still a finding, named by its path."""
    location = _pointer(evaluation_path)
    section = str(instance_path[0]) if instance_path else ""
    return Rule(
        id=f"schema:{location}",
        category=_CATEGORY_OF_SECTION.get(section, "run"),
        severity="error",
        provisions=(),
        title=f"Policy constraint at {location} holds",
        remediation="Record the evidence this constraint asks for, or give the constraint an "
        "x-audit annotation in the policy.",
        annotated=False,
    )


def _escape(segment: str) -> str:
    return segment.replace("~", "~0").replace("/", "~1")


def _pointer(path: Sequence[Any]) -> str:
    return "".join(f"/{_escape(str(segment))}" for segment in path)


# The places a policy fails at recur run after run ("/models", "/environment/requirements").
_cached_pointer = functools.lru_cache(maxsize=4096)(_pointer)


# --------------------------------------------------------------------------- loading


def builtin_policy_names() -> list[str]:
    return sorted(path.stem for path in schema_path("policies").glob("*.json"))


def _read_document(path: Path, label: str) -> dict[str, Any]:
    document = read_data_file(path, label, limit=_MAX_POLICY_BYTES, error=PolicyError)
    if not isinstance(document, dict):
        raise PolicyError(
            f"{label}: a policy is a JSON Schema object, got {type(document).__name__}"
        )
    try:
        json.dumps(document, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise PolicyError(f"{label}: not plain JSON data ({error})") from None
    return document


def _builtin_documents() -> dict[str, dict[str, Any]]:
    documents = {}
    for name in builtin_policy_names():
        path = schema_path("policies", f"{name}.json")
        documents[f"{BUILTIN_PREFIX}{name}"] = _read_document(path, f"built-in policy {name}")
    return documents


def _retrieve(uri: str) -> dict[str, Any]:
    """Fetch a schema a policy refers to: local files only. Policies are never fetched from the
    network: an audit must give the same answer offline."""
    parts = urlsplit(uri)
    if parts.scheme != "file":
        raise PolicyError(
            f"policy refers to {uri}, which is not a local file or a built-in policy; download it "
            "and refer to the local copy"
        )
    path = Path(unquote(parts.path))
    if not path.is_file():
        raise PolicyError(f"policy refers to {path}, which does not exist")
    return _read_document(path, str(path))


def load_policy(spec: str | Path | None = None) -> Policy:
    """Load a built-in policy by name, or a policy file (JSON, or YAML for any other suffix)."""
    import jsonschema_rs

    spec = spec or DEFAULT_POLICY
    builtins = builtin_policy_names()
    if isinstance(spec, str) and spec in builtins:
        path = schema_path("policies", f"{spec}.json")
        origin, label = f"builtin:{spec}", f"built-in policy {spec}"
    else:
        path = Path(spec).expanduser()
        origin = label = str(path)
        if not path.is_file():
            raise PolicyError(
                f"{spec}: no such policy file, and not a built-in policy ({', '.join(builtins)})"
            )
    document = _read_document(path, label)
    declared = document.get("$schema")
    if declared not in (None, DRAFT_2020_12):
        raise PolicyError(f"{label}: $schema must be {DRAFT_2020_12}, not {declared!r}")
    document = {"$schema": DRAFT_2020_12, **document}
    try:
        jsonschema_rs.meta.validate(document)
    except jsonschema_rs.ValidationError as error:
        where = _pointer(error.instance_path) or "/"
        raise PolicyError(
            f"{label}: not a valid JSON Schema at {where}: {_one_line(error.message)}"
        ) from None

    builtin_documents = _builtin_documents()
    base_uri = str(document.get("$id") or path.resolve().as_uri())
    resources = [(uri, doc) for uri, doc in builtin_documents.items() if uri != base_uri]
    resources.append((base_uri, document))
    try:
        registry = jsonschema_rs.Registry(resources, retriever=_retrieve)
        validator = jsonschema_rs.Draft202012Validator(
            document, registry=registry, retriever=_retrieve, base_uri=base_uri
        )
    except Exception as error:
        text = _one_line(str(error))
        if "retrieving it failed" in text:
            # The retriever's own PolicyError, wrapped by jsonschema-rs: say it plainly.
            reason = text.split("PolicyError: ", 1)[-1]
            raise PolicyError(f"{label}: cannot resolve a $ref: {reason}") from None
        raise PolicyError(f"{label}: not a valid JSON Schema: {text}") from None

    rules, properties = _collect_rules(document, registry, base_uri, label)
    meta = document.get("x-audit-policy")
    if not isinstance(meta, dict):
        meta = {}
    return Policy(
        name=str(meta.get("name") or (spec if origin.startswith("builtin:") else path.stem)),
        version=str(meta["version"]) if meta.get("version") is not None else None,
        title=document.get("title"),
        description=document.get("description"),
        origin=origin,
        sha256=sha256_hex(document),
        document=document,
        rules=rules,
        needs=CollectionNeeds(
            artifacts=bool({"environment", "models"} & properties),
            registry="models" in properties,
        ),
        _validator=validator,
        _registry=registry,
        _base_uri=base_uri,
    )


def _collect_rules(
    document: Mapping[str, Any], registry: Any, base_uri: str, label: str
) -> tuple[tuple[Rule, ...], set[str]]:
    """Every x-audit reachable from the policy root (through $refs), checked; and every property
    name the policy constrains, which tells the collector what to read."""
    import jsonschema_rs

    annotation_schema = json.loads(schema_path("x-audit.schema.json").read_text(encoding="utf-8"))
    check = jsonschema_rs.validator_for(annotation_schema)
    catalog = load_catalog()
    rules: dict[str, Rule] = {}
    annotation_places: dict[str, list[str]] = {}
    constrained_places: dict[str, list[str]] = {}
    properties: set[str] = set()
    # A subschema is walked once per place in the record it applies to ($defs are shared).
    visited: set[tuple[int, str | None]] = set()

    def walk(
        node: Any, resolver: Any, where: str, instance: str | None = "", rule: str | None = None
    ) -> None:
        """`instance`: the record location the node applies to (None inside unreferenced
        $defs); `rule`: the nearest annotation above, which owns the places constrained here."""
        if isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, resolver, f"{where}/{index}", instance, rule)
            return
        key = (id(node), instance)
        if not isinstance(node, Mapping) or key in visited:
            return
        if instance is not None and instance.count("/") > _MAX_LOCATION_DEPTH:
            return
        visited.add(key)
        if "x-audit" in node:
            add_rule(node["x-audit"], where)
            rule = node["x-audit"]["id"]
            place(rule, instance)
        for keyword in ("properties", "patternProperties", "dependentRequired"):
            if isinstance(node.get(keyword), Mapping):
                properties.update(str(k) for k in node[keyword])
        if isinstance(node.get("required"), list):
            properties.update(str(k) for k in node["required"])
            for name in node["required"]:
                place(rule, f"{instance}/{_escape(str(name))}", constrained=True)
        for keyword in ("$ref", "$dynamicRef"):
            if isinstance(node.get(keyword), str):
                try:
                    resolved = resolver.lookup(node[keyword])
                except Exception as error:
                    raise PolicyError(
                        f"{label}: cannot resolve {keyword} {node[keyword]!r} at {where or '/'}: "
                        f"{_one_line(str(error))}"
                    ) from None
                walk(resolved.contents, resolved.resolver, f"{where}/{keyword}", instance, rule)
        for keyword, value in node.items():
            if keyword in _DATA_KEYWORDS:
                continue
            where_next = f"{where}/{_escape(str(keyword))}"
            if keyword in ("$defs", "definitions"):
                walk(value, resolver, where_next, None, None)
            elif keyword in ("properties", "patternProperties") and isinstance(value, Mapping):
                for name, subschema in value.items():
                    part = "*" if keyword == "patternProperties" else _escape(str(name))
                    child = None if instance is None else f"{instance}/{part}"
                    place(rule, child, constrained=True)
                    walk(subschema, resolver, f"{where_next}/{_escape(str(name))}", child, rule)
            elif keyword in _ITEM_KEYWORDS:
                walk(
                    value, resolver, where_next, None if instance is None else f"{instance}/*", rule
                )
            else:
                walk(value, resolver, where_next, instance, rule)

    def place(rule: str | None, instance: str | None, *, constrained: bool = False) -> None:
        if rule is None or instance is None or "None" in instance.split("/"):
            return
        places = constrained_places if constrained else annotation_places
        found = places.setdefault(rule, [])
        if instance not in found:
            found.append(instance)

    def add_rule(note: Any, where: str) -> None:
        errors = list(check.iter_errors(note))
        if errors:
            first = errors[0]
            raise PolicyError(
                f"{label}: x-audit at {where or '/'}{_pointer(first.instance_path)}: "
                f"{_one_line(first.message)}"
            )
        for provision in note["provisions"]:
            if provision not in catalog:
                raise PolicyError(
                    f"{label}: rule {note['id']} at {where or '/'} names unknown provision "
                    f"{provision!r} (see `mlflow-audit provisions`)"
                )
        rule = _annotation_rule({"x-audit": note})
        assert rule is not None
        previous = rules.get(rule.id)
        if previous is not None and previous != rule:
            raise PolicyError(
                f"{label}: rule id {rule.id} is annotated twice with different contents"
            )
        rules[rule.id] = rule

    walk(document, registry.resolver(base_uri), "")
    return (
        tuple(
            replace(
                rule,
                locations=_deepest(
                    constrained_places.get(rule.id) or annotation_places.get(rule.id, [])
                ),
            )
            for rule in rules.values()
        ),
        properties,
    )


def _deepest(places: Sequence[str]) -> tuple[str, ...]:
    """The most specific places: /models/*/signature rather than /models as well."""
    return tuple(
        place for place in places if not any(other.startswith(f"{place}/") for other in places)
    )


def _one_line(text: str) -> str:
    return " ".join(text.strip().split("\n\n")[0].split())[:300]
