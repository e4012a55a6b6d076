"""Simulated tokenizer: a byte-length rule with a per-version factor.

Real tokenizers are not available offline, and Governor only needs token counts that are
deterministic, roughly realistic (~4 UTF-8 bytes per token) and that *drift* between model
versions the way a new tokenizer does:

    tokens(text) = ceil(utf8_bytes(text) / 4 * f)

where f is the version's `tokenizer_factor` for structured text (containing `{`, `;` or
`def `: code and JSON, where new tokenizers differ most) and min(factor, 1.1) for prose.
With factor 1.0 (most versions) both are 1.0.
"""

from __future__ import annotations

import math

PROSE_FACTOR_CAP = 1.1


def utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def is_structured(text: str) -> bool:
    return "{" in text or ";" in text or "def " in text


def effective_factor(text: str, factor: float) -> float:
    if factor == 1.0:
        return 1.0
    if is_structured(text):
        return factor
    return min(factor, PROSE_FACTOR_CAP)


def count_tokens(text: str, factor: float = 1.0) -> int:
    """Tokens of `text` for a model version whose tokenizer factor is `factor`."""
    if not text:
        return 0
    n = utf8_len(text)
    if factor == 1.0:
        return (n + 3) // 4
    return math.ceil(n * effective_factor(text, factor) / 4)


def bytes_for_tokens(tokens: int, factor: float) -> int:
    """Largest ASCII prose length that counts as exactly `tokens` tokens (tokens >= 1)."""
    f = min(factor, PROSE_FACTOR_CAP) if factor != 1.0 else 1.0
    length = int(tokens * 4 / f)
    while length > 0 and count_tokens("x" * length, factor) > tokens:
        length -= 1
    return length
