"""What the ledger keeps of a prompt or completion: a hash and a size, and text only by opt-in.

A hash lets an auditor prove two calls sent the same prompt (and the loop detector spot
repeats) without the ledger ever holding secrets or personal data in clear. It is keyed with the
deployment's secret salt (HMAC-SHA256, like guardrail fingerprints): a plain sha256 of a short
prompt ("yes", a name, a card number) could be found by hashing guesses.
"""

from __future__ import annotations

import hashlib
from typing import Any

from policies.guardrails.engine import find_spans


class _Hmac256:
    """HMAC-SHA256 (RFC 2104) with the key's pads hashed once: each digest copies two sha256
    states. Same digests as `hmac.digest(key, m, "sha256")`, which releases the GIL on every
    call: with the ledger thread runnable, each of the two per-call hashes then waited for the
    GIL to come back (measured ~10 us each on the proxy's path). hashlib keeps the GIL below
    2 KiB of input."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def hexdigest(self, data: bytes) -> str:
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()


_keyed: dict[bytes, _Hmac256] = {}  # one per deployment salt (a process has one or two)


def hash_text(text: str, salt: bytes) -> tuple[str, int]:
    """(HMAC-SHA256(salt, text) hex digest, UTF-8 byte length) of `text`."""
    data = text.encode("utf-8", "surrogatepass")
    h = _keyed.get(salt)
    if h is None:
        if len(_keyed) >= 8:
            _keyed.clear()
        h = _keyed[salt] = _Hmac256(salt)
    return h.hexdigest(data), len(data)


def content_fields(
    prompt: str, completion: str, salt: bytes, *, store_text: bool = False
) -> dict[str, Any]:
    """The call-row fields describing prompt and completion, ready to merge into a row."""
    p_hash, p_bytes = hash_text(prompt, salt)
    c_hash, c_bytes = hash_text(completion, salt)
    return {
        "prompt_sha256": p_hash,
        "prompt_bytes": p_bytes,
        "completion_sha256": c_hash,
        "completion_bytes": c_bytes,
        "prompt_text": prompt if store_text else None,
        "completion_text": completion if store_text else None,
    }


_STORED_DETECTORS = frozenset({"secrets", "pii"})
STORED_DETECTORS = _STORED_DETECTORS  # whose findings stored text never holds in clear


def redact_text(text: str) -> str:
    """`text` with every secret and personal datum replaced by `[REDACTED:<type>]`.

    Independent of guardrail rules: a finding that a rule only flagged (or that no rule
    covers) is still not stored in clear when a deployment opts in to storing text.
    """
    spans = find_spans(text, _STORED_DETECTORS)
    if not spans:
        return text
    parts: list[str] = []
    pos = 0
    for s in spans:
        parts.append(text[pos : s.start])
        parts.append(f"[REDACTED:{s.type}]")
        pos = s.end
    parts.append(text[pos:])
    return "".join(parts)


STORED_TEXT_FIELDS = ("prompt_text", "completion_text")


def redact_texts(texts: tuple[str | None, ...]) -> tuple[str | None, ...]:
    """`redact_text` of each text (None and "" kept): one call for a row's texts, so a worker
    process is asked once per row."""
    return tuple(redact_text(t) if t else t for t in texts)


def stored_text_chars(row: dict[str, Any]) -> int:
    """Characters of opted-in text in a normalized call row (what redaction has to scan)."""
    return max((len(row.get(n) or "") for n in STORED_TEXT_FIELDS), default=0)


def redact_stored_text(row: dict[str, Any]) -> None:
    """Redact a normalized call row's opted-in prompt/completion text in place."""
    texts = redact_texts(tuple(row.get(n) for n in STORED_TEXT_FIELDS))
    row.update(zip(STORED_TEXT_FIELDS, texts, strict=True))
