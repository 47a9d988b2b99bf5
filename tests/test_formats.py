"""Output formats: JUnit, SARIF, Markdown, GitHub commands, CSV, the table and `to_pandas`, each a
pure function of one `AuditResult`, checked against the published schemas and hostile text."""

from __future__ import annotations

import copy
import csv
import datetime as dt
import io
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import xmlschema

from audit.api import check
from audit.evaluation import evaluate
from audit.formats import FORMATS, render
from audit.formats.csv import defuse
from audit.formats.github import (
    escape_data,
    escape_property,
    render_github,
    stop_commands,
    write_step_summary,
)
from audit.formats.junit import render_junit
from audit.formats.markdown import code, md, render_markdown
from audit.formats.sarif import render_sarif
from audit.formats.table import COMPACT_ABOVE, render_table
from audit.formats.text import visible
from audit.policy import SEVERITY_RANK, load_policy
from audit.result import AuditResult, FailOn
from audit.waivers import Waiver, WaiverSet
from tests import stores
from tests.conftest import REPO, Store
from tests.records import complete_record

REFERENCE = Path(__file__).parent / "reference"
TODAY = dt.date(2026, 6, 1)
HOSTILE = (
    '=HYPERLINK("http://evil") <img src=x onerror=alert(1)> [link](javascript:alert(1)) | '
    "@octocat \x1b[31mred\x1b[0m \u202eevil `tick` **bold**\n::error::pwned"
)
HOSTILE_EXPERIMENT = "exp <i>x</i>\r\n::warning::pwned"


def parse_xml(text: str) -> Any:
    return xmlschema.XMLResource(text).root


def _record(number: int, name: str, experiment: str = "churn", **sections: Any) -> dict:
    record = complete_record()
    record["run"].update(
        id=f"{number:032x}", name=name, experiment_name=experiment,
        experiment_id="1" if experiment == "churn" else "2",
    )  # fmt: skip
    record.update(sections)
    return record


def _records() -> list[dict]:
    """A pass, an error run, a warn run, a waived run, a hostile run, a run with many gaps."""
    no_data = _record(2, "no-data", data={"training": [], "evaluation": [], "other": []})
    warned = _record(3, "warned")
    warned["tags"]["token"] = "[redacted]"
    warned["collection"]["redacted"] = ["/tags/token"]
    warned["models"][0]["input_example"] = False
    waived = _record(4, "waived", hyperparameters={})
    hostile = _record(5, HOSTILE, experiment=HOSTILE_EXPERIMENT)
    hostile["environment"]["requirements"][0]["pinned"] = False
    many = _record(6, "many", data={"training": [], "evaluation": [], "other": []})
    many.update(metrics=[], hyperparameters={})
    many["environment"].update(requirements=[], python_version=None)
    many["source"]["git_commit"] = None
    return [_record(1, "complete"), no_data, warned, waived, hostile, many]


def _waivers() -> WaiverSet:
    def waiver(rule: str, scope: Any, target: str | None, expires: dt.date, index: int) -> Waiver:
        return Waiver(
            rule_id=rule, scope=scope, target=target, reason="accepted <b>for</b> the pilot",
            approved_by="Jane Doe", expires=expires, origin=f"waivers.yaml: waivers[{index}]",
        )  # fmt: skip

    return WaiverSet(
        waivers=(
            waiver("hyperparameters.logged", "run", f"{4:032x}", dt.date(2026, 12, 31), 0),
            waiver("environment.requirement-unpinned", "run", f"{5:032x}", TODAY, 1),
            waiver("data.training-dataset", "run", f"{2:032x}", dt.date(2026, 1, 1), 2),
            waiver("no.such-rule", "all", None, dt.date(2026, 12, 31), 3),
        ),
        origin="waivers.yaml",
        today=TODAY,
    )


def audit_result(fail_on: FailOn = "error", min_score: float | None = None) -> AuditResult:
    return evaluate(
        _records(), load_policy(), fail_on=fail_on, min_score=min_score, waivers=_waivers()
    )


@pytest.fixture(scope="module")
def result() -> AuditResult:
    return audit_result(min_score=99)


