"""`mlflow-audit report`: real HTML and PDF/A files rendered from real MLflow stores, read back
with an HTML parser and pypdf."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jsonschema_rs
import mlflow
import pytest
from pypdf import PdfReader

from audit.resources import schema_path
from tests import stores

REPO = Path(__file__).resolve().parent.parent
DATE = "2026-11-26"
SECRET = "sk-proj-Q2hlY2tUaGlzSXNOb3RBUmVhbEtleTEyMzQ1Njc4OTA"
HF_SECRET = "hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
MARKUP = "<script>alert('param')</script><img src=x onerror=alert(1)>"
RUN_NAME = 'leaky <b>run</b> "quoted"'


def _squash(text: str) -> str:
    """Text without whitespace: PDF extraction breaks lines wherever the layout wrapped."""
    return "".join(text.split())


def _pdf_text(path: Path) -> str:
    return "\n".join(page.extract_text() or "" for page in PdfReader(path).pages)


def _titles(outline: list[Any]) -> list[str]:
    """Bookmark titles, depth first."""
    return [
        t for item in outline for t in (_titles(item) if isinstance(item, list) else [item.title])
    ]


def _attachments(path: Path) -> dict[str, bytes]:
    return {name: contents[0] for name, contents in PdfReader(path).attachments.items()}


@pytest.fixture(scope="module")
def demo_report(demo_store, tmp_path_factory: pytest.TempPathFactory, cli_main) -> Path:
    out = tmp_path_factory.mktemp("demo-report")
    code = cli_main(
        "report", "--tracking-uri", demo_store.uri, "--out", str(out), "--date", DATE,
        "--organisation", "Acme ML", "--author", "Jane Doe", "--jobs", "2",
    )  # fmt: skip
    assert code == 0
    return out


@pytest.fixture(scope="module")
def leaky_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One run that logged credentials and markup, with a metric history to chart."""
    directory = tmp_path_factory.mktemp("leaky")
    uri = f"sqlite:///{directory / 'mlflow.db'}"
    with stores.tracking(uri):
        mlflow.set_experiment("leaky")
        with mlflow.start_run(run_name=RUN_NAME):
            mlflow.log_params({"api_key": SECRET, "markup": MARKUP, "alpha": 0.1})
            mlflow.set_tags({"HF_TOKEN": HF_SECRET, "note": MARKUP})
            for step in range(8):
                mlflow.log_metric("val_loss", 1 / (step + 1), step=step)
    return uri


@pytest.fixture(scope="module")
def leaky_report(leaky_store: str, tmp_path_factory: pytest.TempPathFactory, cli_main) -> Path:
    out = tmp_path_factory.mktemp("leaky-report")
    assert cli_main("report", "--tracking-uri", leaky_store, "--out", str(out), "--date", DATE) == 0
    return out


@pytest.fixture(scope="module")
def cli_main():
    from audit.cli import main

    return lambda *args: main(list(args))


# --------------------------------------------------------------------------- files


def test_report_writes_documents_and_data_for_every_run(demo_report: Path) -> None:
    result = json.loads((demo_report / "result.json").read_text())
    jsonschema_rs.validator_for(
        json.loads(schema_path("audit-result.schema.json").read_text())
    ).validate(result)
    evidence = json.loads((demo_report / "evidence.json").read_text())
    assert [r["run"]["id"] for r in evidence["records"]] == [r["run_id"] for r in result["runs"]]
    names = {run["run_name"] for run in result["runs"]}
    assert {"complete", "no-data-version", "crashed"} <= names
    for name in names:
        assert (demo_report / f"{name}.html").is_file()
        assert (demo_report / f"{name}.pdf").is_file()
    assert (demo_report / "summary.html").is_file() and (demo_report / "summary.pdf").is_file()
    assert not [p for p in demo_report.iterdir() if p.name.startswith(".")], "staging left over"
    assert result["generated_at"] == f"{DATE}T00:00:00Z"


def test_pdf_shows_the_run_its_gaps_provisions_and_fixes(demo_report: Path) -> None:
    result = json.loads((demo_report / "result.json").read_text())
    failing = [run for run in result["runs"] if run["status"] == "fail"]
    assert failing
    for run in failing[:3]:
        text = _squash(_pdf_text(demo_report / f"{run['run_name']}.pdf"))
        assert _squash(run["run_name"]) in text
        assert _squash(run["run_id"]) in text
        for finding in run["findings"]:
            assert _squash(finding["rule_id"]) in text, finding["rule_id"]
            assert _squash(finding["remediation"]) in text, finding["rule_id"]
            for citation in finding["citations"]:
                assert _squash(citation) in text, citation


