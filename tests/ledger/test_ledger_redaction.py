"""Prompts and completions are kept as hashes and sizes unless text storage is opted into."""

from __future__ import annotations

import hashlib

from ledger.redaction import content_fields, hash_text


def test_hash_text_gives_sha256_and_utf8_size() -> None:
    digest, size = hash_text("héllo")
    assert digest == hashlib.sha256("héllo".encode()).hexdigest()
    assert size == 6  # é is two bytes in UTF-8


def test_identical_prompts_hash_identically() -> None:
    assert hash_text("same prompt") == hash_text("same prompt")
    assert hash_text("same prompt")[0] != hash_text("same prompt!")[0]


def test_content_fields_leave_text_out_by_default() -> None:
    f = content_fields("AKIA-secret prompt", "answer")
    assert f["prompt_text"] is None and f["completion_text"] is None
    assert f["prompt_bytes"] == len("AKIA-secret prompt") and f["completion_bytes"] == 6
    kept = content_fields("p", "c", store_text=True)
    assert (kept["prompt_text"], kept["completion_text"]) == ("p", "c")
