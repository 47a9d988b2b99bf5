"""Policies: JSON Schema 2020-12 documents over the evidence record, with `x-audit` annotations.

A validation error is mapped to the nearest `x-audit` on its evaluation path (the path through
the schema, `$ref`s included), which names the rule, its severity, the provisions it serves and
the fix. Policies compose with plain `$ref` / `allOf`: a user policy refers to a built-in one as
``urn:mlflow-audit:policy:<name>`` or to a neighbouring file by relative path.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, NamedTuple
from urllib.parse import unquote, urlsplit

from audit.datafiles import read_data_file
from audit.errors import PolicyError, did_you_mean
from audit.evidence import sha256_hex
from audit.provisions import load_catalog
from audit.resources import schema_path
from audit.sources import CollectionNeeds
from audit.validators import (
    DATA_KEYWORDS,
    DEFAULT_ENGINE,
    ENGINES,
    Engine,
    EngineName,
    PythonEngine,
    RustEngine,
    absolute_refs,
    python_registry,
    resource_uri,
)

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")
SEVERITY_RANK = {"error": 3, "warning": 2, "info": 1}
CATEGORIES = (
    "data",
    "hyperparameters",
    "metrics",
    "environment",
    "source",
    "model",
    "run",
    "declared",
)

#: Categories whose rules are about the AI system a registered model version belongs to (its
#: system card), not about a training run: evaluated only on model versions' records.
VERSION_CATEGORIES = frozenset({"declared"})

DEFAULT_POLICY = "eu-ai-act-high-risk"
BUILTIN_PREFIX = "urn:mlflow-audit:policy:"
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
_MAX_POLICY_BYTES = 4 << 20
# Keywords whose values are data, not subschemas: never searched for annotations.
_DATA_KEYWORDS = DATA_KEYWORDS
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


Outcome = Literal["pass", "fail", "not_applicable", "unknown", "waived"]
#: Every outcome a rule can have on a run, in the order outputs list them.
OUTCOMES: tuple[Outcome, ...] = ("fail", "unknown", "waived", "not_applicable", "pass")


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
    #: The rule's title worded as the gap, for lists of what fails.
    gap: str = ""
    #: Why the rule is not applicable on a run whose record does not meet `applies_if`.
    not_applicable: str | None = None
    #: Why the answer is unknown on a run whose record does not meet `known_if`.
    unknown: str | None = None
    #: The conditions as written (canonical JSON text, so that a rule stays hashable).
    conditions: str | None = None
    #: How a finding reads, with {where}, {label} and {found} filled in.
    message: str | None = None

    @property
    def gap_text(self) -> str:
        return self.gap or f"Not met: {self.title}"

    @property
    def conditional(self) -> bool:
        return self.not_applicable is not None or self.unknown is not None

    def to_dict(self) -> dict[str, Any]:
        conditions = json.loads(self.conditions) if self.conditions else {}
        return {
            "id": self.id,
            "category": self.category,
            "severity": self.severity,
            "provisions": list(self.provisions),
            "title": self.title,
            "gap": self.gap_text,
            "remediation": self.remediation,
            "remediation_if": conditions.get("remediation_if", []),
            "applies_if": conditions.get("applies_if"),
            "not_applicable": self.not_applicable,
            "known_if": conditions.get("known_if"),
            "unknown": self.unknown,
        }


class RuleConditions(NamedTuple):
    """A rule's x-audit conditions, compiled: the places in `Policy._tests` of the tests of
    the whole record (rules share the tests of the same schema)."""

    applies: int | None
    known: int | None
    remediations: tuple[tuple[int, str], ...]


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
    engine: Engine = field(repr=False)
    #: The jsonschema-rs engine, also when `engine` is the reference one: JSON Schema's output
    #: with annotations (what a passing rule was satisfied by) comes from it.
    _fast: RustEngine = field(repr=False)
    _registry: Any = field(repr=False)
    _base_uri: str = field(repr=False)
    _conditions: dict[str, RuleConditions] = field(default_factory=dict, repr=False)
    _tests: tuple[Callable[[Any], bool], ...] = field(default=(), repr=False)
    _rule_cache: dict[tuple[Any, ...], Rule] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "title": self.title,
            "origin": self.origin,
            "sha256": self.sha256,
            "engine": self.engine.name,
        }

    @functools.cached_property
    def rule_order(self) -> dict[str, int]:
        """Each rule's place in the policy document, the order its author gave."""
        return {rule.id: index for index, rule in enumerate(self.rules)}

    @functools.cached_property
    def version_rule_ids(self) -> frozenset[str]:
        """The rules evaluated only on model versions' records (`VERSION_CATEGORIES`)."""
        return frozenset(rule.id for rule in self.rules if rule.category in VERSION_CATEGORIES)

    def rules_for(self, versions: bool) -> tuple[Rule, ...]:
        """The rules an audit evaluates: all of them when it holds a model version, else the
        rules about runs."""
        if versions or not self.version_rule_ids:
            return self.rules
        return tuple(rule for rule in self.rules if rule.id not in self.version_rule_ids)

    @functools.cached_property
    def rules_by_id(self) -> dict[str, Rule]:
        return {rule.id: rule for rule in self.rules}

    def violations(self, record: Mapping[str, Any]) -> Iterator[Violation]:
        """Every failing constraint of the record, each with its rule and JSON Pointer."""
        for path, instance_path, keyword, instance, message, missing in self.engine.errors(record):
            pointer = _cached_pointer(instance_path)
            if missing is not None:
                pointer = f"{pointer}/{_escape(missing)}"
            yield Violation(self.rule_at(path, instance_path), pointer, keyword, instance, message)

    def undecided(self, record: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The rules that are not applicable to the record (`applies_if` does not hold), and
        the applicable ones whose answer MLflow's record cannot show (`known_if` does not
        hold), in policy order."""
        not_applicable: list[str] = []
        unknown: list[str] = []
        tests = self._tests
        held: dict[int, bool] = {}  # each distinct condition tested once per record
        for rule_id, applies, known in self._deciding:
            # Not applicable first: a rule that does not apply is not unknown either.
            for test, undecided in ((applies, not_applicable), (known, unknown)):
                if test is None:
                    continue
                holds = held.get(test)
                if holds is None:
                    holds = held[test] = tests[test](record)
                if not holds:
                    undecided.append(rule_id)
                    break
        return tuple(not_applicable), tuple(unknown)

    @functools.cached_property
    def _deciding(self) -> tuple[tuple[str, int | None, int | None], ...]:
        """The rules with an `applies_if` or a `known_if`, in policy order, with their tests."""
        deciding = []
        for rule in self.rules:
            conditions = self._conditions.get(rule.id)
            if conditions is not None and (
                conditions.applies is not None or conditions.known is not None
            ):
                deciding.append((rule.id, conditions.applies, conditions.known))
        return tuple(deciding)

    def remediation(self, rule: Rule, record: Mapping[str, Any]) -> str:
        """The fix for a rule's findings on this record: the first `remediation_if` whose
        schema it meets, else the rule's own."""
        for test, text in self.remediations.get(rule.id, ()):
            if self._tests[test](record):
                return text
        return rule.remediation

    @functools.cached_property
    def remediations(self) -> dict[str, tuple[tuple[int, str], ...]]:
        """The rules with fixes that fit some records (`remediation_if`), by id."""
        return {
            rule_id: conditions.remediations
            for rule_id, conditions in self._conditions.items()
            if conditions.remediations
        }

    def satisfied_by(self, record: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
        """For each rule, the places in the record (JSON Pointers) of the constraints it meets
        there, the deepest ones: what a rule that passes was satisfied by. From JSON Schema's
        output with annotations, so a `contains` names the items that matched. Costs about
        ten times a validation: for reports, not for every run of a gate."""
        places: dict[str, list[str]] = {}
        for evaluation_path, location in self._fast.valid_locations(record):
            rule = self.rule_at(_parse_pointer(evaluation_path))
            if rule.annotated:
                places.setdefault(rule.id, []).append(location)
        return {rule_id: _deepest(sorted(set(found))) for rule_id, found in places.items()}

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
        found = self._known_rule(node)
        try:
            for segment in evaluation_path:
                if segment in ("$ref", "$dynamicRef") and isinstance(node, Mapping):
                    resolved = resolver.lookup(node[segment])
                    node, resolver = resolved.contents, resolved.resolver
                elif isinstance(node, list):
                    node = node[int(segment)]
                else:
                    node = node[segment]
                found = self._known_rule(node) or found
        except (KeyError, IndexError, TypeError, ValueError, LookupError):
            return found
        return found

    def _known_rule(self, node: Any) -> Rule | None:
        """The policy's rule for the x-audit on `node`, with its locations and conditions."""
        if not isinstance(node, Mapping) or not isinstance(node.get("x-audit"), Mapping):
            return None
        rule_id = node["x-audit"].get("id")
        return self.rules_by_id.get(rule_id) or _annotation_rule(node)


def _parse_pointer(pointer: str) -> tuple[Any, ...]:
    return tuple(part.replace("~1", "/").replace("~0", "~") for part in pointer.split("/")[1:])


_CONDITION_KEYS = ("applies_if", "known_if", "remediation_if")


def _annotation_rule(node: Any) -> Rule | None:
    if not isinstance(node, Mapping) or not isinstance(node.get("x-audit"), Mapping):
        return None
    note = node["x-audit"]
    conditions = {key: note[key] for key in _CONDITION_KEYS if key in note}
    return Rule(
        id=note["id"],
        category=note["category"],
        severity=note["severity"],
        provisions=load_catalog().sort(note["provisions"]),
        title=note["title"],
        remediation=note["remediation"],
        gap=note.get("gap", ""),
        not_applicable=note.get("not_applicable"),
        unknown=note.get("unknown"),
        conditions=json.dumps(conditions, sort_keys=True) if conditions else None,
        message=note.get("message"),
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
    "declared": "declared",
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


def load_policy(
    spec: str | Path | None = None,
    *,
    engine: EngineName = DEFAULT_ENGINE,
    format_checker: Any = None,
) -> Policy:
    """Load a built-in policy by name, or a policy file (JSON, or YAML for any other suffix).

    `engine` evaluates records: ``jsonschema-rs`` (fast, the default) or ``jsonschema``, the
    reference. A `format_checker` (a `jsonschema.FormatChecker` with the policy author's own
    format checks) makes ``format`` assert, and needs the reference engine, which it selects.
    """
    if engine not in ENGINES:
        choices = ", ".join(ENGINES)
        raise PolicyError(f"unknown JSON Schema engine {engine!r}; choose from {choices}")
    if format_checker is not None:
        engine = "jsonschema"
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
                f"{did_you_mean(str(spec), builtins)}"
            )
    document = _read_document(path, label)
    declared = document.get("$schema")
    if declared not in (None, DRAFT_2020_12):
        raise PolicyError(f"{label}: $schema must be {DRAFT_2020_12}, not {declared!r}")
    document = {"$schema": DRAFT_2020_12, **document}
    if not origin.startswith("builtin:"):
        # Built-in policies are checked by the tests; a user's file by the reference engine,
        # whose errors say where (kept off the start of a gate on a built-in policy).
        _check_schema(document, label)

    builtin_documents = _builtin_documents()
    base_uri = str(document.get("$id") or path.resolve().as_uri())
    resources = [(uri, doc) for uri, doc in builtin_documents.items() if uri != base_uri]
    resources.append((base_uri, document))
    try:
        fast = RustEngine(document, resources, base_uri, _retrieve)
        chosen: Engine = (
            fast
            if engine == "jsonschema-rs"
            else PythonEngine(document, resources, base_uri, _retrieve, format_checker)
        )
    except PolicyError:
        raise
    except Exception as error:
        text = _one_line(str(error))
        if "retrieving it failed" in text:
            # The retriever's own PolicyError, wrapped by jsonschema-rs: say it plainly.
            reason = text.split("PolicyError: ", 1)[-1]
            raise PolicyError(f"{label}: cannot resolve a $ref: {reason}") from None
        raise PolicyError(f"{label}: not a valid JSON Schema: {text}") from None

    if origin.startswith("builtin:") and isinstance(chosen, RustEngine) and _own_refs(document):
        # The built-in policies' own $refs, resolved alike by jsonschema-rs's registry: a gate
        # on them does not load `referencing` (about 70 ms of its start). Not a policy that
        # refers to another: jsonschema-rs gives that one's contents with their keys in
        # another order, and the rules, in the order they are found, would follow it.
        registry: Any = fast.registry
    else:
        registry = python_registry(resources, _retrieve)
    rules, properties, condition_schemas = _collect_rules(document, registry, base_uri, label)
    meta = document.get("x-audit-policy")
    if not isinstance(meta, dict):
        meta = {}
    rules = _with_severities(rules, meta.get("severities"), label)
    tests: dict[str, tuple[int, Callable[[Any], bool]]] = {}
    conditions = {
        rule_id: _compile_conditions(chosen, schemas, label, rule_id, tests)
        for rule_id, schemas in condition_schemas.items()
    }
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
        engine=chosen,
        _fast=fast,
        _registry=registry,
        _base_uri=base_uri,
        _conditions=conditions,
        _tests=tuple(test for _, test in sorted(tests.values(), key=lambda t: t[0])),
    )


