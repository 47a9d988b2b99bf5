"""Where the data files shipped with the package live.

`schemas/` and `report_templates/` sit at the top of the repository. A wheel carries them as
`audit/_data/...`; an editable install or a checkout finds them next to the package.
"""

from __future__ import annotations

import functools
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


@functools.cache
def data_dir(name: str) -> Path:
    """Return the directory `name` (``schemas`` or ``report_templates``)."""
    for candidate in (_PACKAGE_DIR / "_data" / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"mlflow-audit is installed without its {name}/ directory")


def schema_path(*parts: str) -> Path:
    return data_dir("schemas").joinpath(*parts)
