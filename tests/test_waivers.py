"""Waivers and --min-score: accepted gaps stay on the record and stop failing the gate."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from audit.waivers import WaiverError, load_waivers
from tests.conftest import Store

FUTURE = (dt.date.today() + dt.timedelta(days=90)).isoformat()
PAST = (dt.date.today() - dt.timedelta(days=1)).isoformat()


def _waivers(tmp_path: Path, *entries: str, name: str = "waivers.yaml") -> Path:
    path = tmp_path / name
    path.write_text("waivers:\n" + "".join(entries))
    return path


def _entry(rule: str, scope: str, expires: str = FUTURE) -> str:
    return (
        f"  - rule: {rule}\n    scope: {scope}\n    reason: accepted for the pilot\n"
        f"    approved_by: Jane Doe\n    expires: {expires}\n"
    )


def _baseline(cli, store: Store, *extra: str):
    return cli(
        "check", "--tracking-uri", store.uri, "-e", "truth-table", "--policy", "baseline",
        "-f", "json", *extra,
    )  # fmt: skip


def test_waived_findings_are_reported_and_stop_failing_the_gate(
    cli, sqlite_store: Store, tmp_path: Path
) -> None:
    path = _waivers(
        tmp_path,
        _entry("environment.python-version", "{experiment: truth-table}"),
        _entry("environment.requirements", "{experiment: truth-table}"),
        _entry("metrics.logged", f"{{run: {sqlite_store.run_ids['no-metrics']}}}"),
        _entry("hyperparameters.logged", "all"),
        _entry("data.dataset-version", "{experiment: truth-table}"),
    )
    before = _baseline(cli, sqlite_store)
    after = _baseline(cli, sqlite_store, "--waivers", str(path))
    assert before.code == 1 and after.code == 0, after.err
    result = after.json()
    assert result["summary"]["gate"]["failed"] is False
    assert result["summary"]["findings"] == 0
    assert result["summary"]["waived"] == before.json()["summary"]["findings"] == 5
    runs = {run["run_name"]: run for run in result["runs"]}
    assert {run["status"] for run in runs.values()} == {"pass"}
    (waived,) = runs["no-metrics"]["findings"]
    assert waived["waiver"]["reason"] == "accepted for the pilot"
    assert waived["waiver"]["approved_by"] == "Jane Doe"
    assert [use["state"] for use in result["waivers"]] == ["applied"] * 5
    assert result["summary"]["score"] == 100.0
    assert after.err == ""


def test_a_waiver_covers_only_its_scope(cli, sqlite_store: Store, tmp_path: Path) -> None:
    other_run = sqlite_store.run_ids["complete"]
    path = _waivers(tmp_path, _entry("metrics.logged", f"{{run: {other_run}}}"))
    result = _baseline(cli, sqlite_store, "--waivers", str(path))
    assert result.code == 1
    assert "matched no finding" in result.err
    no_metrics = next(r for r in result.json()["runs"] if r["run_name"] == "no-metrics")
    assert no_metrics["findings"][0]["waiver"] is None


def test_expired_waiver_stops_applying_and_warns(cli, sqlite_store: Store, tmp_path: Path) -> None:
    path = _waivers(tmp_path, _entry("metrics.logged", "all", expires=PAST))
    result = _baseline(cli, sqlite_store, "--waivers", str(path), "--fail-on", "error")
    assert result.code == 1
    assert "expired on" in result.err and "waivers.yaml: waivers[0]" in result.err
    (use,) = result.json()["waivers"]
    assert use["state"] == "expired" and use["findings"] == 1
    no_metrics = next(r for r in result.json()["runs"] if r["run_name"] == "no-metrics")
    assert no_metrics["status"] == "fail"


def test_registered_model_version_scope(cli, sqlite_store: Store, tmp_path: Path) -> None:
    run = cli(
        "check", "--tracking-uri", sqlite_store.uri, "--model", "audit-test-model@champion",
        "-f", "json",
    ).json()["runs"][0]  # fmt: skip
    rule = run["findings"][0]["rule_id"]
    path = _waivers(tmp_path, _entry(rule, "{model: audit-test-model/1}"))
    waived = cli(
        "check", "--tracking-uri", sqlite_store.uri, "--model", "audit-test-model@champion",
        "-f", "json", "--waivers", str(path),
    ).json()["runs"][0]  # fmt: skip
    assert {f["rule_id"] for f in waived["findings"] if f["waiver"]} == {rule}


def test_waivers_in_toml(cli, sqlite_store: Store, tmp_path: Path) -> None:
    path = tmp_path / "waivers.toml"
    path.write_text(
        "[[waivers]]\n"
        'rule = "metrics.logged"\n'
        'scope = { experiment = "truth-table" }\n'
        'reason = "metrics move to the evaluation job in Q1"\n'
        'approved_by = "Model Risk Committee"\n'
        f"expires = {FUTURE}\n"
    )
    result = _baseline(cli, sqlite_store, "--waivers", str(path))
    waived = [f for r in result.json()["runs"] for f in r["findings"] if f["waiver"]]
    assert [f["rule_id"] for f in waived] == ["metrics.logged"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "waivers:\n  - rule: metrics.logged\n    scope: all\n    reason: r\n"
            f"    expires: {FUTURE}\n",
            "waivers[0]: missing required field 'approved_by'",
        ),
        (
            "waivers:\n  - rule: metrics.logged\n    scope: {team: x}\n    reason: r\n"
            f"    approved_by: me\n    expires: {FUTURE}\n",
            "waivers[0].scope",
        ),
        (
            "waivers:\n  - rule: metrics.logged\n    scope: all\n    reason: r\n"
            "    approved_by: me\n    expires: next year\n",
            "waivers[0].expires",
        ),
        ("waivers: [\n", "invalid YAML"),
    ],
)
def test_a_bad_waivers_file_is_exit_2_naming_the_field(
    cli, sqlite_store: Store, tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "waivers.yaml"
    path.write_text(text)
    with pytest.raises(WaiverError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_waivers(path)
    result = _baseline(cli, sqlite_store, "--waivers", str(path))
    assert result.code == 2 and result.out == ""
    assert message in result.err and len(result.err.strip().splitlines()) == 1


def test_missing_waivers_file_is_exit_2(cli, sqlite_store: Store, tmp_path: Path) -> None:
    result = _baseline(cli, sqlite_store, "--waivers", str(tmp_path / "nope.yaml"))
    assert result.code == 2 and "not found" in result.err


def test_min_score_gates_on_the_share_of_passing_rule_evaluations(cli, sqlite_store: Store) -> None:
    score = _baseline(cli, sqlite_store).json()["summary"]["score"]
    assert 0 < score < 100
    below = _baseline(cli, sqlite_store, "--fail-on", "never", "--min-score", str(score + 0.1))
    assert below.code == 1
    assert below.json()["summary"]["gate"] == {
        "fail_on": "never",
        "min_score": score + 0.1,
        "failed": True,
        "failing_runs": 0,
        "score_too_low": True,
    }
    at = _baseline(cli, sqlite_store, "--fail-on", "never", "--min-score", str(score))
    assert at.code == 0
    with pytest.raises(SystemExit) as refused:  # argparse's own exit, with the usage line
        _baseline(cli, sqlite_store, "--min-score", "120")
    assert refused.value.code == 2


def test_report_lists_waived_findings(cli, sqlite_store: Store, tmp_path: Path) -> None:
    path = _waivers(tmp_path, _entry("metrics.logged", "all"))
    out = tmp_path / "out"
    result = cli(
        "report", "--tracking-uri", sqlite_store.uri, "-e", "truth-table", "--policy",
        "baseline", "--waivers", str(path), "--out", str(out), "--no-pdf",
    )  # fmt: skip
    assert result.code == 0
    html = (out / "no-metrics.html").read_text()
    assert "WAIVED" in html and "accepted for the pilot" in html and "Jane Doe" in html
    saved = json.loads((out / "result.json").read_text())
    assert saved["waivers"][0]["state"] == "applied"
