"""NocoBase's encrypted environment variables: the app's AES key, and values as the app stores them.

A secret variable is stored in ``environmentVariables`` as hex(IV) + hex(AES-256-CBC ciphertext,
PKCS7), the key being the target app's ``storage/apps/main/aes_key.dat``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from migration_manager.errors import ConfigError


def aes_key(env: Mapping[str, str]) -> bytes:
    """The target app's AES key, read the way NocoBase reads it."""
    hex_key = (env.get("APP_AES_SECRET_KEY") or "").strip()
    if hex_key:
        try:
            key = bytes.fromhex(hex_key)
        except ValueError as exc:
            raise ConfigError(
                "APP_AES_SECRET_KEY in the target's app_env is not hex (64 hex digits)"
            ) from exc
    elif (env.get("APP_AES_SECRET_KEY_PATH") or "").strip():
        path = Path(env["APP_AES_SECRET_KEY_PATH"].strip())
        try:
            key = path.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"APP_AES_SECRET_KEY_PATH {path} cannot be read ({exc.strerror})"
            ) from exc
    else:
        raise ConfigError(
            "A secret environment variable must be stored encrypted with the target app's AES key, "
            "and the target connection gives none: add APP_AES_SECRET_KEY (hex of the app's "
            "storage/apps/main/aes_key.dat) or APP_AES_SECRET_KEY_PATH to its extra app_env"
        )
    if len(key) != 32:
        raise ConfigError(f"The target app's AES key must be 32 bytes (AES-256); it has {len(key)}")
    return key


def nocobase_encrypt(value: str, key: bytes) -> str:
    """AES-256-CBC, random IV, stored as hex(IV) + hex(ciphertext), PKCS#7 padding (NocoBase's format)."""
    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    data = padder.update(value.encode("utf-8")) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return iv.hex() + (encryptor.update(data) + encryptor.finalize()).hex()


def nocobase_decrypt(stored: str, key: bytes) -> str:
    iv, ciphertext = bytes.fromhex(stored[:32]), bytes.fromhex(stored[32:])
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return (unpadder.update(padded) + unpadder.finalize()).decode("utf-8")
