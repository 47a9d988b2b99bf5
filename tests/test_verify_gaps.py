"""What `verify` used to let through: files hidden in the folder after signing, a metric-history
point edited in MLflow that a signed chart draws, and certificates `sign` accepted although
their key usage forbids signing."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from audit.signing import PdfSignOptions, sign_folder
from audit.signing.keys import load_signing_key
from audit.signing.statement import ENVELOPE_FILE
from tests import stores
from tests.test_signing import (
    PASSPHRASE,
    PASSPHRASE_VARIABLE,
    Keys,
    SigningStore,
    _build_store,
    _keygen,
    _sign_args,
)

DATE = "2026-11-26"
Main = Callable[..., tuple[int, str, str]]
#: The metric history logged on the "complete" run, step by step.
LOSS = (0.9, 0.7, 0.5, 0.4, 0.35)


@pytest.fixture(scope="module", autouse=True)
def _passphrase_in_environment() -> Iterator[None]:
    os.environ[PASSPHRASE_VARIABLE] = PASSPHRASE
    yield
    del os.environ[PASSPHRASE_VARIABLE]


@pytest.fixture(scope="module")
def main() -> Main:
    return stores.in_process_cli()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> SigningStore:
    """The truth-table runs; "complete" also logged a loss at five steps."""
    built = _build_store(tmp_path_factory.mktemp("gaps") / "store")
    with stores.tracking(built.uri) as client:
        for step, value in enumerate(LOSS):
            client.log_metric(built.run_ids["complete"], "loss", value, step=step)
    return built


@pytest.fixture(scope="module")
def keys(main: Main, tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return _keygen(main, tmp_path_factory.mktemp("keys"), "CN=Jane Doe,O=Acme ML")


def _report_args(store: SigningStore, folder: Path) -> tuple[str, ...]:
    return (
        "report", "--tracking-uri", store.uri, "--out", str(folder),
        "--run-id", store.run_ids["complete"], "--run-id", store.run_ids["no-data"],
        "--date", DATE,
    )  # fmt: skip


@pytest.fixture(scope="module")
def signed(main: Main, store: SigningStore, keys: Keys, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("signed") / "reports"
    code, _, err = main(*_report_args(store, folder), *_sign_args(keys))
    assert code == 0, err
    return folder


@pytest.fixture
def bundle(signed: Path, tmp_path: Path) -> Path:
    target = tmp_path / "reports"
    shutil.copytree(signed, target)
    return target


def _verify(main: Main, folder: Path, cert: Path, *extra: str) -> tuple[int, str, str]:
    code, out, err = main("verify", str(folder), "--cert", str(cert), *extra)
    return code, stores.unwrapped(out), err


# --------------------------------------------------------------------------- hidden files


def _hidden_file(folder: Path) -> str:
    (folder / ".approval.html").write_text("<p>Approved for release.</p>")
    return ".approval.html"


def _hidden_folder(folder: Path) -> str:
    (folder / ".well-known").mkdir()
    shutil.copy(folder / "complete.pdf", folder / ".well-known" / "forged.pdf")
    return ".well-known/forged.pdf"


def _subfolder(folder: Path) -> str:
    (folder / "annex").mkdir()
    (folder / "annex" / "waiver.html").write_text("<p>Waived.</p>")
    return "annex/waiver.html"


def _named_pipe(folder: Path) -> str:
    os.mkfifo(folder / "appendix.html")
    return "appendix.html"


@pytest.mark.parametrize(
    "add", [_hidden_file, _hidden_folder, _subfolder, _named_pipe],
    ids=["hidden-file", "hidden-folder", "subfolder", "named-pipe"],
)  # fmt: skip
def test_every_file_added_after_signing_fails(
    main: Main, bundle: Path, keys: Keys, add: Callable[[Path], str]
) -> None:
    name = add(bundle)
    outcome: list[tuple[int, str, str]] = []
    # A named pipe must not be opened: nothing writes to it, so reading it would block.
    worker = threading.Thread(target=lambda: outcome.append(_verify(main, bundle, keys.pem)))
    worker.start()
    worker.join(timeout=60)
    assert outcome, "verify did not finish"
    code, out, err = outcome[0]
    assert code == 1, out + err
    failures = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert len(failures) == 1 and failures[0].startswith(f"FAIL  {name}: "), out
    assert out.splitlines()[-1] == "INVALID: 1 problem"


def test_a_pristine_folder_still_verifies(main: Main, signed: Path, keys: Keys) -> None:
    code, out, _ = _verify(main, signed, keys.pem)
    assert code == 0, out


# --------------------------------------------------------------------------- metric histories


def test_an_edited_metric_history_point_is_a_change(
    main: Main, store: SigningStore, signed: Path, keys: Keys, tmp_path: Path
) -> None:
    evidence = json.loads((signed / "evidence.json").read_text())
    complete = store.run_ids["complete"]
    digests = evidence["metric_history_digests"]
    assert digests[complete]["loss"]["points"] == len(LOSS)
    assert digests[store.run_ids["no-data"]] == {}
    database = tmp_path / "mlflow.db"
    shutil.copy(store.database, database)
    uri = f"sqlite:///{database}"
    code, out, _ = _verify(main, signed, keys.pem, "--against-store", "--tracking-uri", uri)
    assert code == 0, out

    # A point in the middle of the chart, not the latest value the record keeps.
    with sqlite3.connect(database) as db:
        edited = db.execute(
            "UPDATE metrics SET value = 0.05 WHERE run_uuid = ? AND key = 'loss' AND step = 2",
            (complete,),
        ).rowcount
    assert edited == 1
    # The evidence record alone does not show it: its digest is the one signed.
    code, out, _ = main("check", "--tracking-uri", uri, "--run-id", complete, "-f", "json")
    (run,) = json.loads(out)["runs"]
    signed_runs = json.loads((signed / "result.json").read_text())["runs"]
    assert run["evidence_sha256"] in {r["evidence_sha256"] for r in signed_runs}

    code, out, _ = _verify(main, signed, keys.pem, "--against-store", "--tracking-uri", uri)
    assert code == 1, out
    changed = [line for line in out.splitlines() if line.startswith("CHANGED")]
    assert changed == [
        f"CHANGED  run {complete} (complete): metric history loss: points changed "
        f"({len(LOSS)} points signed, {len(LOSS)} now)"
    ]
    assert "INVALID: 1 run changed" in out

    with stores.tracking(uri) as client:
        client.log_metric(store.run_ids["no-data"], "accuracy", 0.5, step=0)
        client.log_metric(store.run_ids["no-data"], "accuracy", 0.6, step=1)
    code, out, _ = _verify(main, signed, keys.pem, "--against-store", "--tracking-uri", uri)
    no_data = store.run_ids["no-data"]
    assert f"CHANGED  run {no_data} (no-data): metric history accuracy added: 2 points" in out


# --------------------------------------------------------------------------- key usage


def _certificate(
    folder: Path, name: str, usage: x509.KeyUsage | None, *, from_ca: bool = False
) -> tuple[Path, Path, Path]:
    """A certificate with `usage` (no key usage extension when None), self-signed or issued by
    a CA of its own; its key, encrypted; as PEM files: the key, the chain (the certificate,
    then the CA's), and the certificate a verifier trusts (the CA's, or its own)."""
    now = datetime.datetime.now(datetime.timezone.utc)

    def issue(
        subject: x509.Name,
        key: rsa.RSAPrivateKey,
        issuer: x509.Name,
        issuer_key: rsa.RSAPrivateKey,
        extensions: list[x509.ExtensionType],
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
        )  # fmt: skip
        for extension in extensions:
            builder = builder.add_extension(extension, critical=True)
        return builder.sign(issuer_key, hashes.SHA256())

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    extensions: list[x509.ExtensionType] = [x509.BasicConstraints(ca=False, path_length=None)]
    extensions += [usage] if usage is not None else []
    if from_ca:
        ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
        ca = issue(ca_name, ca_key, ca_name, ca_key, [
            x509.BasicConstraints(ca=True, path_length=0), _usage(key_cert_sign=True, crl_sign=True)
        ])  # fmt: skip
        chain = [issue(subject, key, ca_name, ca_key, extensions), ca]
    else:
        chain = [issue(subject, key, subject, key, extensions)]
    pem = serialization.Encoding.PEM
    key_file, chain_file, trusted = (
        folder / f"{name}{s}" for s in (".key", ".pem", "-trusted.pem")
    )
    key_file.write_bytes(
        key.private_bytes(
            pem,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(PASSPHRASE.encode()),
        )
    )
    chain_file.write_bytes(b"".join(c.public_bytes(pem) for c in chain))
    trusted.write_bytes(chain[-1].public_bytes(pem))
    return key_file, chain_file, trusted


def _usage(**allowed: bool) -> x509.KeyUsage:
    names = (
        "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
        "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only",
    )  # fmt: skip
    return x509.KeyUsage(**{name: allowed.get(name, False) for name in names})


ENCIPHER_ONLY = _usage(key_encipherment=True, data_encipherment=True)
NOT_FOR_SIGNING = (
    "the certificate of 'Encryption Only' is not for signing (its key usage allows neither "
    "digitalSignature nor nonRepudiation)"
)


def test_sign_refuses_a_certificate_not_for_signing(
    main: Main, store: SigningStore, bundle: Path, tmp_path: Path
) -> None:
    key, pem, _ = _certificate(tmp_path, "Encryption Only", ENCIPHER_ONLY)
    signing = ("--passphrase-env", PASSPHRASE_VARIABLE)
    before = stores.tree_digest(bundle)
    code, _, err = main("sign", str(bundle), "--key", str(key), "--signer-cert", str(pem), *signing)
    assert code == 2
    assert (
        err.strip()
        == f"mlflow-audit: error: {NOT_FOR_SIGNING}; signatures made with it do not verify"
    )
    assert stores.tree_digest(bundle) == before
    # report --sign refuses before the audit, and writes nothing.
    out = tmp_path / "new"
    code, _, err = main(
        *_report_args(store, out), "--sign", str(key), "--signer-cert", str(pem), *signing
    )
    assert code == 2 and NOT_FOR_SIGNING in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_verify_rejects_it_with_the_same_words(main: Main, bundle: Path, tmp_path) -> None:
    key_file, pem, _ = _certificate(tmp_path, "Encryption Only", ENCIPHER_ONLY)
    # The library signs with what it is given; verify then says what sign would have said.
    key = load_signing_key(key_file, PASSPHRASE.encode(), pem)
    sign_folder(bundle, key, PdfSignOptions())
    code, out, _ = _verify(main, bundle, pem)
    assert code == 1
    failing = {line.split(": ", 1)[0] for line in out.splitlines() if NOT_FOR_SIGNING in line}
    assert failing == {f"FAIL  {name}" for name in
                       (ENVELOPE_FILE, "complete.pdf", "no-data.pdf", "summary.pdf")}  # fmt: skip


@pytest.mark.parametrize(
    ("usage", "from_ca"),
    [
        (_usage(digital_signature=True), False),
        (_usage(digital_signature=True), True),
        (_usage(content_commitment=True), True),
        (None, True),
    ],
    ids=["digitalSignature", "digitalSignature-from-a-ca", "nonRepudiation-from-a-ca",
         "no-key-usage-extension-from-a-ca"],
)  # fmt: skip
def test_what_sign_accepts_verify_accepts(
    main: Main, bundle: Path, keys: Keys, tmp_path: Path, usage, from_ca: bool
) -> None:
    key, chain, trusted = _certificate(tmp_path, "Signer", usage, from_ca=from_ca)
    code, _, err = main(
        "sign", str(bundle), "--key", str(key), "--signer-cert", str(chain),
        "--passphrase-env", PASSPHRASE_VARIABLE,
    )  # fmt: skip
    assert code == 0, err
    # Co-signed: each PDF's first signature is Jane Doe's, so her certificate is given too.
    code, out, _ = main("verify", str(bundle), "--cert", str(trusted), "--cert", str(keys.pem))
    out = stores.unwrapped(out)
    assert code == 0, out


# --------------------------------------------------------------------------- the text output


def test_verify_text_wraps_within_100_columns_and_stays_inert() -> None:
    from audit.signing.verify import Problem, RunDrift, Verification, describe

    long_reason = "the signature does not verify: " + "the signer's certificate chain " * 6
    hostile = "run ::error::pwned\n::add-mask::x \x1b[8mhidden " + "::warning::y " * 10
    outcome = Verification(
        Path("docs/audit"),
        signer="Jane\n::error::Doe \x1b[8m",
        fingerprint="ab" * 32,
        problems=(Problem("complete.pdf", long_reason), Problem(hostile, "not signed")),
        drift=(RunDrift("a" * 32, hostile, ("param lr: '0.1' -> " + "'edited' " * 12,)),),
        store="sqlite:///mlflow.db",
    )
    text = describe(outcome)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert not [line for line in lines if line.lstrip().startswith("::")]
    assert "\x1b" not in text and "##[" not in text
    whole = stores.unwrapped(text)
    assert f"FAIL  complete.pdf: {long_reason.strip()}" in whole
    assert "Signed by Jane\\n::error::Doe \\x1b[8m" in whole  # one line: inert
    assert lines[1:3] == ["  certificate SHA-256:", "    " + ":".join(["AB"] * 32)]
    assert whole.splitlines()[-1] == "INVALID: 2 problems, 1 run changed in sqlite:///mlflow.db"
