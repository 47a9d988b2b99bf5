"""An artifact folder that cannot be read is unreadable evidence, never "not recorded".

A run's local artifacts live outside the tracking database, and can be moved away, deleted,
replaced or locked while the database stays. Where the record shows files were logged there (a
READY logged model, a model in the run's `mlflow.log-model.history`), a folder that is gone, is
not a folder or cannot be looked into makes that evidence unreadable: a note naming the folder
and why, an `artifacts.unreadable` error, and the rules on what the files would show unknown
rather than failed. A run that logged nothing keeps its gaps. The store is written by MLflow,
then its folders are moved for real; both sources must say the same.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from audit.evidence import canonical_json
from audit.sources import CollectionNeeds, Selection
from audit.sources.client import ClientSource
from audit.sources.sql import SqlSource
from audit.sources.store import resolve_store
from tests import stores

TIMEOUT = 120  # seconds


@dataclass(frozen=True)
class ArtifactStore:
    uri: str
    directory: Path
    database: Path
    #: The local artifact root MLflow put every experiment's artifacts under.
    root: Path
    run_ids: dict[str, str]
    #: The logged model of the run "logged-model".
    model_id: str

    def run_folder(self, name: str) -> Path:
        (folder,) = self.root.glob(f"*/{self.run_ids[name]}/artifacts")
        return folder

    def model_folder(self) -> Path:
        (folder,) = self.root.glob(f"*/models/{self.model_id}/artifacts")
        return folder


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ArtifactStore:
    """Runs with requirements.txt at their root, with an MLflow 3 logged model, with a 2.x
    model in their artifacts, and with no artifacts at all."""
    directory = tmp_path_factory.mktemp("missing-artifacts")
    database = directory / "mlflow.db"
    uri = f"sqlite:///{database}"
    (directory / "work").mkdir()
    previous = Path.cwd()
    os.chdir(directory)  # MLflow puts the artifacts under ./mlruns of the working directory
    try:
        with stores.tracking(uri) as client:
            run_ids = stores.build_truth_table(client, directory / "work")
            run_ids.update(stores.build_models(client, directory / "work"))
            (model,) = client.search_logged_models(
                experiment_ids=[client.get_experiment_by_name("models").experiment_id]
            )
    finally:
        os.chdir(previous)
    return ArtifactStore(uri, directory, database, directory / "mlruns", run_ids, model.model_id)


@contextlib.contextmanager
def moved(folder: Path) -> Iterator[Path]:
    """`folder` moved away for the time of the block."""
    away = folder.with_name(folder.name + "-moved")
    folder.rename(away)
    try:
        yield away
    finally:
        away.rename(folder)


@contextlib.contextmanager
def replaced_by_a_file(folder: Path) -> Iterator[None]:
    with moved(folder):
        folder.write_text("not a folder\n")
        try:
            yield
        finally:
            folder.unlink()


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    mode = folder.stat().st_mode
    folder.chmod(0)
    try:
        yield
    finally:
        folder.chmod(mode)


def records(store: ArtifactStore) -> dict[str, dict[str, Any]]:
    """Each run's record by run name, the same from both sources (checked)."""
    read = []
    for source in (ClientSource, SqlSource):
        collected = source(resolve_store(store.uri)).collect(Selection(), CollectionNeeds())
        read.append({run.record["run"]["name"]: run.record for run in collected})
    client, sql = read
    assert {name: canonical_json(r) for name, r in sql.items()} == {
        name: canonical_json(r) for name, r in client.items()
    }
    return sql


def notes(record: dict[str, Any]) -> list[str]:
    return list(record["collection"]["notes"])


def test_a_moved_artifact_root_is_unreadable_not_unrecorded(store: ArtifactStore) -> None:
    legacy = store.run_ids["legacy-2x-layout"]
    before = stores.tree_digest(store.database)
    with moved(store.root):
        found = records(store)
        done = subprocess.run(
            [sys.executable, "-m", "audit", "check", "--no-config", "-f", "json",
             "--tracking-uri", store.uri],
            capture_output=True, text=True, cwd=store.directory, env=stores.environment(),
            timeout=TIMEOUT,
        )  # fmt: skip
    assert stores.tree_digest(store.database) == before
    assert notes(found["logged-model"]) == [
        f"models:/{store.model_id} is unreadable: its artifact folder "
        f"{store.model_folder()} does not exist; not read"
    ]
    assert notes(found["legacy-2x-layout"]) == [
        f"runs:/{legacy} is unreadable: its artifact folder {store.run_folder('legacy-2x-layout')} "
        "does not exist; not read"
    ]
    # Nothing in MLflow's record says these runs logged files: no folder, no files.
    assert notes(found["complete"]) == notes(found["no-environment"]) == []

    assert done.returncode == 1, done.stderr
    result = {run["run_name"]: run for run in json.loads(done.stdout)["runs"]}
    for name in ("logged-model", "legacy-2x-layout"):
        run = result[name]
        (unreadable,) = [f for f in run["findings"] if f["rule_id"] == "artifacts.unreadable"]
        assert unreadable["severity"] == "error" and "does not exist" in unreadable["message"]
        assert {"environment.python-version", "environment.requirements"} <= set(
            run["outcomes"]["unknown"]
        )
        failed = {f["rule_id"] for f in run["findings"]}
        assert not failed & {"environment.python-version", "environment.requirements"}
    # The logged model's MLmodel is gone: its signature cannot be shown either way.
    assert "model.signature" in result["logged-model"]["outcomes"]["unknown"]
    # A run that logged no environment still lacks one.
    missing = {f["rule_id"] for f in result["no-environment"]["findings"]}
    assert {"environment.requirements", "environment.python-version"} <= missing
    assert "artifacts.unreadable" not in missing