def test_every_format_is_registered(result: AuditResult) -> None:
    assert FORMATS == ("table", "json", "junit", "sarif", "markdown", "github", "csv")
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        render(result, "xml")


def test_the_sample_result_covers_every_case(result: AuditResult) -> None:
    statuses = {run.run_name: run.status for run in result.runs}
    assert statuses == {
        "complete": "pass", "no-data": "fail", "warned": "warn", "waived": "pass",
        HOSTILE: "fail", "many": "fail",
    }  # fmt: skip
    assert [use.state for use in result.waivers] == ["applied", "applied", "expired", "unused"]
    assert sum(len(run.waived_findings) for run in result.runs) == 2
    assert result.gate_failed and result.score_too_low


# --------------------------------------------------------------------------- JSON


@pytest.mark.parametrize("held", [10_000, 1])
def test_json_writes_each_run_as_its_to_dict(
    result: AuditResult, held: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Findings shared by runs (the same gap in two runs is one object) are encoded once and
    written into every run that has them. Whether the encoded findings are held or not (`held`
    1: dropped before each next one), with waivers or not, the document is the result's
    `to_dict`."""
    import audit.formats.json

    gaps = _records()[5]
    twin = copy.deepcopy(gaps)
    twin["run"]["id"] = f"{7:032x}"
    twins = evaluate([gaps, twin], load_policy())
    first, second = twins.runs
    assert first.findings
    assert all(f is g for f, g in zip(first.findings, second.findings, strict=True))
    monkeypatch.setattr(audit.formats.json, "_ENCODED_HELD", held)
    for each in (twins, result):
        assert json.loads(render(each, "json")) == json.loads(json.dumps(each.to_dict()))


# --------------------------------------------------------------------------- JUnit


def _expected_junit(result: AuditResult) -> dict[str, tuple[int, int, int]]:
    """(tests, failures, skipped) per run id, counted straight from the findings."""
    policy_rules = {rule.id for rule in result.rules}
    expected = {}
    for run in result.runs:
        rule_ids = policy_rules | {f.rule_id for f in run.findings}
        failing = {
            f.rule_id
            for f in run.open_findings
            if result.fail_on != "never"
            and SEVERITY_RANK[f.severity] >= SEVERITY_RANK[result.fail_on]
        }
        waived_only = {f.rule_id for f in run.waived_findings} - {
            f.rule_id for f in run.open_findings
        }
        undecided = {*run.not_applicable, *run.unknown}
        expected[run.run_id] = (len(rule_ids), len(failing), len(waived_only | undecided))
    return expected


@pytest.mark.parametrize("fail_on", ["error", "warning", "info", "never"])
def test_junit_validates_and_fails_exactly_what_fails_the_gate(
    junit_schema: xmlschema.XMLSchema, fail_on: FailOn
) -> None:
    result = audit_result(fail_on=fail_on)
    text = render_junit(result)
    junit_schema.validate(text)
    root = parse_xml(text)
    suites = {
        next(p.get("value") for p in suite.iter("property") if p.get("name") == "run_id"): suite
        for suite in root.iter("testsuite")
        if suite.find("properties") is not None
    }
    expected = _expected_junit(result)
    assert set(suites) == set(expected)
    for run_id, (tests, failures, skipped) in expected.items():
        suite = suites[run_id]
        assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == (
            str(tests),
            str(failures),
            str(skipped),
        ), run_id
        assert suite.get("errors") == "0"
        assert len(suite.findall("testcase")) == tests
        assert len(suite.findall("testcase/failure")) == failures
        assert len(suite.findall("testcase/skipped")) == skipped
    gate_suites = [s for s in root.iter("testsuite") if s.get("name") == "mlflow-audit gate"]
    assert len(gate_suites) == 1  # the expired and unused waivers
    assert "expired" in gate_suites[0].findtext("system-out", "")
    assert root.get("tests") == str(sum(t for t, _, _ in expected.values()))
    assert root.get("failures") == str(sum(f for _, f, _ in expected.values()))
    assert root.get("errors") == "0"


def test_junit_failure_skipped_and_below_the_gate(
    result: AuditResult, junit_schema: xmlschema.XMLSchema
) -> None:
    root = parse_xml(render_junit(result))
    cases = {
        (case.get("classname", "").split(" (")[-1].rstrip(")"), case.get("name", "")): case
        for case in root.iter("testcase")
    }
    failed = cases[
        (f"{2:032x}", "data.training-dataset: A training dataset is logged as a run input")
    ]
    failure = failed.find("failure")
    assert failure is not None and failure.get("type") == "error"
    assert failure.get("message") == "/data/training: none recorded"
    assert "found: /data/training: none recorded" in (failure.text or "")
    assert "relevant to: Art. 10(2)(b)" in (failure.text or "")
    assert "fix: Log it before training" in (failure.text or "")

    waived = cases[(f"{4:032x}", "hyperparameters.logged: Hyperparameters are logged")]
    skipped = waived.find("skipped")
    assert skipped is not None and waived.find("failure") is None
    assert skipped.get("message") == (
        "waived: accepted <b>for</b> the pilot (approved by Jane Doe, expires 2026-12-31)"
    )

    # a warning under --fail-on error: passing, and on the record in system-out
    warned = cases[(f"{3:032x}", "secrets.logged: No credentials are logged to MLflow")]
    assert warned.find("failure") is None and warned.find("skipped") is None
    assert "below the gate (--fail-on error)" in warned.findtext("system-out", "")

    score = cases[("mlflow-audit.gate", "min-score")]
    assert score.find("failure") is not None  # --min-score 99 is not reached


def test_junit_keeps_hostile_text_inert(
    result: AuditResult, junit_schema: xmlschema.XMLSchema
) -> None:
    text = render_junit(result)
    junit_schema.validate(text)
    assert "\x1b" not in text and "\u202e" not in text
    assert "<img" not in text and "&lt;img src=x" in text
    root = parse_xml(text)
    (suite,) = [s for s in root.iter("testsuite") if f"{5:032x}" in s.get("name", "")]
    assert "\\x1b[31mred" in suite.get("name", "") and "\n" not in suite.get("name", "")
    run_name = next(p for p in suite.iter("property") if p.get("name") == "run_name")
    assert run_name.get("value") == HOSTILE.replace("\x1b", "\\x1b").replace("\u202e", "\\u202e")


def test_junit_strips_what_xml_cannot_carry(junit_schema: xmlschema.XMLSchema) -> None:
    record = _record(9, "nul\x00 bell\x07 nonchar\ufffe\uffff end")
    record["data"] = {"training": [], "evaluation": [], "other": []}
    text = render_junit(evaluate([record], load_policy()))
    junit_schema.validate(text)
    assert "nul\\x00 bell\\x07 nonchar\\ufffe\\uffff end" in text
    # a lone surrogate (which no evidence digest accepts) is written out too
    assert visible("a\ud800b") == "a\\ud800b"


# --------------------------------------------------------------------------- SARIF


def test_sarif_validates_maps_levels_and_suppresses_waived(
    result: AuditResult, sarif_validator: Any
) -> None:
    log = json.loads(render_sarif(result))
    sarif_validator.validate(log)
    assert log["version"] == "2.1.0" and log["$schema"].startswith("https://")
    (run,) = log["runs"]
    rules = run["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules][: len(result.rules)] == [r.id for r in result.rules]
    assert "secrets.logged" in {r["id"] for r in rules}  # named only by findings
    findings = [(r, f) for r in result.runs for f in r.findings]
    assert len(run["results"]) == len(findings)
    levels = {"error": "error", "warning": "warning", "info": "note"}
    for entry, (audited, finding) in zip(run["results"], findings, strict=True):
        assert rules[entry["ruleIndex"]]["id"] == entry["ruleId"] == finding.rule_id
        assert entry["level"] == levels[finding.severity]
        (location,) = entry["locations"]
        (logical,) = location["logicalLocations"]
        assert logical["fullyQualifiedName"].endswith(f"({audited.run_id}){finding.pointer}")
        assert entry["properties"]["run_id"] == audited.run_id
        if finding.waiver is None:
            assert "suppressions" not in entry
        else:
            (suppression,) = entry["suppressions"]
            assert suppression["kind"] == "external" and suppression["status"] == "accepted"
            assert suppression["justification"] == finding.waiver.reason
            assert suppression["properties"]["approved_by"] == "Jane Doe"
    fingerprints = [e["partialFingerprints"]["mlflowAuditFinding/v1"] for e in run["results"]]
    assert len(set(fingerprints)) == len(fingerprints)
    again = json.loads(render_sarif(audit_result()))["runs"][0]["results"]
    assert [e["partialFingerprints"] for e in again] == [
        e["partialFingerprints"] for e in run["results"]
    ]
    (invocation,) = run["invocations"]
    assert invocation["executionSuccessful"] is True
    notes = invocation["toolExecutionNotifications"]
    assert [n["descriptor"]["id"] for n in notes] == ["waiver-expired", "waiver-unused"]
    assert all(n["level"] == "warning" for n in notes)
    assert run["properties"]["summary"]["gate"]["failed"] is True


def test_sarif_with_an_artifact_gives_every_result_a_physical_location(
    result: AuditResult, sarif_validator: Any
) -> None:
    log = json.loads(render(result, "sarif", artifact_uri="train.py"))
    sarif_validator.validate(log)
    for entry in log["runs"][0]["results"]:
        physical = entry["locations"][0]["physicalLocation"]
        assert physical == {"artifactLocation": {"uri": "train.py"}, "region": {"startLine": 1}}


def test_sarif_names_unannotated_rules(tmp_path: Path, sarif_validator: Any) -> None:
    policy = tmp_path / "team.json"
    policy.write_text(
        json.dumps(
            {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "x-audit-policy": {"name": "team"},
                "allOf": [
                    {"$ref": "urn:mlflow-audit:policy:baseline"},
                    {"properties": {"tags": {"required": ["team"]}}},
                ],
            }
        )
    )
    result = evaluate([_record(1, "r")], load_policy(policy))
    log = json.loads(render_sarif(result))
    sarif_validator.validate(log)
    (entry,) = log["runs"][0]["results"]
    rule = log["runs"][0]["tool"]["driver"]["rules"][entry["ruleIndex"]]
    assert rule["id"] == entry["ruleId"] == "schema:/allOf/1/properties/tags/required"
    frame = result.to_pandas()
    assert frame.loc[frame.rule_id == rule["id"], "status"].tolist() == ["fail"]


# --------------------------------------------------------------------------- GitHub


_COMMAND = re.compile(r"^::(error|warning|notice) title=([^:\r\n]*)::[^\r\n]*$")


def test_github_one_command_per_finding(result: AuditResult) -> None:
    lines = render_github(result).splitlines()
    commands = [_COMMAND.match(line) for line in lines[:-1]]
    assert all(commands), [line for line, m in zip(lines, commands, strict=False) if not m]
    per_finding = [m for m in commands if m and not m.group(2).startswith("mlflow-audit%3A")]
    open_findings = [f for run in result.runs for f in run.open_findings]
    waived = [f for run in result.runs for f in run.waived_findings]
    assert len(per_finding) == len(open_findings) + len(waived)
    kinds = Counter(m.group(1) for m in per_finding)
    assert kinds["error"] == sum(f.severity == "error" for f in open_findings)
    assert kinds["warning"] == sum(f.severity == "warning" for f in open_findings)
    assert kinds["notice"] == sum(f.severity == "info" for f in open_findings) + len(waived)
    # most severe first: GitHub keeps only the first annotations of each kind per step
    order = [m.group(1) for m in per_finding]
    assert order.index("warning") > max(i for i, kind in enumerate(order) if kind == "error")
    waiver_warnings = [m for m in commands if m and m.group(2).startswith("mlflow-audit%3A")]
    assert len(waiver_warnings) == 2
    assert lines[-1].startswith("mlflow-audit: gate FAILED")
    assert not lines[-1].lstrip().startswith("::")


def test_github_commands_cannot_be_injected(result: AuditResult) -> None:
    text = render_github(result)
    # the runner reads a command from any line that starts with "::" after leading spaces
    for line in text.splitlines():
        if line.lstrip().startswith("::"):
            assert _COMMAND.match(line), line
    assert "pwned" in text
    assert not any(line.lstrip().startswith(("::error::pwned", "::warning::pwned"))
                   for line in text.splitlines())  # fmt: skip
    assert "\x1b" not in text and "\r" not in text
    assert escape_data("50% done\r\n::error::x") == "50%25 done%0D%0A::error::x"
    assert escape_property("a:b,c%\n") == "a%3Ab%2Cc%25%0A"


def test_stop_commands_lets_any_format_pass_through_a_log(result: AuditResult) -> None:
    table = render_table(result)
    guarded = stop_commands(table, token="f00d")
    lines = guarded.splitlines()
    assert lines[0] == "::stop-commands::f00d" and lines[-1] == "::f00d::"
    assert "\n".join(lines[1:-1]) + "\n" == table
    assert stop_commands("x").splitlines()[0] != stop_commands("x").splitlines()[0]


def test_write_step_summary_appends_when_asked(result: AuditResult, tmp_path: Path) -> None:
    summary = tmp_path / "step_summary.md"
    summary.write_text("## an earlier step\n")
    assert write_step_summary(result, {"GITHUB_STEP_SUMMARY": str(summary)}) == summary
    text = summary.read_text()
    assert text.startswith("## an earlier step\n")
    assert text[len("## an earlier step\n") :] == render_markdown(result) + "\n"
    assert write_step_summary(result, {}) is None
    assert write_step_summary(result, {"GITHUB_STEP_SUMMARY": ""}) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_summary.md"]


# --------------------------------------------------------------------------- Markdown


def test_markdown_headline_counts_and_waivers(result: AuditResult) -> None:
    text = render_markdown(result)
    lines = text.splitlines()
    assert lines[0] == "### ❌ mlflow-audit: gate failed"
    assert "**6 runs** in 2 experiments: 2 pass · 1 warn · 3 fail" in text
    severities = result.severity_counts()
    assert f"{severities['error']} errors · {severities['warning']} warning" in text
    assert "2 waived" in text and "(min 99%)" in text
    assert "the score is below `--min-score 99`" in text
    assert "> ⚠️ **2 waivers to look at**" in text
    assert "expired on 2026\\-01\\-01" in text and "matched no finding" in text
    assert "#### Runs failing the gate (3)" in text
    assert "#### Waived findings (2)" in text
    assert "approved by Jane Doe, expires 2026-12-31" in text
    # more than five open findings fold into <details>, with counts only in the summary
    assert "<details><summary>7 open findings: 7 errors</summary>" in text
    passing = audit_result(fail_on="never")
    assert render_markdown(passing).startswith("### ⚪ mlflow-audit: gate off")


def test_markdown_keeps_hostile_text_as_text(result: AuditResult) -> None:
    text = render_markdown(result)
    assert "<img" not in text and "<i>" not in text and "<b>" not in text
    assert "&lt;img src=x onerror=alert\\(1\\)&gt;" in text
    assert "[link](javascript" not in text and "\\[link\\]\\(javascript\\:alert\\(1\\)\\)" in text
    assert "@octocat" not in text and "@\u200boctocat" in text
    assert "\x1b" not in text and "\u202e" not in text and "\\u202e" in text
    assert "\n::" not in text and "pwned" in text
    for line in text.splitlines():
        assert not line.lstrip().startswith("::")
    # every character Markdown reads as syntax is escaped; entities for HTML's
    escaped = md("a|b*c_d[e](f)`g`<h>&i#j!k~l:m.n-o+p{q}\\r @s\nt")
    assert escaped == (
        "a\\|b\\*c\\_d\\[e\\]\\(f\\)\\`g\\`&lt;h&gt;&amp;i\\#j\\!k\\~l\\:m\\.n\\-o\\+p\\{q\\}\\\\r "
        "@\u200bs t"
    )
    assert code("a`b") == "``a`b``" and code("`x") == "`` `x ``"


def test_markdown_stays_under_the_comment_limit() -> None:
    records = []
    for number in range(600):
        record = _record(number + 10, f"run-{number} " + "<b>" * 200, experiment="big")
        record.update(data={"training": [], "evaluation": [], "other": []}, metrics=[])
        records.append(record)
    result = evaluate(records, load_policy())
    text = render_markdown(result)
    assert len(text.encode("utf-8")) <= 65_536
    assert "_Not shown, to stay within 65,536 characters:" in text
    assert text.count("<details>") == text.count("</details>")
    small = render_markdown(result, max_length=5_000)
    assert len(small.encode("utf-8")) <= 5_000 and "failing run" in small


# --------------------------------------------------------------------------- CSV


def test_csv_one_row_per_finding_with_formulas_defused(result: AuditResult) -> None:
    text = render(result, "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    findings = [(run, f) for run in result.runs for f in run.findings]
    assert len(rows) == len(findings)
    assert list(rows[0]) == [
        "run_id", "run_name", "experiment_id", "experiment_name", "rule_id", "title", "gap",
        "category", "severity", "status", "pointer", "message", "provisions", "citations",
        "remediation", "waiver_reason", "waiver_approved_by", "waiver_expires",
    ]  # fmt: skip
    for row, (run, finding) in zip(rows, findings, strict=True):
        assert (row["run_id"], row["rule_id"], row["pointer"]) == (
            run.run_id, finding.rule_id, finding.pointer
        )  # fmt: skip
        assert row["status"] == ("waived" if finding.waiver else "open")
        assert row["provisions"] == " ".join(finding.provisions)
        assert row["citations"] == "; ".join(finding.citations)
    hostile = [row for row in rows if row["run_id"] == f"{5:032x}"]
    assert hostile and all(row["run_name"] == "'" + HOSTILE for row in hostile)
    waived = [row for row in rows if row["status"] == "waived"]
    assert {(r["waiver_reason"], r["waiver_approved_by"]) for r in waived} == {
        ("accepted <b>for</b> the pilot", "Jane Doe")
    }
    for cell in (row[column] for row in rows for column in row):
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))
    assert [defuse(c) for c in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "a=b", "")] == [
        "'=1+1", "'+1", "'-1", "'@SUM(A1)", "'\tx", "'\rx", "a=b", "",
    ]  # fmt: skip


# --------------------------------------------------------------------------- pandas


def test_to_pandas_one_row_per_run_and_rule(result: AuditResult) -> None:
    frame = result.to_pandas()
    extra = {run.run_id: {f.rule_id for f in run.findings} - {r.id for r in result.rules}
             for run in result.runs}  # fmt: skip
    assert len(frame) == sum(len(result.rules) + len(ids) for ids in extra.values())
    assert list(frame.columns) == [
        "run_id", "run_name", "experiment_id", "experiment_name", "rule_id", "title",
        "category", "severity", "status", "findings", "provisions", "citations", "message",
        "reason", "evidence",
    ]  # fmt: skip
    assert not frame.duplicated(["run_id", "rule_id"]).any()

    def cell(run: int, rule: str) -> Any:
        return frame[(frame.run_id == f"{run:032x}") & (frame.rule_id == rule)].iloc[0]

    assert cell(1, "data.training-dataset").status == "pass"
    assert cell(1, "data.training-dataset").message == ""
    failed = cell(2, "data.training-dataset")
    assert (failed.status, failed.findings, failed.message) == (
        "fail", 1, "/data/training: none recorded"
    )  # fmt: skip
    assert "Art. 10(2)(b)" in failed.citations and isinstance(failed.provisions, tuple)
    assert cell(4, "hyperparameters.logged").status == "waived"
    assert cell(3, "secrets.logged").status == "fail"  # a warning is still an open gap
    by_status = frame.status.value_counts().to_dict()
    evaluations, passes = result.rule_evaluations()
    assert by_status["fail"] + by_status.get("unknown", 0) == evaluations - passes
    assert by_status.get("not_applicable", 0) == len(frame) - evaluations


def test_formats_never_import_pandas(tmp_path: Path) -> None:
    # A fresh process, importing nothing of the test suite (tests.stores loads pandas).
    probe = f"""
import datetime as dt, sys
from audit.evaluation import evaluate
from audit.formats import FORMATS, render
from audit.formats.github import write_step_summary
from audit.policy import load_policy
from audit.waivers import Waiver, WaiverSet
from tests.records import complete_record

record = complete_record()
record["data"]["training"] = []
record["hyperparameters"] = {{}}
waivers = WaiverSet(
    (Waiver("hyperparameters.logged", "all", None, "r", "me", dt.date(2099, 1, 1), "w"),), "w"
)
result = evaluate([record], load_policy(), waivers=waivers, min_score=90)
for name in FORMATS:
    assert render(result, name)
write_step_summary(result, {{"GITHUB_STEP_SUMMARY": {str(tmp_path / "summary.md")!r}}})
assert "pandas" not in sys.modules, "pandas was imported"
"""
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO,
        env=stores.environment(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "summary.md").read_text().startswith("### ❌")


# --------------------------------------------------------------------------- table


def test_table_shows_waived_findings_waiver_warnings_and_min_score(result: AuditResult) -> None:
    text = render_table(result)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "  waived  hyperparameters.logged" in text
    assert "waived: accepted <b>for</b> the pilot (approved by Jane Doe, expires" in text
    summary = text[text.rindex("\n6 runs") :]
    assert "2 waived" in summary and "(min 99%)" in summary
    assert "warning: waiver expired: waivers.yaml: waivers[2]" in summary
    assert "warning: waiver unused: waivers.yaml: waivers[3]" in summary
    assert "is below --min-score 99%" in " ".join(summary.split())
    # a line break in a run name is escaped, not printed: it would break the layout
    assert "\n::error::pwned" not in text and "FAIL  =HYPERLINK" in text
    assert "PASS  waived" in text


def test_table_gate_fails_on_the_score_alone() -> None:
    result = audit_result(fail_on="never", min_score=99)
    assert result.gate_failed and not result.failing_runs()
    text = render_table(result)
    assert "gate FAILED: score" in text and "gate off" not in text
    assert "gate off (--fail-on never)" in render_table(audit_result(fail_on="never"))


def _large_result() -> AuditResult:
    """25 runs: 15 complete, 6 without data, 4 without hyperparameters (a warning) and no
    python version (an error)."""
    records = [_record(n, f"complete-{n}") for n in range(15)]
    records += [
        _record(100 + n, f"no-data-{n}", data={"training": [], "evaluation": [], "other": []})
        for n in range(6)
    ]
    for n in range(4):
        record = _record(200 + n, f"no-python-{n}", hyperparameters={})
        record["environment"]["python_version"] = None
        records.append(record)
    return evaluate(records, load_policy())


def test_a_large_table_lists_the_failing_runs_then_the_rules_by_failing_runs() -> None:
    result = _large_result()
    assert len(result.runs) > COMPACT_ABOVE
    text = render_table(result)
    assert len(text.splitlines()) < 60
    assert "more than 20: the runs with findings at or above error" in " ".join(text.split())
    listed = [line.split()[1] for line in text.splitlines() if line.startswith("FAIL  ")]
    assert sorted(listed) == sorted(r.run_name for r in result.failing_runs())
    assert len(listed) == 10 and not any(name.startswith("complete") for name in listed)
    block = text[text.index("rules by failing runs") :].split("\n\n")[0].splitlines()
    assert block[1].split() == ["runs", "severity", "rule"]
    rows = {line.split()[-1]: (int(line.split()[0]), line.split()[1]) for line in block[2:]}
    assert rows == {
        "data.training-dataset": (6, "error"),
        "data.evaluation-dataset": (6, "error"),
        "hyperparameters.logged": (4, "error"),
        "environment.python-version": (4, "error"),
    }
    assert "fix:" not in text  # the fixes are in --verbose, per run
    assert text.rstrip().endswith("gate FAILED: 10 runs have findings at or above error "
                                  "(--fail-on error)")  # fmt: skip


def test_verbose_shows_every_run_and_quiet_only_the_summary() -> None:
    result = _large_result()
    full = render_table(result, detail="full")
    assert sum(line[:6] in ("PASS  ", "FAIL  ", "WARN  ") for line in full.splitlines()) == 25
    assert "fix:" in full
    quiet = render_table(result, detail="summary")
    assert "FAIL  " not in quiet and "rules by failing runs" not in quiet
    assert quiet.splitlines()[-1] == full.splitlines()[-1]
    small = audit_result()
    assert render_table(small) == render_table(small, detail="full")  # 6 runs: every block


# --------------------------------------------------------------------------- real MLflow data


def test_every_format_on_a_real_store(
    sqlite_store: Store,
    junit_schema: xmlschema.XMLSchema,
    sarif_validator: Any,
    tmp_path: Path,
) -> None:
    hostile = sqlite_store.run_ids["hostile"]
    waiver = Waiver(
        rule_id="data.training-dataset", scope="run", target=hostile, reason="hostile fixture",
        approved_by="QA", expires=dt.date(2099, 1, 1), origin="waivers.yaml: waivers[0]",
    )  # fmt: skip
    result = check(
        sqlite_store.uri,
        min_score=50,
        waivers=WaiverSet(waivers=(waiver,), origin="waivers.yaml"),
    )
    assert {run.run_name for run in result.runs} >= {stores.HOSTILE_NAME, "complete"}
    outputs = {name: render(result, name) for name in FORMATS}

    junit_schema.validate(outputs["junit"])
    root = parse_xml(outputs["junit"])
    expected = _expected_junit(result)
    assert root.get("failures") == str(sum(f for _, f, _ in expected.values()))
    undecided = sum(len(run.not_applicable) + len(run.unknown) for run in result.runs)
    assert sum(int(s.get("skipped", "0")) for s in root.iter("testsuite")) == 1 + undecided

    log = json.loads(outputs["sarif"])
    sarif_validator.validate(log)
    results = log["runs"][0]["results"]
    assert len(results) == sum(len(run.findings) for run in result.runs)
    assert sum("suppressions" in entry for entry in results) == 1

    for line in outputs["github"].splitlines()[:-1]:
        assert _COMMAND.match(line), line
    assert "\x1b" not in outputs["github"]

    markdown = outputs["markdown"]
    assert len(markdown.encode("utf-8")) <= 65_536
    assert "<b>" not in markdown and "&lt;b&gt;bold&lt;/b&gt;" in markdown
    assert "<script>" not in markdown and "\x1b" not in markdown

    rows = list(csv.DictReader(io.StringIO(outputs["csv"])))
    assert len(rows) == sum(len(run.findings) for run in result.runs)
    assert {row["run_name"] for row in rows if row["run_id"] == hostile} == {stores.HOSTILE_NAME}

    frame = result.to_pandas()
    policy_rules = {rule.id for rule in result.rules}
    evaluated = {
        (run.run_id, rule_id)
        for run in result.runs
        for rule_id in policy_rules | {f.rule_id for f in run.findings}
    }
    assert len(frame) == len(evaluated)
    assert set(zip(frame.run_id, frame.rule_id, strict=True)) == evaluated
    waived = frame[frame.status == "waived"]
    assert list(zip(waived.run_id, waived.rule_id, strict=True)) == [
        (hostile, "data.training-dataset")
    ]
    assert max(len(line) for line in outputs["table"].splitlines()) <= 80


def test_one_audit_writes_every_requested_file(
    cli, sqlite_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("previous step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    files = {name: tmp_path / f"audit.{name}" for name in ("xml", "sarif", "md", "csv", "json")}
    result = cli(
        "check", "--tracking-uri", sqlite_store.uri, "-e", "truth-table", "--format", "github",
        "--junit-xml", str(files["xml"]), "--sarif", str(files["sarif"]),
        "--markdown", str(files["md"]), "--csv", str(files["csv"]), "--json", str(files["json"]),
        "--sarif-artifact", "pyproject.toml",
    )  # fmt: skip
    assert result.code == 1
    assert result.out.startswith("::error ")
    saved = json.loads(files["json"].read_text())
    open_findings = sum(len(run["findings"]) for run in saved["runs"])
    assert len(list(csv.DictReader(io.StringIO(files["csv"].read_text())))) == open_findings
    assert "<testsuites" in files["xml"].read_text()
    sarif = json.loads(files["sarif"].read_text())
    assert all(
        r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "pyproject.toml"
        for r in sarif["runs"][0]["results"]
    )
    appended = summary.read_text()
    assert appended.startswith("previous step\n") and files["md"].read_text() in appended


def test_table_in_a_github_log_cannot_issue_commands(
    cli, sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    result = cli("check", "--tracking-uri", sqlite_store.uri, "-e", "truth-table")
    first, *_, last = result.out.splitlines()
    token = first.removeprefix("::stop-commands::")
    assert token != first and last == f"::{token}::"
