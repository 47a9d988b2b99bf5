"""keygen, sign, verify: real keys, real PAdES signatures checked by pyHanko and OpenSSL, a DSSE
envelope checked by securesystemslib and `openssl dgst`, tampering of every kind, and a run
edited in a real MLflow store after signing."""

from __future__ import annotations

import base64
import datetime
import http.server
import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pypdf import PdfReader

from audit.signing import PdfSignOptions, sign_folder
from audit.signing.keys import SigningKey, generate, parse_subject, save
from audit.signing.statement import ENVELOPE_FILE, PREDICATE_TYPE, STATEMENT_TYPE
from tests import stores

PASSPHRASE_VARIABLE = "AUDIT_TEST_PASSPHRASE"
PASSPHRASE = "correct horse battery staple"
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Keys:
    folder: Path
    p12: Path
    pem: Path
    keygen_output: str


@dataclass(frozen=True)
class SigningStore:
    uri: str
    directory: Path
    database: Path
    run_ids: dict[str, str]


@pytest.fixture(scope="module", autouse=True)
def _passphrase_in_environment() -> Iterator[None]:
    os.environ[PASSPHRASE_VARIABLE] = PASSPHRASE
    yield
    del os.environ[PASSPHRASE_VARIABLE]


def _build_store(directory: Path) -> SigningStore:
    (directory / "work").mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{directory / 'mlflow.db'}"
    previous = Path.cwd()
    os.chdir(directory)  # MLflow puts artifacts under ./mlruns of the working directory
    try:
        with stores.tracking(uri) as client:
            run_ids = stores.build_truth_table(client, directory / "work")
    finally:
        os.chdir(previous)
    return SigningStore(uri, directory, directory / "mlflow.db", run_ids)


@pytest.fixture(scope="module")
def signing_store(tmp_path_factory: pytest.TempPathFactory) -> SigningStore:
    return _build_store(tmp_path_factory.mktemp("signing") / "store")


@pytest.fixture(scope="module")
def main() -> Callable[..., tuple[int, str, str]]:
    return stores.in_process_cli()


def _keygen(main: Callable[..., tuple[int, str, str]], folder: Path, subject: str) -> Keys:
    code, out, err = main(
        "keygen", "--subject", subject, "--out", str(folder), "--passphrase-env",
        PASSPHRASE_VARIABLE,
    )  # fmt: skip
    assert code == 0, err
    return Keys(folder, folder / "signer.p12", folder / "signer.pem", out)


