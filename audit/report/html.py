"""HTML rendering: Jinja2 templates from `report_templates/`, a user's folder first.

Autoescaping is on for every template and the environment offers no way around it for run
content: values from MLflow reach the page only as escaped text.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jinja2
import markupsafe

from audit import __version__
from audit.errors import AuditError
from audit.formats.table import printable
from audit.report.annex_iv import VersionDocument
from audit.report.document import CELL_LIMIT, ReportSettings, RunDocument, SummaryDocument
from audit.resources import data_dir

RUN_TEMPLATE = "run.html.j2"
SUMMARY_TEMPLATE = "summary.html.j2"
VERSION_TEMPLATE = "version.html.j2"


def builtin_template_dir() -> Path:
    return data_dir("report_templates")


@functools.lru_cache(maxsize=4)
def environment(template_dir: Path | None = None) -> jinja2.Environment:
    """Templates are looked up in `template_dir` first, then in the built-in folder; the
    built-in ones stay reachable as ``builtin/NAME`` so an override can extend them."""
    builtin = jinja2.FileSystemLoader(builtin_template_dir())
    loaders: list[jinja2.BaseLoader] = []
    if template_dir is not None:
        if not template_dir.is_dir():
            raise AuditError(f"--template-dir {template_dir}: not a directory")
        loaders.append(jinja2.FileSystemLoader(template_dir))
    loaders += [builtin, jinja2.PrefixLoader({"builtin": builtin})]
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=_visible,
    )
    env.filters["clip"] = _clip
    env.filters["number"] = _number
    env.filters["json"] = _json
    env.globals["tool_version"] = __version__
    return env


def render_run(
    document: RunDocument, settings: ReportSettings, template_dir: Path | None = None
) -> str:
    return _render(RUN_TEMPLATE, template_dir, doc=document, settings=settings)


def render_version(
    document: VersionDocument, settings: ReportSettings, template_dir: Path | None = None
) -> str:
    return _render(VERSION_TEMPLATE, template_dir, doc=document, settings=settings)


def render_summary(
    document: SummaryDocument, settings: ReportSettings, template_dir: Path | None = None
) -> str:
    return _render(SUMMARY_TEMPLATE, template_dir, doc=document, settings=settings)


def _render(name: str, template_dir: Path | None, **context: Any) -> str:
    env = environment(template_dir)
    try:
        return env.get_template(name).render(**context)
    except jinja2.TemplateNotFound as error:
        raise AuditError(f"report template {error.name} not found") from None
    except jinja2.TemplateSyntaxError as error:
        raise AuditError(
            f"report template {error.filename or error.name}, line {error.lineno}: {error.message}"
        ) from None
    except jinja2.UndefinedError as error:
        raise AuditError(f"report template {name}: {error.message}") from None


def _visible(value: Any) -> Any:
    """Control characters from MLflow would make the page unparseable for some readers. Markup
    (a macro's output) is left alone: its run content went through here already."""
    if isinstance(value, str) and not isinstance(value, markupsafe.Markup):
        return printable(value)
    return value


def _clip(value: Any, limit: int = CELL_LIMIT, note: bool = True) -> str:
    """A long value cut short, saying so: the full value is in evidence.json."""
    text = "" if value is None else str(value)
    if len(text) <= limit:
        return text
    if not note:
        return f"{text[: limit - 1]}…"
    return f"{text[: limit - 1]}… ({len(text):,} characters; full value in evidence.json)"


def _number(value: Any) -> str:
    """Metric values as a reader wants them: enough digits, no float noise."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)
