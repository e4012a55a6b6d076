"""Texts made of secret findings, in C (policies/guardrails/_checks_c.c): `settle` settles small
groups of overlapping hits itself (`engine._resolve_group`'s answer), and the label pass's C step
(`label_scan`) reports AWS secrets after a kept label and, past DENSE_FINDINGS, each labelled
value: the same spans, in the same order, as the Python (`engine._resolve_overlaps_py`,
`secrets._assignments` without the C), on seeded random inputs and the guardrail texts."""

from __future__ import annotations

import random
import re

import pytest

from policies.guardrails import DETECTORS, checks, engine, secrets
from policies.guardrails.spans import Span, lowered
from tests.support.guardrail_texts import (
    DISTINCT_FINDINGS,
    DISTINCT_FLOODS,
    FLOODS,
    REPEATED_FINDINGS,
    distinct,
    distinct_flood,
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


# Values after a label as the label regex's lookaheads judge them (`_LONG_OR_ID_VALUE`, `_VALUE`),
# which the C step reads itself: code references (dotted names then `[`, `(` or `:`, a name then
# `:` and what may follow it), `id:secret`, `std::`, `https://`, runs of name characters around
# the 250 the regex looks at, values of 7, 8 and 256+ characters, quotes closed and not,
# prefixes, blanks of every kind, `$`, and characters of every PyUnicode kind.
_VALUE_PIECES = (
    "settings.key", "os.environ[", "get_token(", "a.b.c:", "a.b.c", "admin:", "std::", "x:/",
    "https://", "id:", ":", "::", ".", "..", "$", "$x", "_", "[", "(", "]", ")", "{", "}", ",",
    ";", "<", ">", '"', "'", "`", "b", "B", "r", "f", "u", "@", "=", "&", "/", "+", " ", "\t",
    "\n", "\u2003", "\x85", "\x1c", "\xa0", "\u0663", "\xb2", "\xe9", "\u212a", "\u5bc6",
    "\U0001f600", "Zk3jQ9vLw2Xp", "hunter2024", "abcdefgh", "xxxxxxxx", "1234567", "EXAMPLE",
    "a" * 240, "b" * 250, "c" * 255, "d9" * 130, "token", "secret", "key",
)  # fmt: skip
_VALUE_LABELS = (
    "password", "pwd", "secret", "token", "cred", "credentials", "api_key", "aws_secret_key",
    "client_secret", "secretKey", "x_token_2", "tokenizer", "secret_name",
)  # fmt: skip
_VALUE_OPS = ("=", ": ", " = ", ":=", "=>", '="', "='", "=`", '=B"', "=b'", "=@", ">\n  ", " == ")


def _value_text(rng: random.Random, units: int, found: int = 0) -> str:
    """`units` labelled values of `_VALUE_PIECES`, after `found` findings of each type (past
    DENSE_FINDINGS, every value read is reported: what is read shows)."""
    parts = [f"password={_tok(rng, 16)} secret={_tok(rng, 24)} " for _ in range(found)]
    for _ in range(units):
        value = "".join(rng.choice(_VALUE_PIECES) for _ in range(rng.choice((0, 1, 1, 2, 3, 5))))
        head = rng.choice(("", " ", "\n", "aws ", "{", "x.", "my_"))
        parts.append(head + rng.choice(_VALUE_LABELS) + rng.choice(_VALUE_OPS) + value)
    return "".join(parts)


def _assignments_values(text: str, monkeypatch: pytest.MonkeyPatch) -> tuple[list, list]:
    """`_assignments` with the C step reading values itself, and with the full regex reading
    them."""
    low = lowered(text)
    got = list(secrets._assignments(text, low))
    monkeypatch.setattr(secrets, "_LABEL_SCAN_VALUES", False)
    want = list(secrets._assignments(text, low))
    monkeypatch.undo()
    return got, want


@needs_c
def test_the_label_scan_reads_values_as_the_label_regexes_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert secrets._LABEL_SCAN_VALUES
    rng = random.Random(93)
    found = 0
    for n in range(6000):
        text = _value_text(rng, rng.randint(1, 12) if n % 50 else 200, 0 if n % 50 else 400)
        got, want = _assignments_values(text, monkeypatch)
        assert got == want, text
        found += len(got)
    assert found > 5000, found
    for _ in range(300):  # and against the Python alone
        text = _value_text(rng, rng.randint(1, 40))
        got, before, python = _assignments_both(text, monkeypatch)
        assert got == before == python, text


@needs_c
def test_the_label_scan_reads_values_of_the_floods_as_the_regexes_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    texts = [fill(u, 16 * 1024) for u in FLOODS]
    texts += [distinct_flood(n, 16 * 1024) for n in DISTINCT_FLOODS]
    for text in texts:
        got, want = _assignments_values(text, monkeypatch)
        assert got == want, text[:60]


@needs_c
def test_the_label_scan_hands_back_the_full_regexes_match() -> None:
    # The value read in C; what is handed back (a value found) is the full regex's match, with
    # its groups.
    C = checks._C
    text = "x secret = 'Zk3jQ9vLw2XpQ7mN' "
    low = text.lower()
    full = secrets._ASSIGN_VALUE[2]
    args = _scan_args(text, {}, [], False)
    args[0] = secrets._ASSIGN_HEAD[2].search
    m = C.label_scan(*args, (full.search, full.match))
    want = full.search(low)
    assert m is not None and want is not None
    assert (m.span(), m.lastindex, m.span(m.lastindex)) == (want.span(), 2, (12, 28))
    # A label whose value the full regex refuses (a code reference): searched on by it.
    text = "secret = settings.key(x) secret: Zk3jQ9vLw2XpQ7mN "
    args = _scan_args(text, {}, [], False)
    args[0] = secrets._ASSIGN_HEAD[2].search
    m = C.label_scan(*args, (full.search, full.match))
    want = full.search(text.lower())
    assert m is not None and want is not None and m.span() == want.span() == (25, 33)
    with pytest.raises(TypeError):
        C.label_scan(*args, (full.search,))
    with pytest.raises(TypeError):
        C.label_scan(*args, (full.search, 3))


@needs_c
def test_the_label_scan_reads_values_at_the_regexes_bounds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A code reference is looked for in the first 250 characters of name characters and dots;
    # a value has 8 characters or more; a quoted one 256 at most.
    rng = random.Random(94)

    def tok(n: int) -> str:  # (letters and digits: one run of name characters)
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
                       for _ in range(n))  # fmt: skip

    texts = []
    for n in (*range(5, 11), *range(240, 262)):
        cases = []
        for head in ("", "$", "_", "1", "b", "@", "\xe9", "A"):
            for tail in ("(", "[", ":", ":x", ":/", "::", ": ", ".b(", ".b[", ".b:", ".b", ".1(",
                         "", " ", "x.", ".", ".$(", "\u0663("):  # fmt: skip
                cases.append(f"secret = {head}{tok(n)}{tail} ")
                cases.append(f"secret = {head}{'a.' * (n // 2)}{tail}\n")
        for q in ('"', "'", "`"):
            t = tok(n)
            for body in (t, t[: n // 2] + " " + t[n // 2 :], t[:-1] + q):
                for pre in ("", "b", "B", "@", "u", "x"):
                    cases.append(f"token: {pre}{q}{body}{q}{q} ")
                    cases.append(f"token: {pre}{q}{body}")
        texts += cases[-3:]  # (the last ones alone: the text's end)
        if n < 11:  # a quote opened at the text's end
            texts += [f"secret = {pre}{q}{tok(n)}" for pre in ("", "b", "@") for q in "\"'`"]
        texts.append("".join(cases))
    # Past DENSE_FINDINGS too, where every value read is reported unchecked.
    dense = "".join(f"password={tok(16)} secret={tok(24)} " for _ in range(400))
    texts += [dense + t for t in texts]
    for text in texts:
        got, want = _assignments_values(text, monkeypatch)
        assert got == want, text
        got, before, python = _assignments_both(text, monkeypatch)
        assert got == before == python, text


def test_the_label_regexes_are_their_heads_then_the_values_lookaheads() -> None:
    # What the C step's reading of values rests on: each full label regex is its head, then
    # `_LONG_OR_ID_VALUE`, then `_VALUE` in a lookahead that always succeeds.
    for head, full in zip(secrets._ASSIGN_HEAD, secrets._ASSIGN_VALUE, strict=True):
        assert full.pattern == (
            head.pattern + secrets._LONG_OR_ID_VALUE + "(?=" + secrets._VALUE.pattern + "|)"
        )


class _Counting:
    """The C checks and the full label regexes, counting the matches `label_scan` hands back
    and the calls of the full regexes."""

    def __init__(self) -> None:
        self.handed = self.full = 0
        self.c = checks._C

    def __getattr__(self, name: str) -> object:
        return getattr(self.c, name)

    def label_scan(self, *args: object) -> object:
        m = self.c.label_scan(*args)
        self.handed += m is not None
        return m

    def regex(self, r: re.Pattern[str]) -> object:
        counting = self

        class Full:
            pattern = r.pattern

            def search(self, *a: object) -> object:
                counting.full += 1
                return r.search(*a)  # type: ignore[call-overload]

            def match(self, *a: object) -> object:
                counting.full += 1
                return r.match(*a)  # type: ignore[call-overload]

        return Full()


@needs_c
def test_a_text_of_aws_secrets_is_scanned_in_c(monkeypatch: pytest.MonkeyPatch) -> None:
    """`aws_secret_access_key = <secret>` lines: each label (two a line) was handed back to the
    Python (~2.4 us), then searched for by the full regex (~1 us of value lookaheads: 2.0x prose
    per KB); now reported in C from the regex's head."""
    text = distinct("aws_secret", 64 * 1024)
    counting = _Counting()
    monkeypatch.setattr(checks, "_C", counting)
    monkeypatch.setattr(secrets, "_ASSIGN_VALUE", tuple(map(counting.regex, secrets._ASSIGN_VALUE)))
    got = engine.find_spans(text, DETECTORS)
    assert len(got) > 1000 and {s.type for s in got} == {"aws_secret_key"}
    assert counting.handed <= 20 and counting.full <= 20, (counting.handed, counting.full)
    monkeypatch.undo()
    monkeypatch.setattr(checks, "_C", None)
    assert got == engine.find_spans(text, DETECTORS)
