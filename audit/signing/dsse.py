"""DSSE envelopes (https://github.com/secure-systems-lab/dsse, protocol v1.0).

The signature covers the pre-authentication encoding (PAE) of the payload type and the payload,
never the JSON around them, so that any DSSE verifier (securesystemslib, in-toto, sigstore,
`openssl dgst` over the PAE) checks it without our code.

Signature schemes, named as securesystemslib names them: RSA keys sign with PKCS#1 v1.5 over
SHA-256 ("rsa-pkcs1v15-sha256"), P-256 keys with ECDSA over SHA-256, DER encoded
("ecdsa-sha2-nistp256"); both are `openssl dgst -sha256 -verify`'s defaults.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

PAYLOAD_TYPE = "application/vnd.in-toto+json"

#: An envelope larger than this is not one of ours; refuse before parsing it.
MAX_ENVELOPE_BYTES = 64 << 20


class EnvelopeError(ValueError):
    """The envelope is malformed or its signature does not verify."""


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    payload: bytes
    #: (keyid, signature) pairs.
    signatures: tuple[tuple[str, bytes], ...]

    def to_json(self) -> bytes:
        document = {
            "payloadType": self.payload_type,
            "payload": base64.b64encode(self.payload).decode("ascii"),
            "signatures": [
                {"keyid": keyid, "sig": base64.b64encode(sig).decode("ascii")}
                for keyid, sig in self.signatures
            ],
        }
        return json.dumps(document, separators=(",", ":")).encode("utf-8") + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> Envelope:
        if len(data) > MAX_ENVELOPE_BYTES:
            raise EnvelopeError(f"larger than {MAX_ENVELOPE_BYTES >> 20} MiB")
        try:
            document = json.loads(data)
        except (ValueError, UnicodeDecodeError) as error:
            raise EnvelopeError(f"not JSON ({error})") from None
        if not isinstance(document, Mapping):
            raise EnvelopeError("not a DSSE envelope (expected a JSON object)")
        try:
            payload_type = document["payloadType"]
            payload = _b64(document["payload"])
            signatures = tuple(
                (str(entry.get("keyid", "")), _b64(entry["sig"]))
                for entry in document["signatures"]
            )
        except (KeyError, TypeError, AttributeError) as error:
            raise EnvelopeError(f"not a DSSE envelope (missing {error})") from None
        if not isinstance(payload_type, str) or not signatures:
            raise EnvelopeError("not a DSSE envelope (no payloadType or no signature)")
        return cls(payload_type, payload, signatures)


def _b64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise TypeError("base64 field")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        # DSSE allows URL-safe base64 as well.
        try:
            return base64.urlsafe_b64decode(value)
        except binascii.Error as error:
            raise EnvelopeError(f"bad base64 ({error})") from None


def pae(payload_type: str, payload: bytes) -> bytes:
    """The pre-authentication encoding: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def scheme(key: PublicKeyTypes) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return "rsa-pkcs1v15-sha256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ecdsa-sha2-nistp256"
    raise EnvelopeError(f"unsupported key type {type(key).__name__}")


def sign(
    payload: bytes, private_key: PrivateKeyTypes, keyid: str, payload_type: str = PAYLOAD_TYPE
) -> Envelope:
    message = pae(payload_type, payload)
    if isinstance(private_key, rsa.RSAPrivateKey):
        signature = private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(private_key, ec.EllipticCurvePrivateKey):
        signature = private_key.sign(message, ec.ECDSA(hashes.SHA256()))
    else:
        raise EnvelopeError(f"unsupported key type {type(private_key).__name__}")
    return Envelope(payload_type, payload, ((keyid, signature),))


def verify(envelope: Envelope, public_key: PublicKeyTypes) -> bool:
    """Whether any of the envelope's signatures is by `public_key`."""
    message = pae(envelope.payload_type, envelope.payload)
    for _, signature in envelope.signatures:
        try:
            if isinstance(public_key, rsa.RSAPublicKey):
                public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
            elif isinstance(public_key, ec.EllipticCurvePublicKey):
                public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
            else:
                return False
        except InvalidSignature:
            continue
        return True
    return False
