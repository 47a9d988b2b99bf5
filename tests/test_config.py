"""Configuration files: discovery, validation, precedence and provenance of every setting."""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path

import pytest

from audit.config import (
    KEYS,
    Config,
    ConfigError,
    Setting,
    apply_settings,
    defaults,
    find_config,
    given_options,
    load_config,
    options,
    render_settings,
    resolve,
)
from audit.errors import AuditError
from audit.resources import schema_path

FULL_EXAMPLE = """\
[project]
name = "churn"

[tool.mlflow-audit]
tracking_uri = "sqlite:///mlflow.db"
experiments = ["churn-model"]
run_ids = []
models = ["churn-classifier@champion"]
filter = "attributes.status = 'FINISHED'"
include_deleted = false
max_runs = 1000
search_page_size = 50000
timeout = 30
allow_artifact_locations = ["s3://acme-models/"]
policy = "eu-ai-act-high-risk"
fail_on = "error"
min_score = 90
waivers = "audit-waivers.yaml"
system_card = "system-card.yaml"
format = "table"
output = "audit.txt"
junit_xml = "reports/audit.xml"
sarif = "reports/audit.sarif"
markdown = "reports/audit.md"
csv = "reports/findings.csv"
json = "reports/audit.json"

[tool.mlflow-audit.report]
out = "docs/audit"
organisation = "Acme ML"
author = "Jane Doe"
page_size = "A4"
template_dir = "docs/templates"
pdf = true
jobs = 2
fail_on = "never"
min_score = 50
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def config_of(tmp_path: Path, text: str, name: str = "mlflow-audit.toml") -> Config:
    return load_config(write(tmp_path / name, text))


# --------------------------------------------------------------------------- discovery


def test_found_in_a_parent_folder(tmp_path: Path) -> None:
    own = write(tmp_path / "mlflow-audit.toml", 'fail_on = "warning"\n')
    deep = tmp_path / "src" / "pkg"
    deep.mkdir(parents=True)
    assert find_config(deep, {}) == own.resolve()


def test_pyproject_counts_only_with_the_table(tmp_path: Path) -> None:
    outer = write(tmp_path / "pyproject.toml", '[tool.mlflow-audit]\nfail_on = "info"\n')
    inner = tmp_path / "inner"
    write(inner / "pyproject.toml", '[project]\nname = "x"\n\n[tool.ruff]\nline-length = 100\n')
    assert find_config(inner, {}) == outer.resolve()
    write(inner / "pyproject.toml", '[tool.mlflow-audit]\nfail_on = "warning"\n')
    assert find_config(inner, {}) == (inner / "pyproject.toml").resolve()


def test_own_file_wins_over_pyproject_in_the_same_folder(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[tool.mlflow-audit]\nfail_on = "info"\n')
    own = write(tmp_path / "mlflow-audit.toml", 'fail_on = "warning"\n')
    assert find_config(tmp_path, {}) == own.resolve()


def test_the_nearest_folder_wins(tmp_path: Path) -> None:
    write(tmp_path / "mlflow-audit.toml", 'fail_on = "info"\n')
    inner = write(tmp_path / "a" / "pyproject.toml", '[tool.mlflow-audit]\nfail_on = "error"\n')
    assert find_config(tmp_path / "a", {}) == inner.resolve()


def test_nothing_found_up_to_the_root(tmp_path: Path) -> None:
    if any(
        (folder / name).exists()
        for folder in tmp_path.resolve().parents
        for name in ("mlflow-audit.toml", "pyproject.toml")
    ):
        pytest.skip("a folder above the test's temporary folder holds a configuration")
    write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n')
    assert find_config(tmp_path, {}) is None
    assert load_config(None) == Config()


def test_environment_names_the_file_or_turns_discovery_off(tmp_path: Path) -> None:
    write(tmp_path / "mlflow-audit.toml", 'fail_on = "info"\n')
    named = write(tmp_path / "ci" / "audit.toml", 'fail_on = "warning"\n')
    # A relative name is relative to the folder the command runs in.
    assert find_config(tmp_path, {"MLFLOW_AUDIT_CONFIG": "ci/audit.toml"}) == named.resolve()
    assert find_config(tmp_path, {"MLFLOW_AUDIT_CONFIG": str(named)}) == named.resolve()
    assert find_config(tmp_path, {"MLFLOW_AUDIT_CONFIG": "none"}) is None
    assert find_config(tmp_path, {"MLFLOW_AUDIT_CONFIG": "NONE"}) is None
    # CI often passes an unset input as an empty variable: that means "not set".
    assert (
        find_config(tmp_path, {"MLFLOW_AUDIT_CONFIG": ""})
        == (tmp_path / "mlflow-audit.toml").resolve()
    )


def test_flags_beat_the_environment(tmp_path: Path) -> None:
    write(tmp_path / "mlflow-audit.toml", 'fail_on = "info"\n')
    named = write(tmp_path / "other.toml", 'fail_on = "warning"\n')
    environ = {"MLFLOW_AUDIT_CONFIG": "none"}
    assert find_config(tmp_path, environ, explicit="other.toml") == named.resolve()
    environ = {"MLFLOW_AUDIT_CONFIG": str(named)}
    assert find_config(tmp_path, environ, disabled=True) is None
    with pytest.raises(ConfigError, match="contradict"):
        find_config(tmp_path, {}, explicit="other.toml", disabled=True)


@pytest.mark.parametrize(
    ("explicit", "environ", "message"),
    [
        ("missing.toml", {}, "--config missing.toml: not found"),
        (
            None,
            {"MLFLOW_AUDIT_CONFIG": "missing.toml"},
            "MLFLOW_AUDIT_CONFIG=missing.toml: not found",
        ),
        ("settings.yaml", {}, r"--config settings.yaml: a configuration file is TOML \(.toml\)"),
        (".", {}, "--config .: not a file"),
    ],
)
def test_a_named_file_must_exist_and_be_toml(
    tmp_path: Path, explicit: str | None, environ: dict[str, str], message: str
) -> None:
    write(tmp_path / "settings.yaml", "fail_on: warning\n")
    with pytest.raises(ConfigError, match=message):
        find_config(tmp_path, environ, explicit=explicit)


def test_a_named_pyproject_needs_the_table(tmp_path: Path) -> None:
    pyproject = write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n')
    path = find_config(tmp_path, {}, explicit="pyproject.toml")
    assert path == pyproject.resolve()
    with pytest.raises(ConfigError, match=r"pyproject.toml: no \[tool.mlflow-audit\] table"):
        load_config(path)


def test_a_misspelt_table_is_named_not_skipped(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[tool.mlflow_audit]\nfail_on = "warning"\n')
    with pytest.raises(ConfigError, match=r"\[tool.mlflow_audit\] is not read; name it"):
        find_config(tmp_path, {})


def test_a_broken_pyproject_of_another_project_is_skipped(tmp_path: Path) -> None:
    own = write(tmp_path / "mlflow-audit.toml", 'fail_on = "warning"\n')
    write(tmp_path / "sub" / "pyproject.toml", "[project\nname = \n")
    assert find_config(tmp_path / "sub", {}) == own.resolve()


def test_a_broken_pyproject_that_may_hold_ours_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[tool.mlflow-audit]\nfail_on = "warning\n')
    with pytest.raises(ConfigError, match=r"pyproject.toml: invalid TOML"):
        find_config(tmp_path, {})


# --------------------------------------------------------------------------- reading


def test_the_full_example_loads(tmp_path: Path) -> None:
    config = config_of(tmp_path, FULL_EXAMPLE, "pyproject.toml")
    root = tmp_path.resolve()
    assert config.path == tmp_path / "pyproject.toml"
    assert config.label == f"{tmp_path / 'pyproject.toml'} [tool.mlflow-audit]"
    assert set(config.values) == set(KEYS)
    assert config.values["experiments"] == ["churn-model"]
    assert config.values["models"] == ["churn-classifier@champion"]
    assert config.values["min_score"] == 90
    assert config.values["policy"] == "eu-ai-act-high-risk"  # a built-in name stays a name
    assert config.values["report.pdf"] is True
    assert config.values["report.jobs"] == 2
    assert config.values["tracking_uri"] == f"sqlite:///{root / 'mlflow.db'}"
    for key, relative in [
        ("waivers", "audit-waivers.yaml"),
        ("output", "audit.txt"),
        ("junit_xml", "reports/audit.xml"),
        ("sarif", "reports/audit.sarif"),
        ("markdown", "reports/audit.md"),
        ("csv", "reports/findings.csv"),
        ("json", "reports/audit.json"),
        ("report.out", "docs/audit"),
        ("report.template_dir", "docs/templates"),
    ]:
        assert config.values[key] == str(root / relative), key


def test_relative_paths_are_relative_to_the_file_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    write(
        repo / "mlflow-audit.toml",
        'tracking_uri = "sqlite:///stores/mlflow.db"\n'
        'policy = "policies/acme.yaml"\n'
        'waivers = "../shared/waivers.yaml"\n'
        "[report]\n"
        'out = "docs/audit"\n',
    )
    elsewhere = tmp_path / "repo" / "src" / "deep"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    config = load_config(find_config(Path.cwd(), {}))
    root = repo.resolve()
    assert config.values["policy"] == str(root / "policies" / "acme.yaml")
    assert config.values["waivers"] == str(tmp_path.resolve() / "shared" / "waivers.yaml")
    assert config.values["report.out"] == str(root / "docs" / "audit")
    assert config.values["tracking_uri"] == f"sqlite:///{root / 'stores' / 'mlflow.db'}"

    # The store module reads the rewritten URI as the database next to the file.
    from audit.sources.store import resolve_store

    (root / "stores").mkdir()
    sqlite3.connect(root / "stores" / "mlflow.db").execute("create table t (a)").connection.close()
    assert resolve_store(config.values["tracking_uri"]).path == root / "stores" / "mlflow.db"


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("mlruns", "{root}/mlruns"),
        ("./mlruns", "{root}/mlruns"),
        ("file:mlruns", "file://{root}/mlruns"),
        ("sqlite:///mlflow.db?timeout=5", "sqlite:///{root}/mlflow.db?timeout=5"),
        ("sqlite:///with space.db", "sqlite:///{root}/with%20space.db"),
        ("sqlite:////abs/mlflow.db", "sqlite:////abs/mlflow.db"),
        ("file:///abs/mlruns", "file:///abs/mlruns"),
        ("http://mlflow.internal:5000", "http://mlflow.internal:5000"),
        ("postgresql://user@db/mlflow", "postgresql://user@db/mlflow"),
        ("databricks", "databricks"),
    ],
)
def test_tracking_uris_that_name_a_relative_store(
    tmp_path: Path, written: str, expected: str
) -> None:
    config = config_of(tmp_path, f'tracking_uri = "{written}"\n')
    assert config.values["tracking_uri"] == expected.format(root=tmp_path.resolve())


@pytest.mark.parametrize("policy", ["acme.yaml", "policies/acme", "acme.JSON"])
def test_a_policy_that_names_a_file_is_resolved(tmp_path: Path, policy: str) -> None:
    config = config_of(tmp_path, f'policy = "{policy}"\n')
    assert config.values["policy"] == str(tmp_path.resolve() / policy)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('fail_onn = "error"', "unknown key 'fail_onn' (did you mean 'fail_on'?)"),
        ('fail-on = "error"', "unknown key 'fail-on' (did you mean 'fail_on'?)"),
        ('organisation = "Acme"', "unknown key 'organisation' (it belongs in the report table"),
        ('[report]\norgnisation = "Acme"', "unknown key 'report.orgnisation' (did you mean "),
        ("[report]\npolicy = 'x'", "unknown key 'report.policy' (it belongs in the main table"),
        ("colour = 1\nshape = 2", "unknown key 'colour'; also unknown: 'shape'"),
        ("min_score = 120", "min_score: 120 is greater than the maximum of 100"),
        ("min_score = nan", "min_score: nan is not a finite number"),
        ("max_runs = 0", "max_runs: 0 is less than the minimum of 1"),
        ("max_runs = true", 'max_runs: true is not of type "integer"'),
        ("max_runs = 2.5", 'max_runs: 2.5 is not of type "integer"'),
        ('include_deleted = "yes"', 'include_deleted: "yes" is not of type "boolean"'),
        ('experiments = "churn"', 'experiments: "churn" is not of type "array"'),
        ('experiments = ["a", 3]', 'experiments[1]: 3 is not of type "string"'),
        ('fail_on = "warn"', "fail_on: 'warn' is not one of error, warning, info, never"),
        ('format = "xml"', "format: 'xml' is not one of table, json, junit, sarif, markdown"),
        ('[report]\npage_size = "A5"', "report.page_size: 'A5' is not one of A4, letter"),
        ("[report]\njobs = 0", "report.jobs: 0 is less than the minimum of 1"),
        ('report = "docs"', 'report: "docs" is not of type "object"'),
    ],
)
def test_file_errors_name_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_of(tmp_path, text + "\n")
    assert str(caught.value).startswith(f"{tmp_path / 'mlflow-audit.toml'}: ")
    assert message in str(caught.value)
    assert isinstance(caught.value, AuditError)  # what the CLI turns into exit code 2


def test_pyproject_errors_name_the_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        config_of(tmp_path, '[tool.mlflow-audit]\nfail_onn = "error"\n', "pyproject.toml")
    assert str(caught.value) == (
        f"{tmp_path / 'pyproject.toml'} [tool.mlflow-audit]: unknown key 'fail_onn' "
        "(did you mean 'fail_on'?)"
    )


def test_the_tool_table_in_the_own_file_is_explained(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="the keys are at the top level"):
        config_of(tmp_path, '[tool.mlflow-audit]\nfail_on = "error"\n')


def test_whole_floats_are_integers_and_dates_are_text(tmp_path: Path) -> None:
    config = config_of(tmp_path, "max_runs = 10.0\n[report]\nauthor = 2026-01-02\n")
    assert config.values["max_runs"] == 10
    assert isinstance(config.values["max_runs"], int)
    assert config.values["report.author"] == "2026-01-02"


# --------------------------------------------------------------------------- precedence


def test_one_key_through_all_four_layers(tmp_path: Path) -> None:
    config = config_of(tmp_path, '[tool.mlflow-audit]\nfail_on = "warning"\n', "pyproject.toml")
    environ = {"MLFLOW_AUDIT_FAIL_ON": "info"}
    flag = {"fail_on": "never"}

    def fail_on(cfg: Config, line: dict[str, str], env: dict[str, str]) -> Setting:
        return resolve(cfg, line, env, defaults("check"))["fail_on"]

    assert fail_on(Config(), {}, {}) == Setting("error", "default")
    assert fail_on(config, {}, {}) == Setting("warning", config.label)
    assert config.label == f"{tmp_path / 'pyproject.toml'} [tool.mlflow-audit]"
    assert fail_on(config, {}, environ) == Setting("info", "environment MLFLOW_AUDIT_FAIL_ON")
    assert fail_on(config, flag, environ) == Setting("never", "command line --fail-on")


def test_tracking_uri_comes_from_mlflows_own_variable(tmp_path: Path) -> None:
    config = config_of(tmp_path, 'tracking_uri = "http://from-file:5000"\n')
    environ = {"MLFLOW_TRACKING_URI": "http://from-env:5000"}
    setting = resolve(config, {}, environ, defaults("check"))["tracking_uri"]
    assert setting == Setting("http://from-env:5000", "environment MLFLOW_TRACKING_URI")
    setting = resolve(config, {}, {"MLFLOW_TRACKING_URI": ""}, defaults("check"))["tracking_uri"]
    assert setting == Setting("http://from-file:5000", str(tmp_path / "mlflow-audit.toml"))


def test_environment_values_are_typed(tmp_path: Path) -> None:
    environ = {
        "MLFLOW_AUDIT_EXPERIMENTS": "churn, fraud,,",
        "MLFLOW_AUDIT_MIN_SCORE": "92.5",
        "MLFLOW_AUDIT_MAX_RUNS": " 10 ",
        "MLFLOW_AUDIT_INCLUDE_DELETED": "Yes",
        "MLFLOW_AUDIT_REPORT_PDF": "0",
        "MLFLOW_AUDIT_REPORT_PAGE_SIZE": "LETTER",
        "MLFLOW_AUDIT_REPORT_ORGANISATION": "Acme ML",
        "MLFLOW_AUDIT_POLICY": "",  # empty: not set
    }
    settings = resolve(Config(), {}, environ, defaults())
    values = {name: s.value for name, s in settings.items() if s.source.startswith("environ")}
    assert values == {
        "experiments": ["churn", "fraud"],
        "min_score": 92.5,
        "max_runs": 10,
        "include_deleted": True,
        "report.pdf": False,
        "report.page_size": "letter",
        "report.organisation": "Acme ML",
    }
    assert settings["policy"] == Setting("eu-ai-act-high-risk", "default")
    assert settings["report.organisation"].source == "environment MLFLOW_AUDIT_REPORT_ORGANISATION"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("MLFLOW_AUDIT_MIN_SCORE", "ninety", "MLFLOW_AUDIT_MIN_SCORE: 'ninety' is not a number"),
        ("MLFLOW_AUDIT_MIN_SCORE", "120", "MLFLOW_AUDIT_MIN_SCORE: min_score: 120 is greater"),
        ("MLFLOW_AUDIT_MIN_SCORE", "nan", "MLFLOW_AUDIT_MIN_SCORE: 'nan' is not a number"),
        ("MLFLOW_AUDIT_MAX_RUNS", "1.5", "MLFLOW_AUDIT_MAX_RUNS: '1.5' is not a whole number"),
        ("MLFLOW_AUDIT_REPORT_JOBS", "0", "MLFLOW_AUDIT_REPORT_JOBS: report.jobs: 0 is less"),
        ("MLFLOW_AUDIT_INCLUDE_DELETED", "maybe", "'maybe' is not true or false"),
        ("MLFLOW_AUDIT_FAIL_ON", "warn", "MLFLOW_AUDIT_FAIL_ON: 'warn' is not one of error"),
        ("MLFLOW_AUDIT_FAILON", "error", "MLFLOW_AUDIT_FAILON: not a setting of mlflow-audit "),
    ],
)
def test_environment_errors_name_the_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve(Config(), {}, {variable: value}, defaults())
    assert str(caught.value).startswith(f"environment variable {variable}: ")
    assert message in str(caught.value)


def test_a_bad_variable_is_an_error_even_under_a_flag() -> None:
    with pytest.raises(ConfigError, match="MLFLOW_AUDIT_MIN_SCORE"):
        resolve(Config(), {"min_score": 90.0}, {"MLFLOW_AUDIT_MIN_SCORE": "x"}, defaults("check"))


def test_only_the_settings_of_the_command_are_resolved(tmp_path: Path) -> None:
    config = config_of(tmp_path, FULL_EXAMPLE, "pyproject.toml")
    check = resolve(config, {}, {}, defaults("check"))
    report = resolve(config, {}, {}, defaults("report"))
    assert "report.out" not in check
    assert "fail_on" not in report
    assert "format" not in report
    assert report["report.fail_on"].value == "never"
    assert report["report.min_score"].value == 50
    assert check["min_score"].value == 90


def test_a_list_from_a_higher_layer_replaces_the_lower_one(tmp_path: Path) -> None:
    config = config_of(tmp_path, 'experiments = ["a", "b"]\n')
    settings = resolve(config, {"experiments": ["c"]}, {}, defaults("check"))
    assert settings["experiments"] == Setting(["c"], "command line --experiment")
    settings = resolve(config, {}, {"MLFLOW_AUDIT_EXPERIMENTS": "d"}, defaults("check"))
    assert settings["experiments"].value == ["d"]


def test_flag_spellings_can_be_given() -> None:
    settings = resolve(Config(), {"output": "x"}, {}, defaults("check"), {"output": "-o"})
    assert settings["output"].source == "command line -o"


# --------------------------------------------------------------------------- the command line


def _parser() -> argparse.ArgumentParser:
    """The options as the CLI declares them, but without argparse defaults (see given_options)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("-e", "--experiment", action="append", default=[])
    parser.add_argument("--include-deleted", action="store_true")
    parser.add_argument("--fail-on", default=None)
    parser.add_argument("--min-score", type=float, default=None)
    parser.add_argument("--search-page-size", type=int, default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--no-pdf", action="store_true")
    return parser


def test_given_options_and_back(tmp_path: Path) -> None:
    config = config_of(tmp_path, FULL_EXAMPLE, "pyproject.toml")
    args = _parser().parse_args(["--min-score", "95", "-e", "x", "--no-pdf"])
    assert given_options(args, "check") == {"experiments": ["x"], "min_score": 95.0}
    given = given_options(args, "report")
    assert given == {"experiments": ["x"], "report.min_score": 95.0, "report.pdf": False}

    settings = resolve(config, given, {}, defaults("report"))
    assert settings["report.pdf"] == Setting(False, "command line --no-pdf")
    assert settings["report.min_score"] == Setting(95.0, "command line --min-score")
    apply_settings(args, settings, "report")
    assert args.no_pdf is True
    assert args.min_score == 95.0
    assert args.fail_on == "never"
    assert args.search_page_size == 50_000
    assert args.out == str(tmp_path.resolve() / "docs" / "audit")

    # Nothing on the command line: report.pdf = true in the file means no --no-pdf.
    args = _parser().parse_args([])
    apply_settings(args, resolve(config, given_options(args, "report"), {}, defaults()), "report")
    assert args.no_pdf is False
    assert args.experiment == ["churn-model"]


def test_options_name_the_argparse_dest_and_flag() -> None:
    assert options("check")["experiments"] == ("experiment", "--experiment")
    assert options("check")["search_page_size"] == ("search_page_size", "--search-page-size")
    assert options("report")["report.out"] == ("out", "--out")
    assert options("report")["report.pdf"] == ("no_pdf", "--no-pdf")
    assert options("report")["report.fail_on"] == ("fail_on", "--fail-on")
    for command in ("check", "report"):
        dests = [dest for dest, _flag in options(command).values()]
        assert len(dests) == len(set(dests)), f"two settings of {command} share a dest"
    with pytest.raises(ValueError, match="no settings for command"):
        options("policy")


@pytest.mark.parametrize("command", ["check", "report"])
def test_options_match_the_real_parser(command: str) -> None:
    from audit.cli import build_parser

    parser = build_parser()
    commands = next(
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    )
    dest_of_flag = {
        flag: action.dest
        for action in commands.choices[command]._actions
        for flag in action.option_strings
    }
    for name, (dest, flag) in options(command).items():
        if flag in dest_of_flag:  # flags the CLI does not declare yet are not checked
            assert dest_of_flag[flag] == dest, f"{name}: {flag} stores into {dest_of_flag[flag]}"


def test_defaults_agree_with_the_rest_of_the_package() -> None:
    from audit.policy import DEFAULT_POLICY
    from audit.result import FAIL_ON_CHOICES
    from audit.sources import MAX_PAGE_SIZE

    every = defaults()
    assert every["policy"] == DEFAULT_POLICY
    assert every["search_page_size"] == MAX_PAGE_SIZE
    assert every["fail_on"] == "error"
    assert every["report.fail_on"] == "never"
    assert every["format"] == "table"
    assert every["report.page_size"] == "A4"
    assert every["report.pdf"] is True
    assert every["experiments"] == every["run_ids"] == every["models"] == []
    schema = json.loads(schema_path("config.schema.json").read_text(encoding="utf-8"))
    assert schema["$defs"]["fail_on"]["enum"] == list(FAIL_ON_CHOICES)


def test_the_schema_and_the_key_table_agree() -> None:
    schema = json.loads(schema_path("config.schema.json").read_text(encoding="utf-8"))
    report = schema["properties"]["report"]["properties"]
    in_schema = {name for name in schema["properties"] if name != "report"}
    in_schema |= {f"report.{name}" for name in report}
    assert in_schema == set(KEYS)
    assert schema["additionalProperties"] is False
    assert schema["properties"]["report"]["additionalProperties"] is False


# --------------------------------------------------------------------------- showing it


def test_render_text(tmp_path: Path) -> None:
    config = config_of(
        tmp_path,
        '[tool.mlflow-audit]\nfail_on = "warning"\nexperiments = ["a", "b"]\n',
        "pyproject.toml",
    )
    environ = {"MLFLOW_TRACKING_URI": "postgresql://audit:s3cret@db/mlflow"}
    settings = resolve(config, {"min_score": 90.0}, environ, defaults("check"))
    lines = render_settings(settings, config).splitlines()
    assert lines[0] == f"config file: {tmp_path / 'pyproject.toml'} [tool.mlflow-audit]"
    rows = {line.split()[0]: line for line in lines[1:]}
    assert list(rows) == list(defaults("check"))
    assert rows["tracking_uri"].split() == [
        "tracking_uri",
        "postgresql://audit:***@db/mlflow",
        "environment",
        "MLFLOW_TRACKING_URI",
    ]
    assert "s3cret" not in "\n".join(lines)
    assert rows["fail_on"].split()[1:] == [
        "warning",
        str(tmp_path / "pyproject.toml"),
        "[tool.mlflow-audit]",
    ]
    assert rows["min_score"].split()[1:] == ["90.0", "command", "line", "--min-score"]
    assert rows["policy"].split()[1:] == ["eu-ai-act-high-risk", "default"]
    assert rows["experiments"].split()[1:3] == ["[a,", "b]"]
    assert rows["max_runs"].split()[1:] == ["(not", "set)", "default"]
    # The sources line up in one column.
    assert len({line.index(" default") for line in lines[1:] if line.endswith(" default")}) == 1
    assert render_settings(settings, Config()).startswith("config file: none\n")


def test_render_json(tmp_path: Path) -> None:
    config = config_of(tmp_path, 'fail_on = "warning"\n')
    environ = {"MLFLOW_TRACKING_URI": "http://user:pw@mlflow:5000", "MLFLOW_AUDIT_MAX_RUNS": "5"}
    settings = resolve(config, {"format": "json"}, environ, defaults("check"))
    document = json.loads(render_settings(settings, config, "json"))
    assert document["config_file"] == str(tmp_path / "mlflow-audit.toml")
    assert document["settings"]["fail_on"] == {
        "value": "warning",
        "source": str(tmp_path / "mlflow-audit.toml"),
    }
    assert document["settings"]["max_runs"] == {
        "value": 5,
        "source": "environment MLFLOW_AUDIT_MAX_RUNS",
    }
    assert document["settings"]["format"] == {"value": "json", "source": "command line --format"}
    assert document["settings"]["experiments"] == {"value": [], "source": "default"}
    assert document["settings"]["tracking_uri"]["value"] == "http://user:***@mlflow:5000"
    assert list(document["settings"]) == list(defaults("check"))
    assert json.loads(render_settings({}, Config(), "json")) == {
        "config_file": None,
        "settings": {},
    }
    with pytest.raises(ValueError, match="unknown format"):
        render_settings(settings, config, "yaml")


def test_a_long_value_stays_apart_from_its_source() -> None:
    long_filter = "attributes.status = 'FINISHED' and tags.team = 'risk-and-compliance'"
    settings = resolve(Config(), {"filter": long_filter}, {}, {"filter": None, "policy": "p"})
    lines = render_settings(settings, Config()).splitlines()
    assert lines[1] == f"filter  {long_filter}  command line --filter"
    assert lines[2].split() == ["policy", "p", "default"]
