"""The system card: what the provider declares about an AI system that MLflow cannot hold.

A card is a YAML file, or Markdown whose YAML front matter holds the fields and whose text is
kept as notes (schemas/system-card.schema.json). `load_system_card` reads one (untrusted:
bounded in size and in what its YAML expands to, never blocking on a pipe); `declared_section`
turns it, with what a registered model's description and `system_card.*` tags supply, into the
`declared` section of an evidence record, which the policy's `declared` rules check.

Placeholders count as missing: empty text, TODO/TBD/TBC/FIXME/XXX, lorem ipsum, ``...``, a
value that is a single ``<...>`` (the template's form), and the template's own example texts.
"N/A", "none" and the like are kept: a provider may rightly declare that a point does not
apply (Annex IV asks for several points only "where applicable"), and the document shows
that statement as theirs.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from audit.datafiles import check_against, parse_yaml, plain, read_text_file
from audit.errors import AuditError
from audit.evidence import bounded
from audit.redaction import redact

SCHEMA = "system-card.schema.json"
DEFAULT_PATH = "system-card.yaml"
TAG_PREFIX = "system_card."
_MAX_CARD_BYTES = 1 << 20
_MARKDOWN_SUFFIXES = (".md", ".markdown")

Kind = Literal["text", "texts", "persons"]


class SystemCardError(AuditError):
    """The system card cannot be read: the command stops (exit 2) rather than guess."""


@dataclass(frozen=True)
class Field:
    """One field of the card: where it is, what it holds, and how the template explains it."""

    path: tuple[str, ...]
    kind: Kind
    #: The template's comment: what to write and the provision it serves (Regulation (EU)
    #: 2024/1689).
    help: str
    #: The template's example value (a placeholder).
    example: Any

    @property
    def pointer(self) -> str:
        return "".join(f"/{part}" for part in self.path)

    @property
    def tag(self) -> str:
        return TAG_PREFIX + ".".join(self.path)


_PERSON_KEYS = ("name", "role", "email")

#: Every field, in the order of the template (and of Annex IV, as far as it goes).
FIELDS: tuple[Field, ...] = (
    Field(
        ("provider", "name"),
        "text",
        "Annex IV 1(a), Art. 13(3)(a): the name of the provider and its contact details.",
        "<legal name of the provider>",
    ),
    Field(("provider", "contact"), "text", "", "<address and e-mail at which it can be contacted>"),
    Field(
        ("system", "name"),
        "text",
        "Annex IV 1(a): the name of the AI system and its version, reflecting its relation to "
        'previous versions (quote a version: "2.10", not 2.10).',
        "<name of the AI system>",
    ),
    Field(("system", "version"), "text", "", "<version of the system>"),
    Field(
        ("intended_purpose",),
        "text",
        "Annex IV 1(a), Art. 13(3)(b)(i): the use the system is intended for, including the "
        "specific context and conditions of use (Art. 3(12)). The registered model's "
        "description fills it when this card does not.",
        "<what the system is for, in which context and under which conditions of use>",
    ),
    Field(
        ("intended_users",),
        "text",
        "Annex IV 1(a), Art. 13(3)(b)(i): the intended purpose includes the specific context "
        "and conditions of use (Art. 3(12)): who the system is intended for, the deployers and "
        "who uses it on their behalf.",
        "<the deployers and users the system is intended for>",
    ),
    Field(
        ("persons_affected",),
        "text",
        "Annex IV 2(b) and 3: the persons or groups of persons on whom the system is intended "
        "to be used.",
        "<persons or groups of persons the system is used on>",
    ),
    Field(
        ("interactions",),
        "text",
        "Annex IV 1(b): how the system interacts with hardware or software, including other "
        'AI systems, that are not part of it, where applicable ("none" if it does not).',
        "<hardware, software and other AI systems it interacts with>",
    ),
    Field(
        ("deployment", "forms"),
        "texts",
        "Annex IV 1(d): every form in which the system is placed on the market or put into "
        "service (software embedded in hardware, a download, an API); Annex IV 1(e) and "
        "Art. 13(3)(e): the hardware it is intended to run on and the resources it needs.",
        ["<a form, e.g. an API or a download>"],
    ),
    Field(("deployment", "hardware"), "text", "", "<hardware the system is intended to run on>"),
    Field(
        ("user_interface",),
        "text",
        "Annex IV 1(g): a basic description of the user interface provided to the deployer.",
        "<the user interface provided to the deployer>",
    ),
    Field(
        ("instructions_for_use",),
        "text",
        "Annex IV 1(h), Art. 13: the instructions for use for the deployer, or where they are "
        "(a document reference or a URL).",
        "<the instructions for use, or where to find them>",
    ),
    Field(
        ("human_oversight",),
        "text",
        "Art. 14, Annex IV 2(e) and 3: the human oversight measures, including the technical "
        "measures that help deployers interpret the outputs (Art. 13(3)(d)).",
        "<the human oversight measures>",
    ),
    Field(
        ("limitations",),
        "text",
        "Annex IV 3: the system's capabilities and limitations in performance, the degrees of "
        "accuracy for the persons or groups it is used on, and the foreseeable unintended "
        "outcomes and sources of risks.",
        "<capabilities, limitations and foreseeable unintended outcomes>",
    ),
    Field(
        ("metrics_rationale",),
        "text",
        "Annex IV 4: why the performance metrics logged in MLflow are appropriate for this system.",
        "<why these metrics are appropriate for the system>",
    ),
    Field(
        ("predetermined_changes",),
        "text",
        "Annex IV 2(f), where applicable: the changes to the system and its performance "
        'determined in advance ("none" if there are none).',
        "<pre-determined changes, or none>",
    ),
    Field(
        ("risk_management",),
        "text",
        "Art. 9, Annex IV 5: the risk management system, or a reference to the document that "
        "describes it.",
        "<the risk management system, or a reference to its documentation>",
    ),
    Field(
        ("cybersecurity",),
        "text",
        "Annex IV 2(h): the cybersecurity measures put in place (Art. 15(5)).",
        "<the cybersecurity measures put in place>",
    ),
    Field(
        ("standards",),
        "texts",
        "Annex IV 7: the harmonised standards applied in full or in part; where none are, the "
        "other standards and technical specifications applied (and describe the solutions "
        "adopted in the notes or a referenced document).",
        ["<a standard or specification applied>"],
    ),
    Field(
        ("declaration_of_conformity",),
        "text",
        "Annex IV 8, Art. 47: the EU declaration of conformity, or a reference to its copy.",
        "<the EU declaration of conformity, or a reference to it>",
    ),
    Field(
        ("lifetime",),
        "text",
        "Art. 13(3)(e): the expected lifetime of the system and the maintenance and care "
        "measures, with their frequency, including software updates.",
        "<expected lifetime, maintenance and care measures>",
    ),
    Field(
        ("post_market_monitoring",),
        "text",
        "Art. 72 and Annex IV 9: the post-market monitoring system and its plan (Art. 72(3)), "
        "or a reference to it.",
        "<the post-market monitoring system and plan, or a reference to it>",
    ),
    Field(
        ("responsible_persons",),
        "persons",
        "The persons responsible for the system, with their roles (Art. 17(1)(m): an "
        "accountability framework; Annex IV 2(g): test reports signed by the responsible "
        "persons). The document's signature block names them; email is optional.",
        [{"name": "<full name>", "role": "<role>", "email": "<e-mail>"}],
    ),
)
FIELDS_BY_POINTER = {field.pointer: field for field in FIELDS}


# --------------------------------------------------------------------------- the template

_TEMPLATE_HEAD = """\
# System card: what the provider declares about the AI system that MLflow cannot hold, for
# the technical documentation of a model version (Regulation (EU) 2024/1689, Annex IV).
# Replace every <...> with your text. A field left as it is, empty, or saying TODO or TBD
# counts as missing; "N/A" or "none" is kept as your answer. Fields and types:
# schemas/system-card.schema.json. Check this file: mlflow-audit system-card validate FILE
# It may also be Markdown (a .md file) with these fields as YAML front matter between two
# lines of ---; the text after them is kept as notes.
"""


def _yaml_scalar(value: str) -> str:
    return json.dumps(value)  # a JSON string is a YAML double-quoted scalar


def template_text() -> str:
    """The commented YAML template `system-card init` writes."""
    lines = [_TEMPLATE_HEAD.rstrip("\n")]
    open_group: str | None = None
    for field in FIELDS:
        if field.help:
            lines.append("")
            lines += [f"# {line}" for line in _wrap(field.help, 92)]
        if len(field.path) == 2:
            group, name = field.path
            if group != open_group:
                lines.append(f"{group}:")
                open_group = group
            lines.append(f"  {name}:{_yaml_value(field.example, 2)}")
            continue
        open_group = None
        lines.append(f"{field.path[0]}:{_yaml_value(field.example, 0)}")
    return "\n".join(lines) + "\n"


def _yaml_value(value: Any, indent: int) -> str:
    """The value after `key:`: a scalar on the line, a list on the lines below."""
    if isinstance(value, str):
        return " " + _yaml_scalar(value)
    pad = " " * (indent + 2)
    items = []
    for item in value:
        if isinstance(item, Mapping):
            pairs = [f"{key}: {_yaml_scalar(text)}" for key, text in item.items()]
            items.append(f"{pad}- " + f"\n{pad}  ".join(pairs))
        else:
            items.append(f"{pad}- {_yaml_scalar(item)}")
    return "\n" + "\n".join(items)


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width=width, break_on_hyphens=False)


TEMPLATE = template_text()


def _template_texts() -> frozenset[str]:
    texts: set[str] = set()
    for field in FIELDS:
        values = field.example if isinstance(field.example, list) else [field.example]
        for value in values:
            texts.update(value.values() if isinstance(value, Mapping) else [value])
    return frozenset(_normal(text) for text in texts)


# --------------------------------------------------------------------------- placeholders

_MARKERS = ("todo", "tbd", "tbc", "fixme", "xxx")
_MARKER_START = re.compile(rf"^(?:{'|'.join(_MARKERS)})(?![a-z0-9])", re.IGNORECASE)
_MARKER_WORD = re.compile(
    rf"(?<![A-Za-z0-9])(?:{'|'.join(m.upper() for m in _MARKERS)})(?![A-Za-z0-9])"
)
_LOREM = re.compile(r"lorem\s+ipsum", re.IGNORECASE)
_ANGLE = re.compile(r"^<[^<>@]*>$")
_ELLIPSIS = re.compile(r"^[\s.…?_-]*$")


def _normal(text: str) -> str:
    return " ".join(text.split()).casefold()


_TEMPLATE_TEXTS = _template_texts()


def is_placeholder(text: str) -> bool:
    """Whether a value only holds the place of one: see the module's docstring."""
    stripped = text.strip()
    return bool(
        _ELLIPSIS.match(stripped)
        or _MARKER_START.match(stripped)
        or _MARKER_WORD.search(stripped)
        or _LOREM.search(stripped)
        or _ANGLE.match(stripped)
        or _normal(stripped) in _TEMPLATE_TEXTS
    )


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class SystemCard:
    #: The file's name (not its folder: the documents name the card, not the machine).
    file: str
    sha256: str
    #: The fields as written (checked against the schema; dates read back as their text).
    fields: Mapping[str, Any]
    #: The Markdown text after the front matter; "" for a YAML card.
    notes: str

    def to_dict(self) -> dict[str, str]:
        return {"file": self.file, "sha256": self.sha256}


