"""Benchmark: what redaction costs per evidence record, on records shaped like real runs.

    python benchmarks/bench_redaction.py [--runs 2000] [--rounds 5] [--store-dir DIR]
                                         [--against OTHER/redaction.py]

Redaction runs once on every record `check` and `report` build (audit/evidence.py
`record_and_digest`, given the record's canonical JSON to screen), so at 100,000 runs each
microsecond here is 0.1 s of the audit. This collects the records of the bench_check.py store
(built once, then reused: 10 params, 5 metrics, 6 tags and a dataset per run, written by MLflow)
and times `redact(record, screen=canonical JSON)` on copies of them, in this process, as:

  bench      the store's records as they are (no secret, no hint of one)
  llm        the same with the params of a language-model run: `max_tokens`, `pad_token`,
             `tokenizer`... (hints of a credential in every record, no credential)
  wide       210 params and 30 tags per run (24 KB of JSON), no credential
  leaky      the bench records with 4 credentials logged (names and values)
  typical    the hand-written complete record of the tests (requirements, model, datasets)

and prints the median (and the fastest) round's time per record of each, over --rounds rounds.
With --against, another version of audit/redaction.py (`git show main:audit/redaction.py >
/tmp/old.py`) is timed on the same records, alternating in every round so that machine noise
hits both alike.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from bench_check import build_store  # noqa: E402

from audit import redaction  # noqa: E402
from audit.evidence import canonical_json  # noqa: E402

_LLM_PARAMS = {
    "max_tokens": "512", "max_new_tokens": "256", "num_tokens": "1024", "token_budget": "4096",
    "tokenizer": "meta-llama/Llama-3.1-8B", "pad_token": "<pad>", "eos_token": "</s>",
    "tokenizer_revision": "3f1c2a9b7d4e5f60718293a4b5c6d7e8f9012345",
}  # fmt: skip
# Made up, shaped like the real thing.
_LEAKS = {
    "hyperparameters": {
        "db_url": "postgresql://mlflow:Sup3r-s3cret@db.internal:5432/mlflow",
        "env": "MLFLOW_TRACKING_PASSWORD=hunter2-but-longer DATABRICKS_TOKEN="
        "dapi0123456789abcdef0123456789abcdef",
    },
    "tags": {
        "ghp_R7uT2pQ9xL4mZ8vB1nC6kW3yH5jD0sFgA2eK": "1",
        "deploy": "curl -H 'Authorization: Basic YWRhOmh1bnRlcjI=' https://x",
    },
}


def _records(store: Path, runs: int) -> list[dict[str, Any]]:
    from audit.api import collect

    database = build_store(store, runs)
    return [run.record for run in collect(f"sqlite:///{database}", source="sql")]


def _llm(record: dict[str, Any]) -> dict[str, Any]:
    record["hyperparameters"] = {**record["hyperparameters"], **_LLM_PARAMS}
    return record


def _wide(record: dict[str, Any]) -> dict[str, Any]:
    record["hyperparameters"] = {f"param_{i:03d}": f"{i / 7:.6f}" for i in range(210)}
    record["tags"] = {f"team.tag_{i:02d}": f"value number {i}" for i in range(30)}
    return record


def _leaky(record: dict[str, Any]) -> dict[str, Any]:
    for section, values in _LEAKS.items():
        record[section] = {**record[section], **values}
    return record


def _typical() -> dict[str, Any]:
    from tests.records import complete_record

    return complete_record()


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("other_redaction", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _time(
    records: list[dict[str, Any]], rounds: int, versions: dict[str, ModuleType]
) -> dict[str, tuple[float, float]]:
    """Microseconds per record of each version's `redact`, given the record's canonical JSON,
    in the median and the fastest round, the versions alternating in every round."""
    screens = [canonical_json(record).decode() for record in records]
    per_round: dict[str, list[float]] = {name: [] for name in versions}
    for _ in range(rounds):
        for name, version in versions.items():
            copies = copy.deepcopy(records)
            started = time.perf_counter()
            for record, screen in zip(copies, screens, strict=True):
                version.redact(record, screen=screen)
            per_round[name].append((time.perf_counter() - started) / len(records) * 1e6)
    return {name: (statistics.median(times), min(times)) for name, times in per_round.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--store-dir", type=Path, help="default: benchmarks/.stores/runs-N (reused when present)"
    )
    parser.add_argument("--against", type=Path, help="another audit/redaction.py to compare")
    args = parser.parse_args()
    store = (args.store_dir or HERE / ".stores" / f"runs-{args.runs}").resolve()
    versions = {"this": redaction}
    if args.against:
        versions["against"] = _load(args.against)
    bench = _records(store, args.runs)
    sets: dict[str, Callable[[], list[dict[str, Any]]]] = {
        "bench": lambda: copy.deepcopy(bench),
        "llm": lambda: [_llm(copy.deepcopy(r)) for r in bench],
        "wide": lambda: [_wide(copy.deepcopy(r)) for r in bench],
        "leaky": lambda: [_leaky(copy.deepcopy(r)) for r in bench],
        "typical": lambda: [_typical() for _ in bench],
    }
    for name, make in sets.items():
        records = make()
        size = statistics.median(len(canonical_json(r)) for r in records)
        times = _time(records, args.rounds, versions)
        shown = "  ".join(
            f"{version} {median:6.1f} ({fastest:5.1f}) us"
            for version, (median, fastest) in times.items()
        )
        print(f"{name:8} ({size / 1000:.1f} KB)  {shown}  per record")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
