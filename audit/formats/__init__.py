"""Output formats. Each is a pure function of an `AuditResult`: ``render_<name>(result) -> str``.

- ``table``: people in a terminal or a CI log (80 columns, colour on a terminal);
- ``json``: the whole result, ``schemas/audit-result.schema.json``;
- ``junit``: JUnit XML for the test views of Jenkins, GitLab, Azure Pipelines;
- ``sarif``: SARIF 2.1.0 for code-scanning views (GitHub code scanning, Azure DevOps);
- ``markdown``: a pull-request comment or a GitHub job summary;
- ``github``: GitHub Actions workflow commands, which annotate the run;
- ``csv``: one row per finding, for spreadsheets.

The modules are imported only when their format is asked for, and none of them imports pandas
(`AuditResult.to_pandas` does, when called).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from audit.result import AuditResult

if TYPE_CHECKING:
    from audit.formats.table import Detail

FORMATS = ("table", "json", "junit", "sarif", "markdown", "github", "csv")


def render_chunks(
    result: AuditResult,
    name: str,
    *,
    color: bool = False,
    width: int = 80,
    artifact_uri: str | None = None,
    detail: Detail = "auto",
) -> Iterator[str]:
    """`render`, in pieces to write one after the other: JSON and the table, the formats of
    large results, are produced run by run; the others in one piece. `detail` applies to
    ``table`` (see `audit.formats.table`)."""
    if name == "json":
        from audit.formats.json import json_chunks

        yield from json_chunks(result)
    elif name == "table":
        from audit.formats.table import table_chunks

        yield from table_chunks(result, color=color, width=width, detail=detail)
    else:
        yield render(result, name, color=color, width=width, artifact_uri=artifact_uri)


def render(
    result: AuditResult,
    name: str,
    *,
    color: bool = False,
    width: int = 80,
    artifact_uri: str | None = None,
) -> str:
    """The result in format `name`. `color` and `width` apply to ``table``; `artifact_uri` to
    ``sarif`` (see `audit.formats.sarif.render_sarif`)."""
    if name == "table":
        from audit.formats.table import render_table

        return render_table(result, color=color, width=width)
    if name == "json":
        from audit.formats.json import render_json

        return render_json(result)
    if name == "junit":
        from audit.formats.junit import render_junit

        return render_junit(result)
    if name == "sarif":
        from audit.formats.sarif import render_sarif

        return render_sarif(result, artifact_uri=artifact_uri)
    if name == "markdown":
        from audit.formats.markdown import render_markdown

        return render_markdown(result)
    if name == "github":
        from audit.formats.github import render_github

        return render_github(result)
    if name == "csv":
        from audit.formats.csv import render_csv

        return render_csv(result)
    raise ValueError(f"unknown format {name!r}; choose from {', '.join(FORMATS)}")