def _with_severities(rules: tuple[Rule, ...], severities: Any, label: str) -> tuple[Rule, ...]:
    """The rules with the severities `x-audit-policy.severities` sets, by category or by rule
    id (a rule id wins over its category): a stricter policy is the same rules, not a copy."""
    if severities is None:
        return rules
    where = f"{label}: x-audit-policy.severities"
    if not isinstance(severities, Mapping):
        raise PolicyError(f"{where}: a mapping of category or rule id to severity")
    ids = {rule.id for rule in rules}
    for key, severity in severities.items():
        if severity not in SEVERITIES:
            raise PolicyError(
                f"{where}: {key}: severity {severity!r} is not one of {', '.join(SEVERITIES)}"
            )
        if key not in ids and key not in CATEGORIES:
            raise PolicyError(
                f"{where}: {key!r} is neither a category nor a rule id of the policy"
                f"{did_you_mean(str(key), [*CATEGORIES, *sorted(ids)])}"
            )
    chosen = {rule.id: severities.get(rule.id, severities.get(rule.category)) for rule in rules}
    return tuple(replace(rule, severity=chosen[rule.id] or rule.severity) for rule in rules)


def _own_refs(node: Any) -> bool:
    """Whether every `$ref` in a document points inside it."""
    if isinstance(node, Mapping):
        ref = node.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#"):
            return False
        return all(_own_refs(value) for value in node.values())
    if isinstance(node, list):
        return all(_own_refs(value) for value in node)
    return True


