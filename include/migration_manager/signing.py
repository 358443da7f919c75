"""Signed migration files: Ed25519 over the manifest's exact bytes.

The creating side signs ``manifest.json`` with a private key and writes the signature as the
member ``manifest.json.sig`` (a small JSON document: algorithm, signer name, key id, base64
signature). The manifest lists every data member's sha256, so the signature covers the whole
file. The executing side checks it against the public keys it trusts; which key signed is
decided by the key id and the signature, and the signer shown is the *trusted* key's name
(the name written into the file is only a claim).

Plain Python: keys are passed in. The Airflow adapter (``airflow/signing.py``) fetches them
from a connection and a Variable.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, computed_field

from migration_manager.errors import ArchiveError, ConfigError

ALGORITHM = "ed25519"
SIGNATURE_MEMBER = "manifest.json.sig"
SIGNATURE_MAX_BYTES = 4096

Status = Literal["verified", "unsigned", "untrusted", "invalid", "unchecked"]


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short, stable id of a public key: the first 16 hex digits of sha256 of its raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class SigningKey:
    signer: str
    private_key: Ed25519PrivateKey

    @classmethod
    def from_pem(
        cls, pem: str | bytes, signer: str, *, where: str = "the signing key"
    ) -> SigningKey:
        if not signer or not signer.strip():
            raise ConfigError(f"{where}: no signer name; set the connection's login to a name")
        data = pem.encode() if isinstance(pem, str) else pem
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"{where}: not an unencrypted PEM private key ({type(exc).__name__}); "
                "give an Ed25519 key in PKCS#8 PEM (openssl genpkey -algorithm ed25519)"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{where}: the key is not an Ed25519 key")
        return cls(signer.strip(), key)

    @property
    def key_id(self) -> str:
        return key_id(self.private_key.public_key())

    def public_pem(self) -> str:
        return public_pem(self.private_key.public_key())


@dataclass(frozen=True)
class TrustedKey:
    name: str
    public_key: Ed25519PublicKey

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)


@dataclass(frozen=True)
class Trust:
    """The keys a reader trusts, and whether files without a valid trusted signature may pass."""

    keys: tuple[TrustedKey, ...] = ()
    allow_unsigned: bool = False


class Signature(BaseModel):
    """What a reader found: ``verified`` (by a trusted key: ``signer`` is its trusted name),
    ``unsigned``, ``untrusted`` (a valid-looking signature by a key not trusted), ``invalid``
    (the signature does not match the manifest), ``unchecked`` (no keys given)."""

    model_config = ConfigDict(frozen=True)

    status: Status
    signer: str | None = None
    key_id: str | None = None
    claimed_signer: str | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def label(self) -> str:
        if self.status == "verified":
            return f"signed by {self.signer}"
        if self.status == "unsigned":
            return "unsigned"
        if self.status == "untrusted":
            return f"signed by an untrusted key {self.key_id} (claims {self.claimed_signer!r})"
        if self.status == "invalid":
            return f"bad signature (claims {self.claimed_signer!r}, key {self.key_id})"
        return f"signed (not checked; claims {self.claimed_signer!r})"


def generate() -> SigningKey:
    return SigningKey("generated", Ed25519PrivateKey.generate())


def private_pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def trusted_keys(
    doc: Mapping[str, Any] | str | None, *, where: str = "trusted keys"
) -> tuple[TrustedKey, ...]:
    """Trusted keys from ``{"name": "<PEM public key>", ...}`` (a mapping or its JSON text)."""
    if doc is None or doc == "":
        return ()
    if isinstance(doc, str):
        try:
            doc = json.loads(doc)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f'{where}: not valid JSON ({exc}); give an object {{"signer name": "-----BEGIN PUBLIC KEY-----..."}}'
            ) from None
    if not isinstance(doc, Mapping):
        raise ConfigError(f'{where}: expected an object {{"signer name": "<PEM public key>"}}')
    out = []
    for name, pem in doc.items():
        try:
            key = serialization.load_pem_public_key(str(pem).encode())
        except (ValueError, TypeError):
            raise ConfigError(f"{where}: key {name!r} is not a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"{where}: key {name!r} is not an Ed25519 public key")
        out.append(TrustedKey(str(name), key))
    return tuple(out)


def sign(body: bytes, key: SigningKey) -> bytes:
    """The ``manifest.json.sig`` member for the manifest ``body``."""
    doc = {
        "algorithm": ALGORITHM,
        "signer": key.signer,
        "key_id": key.key_id,
        "signature": base64.b64encode(key.private_key.sign(body)).decode("ascii"),
    }
    return json.dumps(doc, indent=1).encode("utf-8")


def check(body: bytes, member: bytes | None, keys: tuple[TrustedKey, ...] | None) -> Signature:
    """What the signature member says about the manifest ``body`` (never raises for a bad one)."""
    if member is None:
        return Signature(status="unsigned")
    try:
        doc = json.loads(member)
        claimed = str(doc["signer"])[:200]
        kid = str(doc["key_id"])[:64]
        raw = base64.b64decode(str(doc["signature"]), validate=True)
        if doc.get("algorithm") != ALGORITHM:
            return Signature(status="invalid", key_id=kid, claimed_signer=claimed)
    except (ValueError, KeyError, TypeError, binascii.Error):
        return Signature(status="invalid")
    if keys is None:
        return Signature(status="unchecked", key_id=kid, claimed_signer=claimed)
    for trusted in keys:
        if trusted.key_id != kid:
            continue
        try:
            trusted.public_key.verify(raw, body)
        except InvalidSignature:
            return Signature(status="invalid", key_id=kid, claimed_signer=claimed)
        return Signature(status="verified", signer=trusted.name, key_id=kid, claimed_signer=claimed)
    return Signature(status="untrusted", key_id=kid, claimed_signer=claimed)


def enforce(signature: Signature, trust: Trust, *, name: str) -> None:
    """Refuse a file that is not signed by a trusted key, unless ``trust.allow_unsigned``."""
    if signature.status == "verified" or trust.allow_unsigned:
        return
    known = ", ".join(f"{k.name} ({k.key_id})" for k in trust.keys) or "none configured"
    what = {
        "unsigned": "is not signed",
        "untrusted": f"is signed by a key this side does not trust ({signature.label})",
        "invalid": f"has a signature that does not match its manifest ({signature.label}): it was modified after signing",
        "unchecked": "was not checked",
    }[signature.status]
    raise ArchiveError(
        f"{name} {what}; refusing it. Trusted keys: {known}. Create the file again on a side that "
        "signs with a trusted key, add the signer's public key to the trusted keys, or set "
        "allow_unsigned to run it anyway"
    )
