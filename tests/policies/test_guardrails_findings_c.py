"""Texts made of secret findings, in C (policies/guardrails/_checks_c.c): `settle` settles small
groups of overlapping hits itself (`engine._resolve_group`'s answer), and the label pass's C step
(`label_scan`) reports AWS secrets after a kept label and, past DENSE_FINDINGS, each labelled
value: the same spans, in the same order, as the Python (`engine._resolve_overlaps_py`,
`secrets._assignments` without the C), on seeded random inputs and the guardrail texts."""

from __future__ import annotations

import random

import pytest

from policies.guardrails import DETECTORS, checks, engine
from policies.guardrails.spans import Span
from tests.support.guardrail_texts import (
    DISTINCT_FINDINGS,
    REPEATED_FINDINGS,
    distinct,
    fill,
)

needs_c = pytest.mark.skipif(
    checks._C is None, reason="policies/guardrails/_checks_c is not built: the Python runs alone"
)


def _group_spans(rng: random.Random) -> list[Span]:
    """Sorted spans, many overlapping in groups of 2 to ~80 hits (past the C's 64), of mixed
    priorities and lengths, some empty or touching."""
    n = rng.choice((2, 3, 3, 4, 5, 8, 20, 70, 90))
    room = rng.choice((3, 10, 40, 200))
    spans = []
    for _ in range(n):
        s = rng.randint(0, room)
        e = s + rng.choice((0, 1, 2, 4, 7, 7, 20, rng.randint(0, 60)))
        spans.append(Span(s, e, "secrets", rng.choice(("a", "b")), rng.choice((1, 1, 2, 3, 3))))
    return sorted(spans)


@needs_c
def test_the_c_settles_groups_as_the_python_does() -> None:
    rng = random.Random(91)
    sizes = set()
    for _ in range(40_000):
        spans = _group_spans(rng)
        sizes.add(len(spans))
        got = engine._settle(list(spans), engine._resolve_group)  # type: ignore[misc]
        assert got == engine._resolve_overlaps_py(list(spans)), spans
    assert max(sizes) > 64


@needs_c
def test_the_c_settles_a_small_group_without_the_python() -> None:
    # `token=AKIA…&token=<secret>` past DENSE_FINDINGS: the labelled value, the key id inside it
    # and the second label's value, three hits settled without a call back (1.6 us each).
    spans = [
        Span(6, 26, "secrets", "aws_access_key", 3),
        Span(6, 57, "secrets", "generic_secret", 1),
        Span(33, 57, "secrets", "generic_secret", 1),
    ]

    def refuse(*_: object) -> list[Span]:
        raise AssertionError("called back for a group of three")

    got = engine._settle(list(spans), refuse)  # type: ignore[misc]
    assert got == engine._resolve_overlaps_py(list(spans)) == [spans[0], spans[2]]


@needs_c
def test_the_c_hands_large_or_odd_groups_to_the_python() -> None:
    calls = []

    def group(spans: list[Span], starts: list[int], ends: list[int]) -> list[Span]:
        calls.append(len(spans))
        return engine._resolve_group(spans, starts, ends)

    big = sorted(Span(i, i + 3 + i % 2, "pii", "x", 1 + i % 3) for i in range(100))
    negative = [Span(-5, 3, "pii", "x", 2), Span(0, 2, "pii", "x", 3), Span(1, 9, "pii", "x", 1)]
    for spans in (big, negative):
        assert engine._settle(list(spans), group) == engine._resolve_overlaps_py(list(spans))  # type: ignore[misc]
    assert calls == [100, 3]


@needs_c
def test_a_scan_of_findings_is_the_same_without_the_c_settling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    texts = [fill(u, 20_000) for u in REPEATED_FINDINGS]
    texts += [distinct(n, 20_000) for n in DISTINCT_FINDINGS]
    with_c = [engine.find_spans(t, DETECTORS) for t in texts]
    monkeypatch.setattr(engine, "_settle", None)
    assert [engine.find_spans(t, DETECTORS) for t in texts] == with_c
