"""Sign report folders and verify them offline, years later.

- `keys`: signing keys and certificates (`keygen`, PKCS#12, PEM).
- `pdf`: PAdES signatures in the report PDFs (pyHanko).
- `dsse`, `statement`: one DSSE envelope holding an in-toto Statement v1 over every file.
- `bundle`: signing a report folder; `verify`: checking one; `drift`: what changed in MLflow
  since; `publish`: `--log-to-mlflow`, the one code path that writes to a store.

Importing this package is cheap: pyHanko is imported only when a PDF is signed or checked.
"""

from __future__ import annotations

from audit.signing.bundle import SignedBundle, sign_folder
from audit.signing.keys import SigningError, SigningKey, generate, load_signing_key
from audit.signing.pdf import PdfSignOptions
from audit.signing.verify import Problem, RunDrift, Verification, verify

__all__ = [
    "PdfSignOptions",
    "Problem",
    "RunDrift",
    "SignedBundle",
    "SigningError",
    "SigningKey",
    "Verification",
    "generate",
    "load_signing_key",
    "sign_folder",
    "verify",
]
