"""Environment files of runs and logged models, read from their artifact stores.

Both sources read the same folders in the same way (`read_run_files`), so that their records stay
identical; they differ only in how a folder is opened. The client source opens every artifact URI
with MLflow's artifact repositories (`MlflowArtifacts`). The SQL source reads local folders itself
(`DirectArtifacts`), reproducing what MLflow's `LocalArtifactRepository` does, so that a store
with local artifacts is audited without importing MLflow at all; other URIs (s3:,
mlflow-artifacts:, ...) still go through MLflow's repositories, imported only then.

Evidence that cannot be read is said to be so, never taken for absent: a folder the audit does
not read (a remote location other than the tracking server, `locations.refusal`) or cannot read
(a local folder the record says holds files that does not exist, something else in its place, no
permission), and a file over the size or YAML bounds, each become a note "... is unreadable:
REASON; not read" in the record (`collection.notes`), which the evaluation reports as
`artifacts.unreadable`. Other failures to read (a server's error, a file that is not a regular
file) stop the audit (`ArtifactError`, exit 2).
"""

from __future__ import annotations

import errno
import functools
import os
import posixpath
import stat
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Protocol, cast

import yaml

from audit import safeyaml
from audit.errors import ArtifactError, first_line
from audit.evidence import (
    ENVIRONMENT_FILES,
    MAX_ARTIFACT_BYTES,
    YAML_FILES,
    ArtifactFiles,
    model_history,
)
from audit.sources.common import describe_http_failure
from audit.sources.locations import refusal
from audit.sources.store import TrackingStore

__all__ = [
    "ArtifactFolder",
    "ArtifactStores",
    "DirectArtifacts",
    "MlflowArtifacts",
    "ModelLocation",
    "RunFiles",
    "Unreadable",
    "is_local",
    "no_files",
    "read_environment_files",
    "read_model_files",
    "read_run_files",
]

#: MLflow's `LocalArtifactRepository` hides files it is still writing under this prefix.
_UPLOADING_PREFIX = ".artifact.uploading."


class ArtifactFolder(Protocol):
    """An artifact root, as much of MLflow's `ArtifactRepository` as reading files needs."""

    def list_artifacts(self, path: str | None = None) -> Iterable[Any]:
        """Entries directly under `path` (relative to the root), each with `path`, `is_dir` and
        `file_size`, like MLflow's `FileInfo`."""
        ...

    def read_head(self, path: str, limit: int) -> bytes:
        """The first `limit` bytes of the file at `path` (relative to the root)."""
        ...


class ArtifactStores(Protocol):
    def missing(self, uri: str | None) -> bool:
        """True when `uri` is a local folder that does not exist (most runs log no artifact);
        `Unreadable` when something else is in its place or it cannot be looked up."""
        ...

    def open(self, uri: str | None) -> ArtifactFolder:
        """The folder at `uri`; `Unreadable` for a remote location the audit does not read;
        MLflow's own error for a URI no repository serves."""
        ...


class Unreadable(Exception):
    """A folder whose files the audit does not or cannot read; the message says why. Its files
    are unreadable evidence (a note in the record), not absent, and not a fault of the audit."""


@dataclass(frozen=True)
class ModelLocation:
    """An MLflow 3 logged model, as far as reading its files goes."""

    model_id: str
    artifact_location: str
    #: MLflow's status of the model: a READY one has its files (MLmodel at least), a PENDING or
    #: FAILED one may have none.
    status: str | None = None


class RunFiles:
    """Environment files of one run: its artifact root, each 2.x model folder, each logged
    model."""

    def __init__(
        self,
        run: ArtifactFiles | None = None,
        history: dict[str, ArtifactFiles] | None = None,
        models: dict[str, ArtifactFiles] | None = None,
    ) -> None:
        self.run = run
        self.history = history or {}
        self.models = models or {}


def no_files(*_: Any) -> RunFiles:
    """What a policy that needs no artifacts gets: nothing read."""
    return RunFiles()


def is_local(uri: str | None) -> bool:
    r"""A folder on this machine: a path or a `file:` URI without another host. A `file://HOST/`
    URI or a `\\HOST\share` path names a share on another host (Windows would sign in to it)."""
    parts = urllib.parse.urlsplit(uri or "")
    if len(parts.scheme) == 1:  # a Windows drive letter
        return True
    if parts.scheme == "file":
        return parts.netloc in ("", "localhost")
    return parts.scheme == "" and not (uri or "").startswith("\\\\")


# --------------------------------------------------------------------------- reading


