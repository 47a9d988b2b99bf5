"""Credentials go only to the tracking server the user named.

An experiment's artifact location is its creator's to choose. MLflow's artifact client signs in
to whatever location it is given with MLFLOW_TRACKING_TOKEN (or the username and password), so
a run logged into `artifact_location="http://HOST/..."` would have `check` send the auditor's
token to HOST. A real HTTP server on 127.0.0.1 stands for HOST and records every request and
its headers; the stores are written by MLflow (a SQLite store, and a real `mlflow server`). Each
audit runs in a process of its own, with a timeout.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from audit.errors import AuditError
from audit.sources.locations import allowed_prefixes, refusal
from audit.sources.store import TrackingStore, resolve_store
from tests import stores
from tests.conftest import running_mlflow_server
from tests.test_rest_faults import Proxy, Seen

TIMEOUT = 120  # seconds; an audit of a few runs takes a few
TOKEN = "t0ken-of-the-auditor"
PASSWORD = "pa55word-of-the-auditor"
CREDENTIALS = {
    "token": {"MLFLOW_TRACKING_TOKEN": TOKEN},
    "basic": {"MLFLOW_TRACKING_USERNAME": "auditor", "MLFLOW_TRACKING_PASSWORD": PASSWORD},
}
#: What the credentials look like on the wire, in any header.
SECRETS = (TOKEN, PASSWORD, base64.b64encode(f"auditor:{PASSWORD}".encode()).decode())
REQUIREMENTS = "scikit-learn==1.5.2\n"
ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Recorder:
    """An HTTP server on a free loopback port that records every request with its headers, and
    answers as MLflow's artifact API does for folders that each hold a requirements.txt."""

    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorder.received.append(Received(self.command, self.path, dict(self.headers)))
                path, _, query = self.path.partition("?")
                if path == ARTIFACTS_API and "path" in urllib.parse.parse_qs(query):
                    listing = {"path": "requirements.txt", "is_dir": False, "file_size": 20}
                    self._send(200, json.dumps({"files": [listing]}).encode())
                elif path.endswith("/requirements.txt"):
                    self._send(200, REQUIREMENTS.encode())
                else:
                    self._send(404, b"{}")

            do_PUT = do_POST = do_GET

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def credentials_seen(self) -> list[str]:
        """Every header value that carried one of the auditor's credentials."""
        return [
            value
            for request in self.received
            for value in request.headers.values()
            if any(secret in value for secret in SECRETS)
        ]


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    made = Recorder()
    yield made
    made.stop()


@pytest.fixture
def fresh(recorder: Recorder) -> Recorder:
    """The module's recorder, with nothing received yet."""
    recorder.received.clear()
    return recorder


def _audit(
    *args: str, credentials: dict[str, str], cwd: Path
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "audit", "check", "-f", "json", "--no-config", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        # No ~/.netrc may lend credentials to a host the audit is redirected to.
        env={**stores.environment(), **credentials, "NETRC": str(cwd / "no-netrc")},
        timeout=TIMEOUT,
    )
    assert done.returncode in (0, 1), done.stderr[-3000:]
    return done, json.loads(done.stdout)


def _run(result: dict[str, Any], run_id: str) -> dict[str, Any]:
    (run,) = [run for run in result["runs"] if run["run_id"] == run_id]
    return run


def _unreadable(run: dict[str, Any]) -> list[str]:
    return [f["message"] for f in run["findings"] if f["rule_id"] == "artifacts.unreadable"]


# --------------------------------------------------------------------------- a local store


@dataclass(frozen=True)
class LocalStore:
    uri: str
    directory: Path
    #: A run of an experiment whose artifact location is the recorder.
    pointed_away: str
    #: The logged model of that run, in the same experiment.
    model_id: str
    #: A run with local artifacts (requirements.txt at its root).
    at_home: str