def load_system_card(path: str | Path) -> SystemCard:
    """Read and check a system card; `SystemCardError` (exit 2) names the file and the place."""
    source = Path(path)
    label = f"system card {source}"
    text = read_text_file(source, label, limit=_MAX_CARD_BYTES, error=SystemCardError)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    notes = ""
    if source.suffix.lower() in _MARKDOWN_SUFFIXES:
        front, first_line, notes = _front_matter(text, label)
        document = parse_yaml(front, label, error=SystemCardError, first_line=first_line)
    elif source.suffix.lower() == ".json":
        try:
            document = json.loads(text)
        except json.JSONDecodeError as problem:
            raise SystemCardError(
                f"{label}: invalid JSON at line {problem.lineno} column {problem.colno}: "
                f"{problem.msg}"
            ) from None
        except RecursionError:
            raise SystemCardError(f"{label}: it nests too deeply") from None
    else:
        document = parse_yaml(text, label, error=SystemCardError)
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise SystemCardError(
            f"{label}: a system card is a mapping of fields, not a {type(document).__name__}"
        )
    document = plain(document)
    _check_keys(document, label)
    check_against(SCHEMA, document, label, error=SystemCardError, pointer=True)
    return SystemCard(file=source.name, sha256=digest, fields=document, notes=notes.strip())


