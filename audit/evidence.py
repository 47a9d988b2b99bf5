"""The evidence record: one normalised, plain-JSON document per MLflow run.

Sources (MLflow's client, a tracking server's JSON, the SQL tables) gather `RunFacts` in
whatever way is fastest for their store; `build_record` is the single place that turns facts into
a record, so that every source produces byte-identical records for the same MLflow data.

Everything in here is untrusted input read from MLflow: strings are bounded, JSON and YAML are
parsed with safe loaders only, nothing is executed or unpickled, and credential-looking values
are redacted (audit/redaction.py).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson
import rfc8785
import yaml

from audit import safeyaml
from audit.redaction import redact

SCHEMA_VERSION = "2.0"

#: Longest string kept from MLflow. MLflow itself caps tag values at 8,000 characters.
MAX_TEXT = 16_384
#: Largest artifact (MLmodel, requirements.txt, ...) read, in bytes.
MAX_ARTIFACT_BYTES = 1 << 20
#: Most requirement lines kept from one requirements file.
MAX_REQUIREMENTS = 5_000
#: JSON documents embedded in MLflow fields (dataset schema, profile, source) are parsed up to this.
MAX_EMBEDDED_JSON = 256 * 1024
#: RFC 8785 serialises numbers as IEEE doubles; larger integers would lose precision.
_MAX_SAFE_INTEGER = 2**53 - 1

# Names of files whose contents describe a Python environment, as MLflow writes them.
ENVIRONMENT_FILES = ("MLmodel", "requirements.txt", "python_env.yaml", "conda.yaml")
#: Those of them that are YAML.
YAML_FILES = frozenset({"MLmodel", "python_env.yaml", "conda.yaml"})

# Tags this record turns into fields; they are not repeated under `tags`.
_CONSUMED_TAGS = frozenset(
    {
        "mlflow.runName",
        "mlflow.user",
        "mlflow.parentRunId",
        "mlflow.source.type",
        "mlflow.source.name",
        "mlflow.source.git.commit",
        "mlflow.source.git.branch",
        "mlflow.source.git.repoURL",
        "mlflow.source.git.dirty",
        "mlflow.project.entryPoint",
        "mlflow.log-model.history",
    }
)

# Documented tags a team can set when MLflow does not record the fact itself
# (docs/evidence.md#the-environment).
PYTHON_VERSION_TAG = "python_version"
PLATFORM_TAG = "platform"

_TRAINING_CONTEXTS = frozenset({"train", "training"})
_EVALUATION_CONTEXTS = frozenset(
    {"eval", "evaluation", "validation", "valid", "val", "test", "testing", "holdout"}
)
_EVALUATION_METRIC_PREFIX = re.compile(
    r"^(eval|evaluation|validation|valid|val|test|testing|holdout)[_./-]", re.IGNORECASE
)
_TRAINING_METRIC_PREFIX = re.compile(r"^(train|training)[_./-]", re.IGNORECASE)
_INTERACTIVE_SOURCES = frozenset({"ipykernel_launcher.py", "<stdin>", "-c", "ipython", "<input>"})


# --------------------------------------------------------------------------- facts


@dataclass(frozen=True)
class DatasetFacts:
    name: str | None
    digest: str | None
    source_type: str | None
    source: str | None
    schema: str | None
    profile: str | None
    context: str | None


@dataclass(frozen=True)
class MetricFacts:
    key: str
    value: float
    step: int | None
    timestamp: int | None


@dataclass(frozen=True)
class ModelMetricFacts:
    """A metric attached to an MLflow 3 logged model, with the dataset it was computed on."""

    key: str
    value: float
    step: int | None
    dataset_name: str | None
    dataset_digest: str | None


@dataclass(frozen=True)
class ArtifactFiles:
    """Environment files found in one artifact directory; `uri` names the directory."""

    uri: str
    texts: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class RegisteredVersionFacts:
    name: str
    version: str
    aliases: tuple[str, ...]
    stage: str | None
    status: str | None
    description: str | None
    creation_time: int | None
    source: str | None
    run_id: str | None
    model_id: str | None
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LoggedModelFacts:
    model_id: str
    name: str | None
    status: str | None
    creation_time: int | None
    metrics: tuple[ModelMetricFacts, ...] = ()
    files: ArtifactFiles | None = None


@dataclass(frozen=True)
class RunFacts:
    """What a source read about one run, before normalisation."""

    run_id: str
    run_name: str | None
    experiment_id: str
    experiment_name: str | None
    status: str | None
    start_time: int | None
    end_time: int | None
    user: str | None
    lifecycle_stage: str | None
    params: Mapping[str, str]
    metrics: Sequence[MetricFacts]
    tags: Mapping[str, str]
    datasets: Sequence[DatasetFacts]
    logged_models: Sequence[LoggedModelFacts] = ()
    registered_versions: Sequence[RegisteredVersionFacts] = ()
    #: Environment files logged at the run's artifact root, and under each 2.x model's path.
    run_files: ArtifactFiles | None = None
    history_model_files: Mapping[str, ArtifactFiles] = field(default_factory=dict)
    artifacts_read: bool = False


# --------------------------------------------------------------------------- canonical form


def canonical_json(record: Any) -> bytes:
    """RFC 8785 canonical JSON: sorted keys, no whitespace, one spelling per number.

    Byte for byte what `rfc8785.dumps` returns (tests/test_canonical.py proves it on generated
    and real records), about 10 times faster (20 against 150 to 190 us for a 2.5 KB record).
    `_scan` looks at every value once; then orjson writes the record when its spelling of every
    value is ECMAScript's, integral floats turned into ints first (2.0 is "2" in ECMAScript);
    `_es_json` writes it when a float needs ECMAScript's own notation (1e-07 is "1e-7", 1e+16
    "10000000000000000"). orjson escapes strings exactly as RFC 8785 does (the two-character
    escapes, other control characters as lowercase \\u00xx, everything else as UTF-8) and sorts
    keys by code point, which is UTF-16 order for keys in the Basic Multilingual Plane.
    Anything else goes to `rfc8785` itself, errors included: integers beyond 2**53, keys
    outside the Basic Multilingual Plane (their UTF-16 order differs from code point order),
    non-string keys, NaN and infinities, subclasses and other types, lone surrogates.
    """
    flags = _scan(record)
    if not flags & _FALLBACK:
        try:
            if flags & _FLOAT:
                text = _es_json(record).encode("utf-8")
            else:
                text = orjson.dumps(
                    _ints_for_integral_floats(record) if flags else record, option=_ORJSON
                )
            # isascii() is constant time; the search runs only on non-ASCII text.
            if text.isascii() or not _NON_BMP.search(text) or not _non_bmp_key(record):
                return text
        except (ValueError, TypeError, RecursionError):  # orjson's errors are TypeErrors
            pass  # UnicodeEncodeError (a lone surrogate) is a ValueError: rfc8785 reports it
    return bytes(rfc8785.dumps(record))


#: Exact types only (`_scan` vouched for them): nothing orjson would write its own way.
_ORJSON = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_SUBCLASS
# The C string encoder json.dumps uses: escapes exactly what RFC 8785 escapes, the same way.
_ENCODE_STRING = (
    getattr(json.encoder, "c_encode_basestring", None) or json.encoder.encode_basestring
)
_NON_BMP = re.compile(b"[\\xf0-\\xf4]")  # the lead byte of a UTF-8 sequence beyond the BMP
_NON_BMP_TEXT = re.compile("[\\U00010000-\\U0010ffff]")
#: `_scan` results: integral floats to write as ints; a float in ECMAScript's own notation;
#: something only rfc8785 writes right.
_FIX = 1
_FLOAT = 2
_FALLBACK = 4


def _scan(node: Any, depth: int = 0) -> int:
    """Whether orjson's JSON of `node` is its RFC 8785 form (0), is once integral floats are
    ints (_FIX), `_es_json` is needed for a float (_FLOAT), or only rfc8785 will do
    (_FALLBACK). Exact types only: subclasses go to rfc8785. Keys outside the Basic
    Multilingual Plane are looked for in the text written, where they are rare and cheap to
    rule out."""
    kind = type(node)
    if kind is dict:
        if depth > 256:
            return _FALLBACK
        flags = 0
        for key, value in node.items():
            if type(key) is not str:
                return _FALLBACK
            kind = type(value)
            if kind is str or value is None or kind is bool:
                continue
            if kind is int:  # inline: no call for the commonest numbers
                if -_MAX_SAFE_INTEGER <= value <= _MAX_SAFE_INTEGER:
                    continue
                return _FALLBACK
            flags |= _scan(value, depth + 1)
            if flags & _FALLBACK:
                return flags
        return flags
    if kind is list or kind is tuple:
        if depth > 256:
            return _FALLBACK
        flags = 0
        for value in node:
            kind = type(value)
            if kind is str or value is None or kind is bool:
                continue
            if kind is int:
                if -_MAX_SAFE_INTEGER <= value <= _MAX_SAFE_INTEGER:
                    continue
                return _FALLBACK
            flags |= _scan(value, depth + 1)
            if flags & _FALLBACK:
                return flags
        return flags
    if kind is str or kind is bool or node is None:
        return 0
    if kind is int:
        return 0 if -_MAX_SAFE_INTEGER <= node <= _MAX_SAFE_INTEGER else _FALLBACK
    if kind is float:
        text = float.__repr__(node)
        if "e" not in text and not text.endswith(".0") and text[-1].isdigit():
            return 0  # plain notation, not integral: Python and ECMAScript agree
        if node.is_integer() and -_MAX_SAFE_INTEGER <= node <= _MAX_SAFE_INTEGER:
            return _FIX  # also -0.0, which both write as 0
        return _FLOAT if math.isfinite(node) else _FALLBACK
    return _FALLBACK


def _non_bmp_key(node: Any) -> bool:
    """Whether a key outside the Basic Multilingual Plane is anywhere in `node`."""
    if type(node) is dict:
        return any(
            _NON_BMP_TEXT.search(key) is not None or _non_bmp_key(value)
            for key, value in node.items()
        )
    if type(node) is list or type(node) is tuple:
        return any(_non_bmp_key(value) for value in node)
    return False


def _ints_for_integral_floats(node: Any) -> Any:
    """A copy of what `_scan` marked _FIX with each integral float as its int."""
    kind = type(node)
    if kind is dict:
        return {key: _ints_for_integral_floats(value) for key, value in node.items()}
    if kind is list or kind is tuple:
        return [_ints_for_integral_floats(value) for value in node]
    if kind is float:
        return int(node) if node.is_integer() else node
    return node


def _es_json(node: Any) -> str:
    """JSON text of a value `_scan` vouched for, with ECMAScript's spelling of every float."""
    kind = type(node)
    if kind is str:
        return str(_ENCODE_STRING(node))
    if kind is dict:
        # Keys are strings in the Basic Multilingual Plane: code point order is UTF-16 order.
        return (
            "{"
            + ",".join(f"{_ENCODE_STRING(key)}:{_es_json(node[key])}" for key in sorted(node))
            + "}"
        )
    if kind is list or kind is tuple:
        return "[" + ",".join([_es_json(value) for value in node]) + "]"
    if kind is float:
        return _es_float(node)
    if node is None:
        return "null"
    if kind is bool:
        return "true" if node else "false"
    return str(int(node))