@pytest.fixture(scope="module")
def local_store(tmp_path_factory: pytest.TempPathFactory, recorder: Recorder) -> LocalStore:
    directory = tmp_path_factory.mktemp("artifact-hosts")
    uri = f"sqlite:///{directory / 'mlflow.db'}"
    requirements = directory / "requirements.txt"
    requirements.write_text(REQUIREMENTS)
    with stores.tracking(uri) as client:
        away = client.create_experiment(
            "elsewhere", artifact_location=f"{recorder.uri}{ARTIFACTS_API}/elsewhere"
        )
        run = client.create_run(away, run_name="pointed-away")
        client.log_param(run.info.run_id, "alpha", "0.1")
        model = client.create_logged_model(away, source_run_id=run.info.run_id, name="model")
        client.finalize_logged_model(model.model_id, "READY")
        client.set_terminated(run.info.run_id)
        home = client.create_experiment(
            "at-home", artifact_location=(directory / "artifacts").as_uri()
        )
        local = client.create_run(home, run_name="at-home")
        client.log_artifact(local.info.run_id, str(requirements))
        client.set_terminated(local.info.run_id)
    assert not recorder.received  # building the store did not reach it
    return LocalStore(uri, directory, run.info.run_id, model.model_id, local.info.run_id)


@pytest.mark.parametrize("source", ["sql", "client"])
@pytest.mark.parametrize("kind", ["token", "basic"])
def test_a_store_that_points_elsewhere_gets_no_request(
    local_store: LocalStore, fresh: Recorder, source: str, kind: str
) -> None:
    done, result = _audit(
        "--tracking-uri", local_store.uri, "--source", source,
        credentials=CREDENTIALS[kind], cwd=local_store.directory,
    )  # fmt: skip
    assert fresh.received == []
    assert done.returncode == 1  # the unread evidence is an error: the gate does not pass
    away = _run(result, local_store.pointed_away)
    where = f"{fresh.uri}{ARTIFACTS_API}/elsewhere"
    reason = "is remote (the tracking store is local) and not allowed by --allow-artifact-location"
    assert sorted(_unreadable(away)) == [
        f"models:/{local_store.model_id} is unreadable: artifact location {where}/models/"
        f"{local_store.model_id}/artifacts {reason}; not read",
        f"runs:/{local_store.pointed_away} is unreadable: artifact location {where}/"
        f"{local_store.pointed_away}/artifacts {reason}; not read",
    ]
    # Unknown, not "not recorded": the files may hold them.
    assert {"environment.python-version", "environment.requirements"} <= set(
        away["outcomes"]["unknown"]
    )
    assert not {"environment.python-version", "environment.requirements"} & {
        f["rule_id"] for f in away["findings"]
    }
    # Local artifacts are read as before.
    home = _run(result, local_store.at_home)
    assert _unreadable(home) == []
    assert "environment.requirements" in home["outcomes"]["pass"]
    assert not any(secret in done.stdout + done.stderr for secret in SECRETS)


def test_an_allowed_location_is_read_with_mlflows_credentials(
    local_store: LocalStore, fresh: Recorder
) -> None:
    _, result = _audit(
        "--tracking-uri", local_store.uri, "--allow-artifact-location", f"{fresh.uri}/",
        "--run-id", local_store.pointed_away,
        credentials=CREDENTIALS["token"], cwd=local_store.directory,
    )  # fmt: skip
    away = _run(result, local_store.pointed_away)
    assert _unreadable(away) == []
    assert "environment.requirements" in away["outcomes"]["pass"]
    assert fresh.received, "the allowed location was not read"
    # Allowing a location is trusting it: MLflow signs in to it as to the tracking server.
    assert set(fresh.credentials_seen()) == {f"Bearer {TOKEN}"}


def test_an_allowed_location_from_the_environment_or_the_file(
    local_store: LocalStore, fresh: Recorder
) -> None:
    (local_store.directory / "mlflow-audit.toml").write_text(
        f'allow_artifact_locations = ["{fresh.uri}/"]\n'
    )
    try:
        done = subprocess.run(
            [sys.executable, "-m", "audit", "check", "-f", "json", "--tracking-uri",
             local_store.uri, "--run-id", local_store.pointed_away],
            capture_output=True, text=True, cwd=local_store.directory,
            env={**stores.environment(), **CREDENTIALS["token"]}, timeout=TIMEOUT,
        )  # fmt: skip
    finally:
        (local_store.directory / "mlflow-audit.toml").unlink()
    assert done.returncode in (0, 1), done.stderr
    assert _unreadable(_run(json.loads(done.stdout), local_store.pointed_away)) == []
    assert fresh.received


