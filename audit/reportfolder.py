"""The data files of a report folder, which `report` writes and `sign` and `verify` read."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from audit.evidence import SCHEMA_VERSION as EVIDENCE_SCHEMA_VERSION

EVIDENCE_FILE = "evidence.json"
RESULT_FILE = "result.json"


def evidence_json(records: Sequence[Mapping[str, Any]], generated_at: str) -> bytes:
    """The evidence records a report documents, as one JSON file."""
    document = {
        "schema": "urn:mlflow-audit:schema:evidence-record",
        "schema_version": EVIDENCE_SCHEMA_VERSION,
        "generated_at": generated_at,
        "records": list(records),
    }
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
