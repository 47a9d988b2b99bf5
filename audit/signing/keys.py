"""Signing keys and certificates: make a throwaway one, load an organisation's own.

A signing key is a private key with its X.509 certificate (and the chain up to the CA, when there
is one). `keygen` makes a self-signed certificate for trying things out; organisations bring a
PKCS#12 file or a PEM key with its certificate chain from their own CA.

RSA is the default because it keeps a signed PDF/A-3b file PDF/A-3b: pyHanko writes ECDSA and
Ed25519 signatures only into PDF 2.0 files.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from audit.errors import AuditError, first_line

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import (
        CertificateIssuerPrivateKeyTypes,
        PrivateKeyTypes,
    )

KeyType = Literal["rsa-3072", "rsa-4096", "ecdsa-p256"]
KEY_TYPES: tuple[KeyType, ...] = ("rsa-3072", "rsa-4096", "ecdsa-p256")

#: Ten years and a bit: Art. 18 keeps technical documentation for ten years after the system is
#: placed on the market, so a signature made at the end of development must outlive that.
DEFAULT_VALIDITY_DAYS = 3_700

KEY_FILE = "signer.p12"
CERT_FILE = "signer.pem"


class SigningError(AuditError):
    """A key, certificate or passphrase cannot be used for signing or verifying."""


@dataclass(frozen=True)
class SigningKey:
    """A private key, its certificate, and the certificates between it and its CA."""

    private_key: PrivateKeyTypes
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.certificate)

    @property
    def subject(self) -> str:
        return self.certificate.subject.rfc4514_string()


def fingerprint(certificate: x509.Certificate) -> str:
    """The certificate's SHA-256 fingerprint, lowercase hex (as `openssl x509 -fingerprint`
    prints it, without the colons)."""
    return certificate.fingerprint(hashes.SHA256()).hex()


def colon_fingerprint(hexdigest: str) -> str:
    """A fingerprint as OpenSSL prints it to people: AB:CD:..."""
    return ":".join(hexdigest[i : i + 2] for i in range(0, len(hexdigest), 2)).upper()


def common_name(certificate: x509.Certificate) -> str:
    """The certificate's common name, else its whole subject."""
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if names:
        value = names[0].value
        return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return certificate.subject.rfc4514_string()


def parse_subject(text: str) -> x509.Name:
    """An RFC 4514 distinguished name such as ``CN=Jane Doe,O=Acme ML``."""
    try:
        name = x509.Name.from_rfc4514_string(text)
    except ValueError as error:
        raise SigningError(f"--subject {text!r}: not a distinguished name ({error})") from None
    if not name.get_attributes_for_oid(NameOID.COMMON_NAME):
        raise SigningError(f"--subject {text!r}: give at least a common name, e.g. CN=Jane Doe")
    return name


def generate(
    subject: x509.Name,
    *,
    key_type: KeyType = "rsa-3072",
    days: int = DEFAULT_VALIDITY_DAYS,
    not_before: datetime.datetime | None = None,
) -> SigningKey:
    """A new private key with a self-signed certificate for document signing: key usage
    digitalSignature and nonRepudiation (contentCommitment), not a CA."""
    private_key: CertificateIssuerPrivateKeyTypes
    if key_type == "ecdsa-p256":
        private_key = ec.generate_private_key(ec.SECP256R1())
    else:
        private_key = rsa.generate_private_key(
            public_exponent=65537, key_size=int(key_type.removeprefix("rsa-"))
        )
    start = not_before or datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(
        minutes=5
    )
    public_key = private_key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(private_key, hashes.SHA256())
    )
    return SigningKey(private_key, certificate)