def _mlflow_audit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "audit", *args],
        capture_output=True, text=True, cwd=cwd, timeout=TIMEOUT,
        env={**stores.environment(), **CREDENTIALS["token"], "KEY_PASS": "correct horse",
             "NETRC": str(cwd / "no-netrc")},
    )  # fmt: skip


def test_signed_documents_are_uploaded_and_verified_only_where_the_audit_reads(
    local_store: LocalStore, fresh: Recorder, tmp_path: Path
) -> None:
    made = _mlflow_audit("keygen", "--subject", "CN=Auditor", "--out", str(tmp_path / "keys"),
                         "--passphrase-env", "KEY_PASS", cwd=tmp_path)  # fmt: skip
    assert made.returncode == 0, made.stderr
    sign = ("--sign", str(tmp_path / "keys" / "signer.p12"), "--passphrase-env", "KEY_PASS")
    selection = ("--tracking-uri", local_store.uri, "--run-id", local_store.pointed_away)
    database = Path(local_store.uri.removeprefix("sqlite:///")).read_bytes()
    # --log-to-mlflow would upload to the run author's location: refused before any write.
    done = _mlflow_audit("report", *selection, "--no-pdf", "--out", str(tmp_path / "refused"),
                         *sign, "--log-to-mlflow", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"mlflow-audit: error: will not upload the signed bundle to run {local_store.pointed_away}"
        f": artifact location {fresh.uri}{ARTIFACTS_API}/elsewhere/{local_store.pointed_away}"
        "/artifacts is remote (the tracking store is local) and not allowed by "
        "--allow-artifact-location"
    ]
    assert fresh.received == []
    assert Path(local_store.uri.removeprefix("sqlite:///")).read_bytes() == database
    # Audited with the location allowed, verified again with it: unchanged; without it, the
    # evidence cannot be read as it was signed.
    allow = ("--allow-artifact-location", f"{fresh.uri}/")
    folder = tmp_path / "signed"
    done = _mlflow_audit("report", *selection, *allow, "--no-pdf", "--out", str(folder), *sign,
                         cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    verify = ("verify", str(folder), "--cert", str(tmp_path / "keys" / "signer.pem"),
              "--against-store")  # fmt: skip
    done = _mlflow_audit(*verify, *allow, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: 1 run unchanged" in done.stdout
    done = _mlflow_audit(*verify, cwd=tmp_path)
    assert done.returncode == 1
    assert f"CHANGED  run {local_store.pointed_away} (pointed-away)" in done.stdout


def test_a_prefix_without_a_scheme_is_exit_2(local_store: LocalStore) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "audit", "check", "--no-config", "--tracking-uri",
         local_store.uri, "--allow-artifact-location", "evil.example/"],
        capture_output=True, text=True, cwd=local_store.directory,
        env=stores.environment(), timeout=TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "mlflow-audit: error: --allow-artifact-location 'evil.example/': not a URI prefix such "
        "as s3://bucket/ or https://host/ (local folders are read without it)"
    ]


# --------------------------------------------------------------------------- a tracking server


@dataclass(frozen=True)
class ServerStore:
    uri: str
    directory: Path
    pointed_away: str
    #: A run whose artifacts the server itself holds (mlflow-artifacts:).
    on_server: str