def _es_float(value: float) -> str:
    """ECMAScript's Number::toString of a finite float (ECMA-262 7.1.12.1, RFC 8785 3.2.2.3)."""
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    mantissa, _, exponent = float.__repr__(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    point = len(whole) + (int(exponent) if exponent else 0)
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    # `digits` are the shortest round-trip digits, the value is 0.digits * 10**point
    count = len(digits)
    if count <= point <= 21:
        return sign + digits + "0" * (point - count)
    if 0 < point <= 21:
        return f"{sign}{digits[:point]}.{digits[point:]}"
    if -6 < point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    power = point - 1
    mark = "+" if power >= 0 else "-"
    head = digits if count == 1 else f"{digits[0]}.{digits[1:]}"
    return f"{sign}{head}e{mark}{abs(power)}"


def sha256_hex(record: Any) -> str:
    return hashlib.sha256(canonical_json(record)).hexdigest()


def bounded(value: object, limit: int = MAX_TEXT) -> str:
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[truncated {len(text) - limit} characters]"


def _bounded_map(items: Iterable[tuple[Any, Any]], key_limit: int = 1024) -> dict[str, str]:
    """`{bounded(k, key_limit): bounded(v) for k, v in items}`, without the calls for the
    strings that fit, which are nearly all of them."""
    return {
        (k if type(k) is str and len(k) <= key_limit else bounded(k, key_limit)): (
            v if type(v) is str and len(v) <= MAX_TEXT else bounded(v)
        )
        for k, v in items
    }


def _optional_text(value: object) -> str | None:
    return None if value is None or value == "" else bounded(value)


def json_number(value: float | int) -> float | int | str:
    """A metric value as JSON: non-finite floats as the strings protobuf's JSON mapping uses."""
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, int) and abs(value) > _MAX_SAFE_INTEGER:
        return str(value)
    return value


