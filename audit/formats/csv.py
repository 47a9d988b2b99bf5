"""`--format csv`: one row per finding, open or waived, for spreadsheets and ad-hoc analysis.

Columns: run_id, run_name, experiment_id, experiment_name, rule_id, title, gap (the title worded
as the gap), category, severity, status (``open`` or ``waived``), pointer, message, provisions
(space-separated ids), citations (``; ``-joined), remediation, waiver_reason,
waiver_approved_by, waiver_expires (YYYY-MM-DD). A run with no finding has no row, and rules that
pass, do not apply or are unknown have none either: `AuditResult.to_pandas` has every run x
rule with its outcome.

**Formula injection.** Spreadsheets run a cell that starts with ``=``, ``+``, ``-`` or ``@`` as a
formula (``=HYPERLINK(...)``, ``=cmd|...``), and tab or carriage return can hide such a start.
Run names, messages and the rest come from MLflow, where anyone who can log a run chooses them,
so, as the OWASP guidance on CSV injection recommends, every cell that starts with one of those
characters gets a leading ``'``: spreadsheets then show it as text. Every cell is treated the same,
whatever its column, so no column is left out by mistake; a program reading the file back strips
a leading ``'`` when the character after it is one of those.

Lines end with ``\\n``, not CRLF: the text is written through a text-mode file, which turns
``\\n`` into the platform's line ending; CRLF would come out as CR CR LF on Windows.
"""

from __future__ import annotations

import csv
import io

from audit.formats.rows import FINDING_COLUMNS, finding_rows
from audit.result import AuditResult

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def defuse(cell: str) -> str:
    """The cell as a spreadsheet shows it as text, never runs it as a formula."""
    return "'" + cell if cell.startswith(_FORMULA_START) else cell


def render_csv(result: AuditResult) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FINDING_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in finding_rows(result):
        writer.writerow({column: defuse(value) for column, value in row.items()})
    return buffer.getvalue()
