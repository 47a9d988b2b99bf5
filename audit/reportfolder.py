"""The data files of a report folder, which `report` writes and `sign` and `verify` read.

`evidence.json` holds the evidence records the documents show and, because a record keeps only
each metric's latest value, a digest of every metric history the documents chart: what
`verify --against-store` compares with the store today.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from audit.evidence import SCHEMA_VERSION as EVIDENCE_SCHEMA_VERSION
from audit.evidence import json_number, sha256_hex

EVIDENCE_FILE = "evidence.json"
RESULT_FILE = "result.json"

#: Run id -> metric key -> (step, value) points: the histories a report charts.
MetricHistories = Mapping[str, Mapping[str, Sequence[tuple[float, float]]]]


def evidence_json(
    records: Sequence[Mapping[str, Any]], generated_at: str, histories: MetricHistories
) -> bytes:
    """The evidence records a report documents, and digests of the metric histories it charts
    (`histories`, by run id), as one JSON file."""
    document = {
        "schema": "urn:mlflow-audit:schema:evidence-record",
        "schema_version": EVIDENCE_SCHEMA_VERSION,
        "generated_at": generated_at,
        "records": list(records),
        "metric_history_digests": {
            record["run"]["id"]: history_digests(histories.get(record["run"]["id"]) or {})
            for record in records
        },
    }
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def history_digests(
    histories: Mapping[str, Sequence[tuple[float, float]]],
) -> dict[str, dict[str, Any]]:
    """For each metric history of a run, its number of points and the sha256 of its points as
    RFC 8785 canonical JSON (`[[step, value], ...]`, in the order the store returns them; NaN and
    infinities as the strings the evidence record uses)."""
    return {
        key: {
            "points": len(points),
            "sha256": sha256_hex([[step, json_number(value)] for step, value in points]),
        }
        for key, points in sorted(histories.items())
    }