@pytest.fixture(scope="module")
def keys(main, tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return _keygen(main, tmp_path_factory.mktemp("keys"), "CN=Jane Doe,O=Acme ML")


@pytest.fixture(scope="module")
def other_keys(main, tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return _keygen(main, tmp_path_factory.mktemp("other-keys"), "CN=Mallory,O=Elsewhere")


def _sign_args(keys: Keys) -> tuple[str, ...]:
    return ("--sign", str(keys.p12), "--passphrase-env", PASSPHRASE_VARIABLE)


@pytest.fixture(scope="module")
def signed(main, signing_store: SigningStore, keys: Keys, tmp_path_factory) -> Path:
    """A report of two runs, signed by `keys`."""
    folder = tmp_path_factory.mktemp("signed") / "reports"
    code, out, err = main(
        "report", "--tracking-uri", signing_store.uri, "--out", str(folder),
        "--run-id", signing_store.run_ids["complete"],
        "--run-id", signing_store.run_ids["no-data"],
        "--date", "2026-11-26", *_sign_args(keys),
    )  # fmt: skip
    assert code == 0, err
    assert "Signed 3 PDFs" in out
    return folder


@pytest.fixture
def bundle(signed: Path, tmp_path: Path) -> Path:
    """A copy of the signed folder, for one test to tamper with."""
    target = tmp_path / "bundle"
    shutil.copytree(signed, target)
    return target


def _verify(main, path: Path, *certs: Path, extra: tuple[str, ...] = ()) -> tuple[int, str, str]:
    cert_args = [arg for cert in certs for arg in ("--cert", str(cert))]
    code, out, err = main("verify", str(path), *cert_args, *extra)
    return code, stores.unwrapped(out), err


def _envelope(folder: Path) -> dict[str, Any]:
    return dict(json.loads((folder / ENVELOPE_FILE).read_text()))


def _statement(folder: Path) -> dict[str, Any]:
    return dict(json.loads(base64.b64decode(_envelope(folder)["payload"])))


# --------------------------------------------------------------------------- keys


def test_keygen_makes_an_encrypted_key_and_a_document_signing_certificate(keys: Keys) -> None:
    from cryptography.hazmat.primitives.serialization import pkcs12

    assert stat.S_IMODE(keys.p12.stat().st_mode) == 0o600
    with pytest.raises(ValueError):
        pkcs12.load_key_and_certificates(keys.p12.read_bytes(), b"wrong")
    key, certificate, _ = pkcs12.load_key_and_certificates(
        keys.p12.read_bytes(), PASSPHRASE.encode()
    )
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 3072
    assert certificate is not None
    assert certificate == x509.load_pem_x509_certificate(keys.pem.read_bytes())
    usage = certificate.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and usage.value.content_commitment
    assert not usage.value.key_cert_sign
    assert not certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert certificate.subject.rfc4514_string() == "CN=Jane Doe,O=Acme ML"
    # The fingerprint printed is the one OpenSSL computes.
    openssl = subprocess.run(
        ["openssl", "x509", "-in", str(keys.pem), "-noout", "-fingerprint", "-sha256"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert openssl.strip().split("=", 1)[1] in keys.keygen_output


def test_keygen_never_takes_a_passphrase_it_cannot_ask_for(main, tmp_path: Path) -> None:
    code, _, err = main("keygen", "--subject", "CN=X", "--out", str(tmp_path / "k"))
    assert code == 2
    assert "--passphrase-env" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "k" / "signer.p12").exists()
    code, _, err = main(
        "keygen", "--subject", "CN=X", "--out", str(tmp_path), "--passphrase-env", "NOT_SET_HERE"
    )
    assert code == 2 and "NOT_SET_HERE" in err
    code, _, err = main(
        "keygen", "--subject", "O=no common name", "--out", str(tmp_path), "--passphrase-env",
        PASSPHRASE_VARIABLE,
    )  # fmt: skip
    assert code == 2 and "common name" in err


def test_keygen_keeps_existing_keys(main, keys: Keys) -> None:
    before = keys.p12.read_bytes()
    code, _, err = main(
        "keygen", "--subject", "CN=Y", "--out", str(keys.folder), "--passphrase-env",
        PASSPHRASE_VARIABLE,
    )  # fmt: skip
    assert code == 2 and "--force" in err
    assert keys.p12.read_bytes() == before


def test_a_wrong_passphrase_is_one_line(main, signed: Path, keys: Keys, monkeypatch) -> None:
    monkeypatch.setenv(PASSPHRASE_VARIABLE, "wrong")
    code, _, err = main("sign", str(signed), "--key", str(keys.p12), "--passphrase-env",
                        PASSPHRASE_VARIABLE)  # fmt: skip
    assert code == 2
    assert "wrong passphrase" in err and len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- a signed folder


def test_signed_folder_verifies_offline(main, signed: Path, keys: Keys) -> None:
    code, out, err = _verify(main, signed, keys.pem)
    assert code == 0, out + err
    assert "Signed by Jane Doe" in out
    assert "OK: 8 files as signed, 3 PDF signatures valid" in out


def test_statement_lists_every_file_and_what_was_audited(signed: Path, keys: Keys) -> None:
    import hashlib

    import jsonschema_rs

    statement = _statement(signed)
    assert statement["_type"] == STATEMENT_TYPE
    assert statement["predicateType"] == PREDICATE_TYPE
    files = sorted(p.name for p in signed.iterdir() if p.name != ENVELOPE_FILE)
    assert [s["name"] for s in statement["subject"]] == files
    for subject in statement["subject"]:
        digest = hashlib.sha256((signed / subject["name"]).read_bytes()).hexdigest()
        assert subject["digest"] == {"sha256": digest}
    predicate = statement["predicate"]
    schema = json.loads((REPO / "schemas" / "attestation-predicate.schema.json").read_text())
    jsonschema_rs.validator_for(schema).validate(predicate)
    result = json.loads((signed / "result.json").read_text())
    assert {(r["run_id"], r["evidence_sha256"]) for r in predicate["runs"]} == {
        (r["run_id"], r["evidence_sha256"]) for r in result["runs"]
    }
    assert predicate["policy"]["sha256"] == result["policy"]["sha256"]
    assert predicate["tracking_store"] == result["store"]
    certificate = x509.load_pem_x509_certificate(keys.pem.read_bytes())
    fingerprint = certificate.fingerprint(hashes.SHA256()).hex()
    assert predicate["signer"]["certificate_sha256"] == fingerprint
    assert _envelope(signed)["signatures"][0]["keyid"] == fingerprint


def test_envelope_verifies_with_securesystemslib_and_openssl(
    signed: Path, keys: Keys, tmp_path: Path
) -> None:
    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import VerificationError
    from securesystemslib.signer import SSlibKey

    document = _envelope(signed)
    certificate = x509.load_pem_x509_certificate(keys.pem.read_bytes())
    keyid = document["signatures"][0]["keyid"]
    key = SSlibKey.from_crypto(certificate.public_key(), keyid, "rsa-pkcs1v15-sha256")
    # securesystemslib consumes the dictionaries it is given: one fresh copy per envelope.
    assert keyid in Envelope.from_dict(_envelope(signed)).verify([key], 1)
    forged = dict(_envelope(signed), payload=base64.b64encode(b'{"_type": "x"}').decode())
    with pytest.raises(VerificationError):
        Envelope.from_dict(forged).verify([key], 1)

    # By hand with OpenSSL: the signature is over the DSSE pre-authentication encoding.
    assert _openssl_dgst_verify(signed, certificate.public_key(), tmp_path)
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    forged = dict(_envelope(signed), payload=base64.b64encode(b'{"_type": "x"}').decode())
    (tampered / ENVELOPE_FILE).write_text(json.dumps(forged))
    assert not _openssl_dgst_verify(tampered, certificate.public_key(), tmp_path)


def _openssl_dgst_verify(folder: Path, public_key: Any, work: Path) -> bool:
    """Check the envelope's signature with `openssl dgst` over the DSSE pre-authentication
    encoding, written out by hand."""
    document = _envelope(folder)
    payload = base64.b64decode(document["payload"])
    kind = document["payloadType"].encode()
    (work / "pae.bin").write_bytes(b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload))
    (work / "sig.bin").write_bytes(base64.b64decode(document["signatures"][0]["sig"]))
    (work / "public.pem").write_bytes(
        public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    command = ["openssl", "dgst", "-sha256", "-verify", "public.pem", "-signature", "sig.bin"]
    checked = subprocess.run([*command, "pae.bin"], cwd=work, capture_output=True, text=True)
    return checked.returncode == 0 and "Verified OK" in checked.stdout


def _signed_range(pdf: bytes) -> tuple[bytes, bytes]:
    """The bytes the last signature covers, and its CMS SignedData (DER)."""
    match = list(re.finditer(rb"/ByteRange\s*\[\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*\]", pdf))[-1]
    start, length, second, second_length = map(int, match.groups())
    contents = pdf[start + length : second].strip(b"<>")
    return pdf[start : start + length] + pdf[second : second + second_length], bytes.fromhex(
        contents.decode()
    )


def test_pdf_signatures_verify_with_openssl_cms(signed: Path, keys: Keys, tmp_path: Path) -> None:
    pdf = (signed / "complete.pdf").read_bytes()
    content, cms = _signed_range(pdf)
    assert len(content) + 2 * len(cms) < len(pdf) + 2 * len(cms)  # a detached signature
    (tmp_path / "content.bin").write_bytes(content)
    (tmp_path / "signature.der").write_bytes(cms)
    command = [
        "openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", "signature.der",
        "-content", "content.bin", "-CAfile", str(keys.pem), "-purpose", "any",
        "-out", os.devnull,
    ]  # fmt: skip
    good = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert good.returncode == 0, good.stderr
    assert "Verification successful" in good.stderr
    (tmp_path / "content.bin").write_bytes(content.replace(b"complete", b"c0mplete", 1))
    bad = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode != 0
    if shutil.which("pdfsig"):
        # pdfsig exits 0 whatever it finds: read what it says.
        out = subprocess.run(
            ["pdfsig", str(signed / "complete.pdf")], capture_output=True, text=True
        ).stdout
        assert "Signature is Valid" in out and "Total document signed" in out


def test_signed_pdfs_stay_pdfa_3b(signed: Path) -> None:
    for path in signed.glob("*.pdf"):
        pdf = path.read_bytes()
        assert pdf.startswith(b"%PDF-1.7")
        reader = PdfReader(path)
        root = reader.trailer["/Root"]
        xmp = root["/Metadata"].get_object().get_data().decode()
        assert 'pdfaid:part="3"' in xmp and 'pdfaid:conformance="B"' in xmp
        # PDF/A: the information dictionary and the XMP metadata agree.
        info = reader.trailer["/Info"]
        assert f'pdf:Producer="{info["/Producer"]}"' in xmp
        assert f'xmp:CreatorTool="{info["/Creator"]}"' in xmp
        (field,) = root["/AcroForm"]["/Fields"]
        widget = field.get_object()
        assert widget["/FT"] == "/Sig" and widget["/F"] & 4  # printed, as PDF/A requires
        assert widget["/V"]["/SubFilter"] == "/ETSI.CAdES.detached"  # PAdES
        assert widget["/V"]["/Reason"]
        assert widget["/V"]["/Name"] == "Jane Doe"
        # The evidence is still attached: signing appended, it did not rewrite.
        assert set(reader.attachments) == {"evidence.json", "result.json"}


# --------------------------------------------------------------------------- tampering


def _flip_byte_in_signed_range(folder: Path) -> str:
    path = folder / "complete.pdf"
    data = bytearray(path.read_bytes())
    offset = data.index(b"/Title") + 8  # inside the first signed range, in the document info
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    return "complete.pdf"


def _append_incremental_update(folder: Path) -> str:
    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

    path = folder / "complete.pdf"
    with path.open("rb") as handle:
        writer = IncrementalPdfFileWriter(handle)
        writer.root["/Lang"] = generic.TextStringObject("fr")
        writer.update_root()
        updated = folder / "updated.pdf"
        with updated.open("wb") as out:
            writer.write(out)
    updated.replace(path)
    return "complete.pdf"


def _edit_html(folder: Path) -> str:
    path = folder / "no-data.html"
    path.write_text(path.read_text().replace("no-data", "all-data", 1))
    return "no-data.html"


def _edit_evidence(folder: Path) -> str:
    path = folder / "evidence.json"
    document = json.loads(path.read_text())
    document["records"][0]["hyperparameters"]["C"] = "10.0"
    path.write_text(json.dumps(document, indent=2))
    return "evidence.json"


def _add_file(folder: Path) -> str:
    (folder / "approval.html").write_text("<p>approved</p>")
    return "approval.html"


def _remove_file(folder: Path) -> str:
    (folder / "result.json").unlink()
    return "result.json"


@pytest.mark.parametrize(
    ("tamper", "reasons"),
    [
        (_flip_byte_in_signed_range, ["changed since signing", "signed bytes were changed"]),
        (
            _append_incremental_update,
            ["changed since signing", "incremental update was appended after signing"],
        ),
        (_edit_html, ["changed since signing"]),
        (_edit_evidence, ["changed since signing"]),
        (_add_file, ["not covered by the signature"]),
        (_remove_file, ["signed, but missing from the folder"]),
    ],
    ids=["pdf-byte-flipped", "incremental-update", "html-edited", "evidence-edited",
         "file-added", "file-removed"],
)  # fmt: skip
def test_tampering_fails_verification_naming_file_and_reason(
    main, bundle: Path, keys: Keys, tamper: Callable[[Path], str], reasons: list[str]
) -> None:
    name = tamper(bundle)
    code, out, err = _verify(main, bundle, keys.pem)
    assert code == 1, out + err
    failures = [line for line in out.splitlines() if line.startswith("FAIL")]
    for reason in reasons:
        assert any(f"FAIL  {name}: " in line and reason in line for line in failures), out
    assert err == ""


def test_a_pdf_alone_is_checked_by_its_own_signature(main, signed: Path, keys, tmp_path) -> None:
    alone = tmp_path / "complete.pdf"
    shutil.copy(signed / "complete.pdf", alone)
    code, out, _ = _verify(main, alone, keys.pem)
    assert code == 0 and "1 PDF signature valid" in out
    _append_incremental_update(tmp_path)
    code, out, _ = _verify(main, alone, keys.pem)
    assert code == 1 and "incremental update was appended" in out


def test_one_file_of_a_folder_is_checked_against_the_envelope(main, bundle: Path, keys) -> None:
    code, out, _ = _verify(main, bundle / "no-data.html", keys.pem)
    assert code == 0 and "OK: 1 file as signed" in out
    _edit_html(bundle)
    code, out, _ = _verify(main, bundle / "no-data.html", keys.pem)
    assert code == 1 and "no-data.html: changed since signing" in out
    # Another file's change is not this file's problem.
    code, _, _ = _verify(main, bundle / "complete.html", keys.pem)
    assert code == 0


@pytest.fixture(scope="module")
def other_bundle(main, signing_store: SigningStore, keys: Keys, tmp_path_factory) -> Path:
    """Another signed report, by the same key, of another run."""
    folder = tmp_path_factory.mktemp("other") / "reports"
    code, _, err = main(
        "report", "--tracking-uri", signing_store.uri, "--out", str(folder),
        "--run-id", signing_store.run_ids["no-metrics"], *_sign_args(keys),
    )  # fmt: skip
    assert code == 0, err
    return folder


def test_a_payload_swapped_from_another_bundle_fails(main, bundle, other_bundle, keys) -> None:
    document = _envelope(bundle)
    document["payload"] = _envelope(other_bundle)["payload"]
    (bundle / ENVELOPE_FILE).write_text(json.dumps(document))
    code, out, _ = _verify(main, bundle, keys.pem)
    assert code == 1
    assert f"FAIL  {ENVELOPE_FILE}: the signature does not verify" in out


def test_an_envelope_swapped_from_another_bundle_fails(main, bundle, other_bundle, keys) -> None:
    shutil.copy(other_bundle / ENVELOPE_FILE, bundle / ENVELOPE_FILE)
    code, out, _ = _verify(main, bundle, keys.pem)
    assert code == 1
    assert "FAIL  complete.pdf: not covered by the signature" in out
    assert "FAIL  no-metrics.pdf: signed, but missing from the folder" in out


def test_a_wrong_certificate_fails(main, signed: Path, other_keys: Keys) -> None:
    code, out, _ = _verify(main, signed, other_keys.pem)
    assert code == 1
    untrusted = "signed by 'Jane Doe' (certificate sha256 "
    lines = [line for line in out.splitlines() if untrusted in line]
    assert {line.split(":")[0] for line in lines} == {
        f"FAIL  {ENVELOPE_FILE}",
        "FAIL  complete.pdf",
        "FAIL  no-data.pdf",
        "FAIL  summary.pdf",
    }
    assert all(
        line.endswith("whose certificate is not the given one nor issued by it") for line in lines
    )


def _expired_key() -> SigningKey:
    long_ago = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=40)
    return generate(parse_subject("CN=Former Employee"), days=30, not_before=long_ago)


def test_an_expired_certificate_fails(main, signed: Path, keys: Keys, tmp_path: Path) -> None:
    key = _expired_key()
    folder = tmp_path / "bundle"
    shutil.copytree(signed, folder)
    # The command refuses to sign with it; the library signs what it is given.
    save(key, tmp_path / "keys", PASSPHRASE.encode())
    code, _, err = main(
        "sign", str(folder), "--key", str(tmp_path / "keys" / "signer.p12"), "--passphrase-env",
        PASSPHRASE_VARIABLE,
    )  # fmt: skip
    assert code == 2 and "expired on" in err
    sign_folder(folder, key, PdfSignOptions(reason="test"))
    code, out, _ = _verify(main, folder, tmp_path / "keys" / "signer.pem", keys.pem)
    assert code == 1
    expired = "the certificate of 'Former Employee' is expired or not yet valid (valid "
    failing = {line.split(":")[0] for line in out.splitlines() if expired in line}
    assert failing == {f"FAIL  {ENVELOPE_FILE}", "FAIL  complete.pdf", "FAIL  no-data.pdf",
                       "FAIL  summary.pdf"}  # fmt: skip


def _ca_and_signer(tmp_path: Path, name: str) -> tuple[Path, Path, Path]:
    """An organisation's CA, and a signer's encrypted PEM key with its certificate chain."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} Root CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    signer = generate(parse_subject(f"CN=Signer,O={name}"))
    certificate = (
        x509.CertificateBuilder().subject_name(signer.certificate.subject).issuer_name(ca_name)
        .public_key(signer.certificate.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, True, False, False, False, False, False, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    pem = serialization.Encoding.PEM
    (tmp_path / f"{name}-ca.pem").write_bytes(ca.public_bytes(pem))
    (tmp_path / f"{name}-chain.pem").write_bytes(
        certificate.public_bytes(pem) + ca.public_bytes(pem)
    )
    (tmp_path / f"{name}-signer.key").write_bytes(
        signer.private_key.private_bytes(
            pem,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(PASSPHRASE.encode()),
        )
    )
    return (
        tmp_path / f"{name}-ca.pem",
        tmp_path / f"{name}-signer.key",
        tmp_path / f"{name}-chain.pem",
    )


def test_a_key_from_an_organisations_ca_verifies_against_the_ca(
    main, bundle: Path, keys: Keys, tmp_path: Path
) -> None:
    ca, key, chain = _ca_and_signer(tmp_path, "Acme")
    other_ca, _, _ = _ca_and_signer(tmp_path, "Other")
    code, out, err = main(
        "sign", str(bundle), "--key", str(key), "--signer-cert", str(chain),
        "--passphrase-env", PASSPHRASE_VARIABLE,
    )  # fmt: skip
    assert code == 0, err
    # Co-signed: Jane Doe's signature stays in each PDF, the envelope is the new signer's.
    code, out, err = _verify(main, bundle, ca)
    assert code == 1  # Jane Doe's self-signed certificate is not issued by Acme's CA
    assert out.count("whose certificate is not the given one nor issued by it") == 3
    code, out, err = _verify(main, bundle, ca, keys.pem)
    assert code == 0, out
    assert "Signed by Signer" in out
    code, out, _ = _verify(main, bundle, other_ca)
    assert code == 1


# --------------------------------------------------------------------------- against the store


def test_against_store_names_the_changed_run_and_what_changed(
    main, signing_store: SigningStore, keys: Keys, tmp_path: Path
) -> None:
    database = tmp_path / "mlflow.db"
    shutil.copy(signing_store.database, database)
    uri = f"sqlite:///{database}"
    run_ids = signing_store.run_ids
    folder = tmp_path / "reports"
    code, _, err = main(
        "report", "--tracking-uri", uri, "--out", str(folder), "--experiment", "truth-table",
        *_sign_args(keys),
    )  # fmt: skip
    assert code == 0, err
    code, out, _ = _verify(main, folder, keys.pem, extra=("--against-store",))
    assert code == 0, out
    assert f"OK: 5 runs unchanged in {database}" in out

    with sqlite3.connect(database) as db:
        key, value = db.execute(
            "SELECT key, value FROM params WHERE run_uuid = ? ORDER BY key LIMIT 1",
            (run_ids["complete"],),
        ).fetchone()
        db.execute(
            "UPDATE params SET value = ? WHERE run_uuid = ? AND key = ?",
            ("edited", run_ids["complete"], key),
        )
    with stores.tracking(uri) as client:
        client.set_tag(run_ids["no-data"], "reviewed", "yes")
        client.delete_run(run_ids["no-metrics"])
    code, out, _ = _verify(main, folder, keys.pem, extra=("--against-store",))
    assert code == 1
    assert (
        f"CHANGED  run {run_ids['complete']} (complete): param {key}: {value!r} -> 'edited'" in out
    )
    assert f"CHANGED  run {run_ids['no-data']} (no-data): tag reviewed added: 'yes'" in out
    assert f"CHANGED  run {run_ids['no-metrics']} (no-metrics): run deleted" in out
    assert "INVALID: 3 runs changed" in out
    untouched = [run_ids[n] for n in ("no-hyperparameters", "no-environment")]
    assert not any(run_id in out for run_id in untouched)
    # The files themselves are still as signed.
    assert "FAIL" not in out

    code, out, _ = main(
        "verify", str(folder), "--cert", str(keys.pem), "--against-store", "-f", "json"
    )
    report = json.loads(out)
    assert code == 1 and report["valid"] is False and report["runs_compared"] == 5
    assert {r["run_id"] for r in report["changed_runs"]} == {
        run_ids["complete"],
        run_ids["no-data"],
        run_ids["no-metrics"],
    }


def test_signing_and_verifying_never_write_to_the_store(
    main, signing_store: SigningStore, keys: Keys, tmp_path: Path
) -> None:
    before = stores.tree_digest(signing_store.directory)
    code, _, err = main(
        "report", "--tracking-uri", signing_store.uri, "--out", str(tmp_path / "reports"),
        "--run-id", signing_store.run_ids["complete"], *_sign_args(keys),
    )  # fmt: skip
    assert code == 0, err
    code, out, _ = _verify(main, tmp_path / "reports", keys.pem, extra=("--against-store",))
    assert code == 0, out
    assert stores.tree_digest(signing_store.directory) == before


def test_log_to_mlflow_uploads_the_bundle_and_tags_each_run(
    main, keys: Keys, tmp_path: Path
) -> None:
    store = _build_store(tmp_path / "store")
    folder = tmp_path / "reports"
    run_ids = [store.run_ids["complete"], store.run_ids["no-data"]]
    code, out, err = main(
        "report", "--tracking-uri", store.uri, "--out", str(folder),
        "--run-id", run_ids[0], "--run-id", run_ids[1], *_sign_args(keys), "--log-to-mlflow",
    )  # fmt: skip
    assert code == 0, err
    assert f"Logged the signed folder to 2 runs in {store.database}" in out
    import hashlib

    envelope_sha256 = hashlib.sha256((folder / ENVELOPE_FILE).read_bytes()).hexdigest()
    with stores.tracking(store.uri) as client:
        for run_id in run_ids:
            names = {a.path for a in client.list_artifacts(run_id, "audit")}
            assert f"audit/{ENVELOPE_FILE}" in names and "audit/complete.pdf" in names
            tags = client.get_run(run_id).data.tags
            assert tags["audit.report_sha256"] == envelope_sha256
            assert tags["audit.signed_by"].startswith("CN=Jane Doe,O=Acme ML (sha256 ")
            assert tags["audit.policy"].startswith("eu-ai-act-high-risk@")
            assert tags["audit.status"] in ("pass", "warn", "fail")
        untouched = client.get_run(store.run_ids["no-metrics"]).data.tags
        assert not any(key.startswith("audit.") for key in untouched)
    # The tags it set are its own: the runs still match what was signed.
    code, out, _ = _verify(main, folder, keys.pem, extra=("--against-store",))
    assert code == 0, out


def test_log_to_mlflow_needs_a_signature(main, signing_store, tmp_path) -> None:
    code, _, err = main(
        "report", "--tracking-uri", signing_store.uri, "--out", str(tmp_path),
        "--log-to-mlflow",
    )  # fmt: skip
    assert code == 2 and "--sign" in err
    assert not any(tmp_path.iterdir())


# --------------------------------------------------------------------------- timestamps


@pytest.fixture(scope="module")
def timestamp_authority(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """A real RFC 3161 timestamp authority over HTTP on loopback (pyHanko's test TSA)."""
    from asn1crypto import keys as asn1_keys
    from asn1crypto import tsp
    from asn1crypto import x509 as asn1_x509
    from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper

    now = datetime.datetime.now(datetime.timezone.utc)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test TSA")])
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    stamper = DummyTimeStamper(
        tsa_cert=asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER)),
        tsa_key=asn1_keys.PrivateKeyInfo.load(
            key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        ),
    )

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            request = tsp.TimeStampReq.load(self.rfile.read(int(self.headers["Content-Length"])))
            body = stamper.request_tsa_response(request).dump()
            self.send_response(200)
            self.send_header("Content-Type", "application/timestamp-reply")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    pem = tmp_path_factory.mktemp("tsa") / "tsa.pem"
    pem.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    yield f"http://127.0.0.1:{server.server_address[1]}/", pem
    server.shutdown()


def test_a_timestamp_authority_countersigns_the_pdfs(
    main, signing_store, keys: Keys, timestamp_authority, tmp_path: Path
) -> None:
    url, tsa_pem = timestamp_authority
    folder = tmp_path / "reports"
    code, _, err = main(
        "report", "--tracking-uri", signing_store.uri, "--out", str(folder),
        "--run-id", signing_store.run_ids["complete"], *_sign_args(keys), "--tsa-url", url,
    )  # fmt: skip
    assert code == 0, err
    code, out, err = main(
        "verify", str(folder), "--cert", str(keys.pem), "--cert", str(tsa_pem), "-f", "json"
    )
    assert code == 0, out + err
    (pdf,) = json.loads(out)["pdf_signatures"]
    assert pdf["timestamped"] is True and pdf["valid"] is True
    # Without trusting the authority, its timestamp is not accepted.
    code, out, _ = _verify(main, folder, keys.pem)
    assert code == 1 and "its timestamp is not valid or not from a trusted authority" in out


def test_an_unreachable_timestamp_authority_leaves_the_folder_as_it_was(
    main, signed: Path, keys: Keys, tmp_path: Path
) -> None:
    folder = tmp_path / "bundle"
    shutil.copytree(signed, folder)
    before = stores.tree_digest(folder)
    port = stores.free_port()
    code, _, err = main(
        "sign", str(folder), "--key", str(keys.p12), "--passphrase-env", PASSPHRASE_VARIABLE,
        "--tsa-url", f"http://127.0.0.1:{port}/",
    )  # fmt: skip
    assert code == 2
    assert "timestamp authority" in err and len(err.strip().splitlines()) == 1
    assert stores.tree_digest(folder) == before


# --------------------------------------------------------------------------- visible signature


def test_a_visible_signature_is_drawn_on_the_cover_with_an_embedded_font(
    main, bundle: Path, keys: Keys
) -> None:
    code, _, err = main(
        "sign", str(bundle), "--key", str(keys.p12), "--passphrase-env", PASSPHRASE_VARIABLE,
        "--visible-signature",
    )  # fmt: skip
    assert code == 0, err
    reader = PdfReader(bundle / "complete.pdf")
    fields = [f.get_object() for f in reader.trailer["/Root"]["/AcroForm"]["/Fields"]]
    visible = [f for f in fields if any(float(v) for v in f["/Rect"])]
    assert len(visible) == 1
    (widget,) = visible
    assert widget["/P"].get_object() == reader.pages[0].get_object()
    assert widget["/F"] & 4
    resources = widget["/AP"]["/N"].get_object()["/Resources"]
    (font,) = resources["/Font"].values()
    descendant = font.get_object()["/DescendantFonts"][0].get_object()
    assert "/FontFile2" in descendant["/FontDescriptor"]  # embedded, as PDF/A requires
    widths = descendant["/W"]
    assert max(int(w) for w in widths[1]) <= 1000  # glyph widths in thousandths of an em
    code, out, _ = _verify(main, bundle, keys.pem)
    assert code == 0, out


# --------------------------------------------------------------------------- cannot verify


def test_what_cannot_be_verified_is_exit_2(main, signed, keys: Keys, tmp_path: Path) -> None:
    code, _, err = _verify(main, tmp_path / "nowhere", keys.pem)
    assert code == 2 and "no such file" in err
    (tmp_path / "empty").mkdir()
    code, _, err = _verify(main, tmp_path / "empty", keys.pem)
    assert code == 2 and f"{ENVELOPE_FILE} is missing" in err
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    code, _, err = _verify(main, signed, garbage)
    assert code == 2 and "garbage.pem" in err and "not an X.509 certificate" in err
    code, _, err = _verify(
        main, signed, keys.pem,
        extra=("--against-store", "--tracking-uri", f"sqlite:///{tmp_path / 'gone.db'}"),
    )  # fmt: skip
    assert code == 2 and "gone.db" in err
    for message in (err,):
        assert "Traceback" not in message and len(message.strip().splitlines()) == 1


def test_sign_needs_a_report_folder(main, keys: Keys, tmp_path: Path) -> None:
    code, _, err = main(
        "sign", str(tmp_path), "--key", str(keys.p12), "--passphrase-env", PASSPHRASE_VARIABLE
    )
    assert code == 2 and "result.json" in err


def test_keygen_asks_for_the_passphrase_on_a_terminal(tmp_path: Path) -> None:
    import pty
    import select
    import sys

    pid, terminal = pty.fork()
    if pid == 0:  # the child, on the pseudo-terminal
        os.execv(  # noqa: S606 (the command line as a user types it)
            sys.executable,
            [sys.executable, "-m", "audit", "keygen", "--subject", "CN=Typed",
             "--out", str(tmp_path)],
        )  # fmt: skip
    seen = b""

    def read_until(marker: bytes) -> None:
        nonlocal seen
        while marker not in seen:
            ready, _, _ = select.select([terminal], [], [], 60)
            assert ready, seen
            try:
                chunk = os.read(terminal, 1024)
            except OSError:  # the child closed the terminal
                return
            if not chunk:
                return
            seen += chunk

    read_until(b"Passphrase for the new key: ")
    os.write(terminal, b"typed secret\n")
    read_until(b"Repeat the passphrase: ")
    os.write(terminal, b"typed secret\n")
    read_until(b"SHA-256:")
    read_until(b"organisation's CA.")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, seen
    assert b"typed secret" not in seen  # not echoed
    from cryptography.hazmat.primitives.serialization import pkcs12

    key, _, _ = pkcs12.load_key_and_certificates(
        (tmp_path / "signer.p12").read_bytes(), b"typed secret"
    )
    assert key is not None


def test_an_ecdsa_key_signs_and_verifies_but_the_pdfs_leave_pdfa(
    main, signing_store: SigningStore, tmp_path: Path
) -> None:
    folder = tmp_path / "reports"
    code, _, err = main(
        "report", "--tracking-uri", signing_store.uri, "--out", str(folder),
        "--run-id", signing_store.run_ids["complete"],
    )  # fmt: skip
    assert code == 0, err
    key = generate(parse_subject("CN=Elliptic"), key_type="ecdsa-p256")
    save(key, tmp_path / "keys", PASSPHRASE.encode())
    sign_folder(folder, key, PdfSignOptions())
    code, out, _ = _verify(main, folder, tmp_path / "keys" / "signer.pem")
    assert code == 0, out
    assert _openssl_dgst_verify(folder, key.certificate.public_key(), tmp_path)
    # What docs/signing.md warns about: pyHanko writes an ECDSA signature as PDF 2.0.
    version = PdfReader(folder / "complete.pdf").trailer["/Root"].get("/Version")
    assert version == "/2.0"


def test_writing_a_signed_folder_again_unsigned_warns(
    main, signing_store, signed, tmp_path
) -> None:
    folder = tmp_path / "reports"
    shutil.copytree(signed, folder)
    code, _, err = main(
        "report", "--tracking-uri", signing_store.uri, "--out", str(folder),
        "--run-id", signing_store.run_ids["complete"], "--no-pdf",
    )  # fmt: skip
    assert code == 0
    assert f"warning: {folder / ENVELOPE_FILE} signed the folder's previous contents" in err
