"""Adversarial text costs at most a few times what prose costs per KB, for every detector family.

Issue 9's bar is 2x prose (`benchmarks/guardrails_overhead.py` measures it); this test keeps a
generous 4x so a loaded machine does not fail it, while a detector doing heavy work at every
occurrence of a short token (a Python step per colon made `::` 13.8x) still does. Both costs are
the best of several interleaved runs in this one process, never an absolute time.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from policies.guardrails import DETECTORS
from policies.guardrails.engine import find_spans

_SIZE = 64 * 1024
_PROSE = (Path(__file__).parent / "corpus" / "ordinary.txt").read_text(encoding="utf-8")
# Short tokens that each start (or almost complete) a detector's pattern, repeated.
ADVERSARIAL = (
    "sk-", "eyJ", "ghp_", "github_pat_", "AKIAAAAAAAAAAAAAAAAA ", "-----BEGIN PRIVATE KEY-----",
    "api_key=", "password=", "AccountKey=", "bearer ", "://a:", "01 ", "1", "12-", "+1 ", "a@b.",
    "::", "x::0", "0:", "0::", "curl -u a:", "authorization: basic ", "Q~", "==", "glft-",
    "key=", "ikey=", "token: ", "tokenizer: ", "token_id: ", "1Q~", "a==", "api_key: ",
    "password: ",
    "system ", "## system\n", " mode", "ignore all ", "you must ", "the user ", "aGVsbG8gd29ybGQ",
    # Dense with real-looking findings: each occurrence is one (a per-finding cost, not a rescan).
    "password=Hunter2024 ", "8.8.8.8 ", "4111 1111 1111 1111 ", "a@b.co ", "a@b.co,",
)  # fmt: skip


def _fill(unit: str) -> str:
    return (unit * (_SIZE // len(unit) + 1))[:_SIZE]


def _best(text: str, runs: int = 5) -> float:
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        find_spans(text, DETECTORS)
        best = min(best, time.perf_counter() - t0)
    return best


@pytest.mark.parametrize("unit", ADVERSARIAL)
def test_adversarial_text_costs_at_most_4x_prose_per_kb(unit: str) -> None:
    prose, text = _fill(_PROSE), _fill(unit)
    find_spans(prose, DETECTORS)
    p1, a1 = _best(prose), _best(text)
    ratio = a1 / min(p1, _best(prose))
    if ratio > 4:  # measured again before failing: one noisy moment is not a regression
        ratio = min(ratio, _best(text, 9) / _best(prose, 9))
    assert ratio <= 4, f"{unit!r}: {ratio:.1f}x prose"


# Texts of distinct findings, one after another: a kept verdict does not help, so past
# DENSE_FINDINGS of one type the rest are reported on the regex and cheap checks alone.
DISTINCT = {
    "ipv4": lambda i: f"8.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255} ",
    "email": lambda i: f"u{i}@b.co ",
    "password": lambda i: f"password=Hunter{i:06d}x ",
}


@pytest.mark.parametrize("name", sorted(DISTINCT))
def test_distinct_findings_cost_at_most_4x_prose_per_kb(name: str) -> None:
    parts, n, i = [], 0, 0
    while n < _SIZE:
        parts.append(DISTINCT[name](i))
        n, i = n + len(parts[-1]), i + 1
    prose, text = _fill(_PROSE), "".join(parts)[:_SIZE]
    find_spans(prose, DETECTORS)
    ratio = _best(text) / min(_best(prose), _best(prose))
    if ratio > 4:
        ratio = min(ratio, _best(text, 9) / _best(prose, 9))
    assert ratio <= 4, f"{name}: {ratio:.1f}x prose"
