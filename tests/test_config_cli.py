"""Configuration through the command line: file < environment < flag, on a real store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Store


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_store: Store) -> Path:
    """A repository whose pyproject.toml audits the truth-table runs, run from a subfolder."""
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "churn"\n\n'
        "[tool.mlflow-audit]\n"
        f'tracking_uri = "{sqlite_store.uri}"\n'
        'experiments = ["truth-table"]\n'
        'policy = "baseline"\n'
        'fail_on = "never"\n'
        'junit_xml = "reports/audit.xml"\n\n'
        "[tool.mlflow-audit.report]\n"
        'out = "docs/audit"\n'
        'organisation = "Acme ML"\n'
        "pdf = false\n"
    )
    (tmp_path / "reports").mkdir()
    (tmp_path / "src").mkdir()
    monkeypatch.chdir(tmp_path / "src")
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_AUDIT_FAIL_ON", "MLFLOW_AUDIT_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_flag_beats_environment_beats_file(cli, project: Path, monkeypatch) -> None:
    from_file = cli("check")
    assert from_file.code == 0, from_file.err  # fail_on = "never" in the file
    assert "FAIL  no-metrics" in from_file.out
    assert (project / "reports" / "audit.xml").is_file()  # relative to the file's folder
    monkeypatch.setenv("MLFLOW_AUDIT_FAIL_ON", "error")
    assert cli("check").code == 1
    assert cli("check", "--fail-on", "never").code == 0
    shown = json.loads(cli("config", "-f", "json").out)
    assert shown["config_file"] == str(project / "pyproject.toml")
    assert shown["settings"]["fail_on"] == {
        "value": "error",
        "source": "environment MLFLOW_AUDIT_FAIL_ON",
    }
    assert shown["settings"]["policy"]["value"] == "baseline"
    assert shown["settings"]["format"]["source"] == "default"


def test_no_config_ignores_the_file(cli, project: Path, sqlite_store: Store) -> None:
    result = cli(
        "check", "--no-config", "--tracking-uri", sqlite_store.uri, "-e", "truth-table",
        "--policy", "baseline",
    )  # fmt: skip
    assert result.code == 1  # the built-in fail_on "error", not the file's "never"


def test_report_settings_come_from_the_file(cli, project: Path) -> None:
    result = cli("report", "--date", "2026-11-26")
    assert result.code == 0, result.err
    out = project / "docs" / "audit"
    assert sorted(p.suffix for p in out.glob("complete.*")) == [".html"]  # pdf = false
    assert "Acme ML" in (out / "complete.html").read_text()


def test_unknown_key_is_exit_2_naming_it(cli, project: Path) -> None:
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('fail_on = "never"', 'fail_onn = "never"'))
    result = cli("check")
    assert result.code == 2 and result.out == ""
    assert "fail_onn" in result.err and "pyproject.toml" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_config_names_the_store_an_audit_would_use_and_why(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, file_store: Store, sqlite_store: Store
) -> None:
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_AUDIT_CONFIG", "MLFLOW_AUDIT_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)

    def shown() -> dict:
        settings = json.loads(cli("config", "--no-config", "-f", "json").out)["settings"]
        return settings["tracking_uri"]

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    assert shown() == {
        "value": "sqlite:///mlflow.db",
        "source": f"MLflow's default: {empty / 'mlflow.db'}, which does not exist "
        "(no ./mlruns with experiments here)",
    }
    assert cli("check").code == 2  # and the audit says so too
    monkeypatch.chdir(file_store.root.parent)  # the folder holding ./mlruns
    assert shown() == {
        "value": "mlruns",
        "source": f"MLflow's default: {file_store.root.parent / 'mlruns'} holds experiments",
    }
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_store.uri)
    assert shown() == {"value": sqlite_store.uri, "source": "environment MLFLOW_TRACKING_URI"}
    text = cli("config", "--no-config").out
    (line,) = [line for line in text.splitlines() if line.startswith("tracking_uri ")]
    assert line.split()[1:] == [sqlite_store.uri, "environment", "MLFLOW_TRACKING_URI"]