def _check_schema(document: Mapping[str, Any], label: str) -> None:
    """Meta-validate a policy with python-jsonschema; the most relevant error, located."""
    import jsonschema
    import jsonschema.exceptions

    validator = jsonschema.Draft202012Validator(jsonschema.Draft202012Validator.META_SCHEMA)
    error = jsonschema.exceptions.best_match(validator.iter_errors(document))
    if error is not None:
        where = _pointer(tuple(error.absolute_path)) or "/"
        raise PolicyError(
            f"{label}: not a valid JSON Schema at {where}: {_one_line(error.message)}"
        )


def _compile_conditions(
    engine: Engine,
    schemas: Mapping[str, Any],
    label: str,
    rule_id: str,
    tests: dict[str, tuple[int, Callable[[Any], bool]]],
) -> RuleConditions:
    """The rule's conditions as places in `tests`, which holds one compiled test per distinct
    schema (by its canonical JSON): five rules about each dataset share one test."""

    def compiled(schema: Any, what: str) -> int:
        key = json.dumps(schema, sort_keys=True)
        if key in tests:
            return tests[key][0]
        try:
            tests[key] = (len(tests), engine.condition(schema))
            return tests[key][0]
        except Exception as error:
            raise PolicyError(
                f"{label}: rule {rule_id}: {what} is not a usable JSON Schema: "
                f"{_one_line(str(error))}"
            ) from None

    return RuleConditions(
        applies=compiled(schemas["applies_if"], "applies_if") if "applies_if" in schemas else None,
        known=compiled(schemas["known_if"], "known_if") if "known_if" in schemas else None,
        remediations=tuple(
            (compiled(entry["if"], f"remediation_if/{index}/if"), entry["remediation"])
            for index, entry in enumerate(schemas.get("remediation_if", ()))
        ),
    )


