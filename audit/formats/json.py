"""`--format json`: the whole result, as published in schemas/audit-result.schema.json."""

from __future__ import annotations

import json

from audit.result import AuditResult


def render_json(result: AuditResult) -> str:
    return json.dumps(result.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