def test_pdf_is_pdfa_3b_with_metadata_and_page_furniture(demo_report: Path) -> None:
    reader = PdfReader(demo_report / "complete.pdf")
    xmp = reader.trailer["/Root"]["/Metadata"].get_object().get_data().decode()
    assert re.search(r"pdfaid:part(>|=\")3", xmp) and re.search(r"pdfaid:conformance(>|=\")B", xmp)
    info = reader.metadata
    assert info.title == "complete: model documentation"
    assert info.author == "Jane Doe"
    assert info.subject
    run_id = next(
        r["run_id"]
        for r in json.loads((demo_report / "result.json").read_text())["runs"]
        if r["run_name"] == "complete"
    )
    assert run_id in reader.metadata["/Keywords"]
    width, height = (float(v) for v in reader.pages[0].mediabox[2:])
    assert (round(width), round(height)) == (595, 842)  # A4
    pages = len(reader.pages)
    assert f"Page 2 of {pages}" in reader.pages[1].extract_text()
    assert "complete: model documentation" in reader.pages[1].extract_text()
    matrix_pages = [
        page.extract_text()
        for page in reader.pages
        if "2. Evidence mapped to provisions" in page.extract_text()
    ]
    assert len(matrix_pages) > 1
    assert all("Rule (evidence looked for)" in text for text in matrix_pages)  # on every page
    outline = _titles(reader.outline)
    assert outline[0] == "complete"
    assert "1. Summary" in outline and "2. Evidence mapped to provisions" in outline
    fonts = {
        font["/BaseFont"]
        for page in reader.pages
        for font in (page["/Resources"].get("/Font") or {}).values()
    }
    embedded = all(
        "/FontFile2" in f.get_object()["/DescendantFonts"][0].get_object()["/FontDescriptor"]
        or "/FontFile3" in f.get_object()["/DescendantFonts"][0].get_object()["/FontDescriptor"]
        for page in reader.pages
        for f in (page["/Resources"].get("/Font") or {}).values()
        if "/DescendantFonts" in f.get_object()
    )
    assert fonts and embedded


def test_pdf_carries_the_evidence_and_result_it_shows(demo_report: Path) -> None:
    folder_evidence = json.loads((demo_report / "evidence.json").read_text())
    by_id = {record["run"]["id"]: record for record in folder_evidence["records"]}
    result = json.loads((demo_report / "result.json").read_text())
    for run in result["runs"][:3]:
        attached = _attachments(demo_report / f"{run['run_name']}.pdf")
        assert set(attached) == {"evidence.json", "result.json"}
        records = json.loads(attached["evidence.json"])["records"]
        assert records == [by_id[run["run_id"]]]
        assert json.loads(attached["result.json"])["runs"] == [run]
    summary = _attachments(demo_report / "summary.pdf")
    assert summary["evidence.json"] == (demo_report / "evidence.json").read_bytes()
    assert summary["result.json"] == (demo_report / "result.json").read_bytes()


def test_summary_lists_every_run_worst_first(demo_report: Path) -> None:
    result = json.loads((demo_report / "result.json").read_text())
    text = _squash(_pdf_text(demo_report / "summary.pdf"))
    for run in result["runs"]:
        assert run["run_id"] in text
    html = (demo_report / "summary.html").read_text()
    html = html[html.index('<section id="runs"') :]
    positions = [html.index(run["run_id"]) for run in result["runs"]]
    statuses = [run["status"] for run in result["runs"]]
    ordered = [s for _, s in sorted(zip(positions, statuses, strict=True))]
    rank = {"fail": 0, "warn": 1, "pass": 2}
    assert ordered == sorted(ordered, key=rank.__getitem__)


# --------------------------------------------------------------------------- untrusted content


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, Any]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(path: Path) -> _Elements:
    parser = _Elements()
    parser.feed(path.read_text())
    return parser


@pytest.mark.parametrize(
    "template",
    sorted((REPO / "report_templates").rglob("*.j2"))
    + sorted((REPO / "samples" / "report_templates").rglob("*.j2")),
    ids=lambda path: path.name,
)
def test_templates_never_bypass_autoescaping(template: Path) -> None:
    source = template.read_text(encoding="utf-8")
    assert not re.search(r"\|\s*safe\b|Markup|autoescape\s+false|\|\s*e\b", source)


def test_markup_from_mlflow_is_shown_as_text(leaky_report: Path) -> None:
    html_files = [p for p in leaky_report.glob("*.html")]
    assert len(html_files) == 1
    page = _parse(html_files[0])
    assert not [tag for tag, _ in page.tags if tag in ("script", "img", "b", "iframe")]
    assert not [attrs for _, attrs in page.tags if any(k.startswith("on") for k in attrs)]
    text = "".join(page.text)
    assert MARKUP in text and RUN_NAME in text


def test_credentials_never_reach_any_output(leaky_report: Path) -> None:
    files = list(leaky_report.iterdir())
    assert {p.suffix for p in files} == {".html", ".pdf", ".json"}
    for path in files:
        contents = [path.read_bytes()]
        if path.suffix == ".pdf":
            contents += [_pdf_text(path).encode(), *_attachments(path).values()]
        for blob in contents:
            assert SECRET.encode() not in blob, path.name
            assert HF_SECRET.encode() not in blob, path.name
    html = next(leaky_report.glob("*.html")).read_text()
    assert "[redacted]" in html
    findings = json.loads((leaky_report / "result.json").read_text())["runs"][0]["findings"]
    warned = {f["pointer"] for f in findings if f["rule_id"] == "secrets.logged"}
    assert warned == {"/hyperparameters/api_key", "/tags/HF_TOKEN"}


