"""The two JSON Schema engines a policy can be evaluated with, behind one interface.

`jsonschema` (python-jsonschema, with `referencing` resolving every `$ref`) is the reference:
it meta-validates policy files, and it evaluates records when asked (`engine="jsonschema"`) or
when a policy author registers format checks. `jsonschema-rs` is the fast path, about 10 to 40
times faster on evidence records, and the default for evaluation. Both report a failing
constraint as a `SchemaError` with the same evaluation path (through `$ref`s, as JSON Schema's
output format spells it), so that a failure maps to the same rule whichever engine found it;
tests/test_engines.py holds them to identical outcomes on every store the tests build.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, Protocol
from urllib.parse import urldefrag, urljoin

EngineName = Literal["jsonschema-rs", "jsonschema"]
ENGINES: tuple[EngineName, ...] = ("jsonschema-rs", "jsonschema")
DEFAULT_ENGINE: EngineName = "jsonschema-rs"
# Keywords whose values are data, not subschemas.
DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples", "x-audit", "x-audit-policy"})


#: One failing constraint of a record: (evaluation path, instance path, keyword, instance,
#: message, the property a `required` error says is missing). A plain tuple: made for every
#: gap of every run.
SchemaError = tuple[tuple[Any, ...], tuple[Any, ...], str, Any, str, "str | None"]


class Engine(Protocol):
    name: EngineName

    def errors(self, record: Any) -> Iterable[SchemaError]: ...

    def condition(self, schema: Any) -> Callable[[Any], bool]:
        """A test of the whole record against `schema` (an x-audit condition, its `$ref`s
        already absolute)."""
        ...


Resources = Sequence[tuple[str, dict[str, Any]]]
#: Fetches a document a `$ref` names (local files only: policies are never fetched remotely).
Retriever = Any


class RustEngine:
    """jsonschema-rs: errors carry their evaluation path and, for `required`, the property."""

    name: EngineName = "jsonschema-rs"

    def __init__(
        self, document: Mapping[str, Any], resources: Resources, base_uri: str, retrieve: Retriever
    ) -> None:
        import jsonschema_rs

        #: Resolves `$ref`s as `referencing` does: `resolver(base).lookup(ref)`.
        self.registry = jsonschema_rs.Registry(list(resources), retriever=retrieve)
        self._retrieve = retrieve
        self.validator = jsonschema_rs.Draft202012Validator(
            dict(document), registry=self.registry, retriever=retrieve, base_uri=base_uri
        )

    def errors(self, record: Any) -> list[SchemaError]:
        found: list[SchemaError] = []
        for error in self.validator.iter_errors(record):
            path = tuple(error.evaluation_path)
            keyword = str(path[-1]) if path else ""
            missing = None
            if keyword == "required":
                kind = getattr(error, "kind", None)
                if kind is not None and hasattr(kind, "property"):
                    missing = str(kind.property)
            found.append(
                (path, tuple(error.instance_path), keyword, error.instance, error.message, missing)
            )
        return found

    def condition(self, schema: Any) -> Callable[[Any], bool]:
        import jsonschema_rs

        validator = jsonschema_rs.Draft202012Validator(
            schema,
            registry=self.registry,
            retriever=self._retrieve,
            base_uri="urn:mlflow-audit:condition",
        )
        return validator.is_valid

    def valid_locations(self, record: Any) -> Iterator[tuple[str, str]]:
        """(evaluation path, instance location) of every constraint the record meets, as JSON
        Schema's list output gives them: what a rule that passes was satisfied by."""
        for unit in self.validator.evaluate(record).list()["details"]:
            if unit.get("valid"):
                yield unit["evaluationPath"], unit["instanceLocation"]


class PythonEngine:
    """python-jsonschema. Its errors leave the `$ref`s out of their schema path; `_with_refs`
    puts them back by walking the policy, so that both engines name the same place."""

    name: EngineName = "jsonschema"

    def __init__(
        self,
        document: Mapping[str, Any],
        resources: Resources,
        base_uri: str,
        retrieve: Retriever,
        format_checker: Any = None,
    ) -> None:
        import jsonschema

        self._registry = python_registry(resources, retrieve)
        self._format_checker = format_checker
        self._document = document
        self._base_uri = base_uri
        self._validator = jsonschema.Draft202012Validator(
            document, registry=self._registry, format_checker=format_checker
        )
        self._with_refs = functools.lru_cache(maxsize=4096)(self._path_with_refs)

    def errors(self, record: Any) -> Iterator[SchemaError]:
        # jsonschema reports `required` once per missing property, in the keyword's order,
        # without naming it apart from the message: the n-th error at a place is the n-th.
        seen: dict[tuple[tuple[Any, ...], tuple[Any, ...]], int] = {}
        for error in self._validator.iter_errors(record):
            keyword = str(error.validator)
            path = self._with_refs(tuple(error.absolute_schema_path))
            instance_path = tuple(error.absolute_path)
            missing = None
            if keyword == "required" and isinstance(error.instance, Mapping):
                absent = [name for name in error.validator_value if name not in error.instance]
                index = seen.get((path, instance_path), 0)
                seen[(path, instance_path)] = index + 1
                missing = str(absent[index]) if index < len(absent) else None
            yield path, instance_path, keyword, error.instance, error.message, missing

    def _path_with_refs(self, schema_path: tuple[Any, ...]) -> tuple[Any, ...]:
        node: Any = self._document
        resolver = self._registry.resolver(self._base_uri)
        out: list[Any] = []
        for index, segment in enumerate(schema_path):
            while (
                isinstance(node, Mapping)
                and segment not in node
                and isinstance(node.get("$ref"), str)
            ):
                resolved = resolver.lookup(node["$ref"])
                out.append("$ref")
                node, resolver = resolved.contents, resolved.resolver
            try:
                node = node[segment]
            except (KeyError, IndexError, TypeError):
                return (*out, *schema_path[index:])
            out.append(segment)
        return tuple(out)

    def condition(self, schema: Any) -> Callable[[Any], bool]:
        import jsonschema

        validator = jsonschema.Draft202012Validator(
            schema, registry=self._registry, format_checker=self._format_checker
        )
        return validator.is_valid


def python_registry(resources: Resources, retrieve: Retriever) -> Any:
    """A `referencing` registry of the policy documents, retrieving other local files."""
    import referencing
    import referencing.jsonschema

    def retrieve_resource(uri: str) -> Any:
        return referencing.jsonschema.DRAFT202012.create_resource(retrieve(uri))

    registry: Any = referencing.Registry(retrieve=retrieve_resource)  # type: ignore[call-arg]
    return registry.with_resources(
        (uri, referencing.jsonschema.DRAFT202012.create_resource(document))
        for uri, document in resources
    )


def absolute_refs(schema: Any, base_uri: str) -> Any:
    """A copy of `schema` with every `$ref` made absolute against `base_uri`, so that it can be
    compiled on its own and still mean what it meant where it was written."""
    if isinstance(schema, list):
        return [absolute_refs(item, base_uri) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    copy: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("$ref", "$dynamicRef") and isinstance(value, str):
            copy[key] = urljoin(base_uri, value) if not value.startswith("#") else base_uri + value
        elif key in DATA_KEYWORDS:
            copy[key] = value
        else:
            copy[key] = absolute_refs(value, base_uri)
    return copy


def resource_uri(base_uri: str, ref: str) -> str:
    """The URI of the document a `$ref` written at `base_uri` points into."""
    return urldefrag(urljoin(base_uri, ref))[0] if not ref.startswith("#") else base_uri
