"""Benchmark: from `create_model_version` returning to the version's `audit.status` tag.

    python benchmarks/bench_gate.py [--versions 50]

On a copy of the demo store (benchmarks/.stores/demo, built once), starts a real `mlflow
server` that delivers registry webhooks to a real `mlflow-audit serve` on 127.0.0.1, then
registers N versions of the demo's champion model one after the other and, for each, times
from the registration call returning to the verdict tag appearing (read every 20 ms). Prints
the median and the 95th percentile. Target: median under 1 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.bench_report import demo_store  # noqa: E402

SECRET = "benchmark secret"  # noqa: S105 - the loopback services of this run only


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - loopback
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", type=int, default=50)
    args = parser.parse_args()
    from mlflow import MlflowClient

    source = demo_store(REPO / "benchmarks" / ".stores" / "demo").removeprefix("sqlite:///")
    env = {
        **os.environ,
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_AUDIT_WEBHOOK_SECRET": SECRET,
    }
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        shutil.copy2(source, folder / "mlflow.db")
        server_port, gate_port = _free_port(), _free_port()
        tracking = f"http://127.0.0.1:{server_port}"
        processes = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mlflow",
                    "server",
                    "--backend-store-uri",
                    f"sqlite:///{folder / 'mlflow.db'}",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(server_port),
                    "--workers",
                    "1",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                cwd=folder,
            )
        ]
        try:
            _wait_healthy(f"{tracking}/health")
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "audit",
                        "serve",
                        "--tracking-uri",
                        tracking,
                        "--port",
                        str(gate_port),
                        "--state",
                        str(folder / "state"),
                        "--register-webhook",
                        f"http://127.0.0.1:{gate_port}/webhook",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    env=env,
                    cwd=folder,
                )
            )
            _wait_healthy(f"http://127.0.0.1:{gate_port}/healthz")
            client = MlflowClient(tracking, tracking)
            champion = client.get_model_version_by_alias("churn-classifier", "champion")
            latencies = []
            for _ in range(args.versions):
                version = client.create_model_version(
                    "churn-classifier", champion.source, run_id=champion.run_id,
                    model_id=champion.source.removeprefix("models:/"),
                ).version  # fmt: skip
                start = time.perf_counter()
                while (
                    "audit.status" not in client.get_model_version("churn-classifier", version).tags
                ):
                    if time.perf_counter() - start > 120:
                        raise SystemExit(f"no verdict on version {version} within 120 s")
                    time.sleep(0.02)
                latencies.append(time.perf_counter() - start)
        finally:
            for process in reversed(processes):
                process.terminate()
                process.wait(timeout=30)
    latencies.sort()
    p95 = latencies[max(0, round(0.95 * len(latencies)) - 1)]
    print(f"{args.versions} versions registered one after another through an mlflow server")
    print(f"  registration -> audit.status   median {statistics.median(latencies):.3f} s")
    print(f"                                  p95    {p95:.3f} s")
    print(f"                                  min {latencies[0]:.3f} s, max {latencies[-1]:.3f} s")
    print("  target: median under 1 s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
