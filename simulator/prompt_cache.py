"""Simulated prompt caching, so cache-read and cache-write tokens reach Governor's pricing.

OpenAI caches automatically: a prompt of >= 1024 tokens reports as `cached_tokens` the longest
prefix (whole messages) seen before for the same model version, counted in 128-token steps
above 1024 as the real API does. Anthropic caches explicitly: each block marked
`cache_control` ends a cacheable prefix; the first time it is written
(`cache_creation_input_tokens`), later identical prefixes are read
(`cache_read_input_tokens`), and `input_tokens` excludes both.

Prefixes are identified by a running sha256 over the canonical JSON of each segment; the set
of seen prefixes is bounded (oldest evicted first).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import orjson

_MAX_ENTRIES = 200_000


def prefix_hashes(version: str, segments: Sequence[Any]) -> list[bytes]:
    """Running digest after each segment: hashes[i] identifies segments[: i + 1]."""
    h = hashlib.sha256(version.encode())
    out = []
    for segment in segments:
        h.update(orjson.dumps(segment, option=orjson.OPT_SORT_KEYS))
        h.update(b"\x1e")
        out.append(h.digest())
    return out


def openai_billable_cache(tokens: int, min_tokens: int) -> int:
    """Cached tokens reported for a cached prefix of `tokens` tokens (128-token steps)."""
    if tokens < min_tokens or tokens <= 0:
        return 0
    if min_tokens <= 0:
        return tokens
    return min_tokens + (tokens - min_tokens) // 128 * 128


class PromptCache:
    """Seen prefixes, by digest. Not shared between processes, as a provider's cache isn't."""

    def __init__(self, max_entries: int = _MAX_ENTRIES) -> None:
        self._seen: dict[bytes, None] = {}
        self._max = max_entries

    def clear(self) -> None:
        self._seen.clear()

    def _remember(self, digest: bytes) -> None:
        if digest in self._seen:
            return
        if len(self._seen) >= self._max:
            del self._seen[next(iter(self._seen))]
        self._seen[digest] = None

    def openai_cached(
        self,
        version: str,
        segments: Sequence[Any],
        cumulative_tokens: Sequence[int],
        min_tokens: int,
    ) -> int:
        """Cached prompt tokens for this request; remembers its prefixes for later ones."""
        hashes = prefix_hashes(version, segments)
        hit = 0
        for digest, tokens in zip(hashes, cumulative_tokens, strict=True):
            if digest in self._seen:
                hit = tokens
        for digest, tokens in zip(hashes, cumulative_tokens, strict=True):
            if tokens >= min_tokens:
                self._remember(digest)
        return openai_billable_cache(hit, min_tokens)

    def anthropic_usage(
        self,
        version: str,
        segments: Sequence[Any],
        cumulative_tokens: Sequence[int],
        breakpoints: Sequence[int],
        min_tokens: int,
    ) -> tuple[int, int]:
        """(cache_creation_input_tokens, cache_read_input_tokens) for the marked prefixes.

        `breakpoints` are indices into `segments` of blocks carrying cache_control.
        """
        last = breakpoints[-1]
        hashes = prefix_hashes(version, segments[: last + 1])
        read = 0
        for index in reversed(breakpoints):
            if cumulative_tokens[index] >= min_tokens and hashes[index] in self._seen:
                read = cumulative_tokens[index]
                break
        written = 0
        if cumulative_tokens[last] >= min_tokens and hashes[last] not in self._seen:
            written = cumulative_tokens[last] - read
        for index in breakpoints:
            if cumulative_tokens[index] >= min_tokens:
                self._remember(hashes[index])
        return written, read