@pytest.fixture(scope="module")
def server_store(
    tmp_path_factory: pytest.TempPathFactory, recorder: Recorder
) -> Iterator[ServerStore]:
    directory = tmp_path_factory.mktemp("artifact-hosts-server")
    recorder.received.clear()
    requirements = directory / "requirements.txt"
    requirements.write_text(REQUIREMENTS)
    with contextlib.ExitStack() as stack:
        with pytest.MonkeyPatch.context() as patch:
            # MLflow 3's server refuses such an experiment unless told otherwise; stores
            # written before, by another server or straight into the database hold them all
            # the same (the SQLite store above).
            patch.setenv("MLFLOW_ALLOWED_HOST_ADDRESSED_ARTIFACT_SCHEMES", "http")
            uri = stack.enter_context(
                running_mlflow_server(directory, f"sqlite:///{directory / 'server.db'}")
            )
        with stores.tracking(uri) as client:
            away = client.create_experiment(
                "elsewhere", artifact_location=f"{recorder.uri}{ARTIFACTS_API}/elsewhere"
            )
            run = client.create_run(away, run_name="pointed-away")
            client.set_terminated(run.info.run_id)
            here = client.create_experiment("on-server")
            served = client.create_run(here, run_name="on-server")
            client.log_artifact(served.info.run_id, str(requirements))
            client.set_terminated(served.info.run_id)
        assert not recorder.received
        yield ServerStore(uri, directory, run.info.run_id, served.info.run_id)


@pytest.mark.parametrize("kind", ["token", "basic"])
def test_through_a_tracking_server_only_the_server_gets_credentials(
    server_store: ServerStore, fresh: Recorder, kind: str
) -> None:
    _, result = _audit(
        "--tracking-uri", server_store.uri,
        credentials=CREDENTIALS[kind], cwd=server_store.directory,
    )  # fmt: skip
    assert fresh.received == []
    (message,) = _unreadable(_run(result, server_store.pointed_away))
    assert message == (
        f"runs:/{server_store.pointed_away} is unreadable: artifact location "
        f"{fresh.uri}{ARTIFACTS_API}/elsewhere/{server_store.pointed_away}/artifacts is not "
        "the tracking server and not allowed by --allow-artifact-location; not read"
    )
    # The server's own artifacts (mlflow-artifacts:) are read, with the credentials.
    served = _run(result, server_store.on_server)
    assert _unreadable(served) == []
    assert "environment.requirements" in served["outcomes"]["pass"]


@dataclass
class _Redirecting(Proxy):
    """A proxy in front of the server that sends every artifact request to another host (as
    a server handing out presigned download URLs would)."""

    elsewhere: str = ""

    def _answer(self, handler: http.server.BaseHTTPRequestHandler, seen: Seen, action: Any) -> None:
        if "mlflow-artifacts" not in seen.path:
            super()._answer(handler, seen, action)
            return
        handler.send_response(302)
        handler.send_header("Location", f"{self.elsewhere}{seen.path}")
        handler.send_header("Content-Length", "0")
        handler.end_headers()


@pytest.mark.parametrize("kind", ["token", "basic"])
@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])  # another name; another port
def test_a_redirect_from_the_tracking_server_carries_no_credentials(
    server_store: ServerStore, fresh: Recorder, kind: str, host: str
) -> None:
    """MLflow's HTTP client (requests) follows redirects and drops the Authorization header
    when the host or port changes: a server that redirects artifact downloads to another host
    does not hand it the auditor's credentials."""
    upstream = urllib.parse.urlsplit(server_store.uri)
    assert upstream.hostname is not None and upstream.port is not None
    proxy = _Redirecting(
        (upstream.hostname, upstream.port), elsewhere=f"http://{host}:{fresh.port}"
    )
    try:
        _, result = _audit(
            "--tracking-uri", proxy.uri, "-e", "on-server",
            credentials=CREDENTIALS[kind], cwd=server_store.directory,
        )  # fmt: skip
    finally:
        proxy.stop()
    redirected = [seen for seen in proxy.seen if "mlflow-artifacts" in seen.path]
    assert redirected and all(seen.authorization for seen in redirected)  # the server got them
    assert fresh.received, "the redirect was not followed"
    assert fresh.credentials_seen() == []
    assert all("Authorization" not in request.headers for request in fresh.received)
    served = _run(result, server_store.on_server)
    assert "environment.requirements" in served["outcomes"]["pass"]  # read from the other host


