"""MLflow's log records while its client reads a store: kept off stderr, and read for what
MLflow left out.

MLflow logs some of what goes wrong instead of, or as well as, raising it, to stderr through
its own handler (or Python's root logger):

- every SQLAlchemy `OperationalError` with its whole traceback, before raising it
  (`make_managed_session` in mlflow/store/db/utils.py): a store with a tag that is not UTF-8
  printed 59 lines before the audit's one-line error, which reports the same error;
- its file store leaves out an experiment or a run whose `meta.yaml` is malformed or names
  another experiment, and a dataset input it cannot find, with a warning and nothing raised
  (mlflow/store/tracking/file_store.py): the audit would complete without them.

While `held` lasts, MLflow's records reach no handler; a warning of a file store ends the
audit (`check`), since the store was not read whole.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path

from audit.errors import StoreError

#: The modules whose warnings mean that MLflow left something out of what it returned.
_FILE_STORES = (
    str(Path("store", "tracking", "file_store.py")),
    str(Path("store", "model_registry", "file_store.py")),
)


class MlflowLogs(logging.Handler):
    """Takes MLflow's log records; keeps the first warning of a file store."""

    def __init__(self, package: str) -> None:
        super().__init__(logging.DEBUG)
        self._package = package
        self.left_out: str | None = None
        self.addFilter(self.is_mlflows)

    def is_mlflows(self, record: logging.LogRecord) -> bool:
        """Logged by MLflow: on its loggers, or on the root logger from its modules."""
        return record.name.partition(".")[0] == "mlflow" or (
            bool(self._package) and record.pathname.startswith(self._package)
        )

    def is_not_mlflows(self, record: logging.LogRecord) -> bool:
        return not self.is_mlflows(record)

    def emit(self, record: logging.LogRecord) -> None:
        if (
            self.left_out is None
            and record.levelno >= logging.WARNING
            and record.pathname.endswith(_FILE_STORES)
        ):
            try:
                self.left_out = record.getMessage()
            except Exception:  # a record whose arguments do not fit its format
                self.left_out = str(record.msg)

    def check(self, display: str) -> None:
        """Raise the audit's error if MLflow left part of the store out."""
        if self.left_out is not None:
            said = (self.left_out.strip().splitlines() or [""])[0][:300]
            raise StoreError(
                f"reading {display} failed: MLflow's file store skipped part of it: {said}"
            )


@contextlib.contextmanager
def held() -> Iterator[MlflowLogs]:
    """MLflow's log records go to the handler yielded, and to no other, until the block ends.

    The `mlflow` logger gets it as its only handler, without propagation; the root logger gets
    it too, and its other handlers a filter that stops MLflow's records (which also keeps
    `logging.warning` from adding a handler to a root logger without one)."""
    # MLflow sets its loggers' handlers when first imported: before they are replaced here.
    import mlflow  # noqa: F401

    logs = MlflowLogs(_package_folder())
    mlflow_logger = logging.getLogger("mlflow")
    root = logging.getLogger()
    saved = (list(mlflow_logger.handlers), mlflow_logger.propagate)
    others = list(root.handlers)
    mlflow_logger.handlers = [logs]
    mlflow_logger.propagate = False
    for handler in others:
        handler.addFilter(logs.is_not_mlflows)
    root.addHandler(logs)
    try:
        yield logs
    finally:
        root.removeHandler(logs)
        for handler in others:
            handler.removeFilter(logs.is_not_mlflows)
        mlflow_logger.handlers, mlflow_logger.propagate = saved


def _package_folder() -> str:
    """MLflow's package folder, with a trailing separator; "" if it is not found."""
    spec = find_spec("mlflow")
    if spec is None or not spec.submodule_search_locations:
        return ""
    return str(Path(next(iter(spec.submodule_search_locations)))) + os.sep
