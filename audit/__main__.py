"""`python -m audit` and the `mlflow-audit` console script."""

from __future__ import annotations

import sys

# The audit reads MLflow's tracking API only, which mlflow-skinny provides without the data
# stack. With the full `mlflow` package installed, importing its client would also import
# pandas, NumPy and pyarrow (about 0.7 s of every CI gate). Marking them absent makes MLflow take
# the same import paths as in mlflow-skinny, a configuration MLflow supports.
_NOT_NEEDED = ("pandas", "numpy", "pyarrow")


def entry() -> None:
    for name in _NOT_NEEDED:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]
    from audit.cli import main

    sys.exit(main())


if __name__ == "__main__":
    entry()