_FENCE = re.compile(r"^(?:---|\.\.\.)[ \t]*$", re.MULTILINE)


def _front_matter(text: str, label: str) -> tuple[str, int, str]:
    """(the YAML between the opening and closing ---, the line it starts on, the rest)."""
    body = text.removeprefix("\ufeff").replace("\r\n", "\n")
    if not body.startswith("---\n"):
        raise SystemCardError(
            f"{label}: a Markdown system card starts with YAML front matter: a line ---, the "
            "fields, a line ---"
        )
    closing = _FENCE.search(body, 4)
    if closing is None:
        raise SystemCardError(f"{label}: the front matter has no closing --- line")
    return body[4 : closing.start()], 2, body[closing.end() :]


def _check_keys(node: Any, label: str, pointer: str = "") -> None:
    """Keys are text: YAML reads `1:` or `yes:` as a number or a boolean, which JSON has no
    key for."""
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                raise SystemCardError(f"{label}: {pointer or '/'}: field name {key!r} is not text")
            _check_keys(value, label, f"{pointer}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _check_keys(value, label, f"{pointer}/{index}")


# --------------------------------------------------------------------------- the section


def declared_section(
    card: SystemCard | None,
    *,
    model_description: str | None = None,
    model_tags: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The `declared` section of an evidence record: the card's fields that hold a real value,
    and those the registered model supplies (tags ``system_card.<field>`` or
    ``system_card.<group>.<field>``, one item a line for a list; the description as the
    intended purpose), the card winning. Pure and deterministic; values bounded like evidence
    text and run through the records' redaction.

    ``placeholders`` lists the pointers (within the section) of values left out as
    placeholders; ``origins`` says where each value came from; ``redacted`` where a value that
    looked like a credential was replaced.
    """
    tags = model_tags or {}
    section: dict[str, Any] = {}
    placeholders: list[str] = []
    origins: dict[str, str] = {}
    for field in FIELDS:
        candidates: list[tuple[Any, str]] = []
        if card is not None:
            value = _at(card.fields, field.path)
            if value is not _MISSING:
                candidates.append((value, "system card"))
        if field.tag in tags and field.kind != "persons":
            tag = str(tags[field.tag])
            value = (
                [line for line in tag.splitlines() if line.strip()]
                if field.kind == "texts"
                else tag
            )
            candidates.append((value, f"registered model tag {field.tag}"))
        if field.path == ("intended_purpose",) and model_description is not None:
            candidates.append((model_description, "registered model description"))
        holes: list[str] = []
        for value, origin in candidates:
            kept, left_out = _clean(field, value)
            holes += left_out
            if kept is not None:
                _put(section, field.path, kept)
                origins[field.pointer] = origin
                holes = left_out  # the places left out of the value that was taken
                break
        placeholders += holes
    if card is not None and card.notes:
        section["notes"] = bounded(card.notes)
        origins["/notes"] = "system card"
    redacted = redact(section)
    return {
        "card": card.to_dict() if card is not None else None,
        **section,
        "placeholders": list(dict.fromkeys(placeholders)),  # in the card's order
        "origins": origins,
        "redacted": redacted,
    }


_MISSING = object()


def _at(fields: Mapping[str, Any], path: Sequence[str]) -> Any:
    """The value at `path`, None when written empty, `_MISSING` when not written at all."""
    node: Any = fields
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _put(section: dict[str, Any], path: Sequence[str], value: Any) -> None:
    node = section
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value


def _clean(field: Field, value: Any) -> tuple[Any, list[str]]:
    """(the value without its placeholders, or None if nothing real is left; the pointers of
    what was left out)."""
    if field.kind == "text":
        if not isinstance(value, str) or is_placeholder(value):
            return None, [field.pointer]
        return bounded(value.strip()), []
    if field.kind == "texts":
        items = [value] if isinstance(value, str) else list(value or ())
        kept = []
        holes = []
        for index, item in enumerate(items):
            if isinstance(item, str) and not is_placeholder(item):
                kept.append(bounded(item.strip()))
            else:
                holes.append(f"{field.pointer}/{index}" if len(items) > 1 else field.pointer)
        if not kept:
            return None, [field.pointer]
        return kept, holes
    people = []
    holes = []
    for index, person in enumerate(value if isinstance(value, list) else []):
        entry = {}
        for key in _PERSON_KEYS:
            text = person.get(key) if isinstance(person, Mapping) else None
            if isinstance(text, str) and not is_placeholder(text):
                entry[key] = bounded(text.strip())
            elif key != "email" or text is not None:
                holes.append(f"{field.pointer}/{index}/{key}")
        if entry:
            people.append(entry)
    if not people:
        return None, [field.pointer]
    return people, holes


FieldState = Literal["declared", "placeholder", "missing"]


def field_states(section: Mapping[str, Any]) -> dict[str, FieldState]:
    """Each field of the card (by pointer, in the card's order) as the `declared` rules see
    it: ``declared`` (a real value; for responsible persons, each with a name and a role),
    ``placeholder`` (only placeholders) or ``missing`` (nothing)."""
    held = section.get("origins", {})
    left_out = set(section.get("placeholders", ()))
    states: dict[str, FieldState] = {}
    for field in FIELDS:
        value = _at(section, field.path)
        complete = field.pointer in held and (
            field.kind != "persons" or all("name" in p and "role" in p for p in value)
        )
        if complete:
            states[field.pointer] = "declared"
        elif any(p == field.pointer or p.startswith(field.pointer + "/") for p in left_out):
            states[field.pointer] = "placeholder"
        else:
            states[field.pointer] = "missing"
    return states