def save(key: SigningKey, folder: Path, passphrase: bytes, *, force: bool = False) -> Path:
    """Write `signer.p12` (key and certificate, encrypted with `passphrase`) and `signer.pem`
    (the certificate, to hand to verifiers) into `folder`; return the PKCS#12 path."""
    p12_path, pem_path = folder / KEY_FILE, folder / CERT_FILE
    if not force:
        for path in (p12_path, pem_path):
            if path.exists():
                raise SigningError(f"{path} exists; keep it, or pass --force to replace it")
    if not passphrase:
        raise SigningError("the passphrase is empty; a private key must be encrypted")
    bundle = pkcs12.serialize_key_and_certificates(
        common_name(key.certificate).encode("utf-8"),
        key.private_key,  # type: ignore[arg-type]
        key.certificate,
        list(key.chain) or None,
        serialization.BestAvailableEncryption(passphrase),
    )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write_private(p12_path, bundle)
        pem_path.write_bytes(certificates_pem((key.certificate, *key.chain)))
    except OSError as error:
        raise SigningError(f"cannot write keys to {folder}: {error.strerror or error}") from None
    return p12_path


def _write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner can read."""
    import os

    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


def certificates_pem(certificates: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def needs_passphrase(path: Path) -> bool:
    """Whether the key file is encrypted (PKCS#12 files nearly always are)."""
    data = _read(path, "key")
    if b"-----BEGIN" in data:
        return b"ENCRYPTED" in data
    try:
        pkcs12.load_key_and_certificates(data, None)
    except ValueError:
        return True
    return False


def load_signing_key(
    path: Path, passphrase: bytes | None, certificate_path: Path | None = None
) -> SigningKey:
    """Load a PKCS#12 file, or a PEM/DER private key with its certificate chain in
    `certificate_path` (the signer's certificate first)."""
    data = _read(path, "key")
    if b"-----BEGIN" not in data and certificate_path is None:
        try:
            private_key, certificate, extra = pkcs12.load_key_and_certificates(data, passphrase)
        except ValueError:
            raise SigningError(
                f"cannot open {path}: wrong passphrase, or not a PKCS#12 file"
            ) from None
        if private_key is None or certificate is None:
            raise SigningError(f"{path} holds no private key with its certificate")
        key = SigningKey(private_key, certificate, tuple(extra))
    else:
        try:
            private_key = (
                serialization.load_pem_private_key(data, passphrase)
                if b"-----BEGIN" in data
                else serialization.load_der_private_key(data, passphrase)
            )
        except (ValueError, TypeError) as error:
            raise SigningError(f"cannot open {path}: {_key_problem(error)}") from None
        if certificate_path is None:
            raise SigningError(f"{path} is a bare private key; give its certificate with --cert")
        chain = load_certificates(certificate_path)
        key = SigningKey(private_key, chain[0], tuple(chain[1:]))
    if not isinstance(key.private_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        if isinstance(key.private_key, ed25519.Ed25519PrivateKey):
            raise SigningError(f"{path}: Ed25519 keys are not supported; use RSA (or ECDSA)")
        raise SigningError(f"{path}: unsupported key type {type(key.private_key).__name__}")
    if key.private_key.public_key() != key.certificate.public_key():
        raise SigningError(f"the certificate for {path} is not the one of its private key")
    return key


def check_can_sign(key: SigningKey, now: datetime.datetime | None = None) -> None:
    """Refuse a certificate outside its validity period, or whose key usage forbids signing:
    nobody could verify the signature."""
    moment = now or datetime.datetime.now(datetime.timezone.utc)
    certificate = key.certificate
    if moment > certificate.not_valid_after_utc:
        raise SigningError(
            f"the certificate of {common_name(certificate)!r} expired on "
            f"{certificate.not_valid_after_utc:%Y-%m-%d}; signatures made with it do not verify"
        )
    if moment < certificate.not_valid_before_utc:
        raise SigningError(
            f"the certificate of {common_name(certificate)!r} is valid only from "
            f"{certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )
    problem = key_usage_problem(certificate)
    if problem:
        raise SigningError(f"{problem}; signatures made with it do not verify")


def key_usage_problem(certificate: x509.Certificate) -> str | None:
    """Why the certificate's key usage forbids signing documents, or None. Signing needs
    digitalSignature or nonRepudiation (contentCommitment); a certificate without the key usage
    extension is not restricted (RFC 5280, 4.2.1.3). `sign` refuses what `verify` rejects."""
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None
    except ValueError as error:  # a malformed extension
        return f"the certificate of {common_name(certificate)!r}: {first_line(error)}"
    if usage.digital_signature or usage.content_commitment:
        return None
    return (
        f"the certificate of {common_name(certificate)!r} is not for signing (its key usage "
        "allows neither digitalSignature nor nonRepudiation)"
    )


def require_pyhanko() -> None:
    """pyHanko signs and checks the PDFs and certificate chains: the `sign` extra."""
    try:
        import pyhanko.sign  # noqa: F401  (pyhanko itself has no py.typed; its packages do)
        import pyhanko_certvalidator  # noqa: F401
    except ImportError:
        raise SigningError(
            "signing and verifying need pyHanko: pip install 'mlflow-audit[sign]' "
            "(from a checkout: pip install '.[sign]')"
        ) from None


def asn1_certificate(certificate: x509.Certificate) -> Any:
    """The certificate as pyHanko's libraries (asn1crypto) take it."""
    from asn1crypto import x509 as asn1_x509

    return asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))


def trust_problem(
    certificate: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    trusted: Sequence[x509.Certificate],
    moment: datetime.datetime | None = None,
) -> str | None:
    """Why a signature by `certificate` cannot be trusted at `moment` (default: now), or None.

    Trusted means: `certificate` is one of `trusted`, or a path through `intermediates` leads to
    one of them; every certificate on the way is valid at `moment`; and the signer's key usage
    allows signing. Nothing is fetched: verification works offline.
    """
    import asyncio

    require_pyhanko()
    from pyhanko_certvalidator import CertificateValidator, ValidationContext
    from pyhanko_certvalidator.errors import (
        ExpiredError,
        InvalidCertificateError,
        NotYetValidError,
        PathBuildingError,
        PathValidationError,
        RevokedError,
    )

    when = moment or datetime.datetime.now(datetime.timezone.utc)
    name = common_name(certificate)
    # A trust anchor's own validity is not part of path validation (RFC 5280, 6.1), and a
    # self-signed signer is its own anchor: check the signer's dates here.
    if not certificate.not_valid_before_utc <= when <= certificate.not_valid_after_utc:
        return (
            f"the certificate of {name!r} is expired or not yet valid (valid "
            f"{certificate.not_valid_before_utc:%Y-%m-%d} to "
            f"{certificate.not_valid_after_utc:%Y-%m-%d})"
        )
    usage = key_usage_problem(certificate)
    if usage:
        return usage
    context = ValidationContext(
        trust_roots=[asn1_certificate(c) for c in trusted],
        allow_fetching=False,
        revocation_mode="soft-fail",
        moment=when,
    )
    validator = CertificateValidator(
        asn1_certificate(certificate), [asn1_certificate(c) for c in intermediates], context
    )
    not_trusted = (
        f"signed by {name!r} (certificate sha256 {fingerprint(certificate)[:16]}...), whose "
        "certificate is not the given one nor issued by it"
    )
    try:
        asyncio.run(validator.async_validate_path())
    except PathBuildingError:
        return not_trusted
    except (ExpiredError, NotYetValidError):
        return f"a certificate in the chain of {name!r} is expired or not yet valid"
    except RevokedError:
        return f"a certificate in the chain of {name!r} is revoked"
    except InvalidCertificateError as error:
        if "self-signed" in str(error):
            return not_trusted
        return f"the certificate of {name!r}: {first_line(error)}"
    except PathValidationError as error:
        return f"the certificate of {name!r}: {first_line(error)}"
    return None


def _key_problem(error: Exception) -> str:
    text = str(error).lower()
    if "password" in text or "decrypt" in text:
        return "wrong or missing passphrase"
    return "not a private key in PEM or DER"


def load_certificates(path: Path) -> list[x509.Certificate]:
    """Every certificate in a PEM file, or the one certificate of a DER file."""
    data = _read(path, "certificate")
    try:
        if b"-----BEGIN" in data:
            certificates = x509.load_pem_x509_certificates(data)
        else:
            certificates = [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise SigningError(f"cannot read {path}: not an X.509 certificate in PEM or DER") from None
    return certificates


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise SigningError(f"cannot read {what} {path}: {error.strerror or error}") from None
