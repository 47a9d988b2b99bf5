"""`mlflow-audit check`: truth table, selection flags, formats and exit codes, on real stores."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema_rs
import pytest

from audit.resources import schema_path
from tests import stores
from tests.conftest import Store


def findings_by_run(result: dict) -> dict[str, list[dict]]:
    return {run["run_name"]: run["findings"] for run in result["runs"]}


def test_truth_table_flags_exactly_the_missing_category(cli, sqlite_store: Store) -> None:
    result = cli(
        "check", "--tracking-uri", sqlite_store.uri, "-e", "truth-table",
        "--policy", "baseline", "--format", "json",
    )  # fmt: skip
    assert result.code == 1
    findings = findings_by_run(result.json())
    assert set(findings) == set(stores.TRUTH_TABLE)
    assert findings["complete"] == []
    for run_name, category in stores.MISSING_CATEGORY.items():
        flagged = {f["category"] for f in findings[run_name]}
        assert flagged == {category}, run_name
        assert all(f["severity"] == "error" for f in findings[run_name])


def test_finding_carries_rule_pointer_provisions_and_fix(cli, sqlite_store: Store) -> None:
    result = cli(
        "check", "--tracking-uri", sqlite_store.uri,
        "--run-id", sqlite_store.run_ids["no-data"], "--policy", "baseline", "-f", "json",
    )  # fmt: skip
    (finding,) = result.json()["runs"][0]["findings"]
    assert finding["rule_id"] == "data.dataset-version"
    assert finding["pointer"] == "/data"
    assert "eu-ai-act/art-10/2/b" in finding["provisions"]
    assert "Art. 10(2)(b)" in finding["citations"]
    assert "mlflow.log_input" in finding["remediation"]


def test_json_output_validates_against_published_schema(cli, sqlite_store: Store) -> None:
    result = cli("check", "--tracking-uri", sqlite_store.uri, "-f", "json")
    schema = json.loads(schema_path("audit-result.schema.json").read_text())
    jsonschema_rs.validator_for(schema).validate(result.json())
    summary = result.json()["summary"]
    assert summary["runs"] == len(result.json()["runs"]) > 5
    assert summary["gate"] == {
        "fail_on": "error",
        "min_score": None,
        "failed": True,
        "failing_runs": summary["runs_by_status"]["fail"],
        "score_too_low": False,
    }


def test_provisions_matrix_lists_failing_runs_per_rule(cli, sqlite_store: Store) -> None:
    result = cli(
        "check",
        "--tracking-uri",
        sqlite_store.uri,
        "-e",
        "truth-table",
        "--policy",
        "baseline",
        "-f",
        "json",
    ).json()
    matrix = {entry["id"]: entry for entry in result["matrix"]}
    art_10 = matrix["eu-ai-act/art-10/2/b"]
    assert art_10["citation"] == "Art. 10(2)(b)"
    assert art_10["status"] == "fail"
    rules = {rule["rule_id"]: rule for rule in art_10["rules"]}
    assert rules["data.dataset-version"]["failing_runs"] == [sqlite_store.run_ids["no-data"]]
    assert rules["data.dataset-version"]["passed"] == len(stores.TRUTH_TABLE) - 1


@pytest.mark.parametrize(
    ("fail_on", "runs", "code"),
    [
        ("error", ["complete"], 0),
        ("error", ["no-metrics"], 1),
        ("never", ["no-metrics"], 0),
        ("warning", ["complete"], 0),
    ],
)
def test_exit_codes_follow_fail_on(cli, sqlite_store: Store, fail_on, runs, code) -> None:
    run_args = [arg for name in runs for arg in ("--run-id", sqlite_store.run_ids[name])]
    result = cli(
        "check", "--tracking-uri", sqlite_store.uri, "--policy", "baseline",
        "--fail-on", fail_on, *run_args,
    )  # fmt: skip
    assert result.code == code, result.out


def test_warning_threshold_fails_on_warnings_only_run(cli, sqlite_store: Store) -> None:
    run = ["--run-id", sqlite_store.run_ids["logged-model"]]
    errors_only = cli("check", "--tracking-uri", sqlite_store.uri, *run, "-f", "json")
    severities = {f["severity"] for f in errors_only.json()["runs"][0]["findings"]}
    assert "error" not in severities and "warning" in severities, severities
    assert errors_only.code == 0
    assert cli("check", "--tracking-uri", sqlite_store.uri, *run, "--fail-on", "warning").code == 1


# --------------------------------------------------------------------------- selection


def audited_names(result) -> set[str]:
    return {run["run_name"] for run in result.json()["runs"]}


def test_default_selection_is_every_active_run(cli, sqlite_store: Store) -> None:
    names = audited_names(cli("check", "--tracking-uri", sqlite_store.uri, "-f", "json"))
    assert names == set(stores.TRUTH_TABLE) | {
        stores.HOSTILE_NAME,
        "logged-model",
        "legacy-2x-layout",
    }


def test_include_deleted_adds_deleted_runs(cli, sqlite_store: Store) -> None:
    result = cli(
        "check", "--tracking-uri", sqlite_store.uri, "-e", "models", "--include-deleted",
        "-f", "json",
    )  # fmt: skip
    assert "deleted" in audited_names(result)
    deleted = findings_by_run(result.json())["deleted"]
    assert "run.active" in {f["rule_id"] for f in deleted}


def test_experiment_by_name_and_by_id(cli, sqlite_store: Store) -> None:
    by_name = cli("check", "--tracking-uri", sqlite_store.uri, "-e", "truth-table", "-f", "json")
    experiment_id = by_name.json()["runs"][0]["experiment_id"]
    by_id = cli("check", "--tracking-uri", sqlite_store.uri, "-e", experiment_id, "-f", "json")
    assert audited_names(by_name) == audited_names(by_id) == set(stores.TRUTH_TABLE)


def test_filter_is_passed_to_mlflow(cli, sqlite_store: Store) -> None:
    result = cli(
        "check", "--tracking-uri", sqlite_store.uri, "-e", "truth-table",
        "--filter", "params.alpha = '0.1' and attributes.run_name != 'complete'", "-f", "json",
    )  # fmt: skip
    assert audited_names(result) == {"no-data", "no-metrics", "no-environment"}


def test_run_ids_are_deduplicated_and_max_runs_stops(cli, sqlite_store: Store) -> None:
    run_id = sqlite_store.run_ids["complete"]
    twice = cli(
        "check", "--tracking-uri", sqlite_store.uri, "--run-id", run_id, "--run-id", run_id,
        "-e", "truth-table", "-f", "json",
    ).json()  # fmt: skip
    ids = [run["run_id"] for run in twice["runs"]]
    assert len(ids) == len(set(ids)) == len(stores.TRUTH_TABLE)
    (selected,) = [run for run in twice["runs"] if run["run_id"] == run_id]
    assert selected["selected_by"] == ["run id"]
    limited = cli(
        "check", "--tracking-uri", sqlite_store.uri, "--max-runs", "2", "--search-page-size", "1",
        "-f", "json",
    ).json()  # fmt: skip
    assert len(limited["runs"]) == 2
    assert limited["summary"]["truncated"] is True


def test_page_size_does_not_change_the_result(cli, sqlite_store: Store) -> None:
    whole = cli("check", "--tracking-uri", sqlite_store.uri, "-f", "json").json()
    paged = cli(
        "check", "--tracking-uri", sqlite_store.uri, "--search-page-size", "2", "-f", "json"
    )
    assert [r["evidence_sha256"] for r in paged.json()["runs"]] == [
        r["evidence_sha256"] for r in whole["runs"]
    ]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("audit-test-model@champion", {"logged-model"}),
        ("audit-test-model@legacy", {"legacy-2x-layout"}),
        ("audit-test-model/2", {"legacy-2x-layout"}),
        ("audit-test-model/latest", {"legacy-2x-layout"}),
        ("audit-test-model", {"logged-model", "legacy-2x-layout"}),
    ],
)
def test_model_selection(cli, sqlite_store: Store, spec: str, expected: set[str]) -> None:
    result = cli("check", "--tracking-uri", sqlite_store.uri, "--model", spec, "-f", "json")
    assert audited_names(result) == expected
    assert all(run["model_versions"] for run in result.json()["runs"])


def test_model_alias_carries_registry_metadata(cli, sqlite_store: Store) -> None:
    from audit.api import check

    result = check(sqlite_store.uri, model="audit-test-model@champion", keep_records=True)
    (run,) = result.runs
    assert run.model_versions == ("audit-test-model/1 (@champion)",)
    assert result.records is not None
    models = result.records[run.run_id]["models"]
    (version,) = models[0]["registered_versions"]
    assert version["name"] == "audit-test-model" and version["aliases"] == ["champion"]


# --------------------------------------------------------------------------- exit code 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-e", "no-such-experiment"], "unknown experiment 'no-such-experiment'"),
        (["--run-id", "0" * 32], "unknown run id"),
        (["--model", "no-such-model"], "unknown registered model"),
        (["--model", "audit-test-model@nope"], "unknown registered model version"),
        (["--filter", "params.alpha =="], "invalid --filter"),
        (["-e", "truth-table", "--filter", "params.alpha = 'nope'"], "no runs matched"),
        (["--policy", "no-such-policy"], "no such policy file"),
    ],
)
def test_incomplete_audits_exit_2_with_one_line(cli, sqlite_store: Store, args, message) -> None:
    result = cli("check", "--tracking-uri", sqlite_store.uri, *args)
    assert result.code == 2
    assert result.out == ""
    assert message in result.err
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert "Traceback" not in result.err


def test_missing_store_exits_2_and_creates_nothing(cli, tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "mlfow.db"
    result = cli("check", "--tracking-uri", f"sqlite:///{missing}")
    assert result.code == 2
    assert "no MLflow store at" in result.err
    assert not missing.exists() and not missing.parent.exists()


def test_default_store_missing_exits_2(cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = cli("check")
    assert result.code == 2
    assert result.err.splitlines() == [
        f"mlflow-audit: error: no MLflow store here: neither ./mlruns with experiments nor "
        f"./mlflow.db in {tmp_path}; run where your store is, or name it with --tracking-uri or "
        "MLFLOW_TRACKING_URI (sqlite:///path/mlflow.db, http://server:5000, ...)"
    ]
    assert list(tmp_path.iterdir()) == []


def test_tracking_uri_from_environment(cli, sqlite_store: Store, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_store.uri)
    result = cli("check", "-e", "truth-table", "--policy", "baseline", "-f", "json")
    assert result.code == 1
    assert result.json()["store"] == str(sqlite_store.root)


def test_default_store_is_mlflow_db_in_working_directory(
    cli, sqlite_store: Store, tmp_path: Path, monkeypatch, copy_of
) -> None:
    copy = copy_of(sqlite_store.root)
    monkeypatch.chdir(copy.parent)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = cli("check", "-e", "truth-table", "-f", "json")
    assert result.json()["store"] == str(tmp_path / "mlflow.db")


def test_not_a_database_and_truncated_database(cli, sqlite_store: Store, tmp_path: Path) -> None:
    text = tmp_path / "notes.db"
    text.write_text("not a database")
    result = cli("check", "--tracking-uri", f"sqlite:///{text}")
    assert result.code == 2 and "is not a SQLite database" in result.err
    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(sqlite_store.root.read_bytes()[:8192])
    result = cli("check", "--tracking-uri", f"sqlite:///{truncated}")
    assert result.code == 2, result.out
    assert "truncated.db" in result.err and len(result.err.strip().splitlines()) == 1


def test_store_of_another_mlflow_version_is_read_untouched(
    cli, sqlite_store: Store, copy_of
) -> None:
    copy = copy_of(sqlite_store.root)
    stores.set_schema_revision(copy, "0584bdc529eb")  # what MLflow 2.22 writes
    before = stores.tree_digest(copy)
    # MLflow's client would migrate it: that source refuses, and says what reads it as it is.
    refused = cli("check", "--tracking-uri", f"sqlite:///{copy}", "--source", "client")
    assert refused.code == 2
    assert "schema revision 0584bdc529eb" in refused.err
    assert "would migrate" in refused.err and "--source sql" in refused.err
    # The SQL source (the default for SQLite) reads it.
    read = cli("check", "--tracking-uri", f"sqlite:///{copy}", "-f", "json")
    assert read.code == 1 and read.json()["source"] == "sql"
    assert stores.tree_digest(copy) == before


def test_unreachable_server_exits_2_quickly(cli) -> None:
    import time

    start = time.monotonic()
    result = cli("check", "--tracking-uri", f"http://127.0.0.1:{stores.free_port()}")
    assert result.code == 2
    assert "cannot reach the tracking server" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert time.monotonic() - start < 30


def test_bad_arguments_exit_2(cli) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli("check", "--fail-on", "sometimes")
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        cli("check", "--max-runs", "0")
    assert exit_info.value.code == 2


# --------------------------------------------------------------------------- imports


@pytest.mark.parametrize(
    "formats",
    [[], ["-f", "json", "--junit-xml", "{tmp}/a.xml", "--sarif", "{tmp}/a.sarif"]],
    ids=["table", "json-junit-sarif"],
)
def test_check_of_a_sqlite_store_never_imports_mlflow(
    sqlite_store: Store, tmp_path: Path, formats: list[str]
) -> None:
    """Neither MLflow nor SQLAlchemy: the core install has only mlflow-skinny, and importing
    the full MLflow alone takes longer than auditing thousands of runs."""
    done = stores.probe_cli(
        "check", "--tracking-uri", sqlite_store.uri, "-e", "truth-table",
        *(f.format(tmp=tmp_path) for f in formats),
        watched=("mlflow", "sqlalchemy", "alembic", "flask", "pandas", "numpy", "pyarrow"),
        cwd=tmp_path,
    )  # fmt: skip
    assert "FAIL" in done.out or '"no-metrics"' in done.out, done.err
    assert done.loaded == () and done.code == 1, done.err


# --------------------------------------------------------------------------- output


def test_table_fits_80_columns_without_colour_off_a_terminal(cli, sqlite_store: Store) -> None:
    result = cli("check", "--tracking-uri", sqlite_store.uri)
    assert "\x1b[" not in result.out
    assert max(len(line) for line in result.out.splitlines()) <= 80
    assert "FAIL  no-metrics" in result.out
    assert "gate FAILED" in result.out


def test_table_escapes_terminal_control_characters(cli, sqlite_store: Store) -> None:
    result = cli("check", "--tracking-uri", sqlite_store.uri, "--run-id",
                 sqlite_store.run_ids["hostile"], "--color", "never")  # fmt: skip
    assert "\x1b" not in result.out
    assert "\\x1b[31mred" in result.out
    assert "ünïcödé 😀" in result.out


def test_output_file(cli, sqlite_store: Store, tmp_path: Path) -> None:
    target = tmp_path / "result.json"
    result = cli("check", "--tracking-uri", sqlite_store.uri, "-f", "json", "-o", str(target))
    assert result.code == 1 and result.out == ""
    assert json.loads(target.read_text())["summary"]["runs"] > 0
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_output_to_a_device_writes_through_it(cli, sqlite_store: Store, tmp_path) -> None:
    import os
    import stat

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    # A reader on the other end, as a shell's process substitution would have.
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        # One run: the output must fit in the pipe's buffer, read only afterwards.
        result = cli(
            "check", "--tracking-uri", sqlite_store.uri, "--run-id",
            sqlite_store.run_ids["no-metrics"], "--policy", "baseline", "-o", str(fifo),
        )  # fmt: skip
        received = os.read(reader, 1 << 20)
    finally:
        os.close(reader)
    assert result.code == 1
    assert stat.S_ISFIFO(fifo.stat().st_mode), "the FIFO was replaced by a file"
    assert b"FAIL  no-metrics" in received


def test_quiet_prints_the_summary_and_verbose_every_run(cli, sqlite_store: Store) -> None:
    default = cli("check", "--tracking-uri", sqlite_store.uri)
    quiet = cli("check", "--tracking-uri", sqlite_store.uri, "--quiet")
    verbose = cli("check", "--tracking-uri", sqlite_store.uri, "-v")
    assert default.code == quiet.code == verbose.code == 1
    assert verbose.out == default.out  # a handful of runs: every block either way
    assert "FAIL  " in default.out and "FAIL  " not in quiet.out
    summary = default.out[default.out.rindex(" runs in ") :].split("\n", 1)[1]
    assert quiet.out.endswith(summary) and len(quiet.out.splitlines()) < 8
    with pytest.raises(SystemExit) as both:
        cli("check", "--tracking-uri", sqlite_store.uri, "-q", "-v")
    assert both.value.code == 2
