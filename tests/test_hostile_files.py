"""A few hundred hostile bytes must not hang an audit or exhaust its memory: YAML alias bombs in
a logged model's files, in a policy and in a waivers file, and a named pipe where a model's
requirements.txt should be. Each case runs the command in a process of its own, with a timeout
it must finish well within."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from audit import collect
from audit.safeyaml import YamlBoundsError, load
from tests import stores

#: The classic "billion laughs", 9 levels of 9: about 390 million nodes once expanded.
BOMB = "".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n',
        *(
            f"{name}: &{name} [{', '.join(['*' + previous] * 9)}]\n"
            for previous, name in zip("abcdefgh", "bcdefghi", strict=True)
        ),
    ]
)
TIMEOUT = 90  # seconds; a hang or a runaway expansion would take it all


def _audit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "audit", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=stores.environment(),
        timeout=TIMEOUT,
    )


@dataclass(frozen=True)
class ModelStore:
    uri: str
    directory: Path
    #: The folder of the logged model's files (MLmodel, conda.yaml, requirements.txt, ...).
    files: Path


@pytest.fixture(scope="module")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    """Built once: each test replaces one file and puts it back (`replaced`)."""
    directory = tmp_path_factory.mktemp("hostile-files")
    uri, files = _model_store(directory)
    return ModelStore(uri, directory, files)


@contextlib.contextmanager
def replaced(path: Path, content: str | None) -> Iterator[None]:
    """`path` holding `content` (None: a named pipe) for the time of the block."""
    original = path.read_bytes()
    path.unlink()
    if content is None:
        os.mkfifo(path)
    else:
        path.write_text(content)
    try:
        yield
    finally:
        path.unlink()
        path.write_bytes(original)


def _model_store(directory: Path) -> tuple[str, Path]:
    """A SQLite store with one run that logged a scikit-learn model (MLflow 3 logged model),
    and the folder of that model's files."""
    script = f"""
import os, sys
os.chdir({str(directory)!r})
import mlflow
from sklearn.linear_model import LogisticRegression
mlflow.set_tracking_uri("sqlite:///mlflow.db")
mlflow.set_experiment("hostile-files")
with mlflow.start_run(run_name="with-model"):
    mlflow.log_param("C", 1.0)
    model = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    info = mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn==1.5.2"])
print(info.model_id)
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True, text=True, env=stores.environment(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    model_id = done.stdout.strip().splitlines()[-1]
    (files,) = [p.parent for p in directory.glob(f"mlruns/*/models/{model_id}/artifacts/MLmodel")]
    return f"sqlite:///{directory / 'mlflow.db'}", files


def test_the_bomb_is_small_and_refused_fast() -> None:
    assert len(BOMB.encode()) < 600
    with pytest.raises(YamlBoundsError, match="more than 200,000 nodes"):
        load(BOMB)
    with pytest.raises(YamlBoundsError, match="not complete"):
        load("a: &a [1, *a]")  # a structure that contains itself
    with pytest.raises(YamlBoundsError, match="deeper than 64"):
        load("[" * 65 + "]" * 65)
    assert load("base: &base {x: 1}\nchild: {<<: *base, y: 2}") == {
        "base": {"x": 1},
        "child": {"x": 1, "y": 2},
    }


@pytest.mark.parametrize("name", ["MLmodel", "conda.yaml", "python_env.yaml"])
def test_an_alias_bomb_in_a_logged_models_file_is_unreadable_evidence(
    name: str, model_store: ModelStore
) -> None:
    uri = model_store.uri
    with replaced(model_store.files / name, BOMB):
        done = _audit("check", "--tracking-uri", uri, "-f", "json", cwd=model_store.directory)
        assert done.returncode == 1, done.stderr  # the audit completed: the gaps, no crash
        (run,) = json.loads(done.stdout)["runs"]
        (record,) = [item.record for item in collect(uri)]
    (note,) = [n for n in record["collection"]["notes"] if name in n]
    assert "is unreadable: aliases expand it to more than 200,000 nodes; not read" in note
    if name == "MLmodel":  # the model's signature cannot be shown either way
        assert "model.signature" in run["outcomes"]["unknown"]


def test_an_alias_bomb_in_a_policy_or_a_waivers_file_is_exit_2(
    model_store: ModelStore, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(BOMB)
    done = _audit("check", "--tracking-uri", model_store.uri, "--policy", str(policy), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"mlflow-audit: error: {policy}: invalid YAML: aliases expand it to more than 200,000 nodes"
    ]
    waivers = tmp_path / "waivers.yaml"
    waivers.write_text(BOMB)
    done = _audit(
        "check", "--tracking-uri", model_store.uri, "--waivers", str(waivers), cwd=tmp_path
    )
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert str(waivers) in line and "aliases expand it to more than 200,000 nodes" in line


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_for_requirements_does_not_block(model_store: ModelStore) -> None:
    with replaced(model_store.files / "requirements.txt", None):
        done = _audit("check", "--tracking-uri", model_store.uri, cwd=model_store.directory)
    assert done.returncode == 2  # an artifact that cannot be read: the audit is incomplete
    (line,) = done.stderr.strip().splitlines()
    assert "requirements.txt" in line and "is not a regular file" in line


def test_an_error_line_cannot_be_spoofed(model_store: ModelStore) -> None:
    """Text from the command line or the store reaches stderr escaped, on one line: no
    workflow command, no terminal escape, no second line."""
    hostile = "churn\n::add-mask::x\n::error title=ok::all good\x1b[8m ##[set-output name=a]b"
    done = _audit(
        "check", "--tracking-uri", model_store.uri, "--experiment", hostile,
        cwd=model_store.directory,
    )  # fmt: skip
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith("mlflow-audit: error: ")
    assert "\x1b" not in line and "##[" not in line
    assert "churn\\n::add-mask::x\\n::error title=ok::all good\\x1b[8m \\x23#[set-output" in line


#: A tree type whose $refs point back up three ways: unrolled naively to the walker's depth, a
#: few hundred bytes stand for 3^12 places in the record.
RECURSIVE_POLICY = """\
$schema: https://json-schema.org/draft/2020-12/schema
title: a tree of tags
properties:
  tags:
    x-audit: {id: run.tree, severity: info, category: run, provisions: [], title: A tag tree,
              gap: No tag tree, remediation: "mlflow.set_tag('kind', 'tree')"}
    type: object
    required: [kind]
    properties:
      left: {$ref: "#/properties/tags"}
      right: {$ref: "#/properties/tags"}
      again: {$ref: "#"}
"""


def test_a_recursive_policy_is_valid_and_evaluated(model_store: ModelStore, tmp_path: Path) -> None:
    policy = tmp_path / "tree.yaml"
    policy.write_text(RECURSIVE_POLICY)
    assert len(RECURSIVE_POLICY.encode()) < 600
    done = _audit("policy", "validate", str(policy), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    done = _audit(
        "check", "--tracking-uri", model_store.uri, "--policy", str(policy), "-f", "json",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr  # an info rule: reported, never gating
    (run,) = json.loads(done.stdout)["runs"]
    assert run["outcomes"]["fail"] == ["run.tree"]  # the run has no "kind" tag
    (finding,) = run["findings"]
    assert finding["pointer"] == "/tags/kind"


def test_a_policy_nested_too_deeply_is_exit_2(model_store: ModelStore, tmp_path: Path) -> None:
    policy = tmp_path / "deep.json"  # 3,000 levels: more than Python's json can even read
    policy.write_text('{"title": "deep", ' + '"properties": {"a": {' * 3000 + "}}" * 3000 + "}")
    done = _audit("check", "--tracking-uri", model_store.uri, "--policy", str(policy), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"mlflow-audit: error: {policy}: it nests deeper than 64 levels"
    ]
