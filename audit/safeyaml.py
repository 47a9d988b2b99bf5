"""YAML that cannot explode: safe loading with bounds on what aliases expand to and on nesting.

`yaml.safe_load` never runs code, but an alias bomb (``a: &a [x, x, x]``, ``b: &b [*a, *a,
*a]``, ... nine levels deep) is a few hundred bytes that load as a structure sharing its parts;
whatever walks it afterwards (copying, JSON, schema validation) sees billions of nodes. Every
YAML the tool reads, from a user (policies, waivers, configuration) or from a store (MLmodel,
conda.yaml, python_env.yaml), goes through `load`, which first reads the document's events and
counts the nodes it stands for with every alias expanded, and refuses it past the bounds.
"""

from __future__ import annotations

from typing import Any

import yaml

#: Nodes a document may stand for, aliases expanded: far above any MLmodel, conda.yaml or policy
#: (the built-in policy has about 2,000), far below what exhausts memory.
MAX_NODES = 200_000
#: Nesting of collections.
MAX_DEPTH = 64

_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlBoundsError(yaml.YAMLError):
    """The document would expand beyond the bounds."""


def load(text: str, *, max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH) -> Any:
    """`yaml.safe_load(text)`, or `YamlBoundsError` (a `yaml.YAMLError`) when aliases would
    expand it beyond `max_nodes` nodes or it nests deeper than `max_depth`. A document whose
    aliases refer to an anchor still open (a recursive structure) is refused too."""
    check_bounds(text, max_nodes=max_nodes, max_depth=max_depth)
    return yaml.load(text, Loader=_LOADER)  # noqa: S506 - a SafeLoader


def check_bounds(text: str, *, max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH) -> None:
    # Each open collection: [its anchor, the nodes it stands for so far].
    open_collections: list[list[Any]] = [[None, 0]]
    sizes: dict[str, int] = {}  # expanded size of each anchored node, once closed
    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, yaml.ScalarEvent | yaml.AliasEvent):
            if isinstance(event, yaml.AliasEvent):
                if event.anchor not in sizes:
                    raise YamlBoundsError(
                        f"alias *{event.anchor} refers to an anchor that is not complete"
                    )
                size = sizes[event.anchor]
            else:
                size = 1
                if event.anchor is not None:
                    sizes[event.anchor] = 1
            current = open_collections[-1]
            current[1] += size
            if current[1] > max_nodes:
                raise YamlBoundsError(f"aliases expand it to more than {max_nodes:,} nodes")
        elif isinstance(event, yaml.CollectionStartEvent):
            if len(open_collections) > max_depth:
                raise YamlBoundsError(f"it nests deeper than {max_depth} levels")
            open_collections.append([event.anchor, 1])
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, size = open_collections.pop()
            if anchor is not None:
                sizes[anchor] = size
            parent = open_collections[-1]
            parent[1] += size
            if parent[1] > max_nodes:
                raise YamlBoundsError(f"aliases expand it to more than {max_nodes:,} nodes")
        elif isinstance(event, yaml.DocumentEndEvent):
            open_collections[0][1] = 0