def read_run_files(
    stores: ArtifactStores,
    run_id: str,
    artifact_uri: str | None,
    tags: Mapping[str, str],
    logged_models: Sequence[ModelLocation],
) -> RunFiles:
    """Environment files of the run root, of each 2.x model folder and of each logged model."""
    label = f"runs:/{run_id}"
    history = model_history(tags)
    try:
        if stores.missing(artifact_uri):
            if history:
                # The run logged a model into it: the folder was moved or deleted.
                raise Unreadable(_no_folder(artifact_uri))
            # Most runs log no artifacts at all: one stat instead of an artifact repository.
            return RunFiles(ArtifactFiles(label), {}, read_model_files(stores, logged_models))
        # The run's artifact URI is already at hand: no get_run round trip per listing.
        artifacts = stores.open(artifact_uri)
    except Unreadable as error:
        return RunFiles(_unreadable(label, error), {}, read_model_files(stores, logged_models))
    root = read_environment_files(label, artifacts.list_artifacts, artifacts.read_head)
    files = {}
    for entry in history:
        path = str(entry["artifact_path"]).strip("/")
        uri = f"{label}/{path}"
        if not _within_run(path):
            # The history tag is the run author's to write: a path out of the run's folder
            # reaches no repository, local or remote, and is that run's unreadable evidence.
            files[str(entry["artifact_path"])] = _unreadable(
                uri, Unreadable("its path is not a plain path within the artifact folder")
            )
            continue
        files[str(entry["artifact_path"])] = read_environment_files(
            uri,
            functools.partial(artifacts.list_artifacts, path),
            artifacts.read_head,
            required=_local_child(artifact_uri, path),
        )
    return RunFiles(root, files, read_model_files(stores, logged_models))


def read_model_files(
    stores: ArtifactStores, logged_models: Sequence[ModelLocation]
) -> dict[str, ArtifactFiles]:
    files = {}
    for model in logged_models:
        label = f"models:/{model.model_id}"
        location = model.artifact_location
        try:
            if model.status == "READY" and stores.missing(location):
                raise Unreadable(_no_folder(location))
            repository = stores.open(location)
        except Unreadable as error:
            files[model.model_id] = _unreadable(label, error)
            continue
        files[model.model_id] = read_environment_files(
            label, repository.list_artifacts, repository.read_head
        )
    return files


def read_environment_files(
    uri: str,
    list_files: Callable[[], Iterable[Any]],
    read_head: Callable[[str, int], bytes],
    *,
    required: str | None = None,
) -> ArtifactFiles:
    """Read MLmodel, requirements.txt, python_env.yaml and conda.yaml from one folder, if there.
    `required`: the local folder, when the record says it holds files (an empty listing is then
    checked: a folder that does not exist is unreadable, not empty)."""
    try:
        listing = {Path(f.path).name: f for f in list_files() if not f.is_dir}
        if not listing and required is not None and local_folder_missing(required):
            raise Unreadable(_no_folder(required))
    except Unreadable as error:
        return _unreadable(uri, error)
    except PermissionError as error:
        return _unreadable(uri, Unreadable(f"its folder cannot be listed: {_denied(error)}"))
    except Exception as error:
        raise ArtifactError(f"cannot list artifacts of {uri}: {_reason(error)}") from None
    texts: dict[str, str] = {}
    notes: list[str] = []
    for name in ENVIRONMENT_FILES:
        info = listing.get(name)
        if info is None:
            continue
        if info.file_size is not None and info.file_size > MAX_ARTIFACT_BYTES:
            notes.append(
                f"{uri}/{name} is {info.file_size} bytes, over the {MAX_ARTIFACT_BYTES} byte "
                "limit; not read"
            )
            continue
        try:
            content = read_head(info.path, MAX_ARTIFACT_BYTES + 1)
        except PermissionError as error:
            notes.append(f"{uri}/{name} is unreadable: {_denied(error)}; not read")
            continue
        except Exception as error:
            raise ArtifactError(f"cannot read {uri}/{name}: {_reason(error)}") from None
        if len(content) > MAX_ARTIFACT_BYTES:
            notes.append(f"{uri}/{name} is over the {MAX_ARTIFACT_BYTES} byte limit; not read")
            continue
        text = content.decode("utf-8", errors="replace")
        if name in YAML_FILES:
            try:
                safeyaml.check_bounds(text)
            except safeyaml.YamlBoundsError as error:
                notes.append(f"{uri}/{name} is unreadable: {error}; not read")
                continue
            except yaml.YAMLError:
                pass  # not YAML: the record says what it lacks, as for any unparsable file
        texts[name] = text
    return ArtifactFiles(uri=uri, texts=texts, notes=tuple(notes))


