"""Output formats. Each is a pure function of an `AuditResult`."""

from __future__ import annotations

from audit.result import AuditResult

FORMATS = ("table", "json")


def render(result: AuditResult, name: str, *, color: bool = False, width: int = 80) -> str:
    if name == "json":
        from audit.formats.json import render_json

        return render_json(result)
    if name == "table":
        from audit.formats.table import render_table

        return render_table(result, color=color, width=width)
    raise ValueError(f"unknown format {name!r}; choose from {', '.join(FORMATS)}")