# --------------------------------------------------------------------------- the rule itself


def _server(uri: str) -> TrackingStore:
    return resolve_store(uri)


LOCAL = TrackingStore("sqlite:///m.db", "sqlite", "sqlite:///m.db", "m.db")
DATABRICKS = TrackingStore("databricks", "databricks", "databricks", "databricks")


@pytest.mark.parametrize(
    ("store", "location", "read"),
    [
        # The tracking server itself: same scheme, host and port.
        (_server("http://mlflow:5000"), "http://mlflow:5000/api/2.0/mlflow-artifacts/x", True),
        (_server("https://MLflow.example"), "https://mlflow.example:443/a", True),
        (_server("http://mlflow:5000"), "mlflow-artifacts:/1/abc/artifacts", True),
        (_server("http://mlflow:5000"), "mlflow-artifacts://mlflow:5000/1/abc", True),
        (_server("http://mlflow:5000"), "mlflow-artifacts://evil:5000/1/abc", False),
        (_server("http://mlflow:5000"), "http://mlflow:5001/a", False),
        (_server("http://mlflow:5000"), "https://mlflow:5000/a", False),
        (_server("http://mlflow:5000"), "http://mlflow.evil.example:5000/a", False),
        (_server("http://mlflow:5000"), "http://mlflow:5000@evil.example/a", False),
        (_server("http://mlflow:5000"), "s3://bucket/1/abc", False),
        (_server("http://mlflow:5000"), "runs:/abc/model", False),
        (_server("http://mlflow:5000"), "dbfs:/databricks/mlflow-tracking/1", False),
        (DATABRICKS, "dbfs:/databricks/mlflow-tracking/1/abc", True),
        (DATABRICKS, "dbfs://other-profile@databricks/x", False),
        (DATABRICKS, "https://evil.example/x", False),
        # A local store has no server: every remote location needs allowing.
        (LOCAL, "mlflow-artifacts:/1/abc", False),
        (LOCAL, "http://127.0.0.1:5000/x", False),
        (LOCAL, "file://fileserver/share/mlruns", False),
    ],
)
def test_which_locations_are_the_tracking_server(
    store: TrackingStore, location: str, read: bool
) -> None:
    assert (refusal(store, location) is None) is read


@pytest.mark.parametrize(
    ("prefix", "location", "read"),
    [
        ("s3://bucket/", "s3://bucket/1/abc/artifacts", True),
        ("s3://bucket", "s3://bucket/1/abc/artifacts", True),
        ("S3://Bucket/", "s3://bucket/1/abc", True),
        ("s3://bucket", "s3://bucket-2/1/abc", False),
        ("s3://bucket/team-a", "s3://bucket/team-ab/x", False),
        ("s3://bucket/team-a", "s3://bucket/team-a/../team-b/x", False),
        ("s3:", "s3://any-bucket/x", True),
        ("https://artifacts.example", "https://artifacts.example/x", True),
        ("https://artifacts.example", "https://artifacts.example.evil.org/x", False),
        ("https://artifacts.example", "https://artifacts.example:8443/x", False),
        ("https://artifacts.example", "https://artifacts.example@evil.org/x", False),
        ("https://artifacts.example/", "http://artifacts.example/x", False),
    ],
)
def test_allowed_prefixes_end_at_a_boundary(prefix: str, location: str, read: bool) -> None:
    store = TrackingStore(
        LOCAL.uri, LOCAL.kind, LOCAL.client_uri, LOCAL.display,
        artifact_locations=allowed_prefixes([prefix]),
    )  # fmt: skip
    assert (refusal(store, location) is None) is read


def test_a_refusal_names_the_location_briefly() -> None:
    long = "s3://bucket/" + "x" * 1000
    reason = refusal(LOCAL, long)
    assert reason is not None and len(reason) < 320 and reason.count("x") < 250
    with pytest.raises(AuditError, match="not a URI prefix"):
        allowed_prefixes(["C:/artifacts"])
    assert allowed_prefixes([" s3://bucket/ ", "s3://bucket/"]) == ("s3://bucket/",)
