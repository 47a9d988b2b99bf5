"""The console script and `python -m audit`, as a user runs them: in a fresh process."""

from __future__ import annotations

import subprocess
import sys

import pytest

from audit import __version__
from tests import stores
from tests.conftest import REPO, Store

HEAVY = ("weasyprint", "pyhanko", "pandas")
_PROBE = """
import sys
from audit.__main__ import entry
sys.argv = ["mlflow-audit", *sys.argv[1:]]
try:
    entry()
except SystemExit as done:
    code = done.code
loaded = [m for m in {heavy!r} if sys.modules.get(m) is not None]
print("LOADED", ",".join(loaded), "EXIT", code, file=sys.stderr)
"""


def run(*args: str, cwd=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=HEAVY), *args],
        capture_output=True, text=True, cwd=cwd or REPO, env=stores.environment(),
    )  # fmt: skip


def loaded(result: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    marker = result.stderr.strip().splitlines()[-1].split()
    return marker[1] if marker[1] != "EXIT" else "", marker[-1]


def test_version_is_instant_and_light() -> None:
    result = run("--version")
    assert result.stdout.strip() == f"mlflow-audit {__version__}"
    assert loaded(result) == ("", "0")


def test_check_imports_no_report_or_data_stack(sqlite_store: Store) -> None:
    result = run("check", "--tracking-uri", sqlite_store.uri, "-e", "truth-table")
    assert "FAIL  no-data" in result.stdout
    assert loaded(result) == ("", "1"), result.stderr


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
    [[], ["check"], ["policy"], ["policy", "list"], ["policy", "show"], ["policy", "validate"],
     ["provisions"]],
)  # fmt: skip
def test_every_command_has_help(cli, command: list[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli(*command, "--help")
    assert done.value.code == 0


def test_no_command_prints_help_and_exits_2(cli) -> None:
    result = cli()
    assert result.code == 2 and "check" in result.out


def test_unknown_flag_is_one_line_usage_error() -> None:
    result = run("check", "--experimnet", "x")
    assert "unrecognized arguments: --experimnet" in result.stderr
    assert "Traceback" not in result.stderr
    assert loaded(result)[1] == "2"
