"""The MLflow schema revisions the SQL source reads.

A module of their own: the store checks (`audit.sources.store`) need the newest one too, and the
SQL source (`audit.sources.sql`) imports those checks.
"""

from __future__ import annotations

__all__ = ["KNOWN_REVISIONS", "SCHEMA_REVISION"]

#: The newest MLflow schema revision (alembic head of MLflow 3.17) whose tables the SQL
#: source's queries were checked against. `open_source` uses that source only when the installed
#: MLflow writes this revision, so that an MLflow upgrade falls back to the client source instead
#: of reading a changed schema; tests/test_sql_source.py fails when the installed MLflow moves
#: on, to have it checked again. The stores read may be at this revision or any older one of
#: KNOWN_REVISIONS.
SCHEMA_REVISION = "dc11669786a5"

#: The schema revisions MLflow 2.9 (acf3f17fdcc7) to SCHEMA_REVISION write, oldest first (the
#: alembic chain of MLflow's migrations; tests/test_old_stores.py checks it against the installed
#: MLflow's). Such a store is read as it is, never migrated: what an older revision lacks (the
#: logged model tables before MLflow 3.0, the registry's workspace column before 3.10) holds no
#: data, and the client reads none from it after migrating either. A store at a revision outside
#: this list is read only when it has every table and column this source reads.
KNOWN_REVISIONS = (
    "acf3f17fdcc7", "867495a8f9d4", "5b0e9adcef9c", "4465047574b1", "f5a4f2784254",
    "0584bdc529eb", "400f98739977", "6953534de441", "bda7b8c39065", "cbc13b556ace",
    "770bee3ae1dd", "a1b2c3d4e5f6", "de4033877273", "1a0cddfcaa16", "534353b11cbc",
    "71994744cf8e", "3da73c924c2f", "bf29a5ff90ea", "1bd49d398cd23", "b7c8d9e0f1a2",
    "5d2d30f0abce", "c9d4e5f6a7b8", "2c33131f4dae", "d3e4f5a6b7c8", "d0e1f2a3b4c5",
    "c8d9e0f1a2b3", "1b5f0d9ad7c1", "e1f2a3b4c5d6", "76601a5f987d", "c3d6457b6d8a",
    "a5b4c3d2e1f0", "ae8bbe7743c9", "7d34483879f0", "da6fb0208061", "89d3d66ed43f",
    "b7e4c1a90f23", "a8b9c0d1e2f3", "c1d2e3f4a5b6", "c3d9e7f1a2b4", "6f8d9c3b2a1e",
    "1971f2d9a75b", "17e22815139b", "b7e2c1a4d9f3", "75868b020152", SCHEMA_REVISION,
)  # fmt: skip
