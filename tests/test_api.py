"""The Python API runs the same audit as the CLI, stage by stage or in one call."""

from __future__ import annotations

import pytest

import audit
from audit.api import make_selection
from tests import stores
from tests.conftest import Store


def test_check_collect_and_evaluate_agree(sqlite_store: Store) -> None:
    result = audit.check(sqlite_store.uri, experiment="truth-table", policy="baseline")
    assert isinstance(result, audit.AuditResult)
    policy = audit.load_policy("baseline")
    records = [
        c.record
        for c in audit.collect(
            sqlite_store.uri, selection=make_selection(experiment="truth-table"), needs=policy.needs
        )
    ]
    staged = audit.evaluate(records, policy)  # plain records are accepted too
    assert [(r.run_id, r.findings) for r in staged.runs] == [
        (r.run_id, r.findings) for r in result.runs
    ]
    assert result.exit_code == 1 and 0 < result.score < 100
    assert result.summary()["runs_by_status"]["pass"] == 1


def test_check_raises_audit_error(sqlite_store: Store) -> None:
    with pytest.raises(audit.AuditError, match="no runs matched"):
        audit.check(sqlite_store.uri, experiment="truth-table", filter="params.alpha = 'x'")


def test_lazy_public_names() -> None:
    for name in audit.__all__:
        assert getattr(audit, name) is not None
    with pytest.raises(AttributeError):
        audit.no_such_name  # noqa: B018
    assert stores.MODEL_NAME
