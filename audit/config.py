"""Configuration files: the gate's settings kept in the repository, with where each came from.

Settings live in ``[tool.mlflow-audit]`` of ``pyproject.toml`` or at the top level of
``mlflow-audit.toml``, found from the working directory upwards, or named by ``--config`` or
``MLFLOW_AUDIT_CONFIG``. Each setting is then taken from the first layer that has it: the command
line, the environment (``MLFLOW_AUDIT_<KEY>``, ``MLFLOW_TRACKING_URI``), the file, the built-in
default; `resolve` records which one it was, so ``mlflow-audit config`` can say.

Relative paths in a file are relative to the file's folder, whatever the working directory:
a configuration committed at the top of a repository must mean the same files from every
subfolder. Paths on the command line or in the environment keep their usual meaning (relative to
the working directory). See docs/configuration.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import functools
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, unquote, urlsplit

from audit.datafiles import check_against, read_data_file
from audit.errors import AuditError
from audit.gate import WEBHOOK_SECRET_ENV

CONFIG_ENV = "MLFLOW_AUDIT_CONFIG"
ENV_PREFIX = "MLFLOW_AUDIT_"
OWN_FILE = "mlflow-audit.toml"
PYPROJECT = "pyproject.toml"
TABLE = "tool.mlflow-audit"
COMMANDS = ("check", "report", "export", "diff", "verify-deploy", "serve")
SCHEMA = "config.schema.json"
_MAX_CONFIG_BYTES = 1 << 20
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})

Kind = Literal["text", "texts", "int", "number", "bool", "choice"]
# How a relative value read from a file is made absolute: "" = not a path.
PathKind = Literal["", "path", "policy", "tracking_uri"]


class ConfigError(AuditError):
    """The configuration cannot be used: the command stops (exit 2) rather than guess."""


@dataclass(frozen=True)
class Key:
    """One setting: its name in files and in `resolve`'s result, and its command-line option."""

    name: str  # "fail_on"; keys of the report table carry a "report." prefix
    kind: Kind
    default: Any
    dest: str  # the argparse dest of its option
    flag: str  # the option as the user types it, for "command line --flag"
    commands: tuple[str, ...]
    paths: PathKind = ""
    # report.pdf is the --no-pdf flag turned around: True in the file means the flag is absent.
    inverted: bool = False

    @property
    def env(self) -> str:
        if self.name == "tracking_uri":
            return "MLFLOW_TRACKING_URI"  # MLflow's own variable, so one setting serves both
        return ENV_PREFIX + self.name.upper().replace(".", "_")


#: The commands that audit a selection of runs.
_AUDITS = ("check", "report", "export")
#: What every command that reads a store takes: where and how, and the policy.
_STORE = ("check", "report", "export", "diff", "verify-deploy", "serve")
_CHECK = ("check",)
_REPORT = ("report",)

_KEY_LIST = (
    Key("tracking_uri", "text", None, "tracking_uri", "--tracking-uri", _STORE, "tracking_uri"),
    Key("experiments", "texts", (), "experiment", "--experiment", _AUDITS),
    Key("run_ids", "texts", (), "run_id", "--run-id", _AUDITS),
    Key("models", "texts", (), "model", "--model", _AUDITS),
    Key("filter", "text", None, "filter", "--filter", _AUDITS),
    Key("include_deleted", "bool", False, "include_deleted", "--include-deleted", _AUDITS),
    Key("max_runs", "int", None, "max_runs", "--max-runs", _AUDITS),
    Key("search_page_size", "int", 50_000, "search_page_size", "--search-page-size", _AUDITS),
    Key("timeout", "int", None, "timeout", "--timeout", _STORE),
    Key(
        "allow_artifact_locations",
        "texts",
        (),
        "allow_artifact_location",
        "--allow-artifact-location",
        _STORE,
    ),
    Key("policy", "text", "eu-ai-act-high-risk", "policy", "--policy", _STORE, "policy"),
    Key("fail_on", "choice", "error", "fail_on", "--fail-on", _CHECK),
    Key("min_score", "number", None, "min_score", "--min-score", _CHECK),
    Key("waivers", "text", None, "waivers", "--waivers", _AUDITS, "path"),
    Key("system_card", "text", None, "system_card", "--system-card", _STORE, "path"),
    Key("format", "choice", "table", "format", "--format", _CHECK),
    Key("output", "text", None, "output", "--output", _CHECK, "path"),
    Key("junit_xml", "text", None, "junit_xml_file", "--junit-xml", _CHECK, "path"),
    Key("sarif", "text", None, "sarif_file", "--sarif", _CHECK, "path"),
    Key("markdown", "text", None, "markdown_file", "--markdown", _CHECK, "path"),
    Key("csv", "text", None, "csv_file", "--csv", _CHECK, "path"),
    Key("json", "text", None, "json_file", "--json", _CHECK, "path"),
    Key("report.out", "text", None, "out", "--out", _REPORT, "path"),
    Key("report.organisation", "text", None, "organisation", "--organisation", _REPORT),
    Key("report.author", "text", None, "author", "--author", _REPORT),
    Key("report.page_size", "choice", "A4", "page_size", "--page-size", _REPORT),
    Key("report.template_dir", "text", None, "template_dir", "--template-dir", _REPORT, "path"),
    Key("report.pdf", "bool", True, "no_pdf", "--no-pdf", _REPORT, inverted=True),
    Key("report.jobs", "int", None, "jobs", "--jobs", _REPORT),
    # The report's gate is its own: a repository's `fail_on` is meant for `check`, and applying
    # it to `report` would fail a documentation job that, by default, documents gaps.
    Key("report.fail_on", "choice", "never", "fail_on", "--fail-on", _REPORT),
    Key("report.min_score", "number", None, "min_score", "--min-score", _REPORT),
)

