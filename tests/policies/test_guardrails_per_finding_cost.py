"""The per-finding work of the detectors made cheaper gives exactly the answers it gave before:
each rewritten step is checked against a copy of the code it replaced, on random inputs shaped
like what reaches it (issue 9: a text dense with distinct findings paid each step per finding)."""

from __future__ import annotations

import bisect
import itertools
import random
import string
from operator import itemgetter, le

from policies.guardrails import checks
from policies.guardrails.engine import _resolve_overlaps
from policies.guardrails.spans import Span

_START, _END = itemgetter(0), itemgetter(1)


# The code before.
def _old_random_looking(value: str, min_entropy: float = 3.0) -> bool:
    return checks.char_classes(value) >= 2 and checks.entropy(value) >= min_entropy


def _old_resolve_overlaps(spans: list[Span]) -> list[Span]:
    spans.sort()
    if all(map(le, map(_END, spans), map(_START, itertools.islice(spans, 1, None)))):
        return spans
    spans.sort(key=lambda s: (-s.priority, s.start - s.end, s.start))
    starts: list[int] = []
    kept: list[Span] = []
    for s in spans:
        i = bisect.bisect_right(starts, s.start)
        if i > 0 and kept[i - 1].end > s.start:
            continue
        if i < len(kept) and kept[i].start < s.end:
            continue
        starts.insert(i, s.start)
        kept.insert(i, s)
    return kept


_ALPHABETS = (
    string.ascii_letters + string.digits, "abc", "ab12", "AB", "aB", "01", "!@#", "a!", "é1a",
    "xX-_", string.printable, "abcdefgh", "abcdefghijklmnop", "\u0391\u0392\u03b3\u03b412",
    "0123456789abcdef",
)  # fmt: skip


def test_random_looking_answers_as_before() -> None:
    rng = random.Random(9)
    for i in range(30_000):
        alphabet = rng.choice(_ALPHABETS)
        n = rng.choice((0, 1, 2, 5, 8, 12, 16, 20, 32, 40, 64, 100, 256)) if i % 7 else i % 90
        value = "".join(rng.choice(alphabet) for _ in range(n))
        for t in (2.5, 3.0, 3.5, 4.0):
            assert checks.random_looking(value, t) == _old_random_looking(value, t), (value, t)
    # Entropies exactly at a threshold (k characters equally often: log2(k) bits), and past the
    # table of counts (the plain computation).
    for k in (4, 6, 8, 11, 12, 16, 23, 32):
        for rep in (1, 2, 3, 5):
            base = (string.ascii_letters + string.digits)[:k]
            value = "".join(base[j % k] for j in range(k * rep))
            for t in (2.0, 2.5, 3.0, 3.5, 4.0, 5.0):
                assert checks.random_looking(value, t) == _old_random_looking(value, t)
    long = "".join(rng.choice(string.ascii_letters) for _ in range(checks._XLOGX_MAX + 10))
    assert checks.random_looking(long, 4.0) == _old_random_looking(long, 4.0)


def test_overlaps_resolve_as_before() -> None:
    rng = random.Random(9)
    for k in range(30_000):
        n, size = rng.randint(0, 30), rng.choice((10, 50, 200, 2000))
        spans = []
        for _ in range(n):
            s = rng.randint(0, size)
            e = s + rng.randint(0 if k % 5 == 0 else 1, 15)  # some empty hits too
            spans.append(
                Span(s, e, rng.choice(("pii", "secrets")), rng.choice("abc"), rng.randint(1, 3),
                     rng.random() < 0.9)
            )  # fmt: skip
        assert _resolve_overlaps(list(spans)) == _old_resolve_overlaps(list(spans)), spans
