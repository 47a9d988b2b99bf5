"""Model documentation: HTML and PDF reports rendered from an audit result.

document.py  what each document shows (dataclasses, no markup)
charts.py    metric-history chart geometry
html.py      Jinja2 templates -> one self-contained HTML file per document
pdf.py       WeasyPrint -> PDF/A-3b with the evidence embedded
writer.py    a report folder: documents, evidence.json, result.json, in parallel
"""

from audit.report.document import ReportSettings, parse_date
from audit.report.writer import ReportFiles, write_reports

__all__ = ["ReportFiles", "ReportSettings", "parse_date", "write_reports"]
