"""Encryption at rest for archive objects: AES-256-GCM with a key from the environment.

A sealed object is `MAGIC + nonce (12 bytes) + ciphertext-and-tag`; the object's key (its path
in the store) is the associated data, so a sealed object moved to another key does not open.
The key is 32 bytes given as 64 hex digits or base64 (standard or URL-safe) in the variable the
archive settings name (`GOVERNOR_ARCHIVE_KEY` by default). It is read once, never logged.

Errors: `SealingError` (a ValueError) for a missing or malformed key, an object that does not
open (wrong key, altered bytes), or a sealed object read without a key.
"""

from __future__ import annotations

import base64
import binascii
import os

MAGIC = b"GVSEAL1\x00"
_NONCE = 12


class SealingError(ValueError):
    """The archive key is missing or malformed, or a sealed object cannot be opened."""


def parse_key(text: str) -> bytes:
    """32 key bytes from 64 hex digits or base64; SealingError otherwise (the key not quoted)."""
    s = text.strip()
    raw: bytes | None = None
    if len(s) == 64:
        try:
            raw = bytes.fromhex(s)
        except ValueError:
            raw = None
    if raw is None:
        try:
            raw = base64.b64decode(s + "=" * (-len(s) % 4), altchars=b"-_" if "-" in s or "_" in s
                                   else None, validate=True)
        except (binascii.Error, ValueError):
            raw = None
    if raw is None or len(raw) != 32:
        raise SealingError(
            "the archive key must be 32 bytes as 64 hex digits or base64 "
            "(e.g. `python -c 'import os,base64;print(base64.b64encode(os.urandom(32)).decode())'`)"
        )
    return raw


class Sealer:
    """Seals and opens archive objects with one AES-256-GCM key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise SealingError("the archive key must be 32 bytes (AES-256)")
        # Imported here: only a deployment that encrypts its archive pays its ~6 MB.
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(key)

    @classmethod
    def from_env(cls, variable: str, env: dict[str, str] | None = None) -> Sealer:
        value = (env if env is not None else os.environ).get(variable)
        if not value:
            raise SealingError(
                f"archive encryption is on but ${variable} is not set; set it to a 32-byte key"
            )
        return cls(parse_key(value))

    def seal(self, data: bytes, where: str) -> bytes:
        nonce = os.urandom(_NONCE)
        return MAGIC + nonce + self._aead.encrypt(nonce, data, where.encode())

    def open(self, blob: bytes, where: str) -> bytes:
        if not is_sealed(blob):
            return blob  # written before encryption was turned on: read as it is
        nonce = blob[len(MAGIC) : len(MAGIC) + _NONCE]
        from cryptography.exceptions import InvalidTag

        try:
            return self._aead.decrypt(nonce, blob[len(MAGIC) + _NONCE :], where.encode())
        except InvalidTag:
            raise SealingError(
                f"archive object {where} does not open with this key (wrong key or altered)"
            ) from None


def is_sealed(blob: bytes) -> bool:
    return blob.startswith(MAGIC)