#: Every setting by name, in the order `mlflow-audit config` shows them.
KEYS: Mapping[str, Key] = {key.name: key for key in _KEY_LIST}
_BY_ENV = {key.env: key for key in _KEY_LIST}


def defaults(command: str | None = None) -> dict[str, Any]:
    """The built-in defaults of `command`'s settings (of every setting when None)."""
    return {
        key.name: list(key.default) if key.kind == "texts" else key.default
        for key in _KEY_LIST
        if command is None or _known_command(command) in key.commands
    }


def options(command: str) -> dict[str, tuple[str, str]]:
    """Setting name -> (argparse dest, flag) for `command`'s options.

    ``report.pdf`` maps to ``no_pdf``/``--no-pdf``, which holds the opposite value."""
    return {
        key.name: (key.dest, key.flag)
        for key in _KEY_LIST
        if _known_command(command) in key.commands
    }


def _known_command(command: str) -> str:
    if command not in COMMANDS:
        raise ValueError(f"no settings for command {command!r}; choose from {COMMANDS}")
    return command


# --------------------------------------------------------------------------- finding the file


def find_config(
    start: Path,
    environ: Mapping[str, str],
    *,
    explicit: str | Path | None = None,
    disabled: bool = False,
) -> Path | None:
    """The configuration file to use, or None.

    `explicit` is ``--config FILE``, `disabled` is ``--no-config``; both beat
    ``MLFLOW_AUDIT_CONFIG`` (a file, or ``none``), which beats looking from `start` upwards for
    the first folder with ``mlflow-audit.toml`` or a ``pyproject.toml`` that has a
    ``[tool.mlflow-audit]`` table (``mlflow-audit.toml`` wins when a folder has both).
    Relative explicit paths are relative to `start`."""
    start = Path(start).resolve()
    if explicit is not None and disabled:
        raise ConfigError("--config and --no-config contradict each other; give one")
    if explicit is not None:
        return _named_file(start / Path(explicit).expanduser(), f"--config {explicit}")
    if disabled:
        return None
    named = environ.get(CONFIG_ENV, "").strip()
    if named.lower() == "none":
        return None
    if named:
        return _named_file(start / Path(named).expanduser(), f"{CONFIG_ENV}={named}")
    for folder in (start, *start.parents):
        own = folder / OWN_FILE
        if own.is_file():
            return own
        pyproject = folder / PYPROJECT
        if pyproject.is_file() and _has_table(pyproject):
            return pyproject
    return None


def _named_file(path: Path, origin: str) -> Path:
    if not path.exists():
        raise ConfigError(f"{origin}: not found")
    if not path.is_file():
        raise ConfigError(f"{origin}: not a file")
    if path.suffix.lower() != ".toml":
        raise ConfigError(f"{origin}: a configuration file is TOML (.toml)")
    return path.resolve()


def _has_table(pyproject: Path) -> bool:
    # Most pyproject.toml files on the way up belong to other projects: one that never mentions
    # us is skipped unparsed, so a broken one elsewhere cannot stop the audit.
    try:
        with pyproject.open("rb") as handle:
            head = handle.read(_MAX_CONFIG_BYTES + 1)
    except OSError as problem:
        raise ConfigError(f"{pyproject}: cannot read: {problem.strerror or problem}") from None
    if b"mlflow" not in head:
        return False
    tool = _tool_table(pyproject)
    if "mlflow-audit" in tool:
        return True
    near = [name for name in tool if name.replace("_", "-").lower() == "mlflow-audit"]
    if near:
        # A misspelt table would otherwise be skipped in silence, and a config further up used.
        raise ConfigError(f"{pyproject}: [tool.{near[0]}] is not read; name it [{TABLE}]")
    return False


