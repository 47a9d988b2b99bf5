"""The console script and `python -m audit`, as a user runs them: in a fresh process."""

from __future__ import annotations

import subprocess
import sys

import pytest

from audit import __version__
from tests import stores
from tests.conftest import REPO, Store

HEAVY = ("weasyprint", "pyhanko", "pandas")


def test_version_is_instant_and_light() -> None:
    result = stores.probe_cli("--version", watched=HEAVY, cwd=REPO)
    assert result.out.strip() == f"mlflow-audit {__version__}"
    assert (result.loaded, result.code) == ((), 0)


def test_check_imports_no_report_or_data_stack(sqlite_store: Store) -> None:
    result = stores.probe_cli(
        "check", "--tracking-uri", sqlite_store.uri, "-e", "truth-table", watched=HEAVY, cwd=REPO
    )
    assert "FAIL  no-data" in result.out
    assert (result.loaded, result.code) == ((), 1), result.err


def test_python_dash_m_audit(sqlite_store: Store) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "audit", "check", "--tracking-uri", sqlite_store.uri,
         "--run-id", sqlite_store.run_ids["complete"], "--policy", "baseline"],
        capture_output=True, text=True, env=stores.environment(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "PASS  complete" in result.stdout


@pytest.mark.parametrize(
    "command",
    [[], ["check"], ["report"], ["keygen"], ["sign"], ["verify"], ["config"], ["policy"],
     ["policy", "list"], ["policy", "show"], ["policy", "validate"], ["provisions"],
     ["system-card"], ["system-card", "init"], ["system-card", "validate"], ["ledger"],
     ["ledger", "verify"], ["ledger", "show"], ["diff"], ["verify-deploy"], ["serve"],
     ["export"]],
)  # fmt: skip
def test_every_command_has_help_that_fits_a_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    from audit.cli import main

    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("usage: mlflow-audit")
    assert [line for line in lines if len(line) > 80] == []


def test_no_command_prints_help_and_exits_2(cli) -> None:
    result = cli()
    assert result.code == 2 and "check" in result.out


def test_unknown_flag_is_one_line_usage_error() -> None:
    result = stores.probe_cli("check", "--experimnet", "x", watched=HEAVY, cwd=REPO)
    assert "unrecognized arguments: --experimnet" in result.err
    assert "Traceback" not in result.err
    assert result.code == 2


@pytest.mark.parametrize(
    ("argv", "usage", "error"),
    [
        (["chek"], "usage: mlflow-audit [-h]",
         "invalid choice: 'chek' (choose from 'check', 'report', 'keygen', 'sign', 'verify', "
         "'policy', 'config', 'provisions', 'export', 'diff', 'system-card', 'verify-deploy', "
         "'ledger', 'serve') (did you mean check?)"),
        (["check", "--experimnt", "x"], "usage: mlflow-audit check [-h]",
         "unrecognized arguments: --experimnt x (did you mean --experiment?)"),
        (["report", "--outt=build"], "usage: mlflow-audit report [-h]",
         "unrecognized arguments: --outt=build (did you mean --out?)"),
        (["check", "-f", "jsn"], "usage: mlflow-audit check [-h]",
         "argument -f/--format: invalid choice: 'jsn' (choose from 'table', 'json', 'junit', "
         "'sarif', 'markdown', 'github', 'csv') (did you mean json?)"),
        (["check", "--fail-on", "eror"], "usage: mlflow-audit check [-h]",
         "(did you mean error?)"),
        (["policy", "shw"], "usage: mlflow-audit policy [-h]", "(did you mean show?)"),
        (["check", "--zzzzzz"], "usage: mlflow-audit check [-h]",
         "unrecognized arguments: --zzzzzz"),
    ],
)  # fmt: skip
def test_a_mistyped_command_flag_or_choice_gets_its_commands_usage_and_a_hint(
    capsys: pytest.CaptureFixture[str], argv: list[str], usage: str, error: str
) -> None:
    from audit.cli import main

    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(usage)
    assert err.splitlines()[-1].startswith("mlflow-audit: error: ")
    assert err.splitlines()[-1].endswith(error)
    if "did you mean" not in error:
        assert "did you mean" not in err


def test_a_mistyped_policy_name_gets_a_hint(cli) -> None:
    result = cli("check", "--policy", "eu-ai-act-hgh-risk")
    assert result.code == 2
    assert result.err.strip().endswith(
        "not a built-in policy (baseline, eu-ai-act-annex-iv, eu-ai-act-high-risk) "
        "(did you mean eu-ai-act-high-risk?)"
    )