def _collect_rules(
    document: Mapping[str, Any], registry: Any, base_uri: str, label: str
) -> tuple[tuple[Rule, ...], set[str], dict[str, dict[str, Any]]]:
    """Every x-audit reachable from the policy root (through $refs), checked; every property
    name the policy constrains, which tells the collector what to read; and each rule's
    conditions with their `$ref`s made absolute, ready to compile on their own."""
    import jsonschema_rs

    annotation_schema = json.loads(schema_path("x-audit.schema.json").read_text(encoding="utf-8"))
    check = jsonschema_rs.validator_for(annotation_schema)
    catalog = load_catalog()
    rules: dict[str, Rule] = {}
    annotation_places: dict[str, list[str]] = {}
    constrained_places: dict[str, list[str]] = {}
    properties: set[str] = set()
    condition_schemas: dict[str, dict[str, Any]] = {}
    builtin = base_uri.startswith(BUILTIN_PREFIX)
    # A subschema is walked once per place in the record it applies to ($defs are shared), and
    # not again below itself: a recursive schema (a tree type whose $ref points back up) is
    # unrolled once, so a few hundred bytes of $refs cannot multiply into millions of places.
    visited: set[tuple[int, str | None]] = set()
    on_path: set[int] = set()

    def walk(
        node: Any,
        resolver: Any,
        base: str,
        where: str,
        instance: str | None = "",
        rule: str | None = None,
    ) -> None:
        """`base`: the URI of the document the node is in; `instance`: the record location the
        node applies to (None inside unreferenced $defs); `rule`: the nearest annotation above,
        which owns the places constrained here."""
        if isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, resolver, base, f"{where}/{index}", instance, rule)
            return
        key = (id(node), instance)
        if not isinstance(node, Mapping) or key in visited or id(node) in on_path:
            return
        if instance is not None and instance.count("/") > _MAX_LOCATION_DEPTH:
            return
        visited.add(key)
        on_path.add(id(node))
        try:
            walk_mapping(node, resolver, base, where, instance, rule)
        finally:
            on_path.discard(id(node))

    def walk_mapping(
        node: Mapping[str, Any],
        resolver: Any,
        base: str,
        where: str,
        instance: str | None,
        rule: str | None,
    ) -> None:
        if "x-audit" in node:
            add_rule(node["x-audit"], where, base)
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
                    cause = error.__cause__
                    reason = cause if isinstance(cause, PolicyError) else error
                    raise PolicyError(
                        f"{label}: cannot resolve {keyword} {node[keyword]!r} at {where or '/'}: "
                        f"{_one_line(str(reason))}"
                    ) from None
                walk(
                    resolved.contents,
                    resolved.resolver,
                    resource_uri(base, node[keyword]),
                    f"{where}/{keyword}",
                    instance,
                    rule,
                )
        for keyword, value in node.items():
            if keyword in _DATA_KEYWORDS:
                continue
            where_next = f"{where}/{_escape(str(keyword))}"
            if keyword in ("$defs", "definitions"):
                walk(value, resolver, base, where_next, None, None)
            elif keyword in ("properties", "patternProperties") and isinstance(value, Mapping):
                for name, subschema in value.items():
                    part = "*" if keyword == "patternProperties" else _escape(str(name))
                    child = None if instance is None else f"{instance}/{part}"
                    place(rule, child, constrained=True)
                    walk(
                        subschema,
                        resolver,
                        base,
                        f"{where_next}/{_escape(str(name))}",
                        child,
                        rule,
                    )
            elif keyword in _ITEM_KEYWORDS:
                child = None if instance is None else f"{instance}/*"
                walk(value, resolver, base, where_next, child, rule)
            else:
                walk(value, resolver, base, where_next, instance, rule)

    def place(rule: str | None, instance: str | None, *, constrained: bool = False) -> None:
        if rule is None or instance is None or "None" in instance.split("/"):
            return
        places = constrained_places if constrained else annotation_places
        found = places.setdefault(rule, [])
        if instance not in found:
            found.append(instance)

    def add_rule(note: Any, where: str, base: str) -> None:
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
        if rule.conditions is not None and rule.id not in condition_schemas:
            schemas = absolute_refs({k: note[k] for k in _CONDITION_KEYS if k in note}, base)
            if not builtin:
                for key, schema in _condition_list(schemas):
                    _check_schema(schema, f"{label}: rule {rule.id}: {key}")
            condition_schemas[rule.id] = schemas

    walk(document, registry.resolver(base_uri), base_uri, "")
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
        condition_schemas,
    )


def _condition_list(schemas: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    for key in ("applies_if", "known_if"):
        if key in schemas:
            yield key, schemas[key]
    for index, entry in enumerate(schemas.get("remediation_if", ())):
        yield f"remediation_if/{index}/if", entry["if"]


def _deepest(places: Sequence[str]) -> tuple[str, ...]:
    """The most specific places: /models/*/signature rather than /models as well."""
    return tuple(
        place for place in places if not any(other.startswith(f"{place}/") for other in places)
    )


def _one_line(text: str) -> str:
    return " ".join(text.strip().split("\n\n")[0].split())[:300]