def _tool_table(pyproject: Path) -> dict[str, Any]:
    document = read_data_file(pyproject, str(pyproject), limit=_MAX_CONFIG_BYTES, error=ConfigError)
    tool = document.get("tool") if isinstance(document, dict) else None
    return tool if isinstance(tool, dict) else {}


# --------------------------------------------------------------------------- reading the file


@dataclass(frozen=True)
class Config:
    """A configuration file's validated settings; relative paths in it already made absolute."""

    path: Path | None = None
    values: Mapping[str, Any] = field(default_factory=dict)  # flat: "fail_on", "report.out"

    @property
    def label(self) -> str:
        """The file as error messages and sources name it."""
        if self.path is None:
            return "none"
        if self.path.name == PYPROJECT:
            return f"{self.path} [{TABLE}]"
        return str(self.path)


@dataclass(frozen=True)
class Setting:
    """A setting's effective value and the layer it came from."""

    value: Any
    # "default" | "<path> [tool.mlflow-audit]" | "<path>" | "environment NAME"
    # | "command line --flag"
    source: str


def load_config(path: Path | None) -> Config:
    """Read and validate a configuration file (None: no file, every value from elsewhere)."""
    if path is None:
        return Config()
    path = Path(path)
    label = Config(path).label
    if path.suffix.lower() != ".toml":
        raise ConfigError(f"{path}: a configuration file is TOML (.toml)")
    is_pyproject = path.name == PYPROJECT
    if is_pyproject:
        table = _tool_table(path).get("mlflow-audit")
        if table is None:
            raise ConfigError(f"{path}: no [{TABLE}] table")
    else:
        table = read_data_file(path, label, limit=_MAX_CONFIG_BYTES, error=ConfigError)
    if not isinstance(table, dict):
        raise ConfigError(f"{label}: must be a table, not {type(table).__name__}")
    table = _plain(table)
    _reject_unknown_keys(table, label, is_pyproject)
    for name, value in _flatten(table):
        if name in KEYS:  # a report that is not a table is left to the schema
            _check_value(KEYS[name], value, f"{label}: {name}")
    check_against(SCHEMA, table, label, error=ConfigError)
    base = path.resolve().parent
    values: dict[str, Any] = {}
    for name, value in _flatten(table):
        values[name] = _from_file(KEYS[name], value, base)
    return Config(path, values)