def test_a_deleted_model_folder_of_a_2x_run(store: ArtifactStore) -> None:
    legacy = store.run_ids["legacy-2x-layout"]
    model = store.run_folder("legacy-2x-layout") / "model"
    with moved(model):
        found = records(store)
    assert notes(found["legacy-2x-layout"]) == [
        f"runs:/{legacy}/model is unreadable: its artifact folder {model} does not exist; not read"
    ]
    assert notes(found["complete"]) == []


def test_a_file_in_place_of_an_artifact_folder(store: ArtifactStore) -> None:
    complete = store.run_ids["complete"]
    with (
        replaced_by_a_file(store.run_folder("complete")),
        replaced_by_a_file(store.model_folder()),
    ):
        found = records(store)
    assert notes(found["complete"]) == [
        f"runs:/{complete} is unreadable: its artifact folder {store.run_folder('complete')} "
        "is not a folder; not read"
    ]
    assert notes(found["logged-model"]) == [
        f"models:/{store.model_id} is unreadable: its artifact folder {store.model_folder()} "
        "is not a folder; not read"
    ]
    assert found["complete"]["environment"]["requirements"] is None


def _permissions_hold(folder: Path) -> bool:
    """Whether this process is kept out of a folder without permissions (root is not, unless
    it runs without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH)."""
    probe = folder / "permission-probe"
    probe.mkdir()
    try:
        with locked(probe):
            os.listdir(probe)  # noqa: PTH208
    except PermissionError:
        return True
    finally:
        probe.rmdir()
    return False


def test_a_folder_without_permission(store: ArtifactStore, tmp_path: Path) -> None:
    if not _permissions_hold(tmp_path):
        pytest.skip("this process reads folders whatever their permissions (root)")
    complete = store.run_ids["complete"]
    folder = store.run_folder("complete")
    with locked(folder):
        found = records(store)
    assert notes(found["complete"]) == [
        f"runs:/{complete} is unreadable: its folder cannot be listed: Permission denied; not read"
    ]
    experiment = store.model_folder().parent.parent.parent
    logged = store.run_ids["logged-model"]
    with locked(experiment):
        found = records(store)
    # Whether the run logged files of its own cannot be told either.
    assert notes(found["logged-model"]) == [
        f"models:/{store.model_id} is unreadable: its artifact folder {store.model_folder()}: "
        "Permission denied; not read",
        f"runs:/{logged} is unreadable: its artifact folder {experiment / logged / 'artifacts'}"
        ": Permission denied; not read",
    ]
    with locked(folder / "requirements.txt"):
        found = records(store)
    assert notes(found["complete"]) == [
        f"runs:/{complete}/requirements.txt is unreadable: Permission denied; not read"
    ]


def test_the_folders_are_back(store: ArtifactStore) -> None:
    """The moves above were undone: the store reads as it was written."""
    found = records(store)
    assert all(notes(record) == [] for record in found.values())
    assert found["complete"]["environment"]["requirements"] is not None


@pytest.mark.parametrize("artifact_path", ["../../../../../../etc", "model/../../..", "a#b"])
def test_a_model_path_that_leaves_the_artifact_folder_is_that_runs_unreadable_evidence(
    store: ArtifactStore, tmp_path: Path, artifact_path: str
) -> None:
    """The history tag is the run author's to write: a path out of the run's folder is never
    read, and makes that run's evidence unreadable, not every audit of the store fail."""
    import shutil
    import sqlite3

    copy = tmp_path / "store"
    shutil.copytree(store.directory, copy, ignore=shutil.ignore_patterns("work"))
    legacy = store.run_ids["legacy-2x-layout"]
    with contextlib.closing(sqlite3.connect(copy / "mlflow.db")) as connection, connection:
        (value,) = connection.execute(
            "SELECT value FROM tags WHERE run_uuid = ? AND key = 'mlflow.log-model.history'",
            (legacy,),
        ).fetchone()
        history = json.loads(value)
        history[0]["artifact_path"] = artifact_path
        connection.execute(
            "UPDATE tags SET value = ? WHERE run_uuid = ? AND key = 'mlflow.log-model.history'",
            (json.dumps(history), legacy),
        )
    # The artifact locations in the copy still name the original folders, which stay put.
    moved_store = ArtifactStore(
        f"sqlite:///{copy / 'mlflow.db'}", copy, copy / "mlflow.db", store.root, store.run_ids,
        store.model_id,
    )  # fmt: skip
    found = records(moved_store)
    (note,) = notes(found["legacy-2x-layout"])
    assert note.endswith(
        "is unreadable: its path is not a plain path within the artifact folder; not read"
    )
    assert notes(found["complete"]) == []
    done = subprocess.run(
        [sys.executable, "-m", "audit", "check", "--no-config", "-q",
         "--tracking-uri", moved_store.uri],
        capture_output=True, text=True, cwd=tmp_path, env=stores.environment(), timeout=TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # the audit completed; the gap is the run's