def _unreadable(uri: str, error: Unreadable) -> ArtifactFiles:
    return ArtifactFiles(uri=uri, notes=(f"{uri} is unreadable: {error}; not read",))


def _no_folder(uri: str | None) -> str:
    return f"its artifact folder {local_artifact_path(uri or '')} does not exist"


def _denied(error: PermissionError) -> str:
    # The words of the system, not the exception's text: it names a path that differs between
    # MLflow's repository and ours, and both sources must write the same record.
    return os.strerror(error.errno or errno.EACCES)


def _local_child(uri: str | None, path: str) -> str | None:
    """The local folder `path` under the artifact root `uri`, or None when the root is not
    local. Only looked up after listing it, which refuses a path out of the root."""
    if not uri or not is_local(uri):
        return None
    return os.path.join(local_artifact_path(uri), os.path.normpath(path))  # noqa: PTH118


def local_folder_missing(path: str) -> bool:
    """True when the local folder `path` does not exist; `Unreadable` when something else is in
    its place (a file, a path through a file) or it cannot be looked up (no permission)."""
    try:
        mode = os.stat(path).st_mode  # noqa: PTH116 - once per run, a third of pathlib's time
    except FileNotFoundError:
        return True
    except OSError as error:
        raise Unreadable(f"its artifact folder {path}: {error.strerror or error}") from None
    if not stat.S_ISDIR(mode):
        raise Unreadable(f"its artifact folder {path} is not a folder")
    return False


def _reason(error: Exception) -> str:
    """Why a read failed, in one line; for a remote store, which server and what it did."""
    failure = describe_http_failure(error)
    return failure.with_server() if failure is not None else first_line(error)


# --------------------------------------------------------------------------- MLflow's repositories


class MlflowArtifacts:
    """Every artifact URI through MLflow's artifact repositories (imported on first use)."""

    def __init__(self, store: TrackingStore) -> None:
        self.store = store

    def missing(self, uri: str | None) -> bool:
        if not uri or not is_local(uri):
            return False
        from mlflow.utils.file_utils import local_file_uri_to_path

        return local_folder_missing(local_file_uri_to_path(uri))  # type: ignore[no-untyped-call]

    def open(self, uri: str | None) -> ArtifactFolder:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        if uri and not is_local(uri) and (refused := refusal(self.store, uri)):
            raise Unreadable(refused)
        # The URI goes to MLflow as it is, None included: its error is the client source's.
        repository = get_artifact_repository(cast(str, uri), tracking_uri=self.store.client_uri)
        return _MlflowFolder(repository)


class _MlflowFolder:
    def __init__(self, repository: Any) -> None:
        self._repository = repository

    def list_artifacts(self, path: str | None = None) -> Iterable[Any]:
        if path is None:
            return self._repository.list_artifacts()  # type: ignore[no-any-return]
        return self._repository.list_artifacts(path)  # type: ignore[no-any-return]

    def read_head(self, path: str, limit: int) -> bytes:
        with tempfile.TemporaryDirectory(prefix="mlflow-audit-") as scratch:
            download = getattr(self._repository, "_download_file", None)
            if download is not None:
                # `path` comes from a listing that said it is a file: `download_artifacts` would
                # ask the store again (one more round trip per file from a remote one), start a
                # thread pool, and fold why a file could not be read (no permission) into a
                # message of its own.
                local = Path(scratch) / "artifact"
                download(path, str(local))
            else:
                local = Path(self._repository.download_artifacts(path, scratch))
            with local.open("rb") as handle:
                return handle.read(limit)


# --------------------------------------------------------------------------- local folders, direct


class DirectArtifacts:
    """Local artifact folders read directly, as MLflow's `LocalArtifactRepository` reads them;
    other URIs through MLflow's repositories."""

    def __init__(self, store: TrackingStore) -> None:
        self._mlflow = MlflowArtifacts(store)

    def missing(self, uri: str | None) -> bool:
        if not uri or not is_local(uri):
            return False
        return local_folder_missing(local_artifact_path(uri))

    def open(self, uri: str | None) -> ArtifactFolder:
        # A falsy URI goes to MLflow too, which fails on it exactly as it does for the client.
        if uri and is_local(uri):
            return LocalFolder(local_artifact_path(uri))
        return self._mlflow.open(uri)


@dataclass(frozen=True)
class _FileInfo:
    path: str
    is_dir: bool
    file_size: int | None


class UnsafePath(ValueError):
    """An artifact path MLflow would refuse ("Invalid path"): one that leads outside its artifact
    root, or is not a plain relative path."""


