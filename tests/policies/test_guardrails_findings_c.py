"""Texts made of secret findings, in C (policies/guardrails/_checks_c.c): `settle` settles small
groups of overlapping hits itself (`engine._resolve_group`'s answer), and the label pass's C step
(`label_scan`) reports AWS secrets after a kept label and, past DENSE_FINDINGS, each labelled
value: the same spans, in the same order, as the Python (`engine._resolve_overlaps_py`,
`secrets._assignments` without the C), on seeded random inputs and the guardrail texts."""

from __future__ import annotations

import random

import pytest

from policies.guardrails import DETECTORS, checks, engine, secrets
from policies.guardrails.spans import Span, lowered
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


# Labelled values the C step reports or hands back: AWS-shaped values (random, low-entropy,
# one case, `EXAMPLE`, trailing dots, `/` and `+`, 39 and 41 characters), after labels with and
# without an `aws` context (before the owner word, or too far), labels that are none
# (`secret_name`, `public_key`), quoted and `B"…"` values, values holding a stem, `id:` heads, and
# plain values (past DENSE_FINDINGS, reported unchecked), in 1-, 2- and 4-byte strs.
_AWS_LABELS = (
    "aws_secret_access_key", "AWS_SECRET_ACCESS_KEY", "secret_key", "aws_secret", "secret",
    "aws_token", "my_aws_api_key", "awsSecretKey", "secret_name", "public_key", "access_key",
    "aws_" + "x" * 45 + "_secret", "aws/" + "y" * 40 + "-secret", "password", "pwd", "token",
)  # fmt: skip
_AWS_OPS = (" = ", "=", ": ", '="', "='", '=B"', "=b'", " := ", ">\n  ", "=`")
_AWS_VALUES = (
    "{t40}", "{t40}", "{t40}.", "{t40}...", "{t39}", "{t41}", "{a40}", "{l40}", "{t33}EXAMPLE",
    "{t20}/+{t18}", "{t36}key1", "{t30}&token={t24}", "admin:{t24}", "{t16}", "xxxxxxxx{t8}",
    "{t20}\u212a{t19}", "{t20}\xe9{t19}", "{t20}\U0001f600{t19}", "{t24}", "settings.key{t8}",
)  # fmt: skip


def _tok(rng: random.Random, n: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/+"
    return "".join(rng.choice(alphabet) for _ in range(n))


def _aws_text(rng: random.Random, units: int) -> str:
    parts = []
    for _ in range(units):
        value = rng.choice(_AWS_VALUES).format(
            t40=_tok(rng, 40), t39=_tok(rng, 39), t41=_tok(rng, 41), t33=_tok(rng, 33),
            t36=_tok(rng, 36), t30=_tok(rng, 30), t24=_tok(rng, 24), t20=_tok(rng, 20),
            t19=_tok(rng, 19), t18=_tok(rng, 18), t16=_tok(rng, 16), t8=_tok(rng, 8),
            a40="A" * 40, l40="abcdefghij" * 4,
        )  # fmt: skip
        op = rng.choice(_AWS_OPS)
        close = op[-1] if op[-1] in "'\"`" else rng.choice(("", " ", "\n", ";", "&"))
        head = rng.choice(("", " ", "\n", "aws ", "x" * 50 + " aws ", "{", "the "))
        parts.append(head + rng.choice(_AWS_LABELS) + op + value + close)
    return "".join(parts)


def _assignments_both(text: str, monkeypatch: pytest.MonkeyPatch) -> tuple[list, list, list]:
    """`_assignments` with the C step reporting, with it handing every match back (the C as it
    was), and in Python alone."""
    low = lowered(text)
    got = list(secrets._assignments(text, low))
    monkeypatch.setattr(secrets, "_LABEL_SCAN_REPORTS", False)
    before = list(secrets._assignments(text, low))
    monkeypatch.setattr(checks, "_C", None)
    python = list(secrets._assignments(text, low))
    monkeypatch.undo()
    return got, before, python


@needs_c
def test_the_label_scan_reports_what_the_python_does(monkeypatch: pytest.MonkeyPatch) -> None:
    assert secrets._LABEL_SCAN_REPORTS
    rng = random.Random(92)
    found = dense = 0
    for n in range(1500):
        # Mostly short texts; every 50th past DENSE_FINDINGS of a kind (the dense branch).
        text = _aws_text(rng, rng.randint(1, 30) if n % 50 else 1200)
        got, before, python = _assignments_both(text, monkeypatch)
        assert got == before == python, text
        found += sum(s.type == "aws_secret_key" for s in got)
        dense += len(got) > checks.DENSE_FINDINGS
    assert found > 3000 and dense >= 20, (found, dense)


@needs_c
@pytest.mark.parametrize("name", sorted(DISTINCT_FINDINGS))
def test_the_label_scan_reports_distinct_findings_as_the_python(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    got, before, python = _assignments_both(distinct(name, 64 * 1024), monkeypatch)
    assert got == before == python


@needs_c
def test_the_label_scan_reports_repeated_findings_as_the_python(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for unit in REPEATED_FINDINGS:
        got, before, python = _assignments_both(fill(unit, 32 * 1024), monkeypatch)
        assert got == before == python, unit


def _scan_args(text: str, labels: dict, out: list, dense: bool) -> list:
    low = text.lower()
    types = ("generic_secret", 1, "aws_secret_key", 3, dense)
    return [secrets._ASSIGN_VALUE[2].search, text, low, 0, "secret", 5, {}, {}, 8, 3.0, False,
            1024, 2, labels, out, Span, "secrets", types]  # fmt: skip


@needs_c
def test_the_label_scan_reports_an_aws_secret_after_a_kept_label() -> None:
    # A text of `aws_secret_access_key = <secret>` lines paid ~2.4 us of Python a label (2.7x
    # prose per KB): each is reported in C once its label's verdict is kept.
    C = checks._C
    secret = "ZN819CXdJ0fhdy7qcYmdk2j6hX3JdbXcoTIrhKQs"
    text = f"aws_secret_access_key = {secret}\n"
    out: list[Span] = []
    # No verdict kept: handed back, the Python keeps it.
    m = C.label_scan(*_scan_args(text, {}, out, False))
    assert m is not None and m.start() == 4 and out == []
    # Kept: reported, the scan at its end.
    labels = {(2, "aws_", "secret_access_key = "): 4}
    assert C.label_scan(*_scan_args(text, labels, out, False)) is None
    assert out == [Span(24, 64, "secrets", "aws_secret_key", 3, True)]
    # Kept as no label: passed over.
    out.clear()
    no_label = {(2, "aws_", "secret_access_key = "): -1}
    assert C.label_scan(*_scan_args(text, no_label, out, False)) is None
    assert out == []
    # Past DENSE_FINDINGS, a value with no `aws` before it is reported unchecked.
    plain = "secret=changeme1234 secret: 'xyzxyzxyz' "
    assert C.label_scan(*_scan_args(plain, {}, out, True)) is None
    assert out == [
        Span(7, 19, "secrets", "generic_secret", 1, True),
        Span(29, 38, "secrets", "generic_secret", 1, True),
    ]


@needs_c
def test_the_label_scan_refuses_bad_report_arguments() -> None:
    import os

    C = checks._C
    good = _scan_args("secret=x", {}, [], False)
    assert C.label_scan(*good) is None
    for i, bad in ((14, ()), (15, os.stat_result), (15, int), (17, ("a", 1, "b", 3)), (17, [])):
        with pytest.raises(TypeError):
            C.label_scan(*good[:i], bad, *good[i + 1 :])
    with pytest.raises(TypeError):
        C.label_scan(*good[:-1])
