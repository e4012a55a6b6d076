"""Adversarial text costs at most a few times what prose costs per KB, for every detector family.

Issue 9's bar is 2x prose (`benchmarks/guardrails_overhead.py` measures it). Texts of short tokens
that start a detector's pattern and texts repeating one finding are held to 3x here, so a loaded
machine does not fail them, while a detector doing heavy work at every occurrence of a short token
(a Python step per colon made `::` 13.8x) still does. Texts of distinct findings, one every few
bytes, each pay the Python checks of a finding (a card's Luhn, a token's entropy, an address's
networks): they are held to what they cost now, above the bar (see `_DISTINCT_BOUND`). Both costs
are the CPU time of this thread, the best of several interleaved runs in this one process, never
an absolute time.
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
    "4111111111111111 ", "415-555-0132 ", "(415) 555-0132 ", "078-05-1120 ", "SSN: 078051123 ",
    "AB 12 34 56 C ", "api_key=Zk3jQ9vLw2Xp ", "AKIAIOSFODNN7ABCDEFQ ", "@b.co",
    # Base64 that decodes to prose: the text was searched for a cue once per blob (quadratic).
    "aGVsbG8gd29ybGQgdGhpcyBpcyBhIHBsYWluIHRlc3Qgb2Ygd29yZHM= ",
)  # fmt: skip


# Held above 3x: what it costs now, with room for noise. `@b.co@b.co…` is a chain of
# overlapping mailboxes (`co@b.co`), one every 5 bytes, each found and then settled against the
# next.
_UNIT_BOUND = {"@b.co": 4.5}


def _fill(unit: str) -> str:
    return (unit * (_SIZE // len(unit) + 1))[:_SIZE]


def _best(text: str, runs: int = 5) -> float:
    best = float("inf")
    for _ in range(runs):
        t0 = time.thread_time()  # CPU time: other processes on the machine do not count
        find_spans(text, DETECTORS)
        best = min(best, time.thread_time() - t0)
    return best


@pytest.mark.parametrize("unit", ADVERSARIAL)
def test_adversarial_text_costs_at_most_3x_prose_per_kb(unit: str) -> None:
    prose, text = _fill(_PROSE), _fill(unit)
    find_spans(prose, DETECTORS)
    bound = _UNIT_BOUND.get(unit, 3.0)
    p1, a1 = _best(prose), _best(text)
    ratio = a1 / min(p1, _best(prose))
    if ratio > bound:  # measured again before failing: one noisy moment is not a regression
        ratio = min(ratio, _best(text, 9) / _best(prose, 9))
    assert ratio <= bound, f"{unit!r}: {ratio:.1f}x prose"


def _luhn_completed(digits: str) -> str:
    """`digits` and the check digit that makes it pass Luhn."""
    total = sum(
        (2 * int(d) - 9 * (int(d) > 4)) if i % 2 == 0 else int(d)
        for i, d in enumerate(reversed(digits))
    )
    return digits + str(-total % 10)


def _card(i: int, sep: str) -> str:
    number = _luhn_completed("4" + f"{i * 7919 % 10**14:014d}")
    return sep.join(number[k : k + 4] for k in range(0, 16, 4))


def _token(i: int, n: int) -> str:
    """A distinct token of `n` letters and digits that looks generated (entropy, mixed case)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    x = (i + 1) * 2654435761
    out = []
    for _ in range(n):
        x = (x * 6364136223846793005 + 1442695040888963407) % 2**64
        out.append(alphabet[(x >> 32) % 62])
    return "".join(out)


# Texts of distinct findings, one after another: a kept verdict does not help, so past
# DENSE_FINDINGS of one type the rest of IPv4, email and labelled-value candidates are reported
# on the regex and cheap checks alone; the others pay their checks at every finding.
DISTINCT = {
    "ipv4": lambda i: f"8.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255} ",
    "email": lambda i: f"u{i}@b.co ",
    "password": lambda i: f"password=Hunter{i:06d}x ",
    "api_key": lambda i: f"api_key={_token(i, 24)} ",
    "card": lambda i: _card(i, " ") + " ",
    "card_dash": lambda i: _card(i, "-") + " ",
    "card_bare": lambda i: _card(i, "") + " ",
    "phone_nanp": lambda i: f"{200 + i % 700}-555-{i % 10000:04d} ",
    "phone_e164": lambda i: f"+1 415 {555 + i % 400:03d} {i % 10000:04d} ",
    "ssn": lambda i: f"{100 + i % 500:03d}-{10 + i % 89:02d}-{1000 + i % 9000:04d} ",
    "openai_key": lambda i: f"sk-{_token(i, 48)} ",
    "github_token": lambda i: f"ghp_{_token(i, 36)} ",
    "bearer": lambda i: f"Bearer {_token(i, 32)} ",
    "ipv6": lambda i: f"2001:4860:{i % 65536:x}::{i * 31 % 65536:x} ",
    "aws_secret": lambda i: f"aws_secret_access_key = {_token(i, 40)}\n",
}
# Where a text of distinct findings is held above 3x: what it costs now (CPU time, 64 KB, on a
# loaded 2-core VM), with room for noise. Each pays a few microseconds of Python per finding
# (IPv6 networks, a labelled AWS secret found by two labels and its entropy, card Luhn and
# issuer checks, an E.164 phone and the NANP number inside it).
_DISTINCT_BOUND = {
    "card": 4.0, "card_dash": 4.0, "card_bare": 4.0, "phone_e164": 4.0, "openai_key": 4.0,
    "github_token": 4.0, "bearer": 4.0, "ipv6": 6.0, "aws_secret": 6.0,
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(DISTINCT))
def test_distinct_findings_cost_a_bounded_multiple_of_prose_per_kb(name: str) -> None:
    parts, n, i = [], 0, 0
    while n < _SIZE:
        parts.append(DISTINCT[name](i))
        n, i = n + len(parts[-1]), i + 1
    prose, text = _fill(_PROSE), "".join(parts)[:_SIZE]
    find_spans(prose, DETECTORS)
    bound = _DISTINCT_BOUND.get(name, 3.0)
    ratio = _best(text) / min(_best(prose), _best(prose))
    if ratio > bound:
        ratio = min(ratio, _best(text, 9) / _best(prose, 9))
    assert ratio <= bound, f"{name}: {ratio:.1f}x prose"


def test_distinct_texts_hold_their_findings() -> None:
    """The generators make what they say: findings of the named type, one per part."""
    kinds = {"ipv4": "ip_address", "email": "email", "password": "password", "card": "payment_card",
             "card_dash": "payment_card", "card_bare": "payment_card", "phone_nanp": "phone",
             "phone_e164": "phone", "ssn": "us_ssn", "api_key": "generic_secret",
             "openai_key": "openai_api_key", "github_token": "github_token",
             "bearer": "bearer_token", "ipv6": "ip_address",
             "aws_secret": "aws_secret_key"}  # fmt: skip
    for name, make in DISTINCT.items():
        text = "".join(make(i) for i in range(50))
        found = [s.type for s in find_spans(text, DETECTORS)]
        assert found.count(kinds[name]) >= 45, (name, found[:5])
