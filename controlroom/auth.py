"""Control-room browser sessions: a signed cookie instead of a key in every request or URL.

Pure (the secret and `now` are passed in). After a login with an API key the browser holds

    v1.<key id, base64url>.<expiry, unix s>.<nonce, 32 hex>.<HMAC-SHA256, 64 hex>

signed with a key derived from the deployment's secret salt. The MAC also covers the key's
stored hash, so rotating or removing a key in keys.yaml ends its browser sessions; the role is
read from the current config on every request, never from the cookie. The API key itself is
never in the cookie. The CSRF token of a session is an HMAC of its nonce (the synchroniser
token lives in each form; nothing to store server-side).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass

COOKIE_NAME = "governor_cr"
SESSION_TTL_S = 8 * 3600  # one working day; log in again after
MAX_COOKIE_CHARS = 512


@dataclass(frozen=True)
class Claims:
    """A verified cookie: which key logged in, until when, and the session's nonce."""

    key_id: str
    expires: int
    nonce: str


def derive_secret(deployment_salt: bytes) -> bytes:
    """The cookie-signing key: a domain-separated HMAC of the deployment salt (the salt itself
    keys fingerprints; this key signs nothing else)."""
    return hmac.new(deployment_salt, b"governor/control-room/session/v1", hashlib.sha256).digest()


def _mac(secret: bytes, key_id_b64: str, expires: int, nonce: str, key_hash: str) -> str:
    msg = f"v1|{key_id_b64}|{expires}|{nonce}|{key_hash}".encode()
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()


def issue(secret: bytes, key_id: str, key_hash: str, now: float,
          ttl: int = SESSION_TTL_S) -> tuple[str, Claims]:
    """A new session cookie value for key `key_id` (whose stored hash is `key_hash`)."""
    kid = base64.urlsafe_b64encode(key_id.encode()).decode().rstrip("=")
    expires = int(now) + ttl
    nonce = secrets.token_hex(16)
    value = f"v1.{kid}.{expires}.{nonce}.{_mac(secret, kid, expires, nonce, key_hash)}"
    return value, Claims(key_id, expires, nonce)


def key_id_of(value: str) -> str | None:
    """The key id a cookie names (unverified: only to look up the key's hash), or None."""
    parts = value.split(".")
    if len(value) > MAX_COOKIE_CHARS or len(parts) != 5 or parts[0] != "v1":
        return None
    kid = parts[1]
    try:
        return base64.urlsafe_b64decode(kid + "=" * (-len(kid) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def verify(secret: bytes, value: str, key_hash: str, now: float) -> Claims | None:
    """The cookie's claims when its MAC matches (with the key's current hash) and it has not
    expired; None for anything else (tampered, expired, malformed, another deployment's)."""
    key_id = key_id_of(value)
    if key_id is None:
        return None
    _, kid, exp, nonce, mac = value.split(".")
    if not (exp.isascii() and exp.isdigit() and len(exp) <= 12):
        return None
    if len(nonce) != 32 or len(mac) != 64:
        return None
    if not hmac.compare_digest(mac.encode(), _mac(secret, kid, int(exp), nonce, key_hash).encode()):
        return None
    if int(exp) <= now:
        return None
    return Claims(key_id, int(exp), nonce)


def csrf_token(secret: bytes, nonce: str) -> str:
    """The session's CSRF token: put in every form, checked on every POST."""
    return hmac.new(secret, f"csrf|{nonce}".encode(), hashlib.sha256).hexdigest()[:40]


def csrf_ok(secret: bytes, nonce: str, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(csrf_token(secret, nonce).encode(),
                                              (sent or "").encode())
