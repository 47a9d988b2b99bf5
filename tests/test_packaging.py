"""The wheel carries schemas/ and report_templates/ and works outside the checkout."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests import stores
from tests.conftest import REPO, Store


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(REPO)],
        check=True, capture_output=True,
    )  # fmt: skip
    (built,) = out.glob("mlflow_audit-*.whl")
    return built


def test_wheel_contains_the_data_files(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "audit/_data/schemas/evidence-record.schema.json",
        "audit/_data/schemas/audit-result.schema.json",
        "audit/_data/schemas/policies/eu-ai-act-high-risk.json",
        "audit/_data/schemas/provisions/eu-ai-act.json",
        "audit/__main__.py",
    ):
        assert required in names
    for template in ("base.html.j2", "run.html.j2", "summary.html.j2", "style.css.j2"):
        assert f"audit/_data/report_templates/{template}" in names


def test_installed_wheel_runs_check_outside_the_checkout(
    wheel: Path, sqlite_store: Store, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    # Dependencies come from this environment (no second download of MLflow); the package
    # itself comes only from the wheel: a plain .pth line adds no editable-install hooks.
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    Path(site, "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)], check=True
    )
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    where = subprocess.run(
        [str(python), "-c",
         "import audit, audit.resources as r; print(audit.__file__); print(r.data_dir('schemas'))"],
        check=True, capture_output=True, text=True, cwd=outside,
    ).stdout.split()  # fmt: skip
    assert all(path.startswith(str(venv)) for path in where), where
    result = subprocess.run(
        [str(venv / "bin" / "mlflow-audit"), "check", "--tracking-uri", sqlite_store.uri,
         "-e", "truth-table", "--policy", "baseline"],
        capture_output=True, text=True, cwd=outside, env=stores.environment(),
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "FAIL  no-metrics" in result.stdout and "PASS  complete" in result.stdout
    reports = tmp_path / "reports"
    written = subprocess.run(
        [str(venv / "bin" / "mlflow-audit"), "report", "--tracking-uri", sqlite_store.uri,
         "-e", "truth-table", "--policy", "baseline", "--out", str(reports), "--no-pdf"],
        capture_output=True, text=True, cwd=outside, env=stores.environment(),
    )  # fmt: skip
    assert written.returncode == 0, written.stderr
    assert "Compliance matrix" in (reports / "complete.html").read_text()