def test_metric_histories_are_inline_svg_charts(leaky_report: Path) -> None:
    page = _parse(next(leaky_report.glob("*.html")))
    tags = [tag for tag, _ in page.tags]
    assert "svg" in tags and "polyline" in tags
    assert "val_loss" in "".join(page.text)
    links = [a.get("href") or a.get("src") for _, a in page.tags if a.get("href") or a.get("src")]
    assert not [link for link in links if re.match(r"(https?|file):", link or "")]


# --------------------------------------------------------------------------- determinism


def test_same_data_and_date_give_identical_documents(
    leaky_store: str, leaky_report: Path, tmp_path: Path, cli_main
) -> None:
    assert (
        cli_main("report", "--tracking-uri", leaky_store, "--out", str(tmp_path), "--date", DATE)
        == 0
    )
    for first in leaky_report.iterdir():
        second = tmp_path / first.name
        if first.suffix == ".pdf":
            assert _pdf_text(first) == _pdf_text(second)
        # Identifiers, dates and font subsets come from the inputs: the files are identical.
        assert first.read_bytes() == second.read_bytes(), first.name


# --------------------------------------------------------------------------- options and failures


def test_custom_templates_override_blocks(leaky_store: str, tmp_path: Path, cli_main) -> None:
    code = cli_main(
        "report", "--tracking-uri", leaky_store, "--out", str(tmp_path), "--date", DATE,
        "--template-dir", str(REPO / "samples" / "report_templates"), "--page-size", "letter",
    )  # fmt: skip
    assert code == 0
    pdf = next(tmp_path.glob("*.pdf"))
    text = _pdf_text(pdf)
    assert "ACME ML · INTERNAL" in text and "Review and approval" in text
    assert "1. Summary" in text  # the built-in blocks are still there
    width, height = (float(v) for v in PdfReader(pdf).pages[0].mediabox[2:])
    assert (round(width), round(height)) == (612, 792)


@pytest.mark.parametrize(
    "reference", ["file:///etc/hostname", "http://127.0.0.1:9/logo.png", "../outside.css"]
)
def test_pdf_never_loads_files_outside_the_templates(
    leaky_store: str, tmp_path: Path, cli_main, capsys, reference: str
) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "run.html.j2").write_text(
        '{% extends "builtin/run.html.j2" %}{% block head_extra %}'
        f'<link rel="stylesheet" href="{reference}"><img src="{reference}">'
        "{% endblock %}"
    )
    out = tmp_path / "out"
    code = cli_main(
        "report", "--tracking-uri", leaky_store, "--out", str(out), "--date", DATE,
        "--template-dir", str(templates),
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "refused to load" in err and len(err.strip().splitlines()) == 1
    assert not list(out.glob("*.pdf")), "no document when an asset was refused"


def test_no_pdf_writes_html_only(leaky_store: str, tmp_path: Path, cli_main) -> None:
    assert (
        cli_main("report", "--tracking-uri", leaky_store, "--out", str(tmp_path), "--no-pdf") == 0
    )
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".html", ".json", ".json"]


def test_fail_on_gates_like_check(leaky_store: str, tmp_path: Path, cli_main) -> None:
    code = cli_main(
        "report", "--tracking-uri", leaky_store, "--out", str(tmp_path), "--no-pdf",
        "--fail-on", "error",
    )  # fmt: skip
    assert code == 1
    assert list(tmp_path.glob("*.html"))


def test_unwritable_folder_is_exit_2_and_keeps_old_reports(
    leaky_store: str, tmp_path: Path, cli_main, capsys
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code = cli_main("report", "--tracking-uri", leaky_store, "--out", str(blocker), "--no-pdf")
    err = capsys.readouterr().err
    assert code == 2 and "a-file" in err and "Traceback" not in err
    assert blocker.read_text() == "not a folder"


def test_bad_date_is_exit_2(leaky_store: str, tmp_path: Path, cli_main, capsys) -> None:
    code = cli_main(
        "report", "--tracking-uri", leaky_store, "--out", str(tmp_path), "--date", "26/11"
    )
    assert code == 2
    assert "--date" in capsys.readouterr().err


def test_missing_weasyprint_is_one_line_and_html_still_works(
    leaky_store: str, tmp_path: Path
) -> None:
    script = (
        "import sys; sys.modules['weasyprint'] = None; from audit.cli import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    base = [sys.executable, "-c", script, "report", "--tracking-uri", leaky_store]
    failed = subprocess.run(
        [*base, "--out", str(tmp_path / "pdf")], capture_output=True, text=True,
        env=stores.environment(),
    )  # fmt: skip
    assert failed.returncode == 2
    assert failed.stderr.count("\n") == 1 and "--no-pdf" in failed.stderr
    assert not list((tmp_path / "pdf").glob("*.html"))
    html_only = subprocess.run(
        [*base, "--out", str(tmp_path / "html"), "--no-pdf"], capture_output=True, text=True,
        env=stores.environment(),
    )  # fmt: skip
    assert html_only.returncode == 0, html_only.stderr
    assert list((tmp_path / "html").glob("*.html"))