def _check_value(key: Key, value: Any, label: str) -> None:
    """The two checks whose schema messages would not help: a choice lists every option (the
    schema's message names two), and NaN or infinity is named as such (the schema sees null)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{label}: {value} is not a finite number")
    choices = _choices().get(key.name)
    if choices and isinstance(value, str) and value not in choices:
        raise ConfigError(f"{label}: {value!r} is not one of {', '.join(choices)}")


@functools.cache
def _choices() -> dict[str, list[str]]:
    from audit.resources import schema_path

    schema = json.loads(schema_path(SCHEMA).read_text(encoding="utf-8"))
    found: dict[str, list[str]] = {}
    for prefix, properties in (
        ("", schema["properties"]),
        ("report.", schema["properties"]["report"]["properties"]),
    ):
        for name, rule in properties.items():
            rule = schema["$defs"][rule["$ref"].rsplit("/", 1)[-1]] if "$ref" in rule else rule
            if "enum" in rule:
                found[prefix + name] = list(rule["enum"])
    return found


def _plain(value: Any) -> Any:
    # An unquoted TOML date or time is read as such; as a setting it can only mean its text.
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    return value


def _flatten(table: Mapping[str, Any]) -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for name, value in table.items():
        if name == "report" and isinstance(value, dict):
            items += [(f"report.{sub}", item) for sub, item in value.items()]
        else:
            items.append((name, value))
    return items


def _reject_unknown_keys(table: Mapping[str, Any], label: str, is_pyproject: bool) -> None:
    # A report that is not a table is the schema's to name: it says what it must be.
    report = table.get("report")
    names = [name for name in table if name != "report"]
    if isinstance(report, dict):
        names += [f"report.{sub}" for sub in report]
    unknown = [name for name in names if name not in KEYS]
    if not unknown:
        return
    first = unknown[0]
    more = f"; also unknown: {', '.join(repr(n) for n in unknown[1:])}" if unknown[1:] else ""
    raise ConfigError(f"{label}: unknown key {first!r}{_hint(first, is_pyproject)}{more}")


def _hint(name: str, is_pyproject: bool) -> str:
    if name == "tool" and not is_pyproject:
        return f" (in {OWN_FILE} the keys are at the top level, without [{TABLE}])"
    if f"report.{name}" in KEYS:
        return f" (it belongs in the report table: [{TABLE}.report] or [report])"
    if name.startswith("report.") and name.removeprefix("report.") in KEYS:
        return " (it belongs in the main table, not the report table)"
    spelt = name.replace("-", "_").lower()
    if spelt in KEYS:
        return f" (did you mean {spelt!r}?)"
    close = difflib.get_close_matches(spelt, list(KEYS), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _from_file(key: Key, value: Any, base: Path) -> Any:
    if key.kind == "int" and isinstance(value, float):
        return int(value)  # the schema accepted it, so it is whole: 10.0
    if key.paths == "path" or (key.paths == "policy" and _is_policy_file(value)):
        return str((base / Path(value).expanduser()).resolve())
    if key.paths == "tracking_uri":
        return _tracking_uri_from_file(value, base)
    return value


def _is_policy_file(spec: str) -> bool:
    """A policy setting names a file, not a built-in policy (the rule of the docs)."""
    return "/" in spec or os.sep in spec or spec.lower().endswith((".json", ".yaml", ".yml"))


def _tracking_uri_from_file(uri: str, base: Path) -> str:
    """A relative SQLite or folder store in a file is next to the file: MLflow itself would look
    in the working directory, which changes with the folder the command runs in."""
    scheme, _, rest = uri.partition(":")
    if scheme.lower().split("+", 1)[0] == "sqlite" and rest.startswith("///"):
        location, mark, query = rest[3:].partition("?")
        raw = unquote(location)
        if not raw or raw == ":memory:" or raw.startswith("file:") or _absolute(raw):
            return uri
        full = (base / Path(raw).expanduser()).resolve().as_posix()
        return f"{scheme}:///{quote(full, safe='/:')}{mark}{query}"
    if uri.startswith("file:") and not uri.startswith("file://"):
        raw = unquote(urlsplit(uri).path)
        return uri if _absolute(raw) else (base / Path(raw).expanduser()).resolve().as_uri()
    if "://" in uri or uri.startswith("file:") or re.fullmatch(r"databricks(-uc)?", uri):
        return uri
    return uri if _absolute(uri) else str((base / Path(uri).expanduser()).resolve())


def _absolute(raw: str) -> bool:
    return Path(raw).expanduser().is_absolute() or re.match(r"[A-Za-z]:[/\\]", raw) is not None


# --------------------------------------------------------------------------- resolving


def resolve(
    config: Config,
    command_line: Mapping[str, Any],
    environ: Mapping[str, str],
    defaults: Mapping[str, Any],
    flags: Mapping[str, str] | None = None,
) -> dict[str, Setting]:
    """Each setting named in `defaults` from the first layer that has it: `command_line` (only
    the options actually given), the environment, the file, `defaults`.

    A list from a higher layer replaces the lower one's. `flags` overrides how a command-line
    option is named in its source (the table's `Key.flag` otherwise). Every ``MLFLOW_AUDIT_*``
    variable must name a setting, and every relevant one must parse, even when a flag overrides
    it: a typo in CI is an error, not a silently ignored line."""
    names = [name for name in KEYS if name in defaults or name in command_line]
    strays = sorted((set(defaults) | set(command_line)) - set(KEYS))
    if strays:
        raise ValueError(f"not settings: {', '.join(strays)}")
    _reject_unknown_variables(environ)
    from_environment = {
        name: value
        for name in names
        if (value := _from_environment(KEYS[name], environ)) is not None
    }
    settings: dict[str, Setting] = {}
    for name in names:
        if name in command_line:
            flag = (flags or {}).get(name, KEYS[name].flag)
            settings[name] = Setting(command_line[name], f"command line {flag}")
        elif name in from_environment:
            settings[name] = Setting(from_environment[name], f"environment {KEYS[name].env}")
        elif name in config.values:
            settings[name] = Setting(config.values[name], config.label)
        else:
            default = defaults.get(name)
            settings[name] = Setting(
                list(default) if isinstance(default, (list, tuple)) else default, "default"
            )
    return settings


#: Variables of mlflow-audit that are not settings: the configuration file, and the webhook
#: secret `serve` reads.
_OTHER_ENV = frozenset({CONFIG_ENV, WEBHOOK_SECRET_ENV})


def _reject_unknown_variables(environ: Mapping[str, str]) -> None:
    for variable in sorted(environ):
        if not variable.startswith(ENV_PREFIX) or variable in _BY_ENV or variable in _OTHER_ENV:
            continue
        close = difflib.get_close_matches(variable, [*_BY_ENV, *_OTHER_ENV], n=1, cutoff=0.8)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"environment variable {variable}: not a setting of mlflow-audit{hint}")


def _from_environment(key: Key, environ: Mapping[str, str]) -> Any:
    """The variable's value as the key's type, or None when unset or empty (CI systems often
    pass an unset input as an empty variable)."""
    text = environ.get(key.env, "")
    if not text.strip():
        return None
    label = f"environment variable {key.env}"
    value: Any
    if key.kind == "texts":
        value = [item.strip() for item in text.split(",") if item.strip()]
    elif key.kind == "int":
        try:
            value = int(text.strip())
        except ValueError:
            raise ConfigError(f"{label}: {text!r} is not a whole number") from None
    elif key.kind == "number":
        try:
            value = float(text.strip())
        except ValueError:
            raise ConfigError(f"{label}: {text!r} is not a number") from None
        if not math.isfinite(value):
            raise ConfigError(f"{label}: {text!r} is not a number")
        if value.is_integer():
            value = int(value)
    elif key.kind == "bool":
        word = text.strip().lower()
        if word not in _TRUE | _FALSE:
            raise ConfigError(f"{label}: {text!r} is not true or false (or 1/0, yes/no, on/off)")
        value = word in _TRUE
    elif key.name == "report.page_size":
        value = {"a4": "A4", "letter": "letter"}.get(text.strip().lower(), text)  # as the CLI
    else:
        value = text
    _check_value(key, value, label)
    # The file's schema is the one statement of what each setting accepts.
    head, _, sub = key.name.partition(".")
    check_against(SCHEMA, {head: {sub: value}} if sub else {head: value}, label, error=ConfigError)
    return value


# --------------------------------------------------------------------------- the command line


def given_options(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """The settings `command`'s options were actually given for, by setting name.

    An option counts as given when its attribute is present and not None, an empty list or a
    false store_true flag. So the parser must not fill in defaults itself (``default=None``, or
    ``argparse.SUPPRESS``): a filled-in default would always beat the file. ``--no-pdf`` gives
    ``report.pdf = False``."""
    given: dict[str, Any] = {}
    for name, (dest, _flag) in options(command).items():
        value = getattr(args, dest, None)
        if value is None or value is False or (isinstance(value, list) and not value):
            continue
        given[name] = (not value) if KEYS[name].inverted else value
    return given


def apply_settings(
    args: argparse.Namespace, settings: Mapping[str, Setting], command: str
) -> argparse.Namespace:
    """Write the resolved values of `command`'s settings back onto the parsed arguments, so the
    code that reads `args` afterwards sees the effective values (``no_pdf`` turned around)."""
    for name, (dest, _flag) in options(command).items():
        if name in settings:
            value = settings[name].value
            if KEYS[name].inverted:
                value = not value
            setattr(args, dest, list(value) if isinstance(value, (list, tuple)) else value)
    return args


# --------------------------------------------------------------------------- showing it


def render_settings(settings: Mapping[str, Setting], config: Config, fmt: str = "text") -> str:
    """What ``mlflow-audit config`` prints: the file used, then every setting, its effective
    value and where it came from; ``json``: ``{"config_file", "settings": {key: {value,
    source}}}``. Credentials in the tracking URI are redacted."""
    shown = {name: _shown(name, setting.value) for name, setting in settings.items()}
    if fmt == "json":
        document = {
            "config_file": str(config.path) if config.path else None,
            "settings": {
                name: {"value": shown[name], "source": setting.source}
                for name, setting in settings.items()
            },
        }
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if fmt != "text":
        raise ValueError(f"unknown format {fmt!r}; choose from text, json")
    texts = {name: _text(value) for name, value in shown.items()}
    name_width = max((len(name) for name in settings), default=0) + 2
    # Capped, so one long value does not push every source off the screen.
    value_width = min(max((len(text) for text in texts.values()), default=0), 40)
    lines = [f"config file: {config.label}"]
    for name, setting in settings.items():
        lines.append(f"{name:<{name_width}}{texts[name]:<{value_width}}  {setting.source}")
    return "\n".join(lines) + "\n"


def _shown(name: str, value: Any) -> Any:
    if name == "tracking_uri" and isinstance(value, str):
        from audit.sources.store import redact_uri

        return redact_uri(value)
    return value


def _text(value: Any) -> str:
    if value is None:
        return "(not set)"
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(str(item) for item in value) + "]"
    return json.dumps(value)