@functools.lru_cache(maxsize=4096, typed=True)  # a run's metrics often share a timestamp
def iso_time(millis: int | None) -> str | None:
    if millis is None:
        return None
    try:
        moment = datetime.fromtimestamp(millis / 1000, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None
    if moment.year < 1000:  # strftime's %Y does not pad these on every platform
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return (
        f"{moment.year}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:"
        f"{moment.minute:02d}:{moment.second:02d}.{moment.microsecond // 1000:03d}Z"
    )


def _parse_embedded_json(text: str | None) -> Any:
    """Parse a JSON document MLflow stores inside a string field; keep the text if it is not."""
    if text is None or text == "":
        return None
    if len(text) > MAX_EMBEDDED_JSON:
        return bounded(text)
    if len(text) <= _CACHED_JSON_TEXT:
        bounded_json = _bounded_json(text)
        # A fresh copy for each record (redaction edits records in place), from C's parser.
        return bounded(text) if bounded_json is None else json.loads(bounded_json)
    try:
        return _bounded_tree(json.loads(text))
    except (ValueError, RecursionError):
        return bounded(text)


#: Dataset schemas, profiles and sources recur run after run (the same data set trains many
#: runs): up to this size their bounded form is kept, as JSON text, for the next record.
_CACHED_JSON_TEXT = 16_384


@functools.lru_cache(maxsize=512)
def _bounded_json(text: str) -> str | None:
    try:
        return json.dumps(_bounded_tree(json.loads(text)), ensure_ascii=False)
    except (ValueError, RecursionError):
        return None


def _bounded_tree(value: Any, depth: int = 0) -> Any:
    """Copy a parsed JSON/YAML value with strings bounded and non-finite numbers spelled out."""
    if depth > 32:
        return "[nested too deep]"
    # What json.loads returns, by exact type first: the same values as the general case below.
    kind = type(value)
    if kind is str:
        return value if len(value) <= MAX_TEXT else bounded(value)
    if kind is dict:
        return {
            (k if type(k) is str and len(k) <= 256 else bounded(k, 256)): _bounded_tree(
                v, depth + 1
            )
            for k, v in value.items()
        }
    if kind is list:
        return [_bounded_tree(v, depth + 1) for v in value]
    if kind is float or kind is int:
        return json_number(value)
    if isinstance(value, str):
        return bounded(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return json_number(value)
    if isinstance(value, Mapping):
        return {bounded(k, 256): _bounded_tree(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_bounded_tree(v, depth + 1) for v in value]
    return bounded(value)


def _safe_yaml(text: str | None) -> Any:
    """An artifact's YAML, or None when it is not YAML or would expand beyond the bounds
    (`audit.safeyaml`; the sources note why when they read it)."""
    if not text:
        return None
    try:
        return safeyaml.load(text)
    except (yaml.YAMLError, RecursionError):
        return None


# --------------------------------------------------------------------------- sections


def _run_section(facts: RunFacts) -> dict[str, Any]:
    return {
        "id": facts.run_id,
        "name": _optional_text(facts.run_name or facts.tags.get("mlflow.runName")),
        "experiment_id": facts.experiment_id,
        "experiment_name": _optional_text(facts.experiment_name),
        "status": facts.status,
        "start_time": iso_time(facts.start_time),
        "end_time": iso_time(facts.end_time),
        "user": _optional_text(facts.user or facts.tags.get("mlflow.user")),
        "lifecycle_stage": facts.lifecycle_stage,
        "parent_run_id": _optional_text(facts.tags.get("mlflow.parentRunId")),
    }


def _source_section(tags: Mapping[str, str]) -> dict[str, Any]:
    source_type = _optional_text(tags.get("mlflow.source.type"))
    name = _optional_text(tags.get("mlflow.source.name"))
    commit = tags.get("mlflow.source.git.commit") or tags.get("mlflow.databricks.gitRepoCommit")
    repo_url = tags.get("mlflow.source.git.repoURL") or tags.get("mlflow.databricks.gitRepoUrl")
    dirty = tags.get("mlflow.source.git.dirty")
    basename = re.split(r"[\\/]", name)[-1].lower() if name else ""
    # Unknown (None) when MLflow recorded neither the source type nor its name.
    interactive = (
        None
        if source_type is None and name is None
        else (source_type or "").upper() == "NOTEBOOK"
        or basename in _INTERACTIVE_SOURCES
        or basename.endswith(".ipynb")
    )
    return {
        "type": source_type,
        "name": name,
        "entry_point": _optional_text(tags.get("mlflow.project.entryPoint")),
        "git_commit": _optional_text(commit),
        "git_branch": _optional_text(tags.get("mlflow.source.git.branch")),
        "git_repo_url": _optional_text(repo_url),
        "git_dirty": None if dirty is None else dirty.strip().lower() == "true",
        "interactive": interactive,
    }


def dataset_context(context: str | None) -> str:
    """Group MLflow's free-form `mlflow.data.context` into training, evaluation or other."""
    normalised = (context or "").strip().lower()
    if normalised in _TRAINING_CONTEXTS:
        return "training"
    if normalised in _EVALUATION_CONTEXTS:
        return "evaluation"
    return "other"


def _source_uri(source: Any) -> str | None:
    if isinstance(source, Mapping):
        for key in ("uri", "url", "path", "table_name", "dataset_source", "location"):
            value = source.get(key)
            if isinstance(value, str) and value:
                return value
    return None


def _column_count(schema: Any) -> int | None:
    if isinstance(schema, Mapping):
        for key in ("mlflow_colspec", "mlflow_tensorspec", "fields", "columns"):
            columns = schema.get(key)
            if isinstance(columns, list):
                return len(columns)
    return None


def _dataset_entry(dataset: DatasetFacts) -> dict[str, Any]:
    source = _parse_embedded_json(dataset.source)
    schema = _parse_embedded_json(dataset.schema)
    profile = _parse_embedded_json(dataset.profile)
    rows = profile.get("num_rows") if isinstance(profile, Mapping) else None
    return {
        "name": _optional_text(dataset.name),
        "digest": _optional_text(dataset.digest),
        "context": _optional_text(dataset.context),
        "source_type": _optional_text(dataset.source_type),
        "source_uri": _optional_text(_source_uri(source)),
        "source": source,
        "schema": schema,
        "profile": profile,
        "rows": rows if isinstance(rows, int) and not isinstance(rows, bool) else None,
        "columns": _column_count(schema),
    }


#: How a dataset's role (training or evaluation) was known, strongest first: the context it was
#: logged with; the same content (digest) as a training dataset; MLflow's link between a metric
#: and the dataset it was computed on; its name alone.
ROLE_SOURCES = ("context", "digest", "metric", "name")


class _Roles:
    """The role of each dataset input of a run, and of each metric, from the evidence MLflow
    holds (see `ROLE_SOURCES`)."""

    def __init__(self, facts: RunFacts) -> None:
        self.links: dict[str, list[ModelMetricFacts]] = {}
        for model in facts.logged_models:
            for linked in model.metrics:
                if linked.dataset_name is not None or linked.dataset_digest is not None:
                    self.links.setdefault(linked.key, []).append(linked)
        linked_keys: dict[tuple[str | None, str | None], set[str]] = {}
        for key, links in self.links.items():
            for link in links:
                linked_keys.setdefault((link.dataset_name, link.dataset_digest), set()).add(key)
        self.training_digests = {
            d.digest
            for d in facts.datasets
            if d.digest and dataset_context(d.context) == "training"
        }
        #: Each dataset's (role, how it was known), in the order of `facts.datasets`.
        self.of: list[tuple[str, str | None]] = []
        self.by_name: dict[str, tuple[DatasetFacts, str]] = {}
        #: The datasets known as training data from their metrics only, by (name, digest).
        self.trained_on: set[tuple[str | None, str | None]] = set()
        for dataset in facts.datasets:
            role = self._dataset_role(dataset, linked_keys.get((dataset.name, dataset.digest)))
            self.of.append(role)
            if role == ("training", "metric"):
                self.trained_on.add((dataset.name, dataset.digest))
            if dataset.name and dataset.name not in self.by_name:
                self.by_name[dataset.name] = (dataset, role[0])

    def _dataset_role(
        self, dataset: DatasetFacts, linked_keys: set[str] | None
    ) -> tuple[str, str | None]:
        context = dataset_context(dataset.context)
        same_as_training = bool(dataset.digest) and dataset.digest in self.training_digests
        if context == "training":
            return "training", "context"
        if same_as_training:
            # Logged for evaluation, yet the training data itself (LightGBM and XGBoost log
            # the training set again when it is passed as a validation set): not held out.
            return "training", "digest"
        if context == "evaluation":
            return "evaluation", "context"
        if linked_keys:
            if all(_TRAINING_METRIC_PREFIX.match(key) for key in linked_keys):
                return "training", "metric"
            return "evaluation", "metric"
        named = _name_role(dataset.name or "")
        return (named, "name") if named else ("other", None)

    def metric(
        self, key: str, value: float
    ) -> tuple[str | None, str | None, dict[str, Any] | None]:
        """(context, context_from, dataset) of a metric: from MLflow's link to the dataset it
        was computed on (a dataset that is not the training set is evaluation data), else from
        its name: an autologged validation set's name (LightGBM, XGBoost: ``valid-auc``), a
        prefix (``val_loss``, ``test_accuracy``) or autologging's suffix (``f1_score_X_test``)."""
        links = self.links.get(key)
        if links:
            # The link whose value matches the run's latest value, then a stable order.
            link = min(
                links,
                key=lambda m: (m.value != value, m.dataset_name or "", m.dataset_digest or ""),
            )
            dataset = {"name": _optional_text(link.dataset_name), "digest": link.dataset_digest}
            training = link.dataset_digest in self.training_digests or (
                (link.dataset_name, link.dataset_digest) in self.trained_on
            )
            return ("training" if training else "evaluation"), "dataset", dataset
        prefix = _LIBRARY_METRIC.match(key) if "-" in key and self.by_name else None
        if prefix and prefix.group(1) in self.by_name:
            found, role = self.by_name[prefix.group(1)]
            if role in ("training", "evaluation"):
                return role, "name", {"name": _optional_text(found.name), "digest": found.digest}
        named = _name_context(key)
        return named, ("name" if named else None), None


def _data_section(facts: RunFacts, roles: _Roles) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {"training": [], "evaluation": [], "other": []}
    for dataset, (role, role_from) in zip(facts.datasets, roles.of, strict=True):
        entry = _dataset_entry(dataset)
        entry["role_from"] = role_from
        groups[role].append(entry)
    for entries in groups.values():
        entries.sort(key=lambda d: (d["name"] or "", d["digest"] or "", d["context"] or ""))
    return groups


# A dataset or variable name that says which data it is: `train_data`, `X_test`, `iris-valid`.
_TRAINING_NAME = re.compile(r"(?<![a-z])(train|training)(?![a-z])")
_EVALUATION_NAME = re.compile(
    r"(?<![a-z])(test|testing|val|valid|validation|eval|evaluation|holdout)(?![a-z])"
)
# `{name}-{metric}`: LightGBM's and XGBoost's metrics on a named validation set.
_LIBRARY_METRIC = re.compile(r"^([^-]+)-.")
# `{metric}[-{n}]_{variable}[-{n}]`: scikit-learn autologging's metrics after training, named
# by the variable passed to predict or score (`f1_score_X_test`, `LogisticRegression_score_X_val`).
_AUTOLOG_SUFFIX = re.compile(r"_([A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)?)(?:-[0-9]+)?$")


def _name_role(name: str) -> str | None:
    """What a name alone says: training, evaluation, or nothing (neither, or both)."""
    lowered = name.lower()
    training = _TRAINING_NAME.search(lowered) is not None
    evaluation = _EVALUATION_NAME.search(lowered) is not None
    if training == evaluation:
        return None
    return "training" if training else "evaluation"


@functools.lru_cache(maxsize=8192)
def _name_context(key: str) -> str | None:
    if _EVALUATION_METRIC_PREFIX.match(key):
        return "evaluation"
    if _TRAINING_METRIC_PREFIX.match(key):
        return "training"
    suffix = _AUTOLOG_SUFFIX.search(key)
    if suffix and suffix.start() > 0:
        return _name_role(suffix.group(1))
    return None


def _metrics_sections(
    facts: RunFacts, roles: _Roles
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    metrics: list[dict[str, Any]] = []
    system: list[dict[str, Any]] = []
    for metric in sorted(facts.metrics, key=lambda m: m.key):
        entry: dict[str, Any] = {
            "key": bounded(metric.key, 1024),
            "value": json_number(metric.value),
            "step": None if metric.step is None else json_number(metric.step),
            "timestamp": iso_time(metric.timestamp),
        }
        if metric.key.startswith("system/"):
            system.append(entry)
            continue
        context, context_from, dataset = roles.metric(metric.key, metric.value)
        entry.update(context=context, context_from=context_from, dataset=dataset)
        metrics.append(entry)
    return metrics, system


# --------------------------------------------------------------------------- environment


def parse_requirements(text: str) -> list[dict[str, Any]]:
    """Parse pip requirement lines; options (-r, --index-url) and comments are not requirements."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    entries: list[dict[str, Any]] = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        if len(entries) >= MAX_REQUIREMENTS:
            break
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            entries.append(
                {"name": None, "specifier": None, "pinned": False, "line": bounded(line, 1024)}
            )
            continue
        specifiers = list(requirement.specifier)
        pinned = (
            len(specifiers) == 1
            and specifiers[0].operator in ("==", "===")
            and "*" not in specifiers[0].version
        ) or bool(requirement.url and re.search(r"(@[0-9a-f]{40}\b|#sha256=)", requirement.url))
        entries.append(
            {
                "name": canonicalize_name(requirement.name),
                "specifier": str(requirement.specifier) or None,
                "pinned": pinned,
                "line": bounded(line, 1024),
            }
        )
    return entries


def _conda_environment(conda: Any) -> tuple[str | None, list[str]]:
    python_version = None
    pip_lines: list[str] = []
    dependencies = conda.get("dependencies") if isinstance(conda, Mapping) else None
    for dependency in dependencies if isinstance(dependencies, list) else ():
        if isinstance(dependency, str):
            match = re.fullmatch(r"python\s*=+\s*([0-9][0-9.]*)", dependency.strip())
            if match:
                python_version = match.group(1)
        elif isinstance(dependency, Mapping) and isinstance(dependency.get("pip"), list):
            pip_lines.extend(str(line) for line in dependency["pip"])
    return python_version, pip_lines


def _environment_from_files(files: ArtifactFiles) -> dict[str, Any]:
    """Python version, MLflow version and requirements found in one artifact directory."""
    found: dict[str, Any] = {}
    mlmodel = _safe_yaml(files.texts.get("MLmodel"))
    python_env = _safe_yaml(files.texts.get("python_env.yaml"))
    conda = _safe_yaml(files.texts.get("conda.yaml"))
    conda_python, conda_pip = _conda_environment(conda)
    if isinstance(python_env, Mapping) and isinstance(python_env.get("python"), str | float):
        found["python_version"] = (str(python_env["python"]), f"{files.uri}/python_env.yaml")
    elif conda_python:
        found["python_version"] = (conda_python, f"{files.uri}/conda.yaml")
    elif isinstance(mlmodel, Mapping):
        pyfunc = (mlmodel.get("flavors") or {}).get("python_function")
        if isinstance(pyfunc, Mapping) and isinstance(pyfunc.get("python_version"), str):
            found["python_version"] = (pyfunc["python_version"], f"{files.uri}/MLmodel")
    if isinstance(mlmodel, Mapping) and isinstance(mlmodel.get("mlflow_version"), str):
        found["mlflow_version"] = (mlmodel["mlflow_version"], f"{files.uri}/MLmodel")
    if "requirements.txt" in files.texts:
        found["requirements"] = (
            parse_requirements(files.texts["requirements.txt"]),
            f"{files.uri}/requirements.txt",
        )
    elif conda_pip:
        found["requirements"] = (
            parse_requirements("\n".join(conda_pip)),
            f"{files.uri}/conda.yaml",
        )
    return found


def _environment_section(facts: RunFacts, file_sets: Sequence[ArtifactFiles]) -> dict[str, Any]:
    """The run's environment: first the models' own files (newest first), then run artifacts,
    then the documented tags. Each value says where it came from."""
    merged: dict[str, tuple[Any, str]] = {}
    for files in file_sets:
        for key, found in _environment_from_files(files).items():
            merged.setdefault(key, found)
    if PYTHON_VERSION_TAG in facts.tags:
        merged.setdefault(
            "python_version",
            (bounded(facts.tags[PYTHON_VERSION_TAG], 64), f"tag:{PYTHON_VERSION_TAG}"),
        )
    requirements = merged.get("requirements")
    if "mlflow_version" not in merged and requirements:
        for requirement in requirements[0]:
            if requirement["name"] in ("mlflow", "mlflow-skinny") and requirement["pinned"]:
                version = str(requirement["specifier"]).lstrip("=")
                merged["mlflow_version"] = (version, requirements[1])
                break
    platform = facts.tags.get(PLATFORM_TAG)

    def value(key: str) -> Any:
        return merged[key][0] if key in merged else None

    def origin(key: str) -> str | None:
        return merged[key][1] if key in merged else None

    return {
        "python_version": value("python_version"),
        "python_version_from": origin("python_version"),
        "mlflow_version": value("mlflow_version"),
        "platform": _optional_text(platform),
        "platform_from": f"tag:{PLATFORM_TAG}" if platform else None,
        "requirements": value("requirements"),
        "requirements_from": origin("requirements"),
    }


# --------------------------------------------------------------------------- models


def _signature(raw: Any) -> dict[str, Any] | None:
    if not isinstance(raw, Mapping):
        return None
    parts = {
        part: _parse_embedded_json(raw.get(part)) if isinstance(raw.get(part), str) else None
        for part in ("inputs", "outputs", "params")
    }
    if parts["inputs"] is None and parts["outputs"] is None:
        return None
    return parts


def _model_details(mlmodel: Any) -> dict[str, Any]:
    if not isinstance(mlmodel, Mapping):
        return {"flavors": None, "mlflow_version": None, "signature": None, "input_example": None}
    flavors = mlmodel.get("flavors")
    return {
        "flavors": sorted(bounded(f, 256) for f in flavors) if isinstance(flavors, Mapping) else [],
        "mlflow_version": _optional_text(mlmodel.get("mlflow_version")),
        "signature": _signature(mlmodel.get("signature")),
        "input_example": isinstance(mlmodel.get("saved_input_example_info"), Mapping),
    }


def _version_entry(version: RegisteredVersionFacts) -> dict[str, Any]:
    return {
        "name": bounded(version.name, 1024),
        "version": version.version,
        "aliases": sorted(bounded(a, 256) for a in version.aliases),
        "stage": _optional_text(version.stage),
        "status": _optional_text(version.status),
        "description": _optional_text(version.description),
        "created": iso_time(version.creation_time),
        "tags": {bounded(k, 1024): bounded(v) for k, v in sorted(version.tags.items())},
    }


def model_history(tags: Mapping[str, str]) -> list[Mapping[str, Any]]:
    """The `mlflow.log-model.history` tag MLflow 2.x writes for each logged model."""
    parsed = _parse_embedded_json(tags.get("mlflow.log-model.history"))
    if not isinstance(parsed, list):
        return []
    return [entry for entry in parsed if isinstance(entry, Mapping) and entry.get("artifact_path")]


def _version_matches(
    version: RegisteredVersionFacts, run_id: str, model_id: str | None, artifact_path: str | None
) -> bool:
    source = version.source or ""
    if model_id is not None:
        return version.model_id == model_id or source.rstrip("/") == f"models:/{model_id}"
    if artifact_path is None:
        return False
    path = artifact_path.strip("/")
    return source.rstrip("/") in (f"runs:/{run_id}/{path}",) or source.rstrip("/").endswith(
        f"/{run_id}/artifacts/{path}"
    )


def _models_section(facts: RunFacts) -> tuple[list[dict[str, Any]], list[ArtifactFiles]]:
    """Models produced by the run, newest first, and their environment files in that order."""
    models: list[dict[str, Any]] = []
    file_sets: list[ArtifactFiles] = []
    unmatched = list(facts.registered_versions)

    def take_versions(model_id: str | None, artifact_path: str | None) -> list[dict[str, Any]]:
        matched = [
            v for v in unmatched if _version_matches(v, facts.run_id, model_id, artifact_path)
        ]
        for version in matched:
            unmatched.remove(version)
        return [_version_entry(v) for v in _sorted_versions(matched)]

    logged = sorted(facts.logged_models, key=lambda m: (-(m.creation_time or 0), m.model_id))
    for model in logged:
        mlmodel = _safe_yaml(model.files.texts.get("MLmodel")) if model.files else None
        details = (
            _model_details(mlmodel)
            if model.files is not None
            else {"flavors": None, "mlflow_version": None, "signature": None, "input_example": None}
        )
        if model.files is not None:
            file_sets.append(model.files)
        models.append(
            {
                "model_id": model.model_id,
                "name": _optional_text(model.name),
                "uri": f"models:/{model.model_id}",
                "origin": "logged_model",
                "status": _optional_text(model.status),
                "created": iso_time(model.creation_time),
                **details,
                "registered_versions": take_versions(model.model_id, None),
            }
        )

    history = sorted(
        model_history(facts.tags),
        key=lambda e: (str(e.get("utc_time_created") or ""), str(e["artifact_path"])),
        reverse=True,
    )
    for entry in history:
        artifact_path = str(entry["artifact_path"])
        files = facts.history_model_files.get(artifact_path)
        if files is not None:
            file_sets.append(files)
        # From about MLflow 2.15 the history tag no longer carries the signature and the input
        # example; the model's MLmodel file, when it was read, still does.
        mlmodel = _safe_yaml(files.texts.get("MLmodel")) if files is not None else None
        if isinstance(mlmodel, Mapping):
            entry = {**mlmodel, **{k: v for k, v in entry.items() if v is not None}}
        flavors = entry.get("flavors")
        models.append(
            {
                "model_id": _optional_text(entry.get("model_uuid")),
                "name": bounded(artifact_path, 1024),
                "uri": f"runs:/{facts.run_id}/{bounded(artifact_path, 1024)}",
                "origin": "run_artifacts",
                "status": None,
                "created": _optional_text(entry.get("utc_time_created")),
                "flavors": sorted(bounded(f, 256) for f in flavors)
                if isinstance(flavors, Mapping)
                else None,
                "mlflow_version": _optional_text(entry.get("mlflow_version")),
                "signature": _signature(entry.get("signature")),
                "input_example": isinstance(entry.get("saved_input_example_info"), Mapping),
                "registered_versions": take_versions(None, artifact_path),
            }
        )

    # Versions registered from this run whose model this record could not identify.
    for version in _sorted_versions(unmatched):
        models.append(
            {
                "model_id": version.model_id,
                "name": bounded(version.name, 1024),
                "uri": _optional_text(version.source),
                "origin": "registry",
                "status": _optional_text(version.status),
                "created": iso_time(version.creation_time),
                "flavors": None,
                "mlflow_version": None,
                "signature": None,
                "input_example": None,
                "registered_versions": [_version_entry(version)],
            }
        )
    if facts.run_files is not None:
        file_sets.append(facts.run_files)
    return models, file_sets


def _sorted_versions(versions: Iterable[RegisteredVersionFacts]) -> list[RegisteredVersionFacts]:
    return sorted(versions, key=lambda v: (v.name, int(v.version) if v.version.isdigit() else 0))


# --------------------------------------------------------------------------- record


def build_record(facts: RunFacts) -> dict[str, Any]:
    """Normalise one run's facts into its evidence record (schemas/evidence-record.schema.json)."""
    return record_and_digest(facts)[0]


def record_and_digest(facts: RunFacts) -> tuple[dict[str, Any], str]:
    """`build_record`, and the record's sha256 (`sha256_hex`), from one canonical encoding:
    the text redaction screens for secrets is the one the digest is taken of, unless redaction
    changed the record."""
    # Here, before any digest or output exists, so that a secret logged to MLflow reaches
    # neither the evidence sha256 nor any report.
    return sealed(_unredacted_record(facts))


def sealed(record: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The record with its secrets redacted in place (`collection.redacted` lists where), and
    its sha256, from one canonical encoding unless redaction changed the record."""
    text = canonical_json(record)
    redacted = redact(record, screen=text.decode("utf-8"))
    if redacted:
        before = record["collection"]["redacted"]
        record["collection"]["redacted"] = sorted({*before, *redacted}) if before else redacted
        text = canonical_json(record)
    return record, hashlib.sha256(text).hexdigest()


def _unredacted_record(facts: RunFacts) -> dict[str, Any]:
    """The record as `record_and_digest` screens it for secrets (benchmarks/bench_scale.py
    --floor builds only this)."""
    models, file_sets = _models_section(facts)
    roles = _Roles(facts)
    metrics, system_metrics = _metrics_sections(facts, roles)
    notes = sorted(
        {
            note
            for files in (facts.run_files, *facts.history_model_files.values())
            if files
            for note in files.notes
        }
        | {note for model in facts.logged_models if model.files for note in model.files.notes}
    )
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run": _run_section(facts),
        "source": _source_section(facts.tags),
        "data": _data_section(facts, roles),
        "hyperparameters": _bounded_map(sorted(facts.params.items())),
        "metrics": metrics,
        "system_metrics": system_metrics,
        "environment": _environment_section(facts, file_sets),
        "models": models,
        "tags": _bounded_map(
            (k, v) for k, v in sorted(facts.tags.items()) if k not in _CONSUMED_TAGS
        ),
        "collection": {"artifacts_read": facts.artifacts_read, "notes": notes, "redacted": []},
    }
    return record
