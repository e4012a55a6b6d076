"""Session cookies: signed over the key's current hash, expiring, tamper-evident; CSRF tokens."""

from __future__ import annotations

from controlroom import auth

SECRET = auth.derive_secret(b"deployment-salt")
HASH = "sha256:" + "a" * 64


def test_a_cookie_verifies_until_it_expires():
    value, claims = auth.issue(SECRET, "dev-viewer", HASH, 1000.0, ttl=60)
    assert auth.verify(SECRET, value, HASH, 1059.0) == claims
    assert auth.verify(SECRET, value, HASH, 1060.0) is None
    assert auth.key_id_of(value) == "dev-viewer"


def test_a_rotated_key_hash_or_another_secret_ends_the_session():
    value, _ = auth.issue(SECRET, "dev-viewer", HASH, 1000.0)
    assert auth.verify(SECRET, value, "sha256:" + "b" * 64, 1001.0) is None
    assert auth.verify(auth.derive_secret(b"other"), value, HASH, 1001.0) is None


def test_malformed_cookies_are_none_not_errors():
    for bad in ("", "v1", "v1.a.b.c.d", "v1.ZGV2.999999999999999.x.y", "v1.\u00e9.1.2.3",
                "v1.ZGV2.10." + "0" * 32 + "." + "\u00e9" * 64, "x" * 10_000):
        assert auth.verify(SECRET, bad, HASH, 0.0) is None


def test_csrf_tokens_are_per_session_and_checked_in_constant_time():
    _, a = auth.issue(SECRET, "k", HASH, 0.0)
    _, b = auth.issue(SECRET, "k", HASH, 0.0)
    ta = auth.csrf_token(SECRET, a.nonce)
    assert auth.csrf_ok(SECRET, a.nonce, ta)
    assert not auth.csrf_ok(SECRET, b.nonce, ta)
    assert not auth.csrf_ok(SECRET, a.nonce, None)
    assert not auth.csrf_ok(SECRET, a.nonce, "")
    assert not auth.csrf_ok(SECRET, a.nonce, "\u00e9" * 40)


def test_logged_out_sessions_are_remembered_within_a_bound():
    from proxy.control_room import MAX_REVOKED, ControlRoom

    cr = ControlRoom()
    for i in range(MAX_REVOKED + 500):
        cr.revoke(auth.Claims("k", expires=2000 if i % 2 else 500, nonce=f"{i:032x}"), 1000.0)
    assert len(cr.revoked) <= MAX_REVOKED
    assert f"{MAX_REVOKED + 499:032x}" in cr.revoked  # the newest is always kept