class LocalFolder:
    """One local artifact root. The checks are MLflow's own (`LocalArtifactRepository`,
    `validate_path_is_safe`, `validate_path_within_directory`): artifact paths come from run tags,
    which anyone who can log to the store can set, so nothing outside the root is ever read."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def list_artifacts(self, path: str | None = None) -> Iterable[Any]:
        if path:
            path = os.path.normpath(path)
        folder = os.path.join(self.directory, path) if path else self.directory  # noqa: PTH118
        _check_within(self.directory, folder)
        if not os.path.isdir(folder):  # noqa: PTH112
            return []
        infos = []
        for name in os.listdir(folder):  # noqa: PTH208
            if name.startswith(_UPLOADING_PREFIX):
                continue
            full = os.path.join(folder, name)  # noqa: PTH118
            relative = _artifact_path(os.path.relpath(full, self.directory))
            if os.path.isdir(full):  # noqa: PTH112
                infos.append(_FileInfo(relative, True, None))
            else:
                infos.append(_FileInfo(relative, False, os.path.getsize(full)))  # noqa: PTH202
        return sorted(infos, key=lambda f: f.path)

    def read_head(self, path: str, limit: int) -> bytes:
        safe = _safe_relative_path(path)
        full = os.path.join(self.directory, os.path.normpath(safe))  # noqa: PTH118
        _check_within(self.directory, full)
        if not os.path.exists(full):  # noqa: PTH110
            raise FileNotFoundError(f"No such artifact: '{os.path.relpath(full, self.directory)}'")
        # Opened without blocking, then refused unless a regular file: opening a named pipe
        # with no writer blocks (and a device may never end); O_NOFOLLOW, as the path was
        # checked to stay within the root, not where a link points.
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
        try:
            descriptor = os.open(full, flags)
        except PermissionError:
            raise  # unreadable evidence, not a fault (`read_environment_files`)
        except OSError as error:
            raise OSError(f"'{safe}' cannot be opened: {error.strerror or error}") from None
        with os.fdopen(descriptor, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise OSError(f"'{safe}' is not a regular file")
            return handle.read(limit)


def local_artifact_path(uri: str) -> str:
    """A local artifact URI as a path, as MLflow's `local_file_uri_to_path` gives it."""
    path = uri
    if uri.startswith("file:"):
        parsed = urllib.parse.urlparse(uri)
        path = parsed.path
        if os.name == "nt" and parsed.netloc:  # keep the server of a UNC path
            return urllib.request.url2pathname(rf"\\{parsed.netloc}{path}")
    return urllib.request.url2pathname(path)


def _artifact_path(relative: str) -> str:
    if os.path == posixpath:
        return relative
    return urllib.parse.unquote(urllib.request.pathname2url(relative))


def _check_within(base: str, candidate: str) -> None:
    real_base = Path(base).resolve()
    target = Path(candidate)
    if target.is_symlink() or target.exists():
        real = target.resolve()
    else:
        real = target.parent.resolve() / target.name
    if not real.is_relative_to(real_base):
        raise UnsafePath("Invalid path: resolved path is outside the artifact directory")


def _within_run(path: str) -> bool:
    """Whether an artifact path from a run's tags stays within the run's artifact folder."""
    try:
        _safe_relative_path(path)  # no "..", no absolute path, no other separator
    except UnsafePath:
        return False
    return True


def _safe_relative_path(path: str) -> str:
    decoded = _decode(path)
    escaped = "".join(f"%{ord(c):02x}" if ord(c) <= 31 or ord(c) == 127 else c for c in decoded)
    if "#" in escaped:
        raise UnsafePath("Invalid path")
    if urllib.parse.urlparse(escaped).scheme == "file":
        escaped = local_artifact_path(escaped)
    alternative_separators = [s for s in (os.sep, os.path.altsep) if s is not None and s != "/"]
    if (
        any(s in escaped for s in alternative_separators)
        or ".." in escaped.split("/")
        or PureWindowsPath(escaped).is_absolute()
        or PurePosixPath(escaped).is_absolute()
        or (os.name == "nt" and len(escaped) >= 2 and escaped[1] == ":")
    ):
        raise UnsafePath("Invalid path")
    return escaped


def _decode(url: str) -> str:
    # Percent-decode until stable, as MLflow does before it validates a path.
    for _ in range(10):
        decoded = urllib.parse.unquote(url)
        parsed = urllib.parse.urlunparse(urllib.parse.urlparse(decoded))
        if parsed == url:
            return url
        url = parsed
    raise ValueError("Failed to decode url")
