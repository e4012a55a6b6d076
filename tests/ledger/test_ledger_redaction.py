"""Prompts and completions are kept as salted hashes and sizes unless text storage is opted into."""

from __future__ import annotations

import hashlib
import hmac

from ledger.redaction import content_fields, hash_text

SALT = b"deployment-salt"


def test_hash_text_is_hmac_sha256_with_the_salt_and_the_utf8_size() -> None:
    digest, size = hash_text("héllo", SALT)
    assert digest == hmac.new(SALT, "héllo".encode(), hashlib.sha256).hexdigest()
    assert digest != hashlib.sha256("héllo".encode()).hexdigest()  # not guessable without it
    assert size == 6  # é is two bytes in UTF-8


def test_identical_prompts_hash_identically_per_salt_only() -> None:
    assert hash_text("same prompt", SALT) == hash_text("same prompt", SALT)
    assert hash_text("same prompt", SALT)[0] != hash_text("same prompt!", SALT)[0]
    assert hash_text("yes", SALT)[0] != hash_text("yes", b"another deployment")[0]


def test_content_fields_leave_text_out_by_default() -> None:
    f = content_fields("AKIA-secret prompt", "answer", SALT)
    assert f["prompt_text"] is None and f["completion_text"] is None
    assert f["prompt_bytes"] == len("AKIA-secret prompt") and f["completion_bytes"] == 6
    kept = content_fields("p", "c", SALT, store_text=True)
    assert (kept["prompt_text"], kept["completion_text"]) == ("p", "c")


def test_hash_text_is_hmac_sha256_for_any_salt_length() -> None:
    import hashlib
    import hmac

    from ledger.redaction import hash_text

    for salt in (b"", b"s", b"k" * 64, b"long" * 40):
        for text in ("", "hello", "é" * 3000):
            data = text.encode()
            assert hash_text(text, salt) == (hmac.new(salt, data, hashlib.sha256).hexdigest(),
                                             len(data))
