"""mlflow-audit: check that MLflow runs carry the provenance evidence a model needs, map every gap
to the EU AI Act, ISO/IEC 42001 and NIST AI RMF, and gate CI on it.

The pipeline, each stage importable on its own::

    collect(...)  ->  evidence records  ->  evaluate(records, policy)  ->  AuditResult

`check(...)` runs them all, exactly as the `mlflow-audit check` command does; `report(...)` also
writes the model documentation, as `mlflow-audit report` does; `export(...)` writes CycloneDX,
SPDX 3, OSCAL or model cards, as `mlflow-audit export` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "AuditError",
    "AuditResult",
    "Finding",
    "Policy",
    "RunResult",
    "Selection",
    "__version__",
    "check",
    "collect",
    "evaluate",
    "export",
    "load_policy",
    "report",
]

if TYPE_CHECKING:
    from audit.api import check, collect, export, report
    from audit.errors import AuditError
    from audit.evaluation import evaluate
    from audit.policy import Policy, load_policy
    from audit.result import AuditResult, Finding, RunResult
    from audit.sources import Selection

# Imported on first use, so that `mlflow-audit --version` and `import audit` stay instant.
_LAZY = {
    "check": "audit.api",
    "collect": "audit.api",
    "report": "audit.api",
    "export": "audit.api",
    "AuditError": "audit.errors",
    "evaluate": "audit.evaluation",
    "Policy": "audit.policy",
    "load_policy": "audit.policy",
    "AuditResult": "audit.result",
    "Finding": "audit.result",
    "RunResult": "audit.result",
    "Selection": "audit.sources",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'audit' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
