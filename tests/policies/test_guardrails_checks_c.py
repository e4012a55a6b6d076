"""The C checks (policies/guardrails/_checks_c.c) give the Python checks' answers on every str.

The extension is optional (setup.py builds it where a compiler is found; checks.py falls back to
its Python versions): these tests compare the two, function by function on random strings of
every PyUnicode kind and near every threshold, and whole scans (`find_spans`) with and without
it on the adversarial texts, the shared corpus and random labelled values.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from policies.guardrails import DETECTORS, checks, engine, secrets
from policies.guardrails.engine import find_spans
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

try:
    _C = importlib.import_module("policies.guardrails._checks_c")
except ImportError:
    _C = None

needs_c = pytest.mark.skipif(
    _C is None,
    reason="policies/guardrails/_checks_c is not built (no compiler at install): "
    "the Python checks run, and these compare the two",
)


def test_the_extension_is_built_in_ci() -> None:
    """CI installs with a compiler: there the C checks must be built and used, or the tests above
    would skip and the C path go untested."""
    if not os.environ.get("CI") or shutil.which("gcc") is None:
        pytest.skip("not CI, or no gcc: the extension is optional")
    assert _C is not None, "CI has gcc but policies/guardrails/_checks_c was not built"
    assert checks._C is _C, "built but not used: its constants differ from checks.py's"


@needs_c
def test_its_constants_are_the_python_ones() -> None:
    assert checks._C is _C  # (checks.py drops a build whose constants differ)
    assert _C.PLACEHOLDER_WORDS == checks._PLACEHOLDER_WORDS
    assert frozenset(_C.PLACEHOLDER_VALUES) == checks._PLACEHOLDER_VALUES
    assert _C.XLOGX_MAX == checks._XLOGX_MAX
    assert _C.ENTROPY_MARGIN == checks._ENTROPY_MARGIN
    assert _C.CODE_REF == secrets._CODE_REF.pattern
    assert _C.ANY_STEM == secrets._ANY_STEM.pattern
    assert _C.PARAM == secrets._PARAM.pattern
    assert _C.AWS == secrets._AWS.pattern
    assert _C.BEARER == secrets._BEARER.pattern
    assert _C.BEARER_VALUE == secrets._BEARER_VALUE.pattern
    assert secrets._BEARER_C
    assert secrets._AWS_C
    assert secrets._CUT_REST_C


@pytest.fixture
def python_checks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The checks as they run where the extension is not built."""
    monkeypatch.setattr(checks, "_C", None)
    yield


# Characters of each PyUnicode kind: ASCII (weighted: every key and token), Latin-1, two-byte
# (the Kelvin sign `K` lower-cases to ASCII `k`, `İ` to two characters), four-byte.
_ASCII = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    + "_-.:/\\$%@<>{}[]()=&#*~ \n'\""
)
_LATIN1 = "\xe9\xf1\xdf\xb5\xff\xc0\xe0\xb2\xbd\xa0"
_TWO = "\u212a\u0130\u0663\u00b2\u4e00\u4e01\u0101\u03a3\u2460\uff11\u0100"
_FOUR = "\U0001f600\U0001f601\U00010000\U0001d7ce\U00020000"
_WORDS = ("example", "xxxx", "changeme", "here", "EXAMPLE", "none", "path/to/", "%s", "todo")


def _random_value(rng: random.Random) -> str:
    """A string made to reach every branch: any kind, near the entropy bars (8 characters each
    twice is exactly 3 bits), ascending runs of 7 to 9 code points (across kinds too),
    placeholder words, templates, paths and code references."""
    shape = rng.random()
    if shape < 0.15:  # exactly at an entropy bar (or a step from it)
        k = rng.choice((4, 6, 8, 16, 5, 7, 9, 11, 12))
        pool = rng.choice((_ASCII[:62], _ASCII, _ASCII + _TWO + _FOUR))
        chars = rng.sample(pool, k)
        reps = rng.choice((1, 2, 3, 4))
        s = chars * reps
        if rng.random() < 0.5:
            s.append(rng.choice(chars))
        rng.shuffle(s)
        return "".join(s)
    n = rng.choice((rng.randint(0, 16), rng.randint(0, 40), rng.randint(0, 300)))
    r = rng.random()
    if r < 0.6:
        pool = _ASCII
    elif r < 0.75:
        pool = _ASCII + _LATIN1
    elif r < 0.9:
        pool = _ASCII + _LATIN1 + _TWO
    else:
        pool = _ASCII + _TWO + _FOUR
    if rng.random() < 0.3:
        pool = "".join(rng.sample(pool, rng.randint(1, 10)))  # few distinct characters
    s = [rng.choice(pool) for _ in range(n)]
    if rng.random() < 0.35:  # an ascending run of 7, 8 or 9 code points
        base = rng.choice((ord("a"), ord("0"), ord("A"), 0x78, 0xF9, 0xFB, 0x2126, 0xFFFA, 0x1F5FA))
        run = [chr(base + j) for j in range(rng.choice((7, 8, 9)))]
        at = rng.randint(0, len(s))
        s[at:at] = run
    if rng.random() < 0.2:
        at = rng.randint(0, len(s))
        s[at:at] = rng.choice(_WORDS)
    text = "".join(s)
    t = rng.random()
    if t < 0.05:
        text = rng.choice(("$", "%", "@", "<", "/", "~", ".", "\\", "c:\\")) + text
    elif t < 0.1:
        text += rng.choice(("here", ".pem", "/a.key", ">", "${X}", "{{ a }}", "()", ":x"))
    elif t < 0.15:
        text = rng.choice(("settings.key", "a.b", "ñame.x", "get_token", "X", "a٣", "_$")) + text
    return text


@needs_c
def test_c_checks_give_the_python_answers_on_random_strings() -> None:
    rng = random.Random(9)
    thresholds = (2.5, 3.0, 3.5, 4.0)
    near = 0  # values whose entropy lands within the margin of a bar
    for _ in range(200_000):
        s = _random_value(rng)
        assert _C.two_char_classes(s) == checks._two_char_classes_py(s), s
        assert _C.two_char_classes(s) == (checks.char_classes(s) >= 2), s
        n = rng.choice((2, 3, 7, 8, 9))
        assert _C.ascending_run(s, n) == checks._ascending_run_py(s, n), (s, n)
        t = rng.choice(thresholds)
        if s and rng.random() < 0.2:
            t = checks.entropy(s)  # on the bar itself
        want = checks._entropy_at_least_py(s, t)
        assert want == (checks.entropy(s) >= t), (s, t)
        got = _C.entropy_at_least(s, t)
        if got is None:
            near += 1
            assert not s or len(s) > 4096 or abs(checks.entropy(s) - t) < 2 * checks._ENTROPY_MARGIN
        else:
            assert got == want, (s, t)
        assert checks.entropy_at_least(s, t) == want, (s, t)
        assert checks.random_looking(s, t) == (
            checks._two_char_classes_py(s) and checks._entropy_at_least_py(s, t)
        ), (s, t)
    assert near > 1000


@needs_c
def test_value_ok_in_c_gives_the_python_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(10)
    undecided = 0
    for _ in range(200_000):
        s = _random_value(rng)
        if len(s) < 8:
            s += _random_value(rng) + "abcdefgh"[: rng.randint(0, 8)]
        quoted, counted = rng.random() < 0.5, rng.random() < 0.3
        kind = rng.choice(("password", "generic_secret"))
        got = secrets._value_ok(s, quoted, kind, counted)
        pw = kind == "password"
        raw = _C.value_ok(
            s, s.lower(), quoted, 0 if counted else 6 if pw else 8, 2.5 if pw else 3.0
        )
        undecided += raw is None
        monkeypatch.setattr(checks, "_C", None)
        want = secrets._value_ok(s, quoted, kind, counted)
        monkeypatch.setattr(checks, "_C", _C)
        assert got == want, (s, quoted, kind, counted)
        # An unquoted `id:secret` is judged as its secret in Python (`_ID_SECRET`); the C checks
        # refuse it as a code reference and are not asked (`_value_ok`, `_assignments`).
        pair = not quoted and secrets._ID_SECRET.fullmatch(s) is not None
        assert raw is None or raw == want or (pair and raw is False), (s, quoted, kind, counted)
    assert undecided < 20_000  # (most are decided in C)


@needs_c
@pytest.mark.parametrize(
    "value",
    [
        "",
        "a",
        "ab",
        "abcdefgh",
        "abcdefg",
        "abcdefgh1",
        "12345678",
        "1234567",
        "xyz{|}~\x7f",
        "\u212aabcdefgh12{",
        "\xf9\xfa\xfb\xfc\xfd\xfe\xff\u0100",
        "\uffff\U00010000",
        "\U0001f600\U0001f601\U0001f602\U0001f603\U0001f604\U0001f605\U0001f606\U0001f607",
        "ABCDEFGH",
        "EXAMPLE",
        "AKIAIOSFODNN7EXAMPLE",
        "abcdabcd",
        "aabbccddeeffgghh",
        "aA1!",
        "aA",
        "a1",
        "A1",
        "a!",
        "!!",
        "é",
        "éa",
        "Éé",
        "\u0130x",
        "\u212a",
        "k\u212a",
        "٣",
        "a٣",
        "Aa٣",
        "x" * 5000,
        ("abcdefgh" * 600)[:4096],
        ("abcdefgh" * 600)[:4097],
        "pass",
        "password",
        "undefined",
        "pwd",
        "a\u0130aaaaaaaa",
        "aaaaaaaab",
        "ab" * 10,
        "${DB_PASSWORD}",
        "{{ secrets.token }}",
        "$x",
        "a$b1Xc9d",
        "<your-key>",
        "a<b>c1D9e",
        "/etc/ssl/client.key",
        "./certs/ca.pem",
        "C:\\keys\\a.pfx",
        "c:\\keys\\a",
        "/a/b",
        "~/x/y.z",
        ".x1Y2z3W",
        "\\a\\b.c",
        "ApiKeyHere",
        "hunter2024X",
        "settings.key12",
        "get_token()",
        "a[1]Xy9Z",
        "API_KEY",
        "ñame.Xy91",
        "a:Zb91x2Q",
        "a.b\nc",
        "_$1a2B3c4",
        "a" * 7 + "\n" + "B1",
        "Q" * 8,
        "xyzXYZ09",
        "mnopqrst",
        "0123456789",
        "9:;<=>?@AB",
    ],
)
def test_edge_values(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for n in (2, 7, 8, 9):
        assert _C.ascending_run(value, n) == checks._ascending_run_py(value, n)
    assert _C.two_char_classes(value) == (checks.char_classes(value) >= 2)
    for t in (0.0, 1.0, 2.5, 3.0, 3.5, 4.0, checks.entropy(value)):
        assert checks.entropy_at_least(value, t) == (checks.entropy(value) >= t)
        assert checks.random_looking(value, t) == (
            checks.char_classes(value) >= 2 and checks.entropy(value) >= t
        )
    for quoted in (False, True):
        for kind in ("password", "generic_secret"):
            for counted in (False, True):
                got = secrets._value_ok(value, quoted, kind, counted)
                monkeypatch.setattr(checks, "_C", None)
                want = secrets._value_ok(value, quoted, kind, counted)
                monkeypatch.setattr(checks, "_C", _C)
                assert got == want, (value, quoted, kind, counted)


# Every issuer prefix `card_brand_ok` tells apart, a step either side of each range.
_CARD_PREFIXES = (
    "4", "50", "51", "55", "56", "2220", "2221", "2720", "2721", "34", "37", "35", "6011", "6010",
    "65", "643", "644", "649", "650", "62", "3527", "3528", "3589", "3590", "299", "300", "305",
    "306", "36", "38", "39", "0", "00", "1", "7", "8", "9",
)  # fmt: skip


def _luhn_completed(rng: random.Random, head: str, n: int) -> str:
    """`head` and random digits to `n` long, the last one making the Luhn sum 0 mod 10."""
    body = head + "".join(rng.choice("0123456789") for _ in range(n - len(head) - 1))
    for last in "0123456789":
        if checks.luhn_ok(body + last):
            return body + last
    raise AssertionError(body)


def _card_value(rng: random.Random) -> str:
    """A digit run near every card rule (prefix, length 0-22, Luhn valid or not), or any str."""
    r = rng.random()
    if r < 0.15:
        return _random_value(rng)
    if r < 0.25:  # digits of other kinds and ASCII digits mixed with other characters
        n = rng.randint(0, 20)
        pool = rng.choice(("0123456789 -", "0123456789\u0663\uff11\xb2", "0123456789_+ "))
        return "".join(rng.choice(pool) for _ in range(n))
    head = rng.choice(_CARD_PREFIXES)
    n = rng.choice((rng.randint(0, 22), rng.randint(12, 20)))
    if n <= len(head):
        return head[:n]
    if rng.random() < 0.6:
        return _luhn_completed(rng, head, n)
    return head + "".join(rng.choice("0123456789") for _ in range(n - len(head)))


def _card_ok_py(value: str) -> bool | type[Exception]:
    try:
        return checks.card_brand_ok(value) and checks.luhn_ok(value)
    except (IndexError, ValueError) as exc:  # not digits, or none
        return type(exc)


@needs_c
def test_card_ok_in_c_gives_the_python_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(11)
    decided = found = 0
    for _ in range(300_000):
        s = _card_value(rng)
        want = _card_ok_py(s)
        got = _C.card_ok(s)
        if got is None:  # anything but ASCII digits: the Python decides
            assert not (s.isascii() and s.isdigit()), s
        else:
            decided += 1
            found += got
            assert got == want, s
        try:
            assert checks.card_ok(s) == want, s
        except (IndexError, ValueError) as exc:
            assert type(exc) is want, s
    assert decided > 200_000 and found > 15_000, (decided, found)  # (most decided, many cards)
    odd = ("", "4", "\u0663", "4111\u0663111111111111", "\uff14111111111111111", "4_11" * 4)
    for s in (*odd, "4111111111111111"):
        monkeypatch.setattr(checks, "_C", None)
        try:
            want = checks.card_ok(s)
        except (IndexError, ValueError) as exc:
            want = type(exc)
        monkeypatch.setattr(checks, "_C", _C)
        assert _card_ok_py(s) == want, s
        try:
            assert checks.card_ok(s) == want, s
        except (IndexError, ValueError) as exc:
            assert type(exc) is want, s


@needs_c
def test_ascending_run_refuses_a_run_under_two() -> None:
    with pytest.raises(ValueError):
        _C.ascending_run("abc", 1)
    with pytest.raises(TypeError):
        _C.two_char_classes(b"abc")


def _both(text: str, monkeypatch: pytest.MonkeyPatch) -> tuple[list, list]:
    got = find_spans(text, DETECTORS)
    monkeypatch.setattr(checks, "_C", None)
    want = find_spans(text, DETECTORS)
    monkeypatch.setattr(checks, "_C", _C)
    return got, want


@needs_c
@pytest.mark.parametrize("name", sorted(DISTINCT_FLOODS))
def test_scans_of_distinct_floods_are_the_same(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # 256 KB: past DENSE_FINDINGS and REFUSED_LABELS, where the scan changes its way.
    got, want = _both(distinct_flood(name, 256 * 1024), monkeypatch)
    assert got == want


@needs_c
def test_scans_of_floods_are_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    for unit in FLOODS:
        got, want = _both(fill(unit, 32 * 1024), monkeypatch)
        assert got == want, unit


_CORPUS = Path(
    os.environ.get(
        "GOVERNOR_GUARDRAIL_CORPUS",
        Path(__file__).resolve().parents[2].parent / "shared" / "guardrail-corpus",
    )
)


@needs_c
@pytest.mark.skipif(not _CORPUS.is_dir(), reason=f"no shared guardrail corpus at {_CORPUS}")
def test_scans_of_the_shared_corpus_are_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _CORPUS / "data"
    texts = []
    for name in ("secrets.jsonl", "secrets_trufflehog.jsonl", "pii.jsonl", "injection.jsonl"):
        if (data / name).exists():
            with open(data / name, encoding="utf-8") as f:
                texts += [json.loads(line)["text"] for line in f if line.strip()]
    for path in sorted((data / "ordinary").iterdir()):
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        texts += ["".join(lines[i : i + 50]) for i in range(0, len(lines), 50)]
    assert len(texts) > 1000
    differ = []
    for text in texts:
        got, want = _both(text, monkeypatch)
        if got != want:
            differ.append(text)
    assert differ == []


_LABELS = (
    "password", "pwd", "passwd", "secret", "token", "api_key", "apiKey", "x_secret", "cred",
    "credentials", "client_secret", "aws_secret_access_key", "auth_token", "Secret", "PASSWORD",
    "my_token_2", "tokenizer", "secretKey", "public_key", "access_key",
)  # fmt: skip
_OPS = ("=", ": ", " = ", ":", "=>", '": "', "='", '="', " := ", '=\\"')


@needs_c
def test_scans_of_random_labelled_values_are_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(11)
    differ = []
    for _ in range(50_000):
        parts = []
        for _ in range(rng.randint(1, 4)):
            op = rng.choice(_OPS)
            value = _random_value(rng)
            if rng.random() < 0.5:
                value = value[:40]
            close = op[-1] if op[-1] in "'\"" else rng.choice(("", " ", ";", "&", ",", "\n"))
            parts.append(
                rng.choice(("", " ", "\n", "aws ", "{")) + rng.choice(_LABELS) + op + value + close
            )
        text = "".join(parts)
        got, want = _both(text, monkeypatch)
        if got != want:
            differ.append(text)
    assert differ == []


def test_entropy_margin_bounds_the_sums_error() -> None:
    """`entropy_at_least` and the C trust their sums outside `_ENTROPY_MARGIN`: the sum of at
    most `_XLOGX_MAX` terms `c * log2(c)` is off by at most ~n * log2(n) * n * 2**-53, / n."""
    n = checks._XLOGX_MAX
    assert n * math.log2(n) * 2.0**-52 < checks._ENTROPY_MARGIN / 10


# Labelled values cut by the specific hits inside them (`engine._cut_labelled_values`, C
# `cut_rest`): labels, provider keys, mailboxes, addresses, parameters, quotes, schemes, stems, and
# characters of every PyUnicode kind around them.
_CUT_PIECES = (
    "token=", "password=", "api_key=", "secret: ", "pwd=", "Bearer ", "aws_secret_access_key = ",
    '"token": "', "'password': '", "&token=", "&password=", "?token=", ";secret=", "\\ntoken=",
    "|pwd=", ",key=", "&region=", "://", "\\r", "\\x", "AKIAIOSFODNN7ABCDEFG",
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_yTzAeKOmXRrvftva9AW7hipTgadDZFlRJmCG", "u1@mail.co", "jane.doe@fastmail.com", "8.8.8.8",
    "xxxxxxxx", "changeme", "Hunter2024", "Zk3jQ9vLw2Xp", "GsbeKXgzg2sye9b2Rann76dE", "tokenize",
    "passage", "ckey", "&", ":", "/", ".", " ", "\n", '"', "'", "`", "=", "_", "-",
    "\u212a", "\xe9", "\U0001f600", "\u0130",
)  # fmt: skip


def _cut_text(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(1, 30)):
        if rng.random() < 0.8:
            parts.append(rng.choice(_CUT_PIECES))
        else:
            pool = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
            parts.append("".join(rng.choice(pool) for _ in range(rng.choice((4, 8, 12, 24)))))
    return "".join(parts)


def _cut_inputs(text: str) -> tuple[str, list[Span], list[Span]]:
    """What `engine._cut_labelled_values` is given for `text`: its lower-cased copy, the spans
    (sorted by `_resolve_overlaps`) and those kept."""
    low = lowered(text)
    spans = secrets.find_secrets(text, low) + engine.find_pii(text)
    kept = engine._resolve_overlaps(spans)
    return low, spans, kept


@needs_c
def test_cut_rest_in_c_gives_the_python_answer() -> None:
    rng = random.Random(5)
    cut = found = 0
    for _ in range(30_000):
        text = _cut_text(rng)
        low, spans, kept = _cut_inputs(text)
        want = engine._rest_of_cut_values(text, low, spans, kept)
        got = secrets.cut_rest(text, low, spans, kept)
        assert got == want, text
        assert all(type(s) is Span for s in got)
        cut += len(kept) < len(spans)
        found += bool(got)
    assert cut > 5000 and found > 1000, (cut, found)


@needs_c
@pytest.mark.parametrize("size", [2 * 1024, 64 * 1024])
def test_cut_rest_of_texts_made_of_cut_values_is_the_python_answer(size: int) -> None:
    # 64 KB: past DENSE_FINDINGS and MEMO_MAX, where the cut path changes its way.
    texts = [fill(u, size) for u in REPEATED_FINDINGS]
    texts += [distinct(n, size) for n in DISTINCT_FINDINGS]
    rng = random.Random(size)
    texts += ["".join(_cut_text(rng) for _ in range(size // 100)) for _ in range(3)]
    for text in texts:
        low, spans, kept = _cut_inputs(text)
        assert secrets.cut_rest(text, low, spans, kept) == engine._rest_of_cut_values(
            text, low, spans, kept
        ), text[:80]


@needs_c
def test_cut_rest_leaves_odd_spans_to_the_python() -> None:
    text = "token=AKIAIOSFODNN7ABCDEFG&token=GsbeKXgzg2sye9b2Rann76dE "
    low, spans, kept = _cut_inputs(text)
    assert secrets.cut_rest(text, low, spans, kept)  # (the second label's value)
    odd = [s._replace(start=float(s.start)) for s in kept]  # type: ignore[arg-type]
    assert secrets.cut_rest(text, low, spans, odd) is None
    out_of_text = [s._replace(end=len(text) + 1) for s in kept]
    assert secrets.cut_rest(text, low, spans, out_of_text) is None
    assert secrets.cut_rest(text, low[:-1], spans, kept) is None  # (not the same length)
    with pytest.raises(TypeError):
        secrets.cut_rest(text, low, tuple(spans), kept)  # type: ignore[arg-type]


# A callback of `cut_rest` that changes `spans` or `kept` (the lists it was called with): the C
# read a span's type after `rest_of_value` had run (a use after free once the list let go of it)
# and `kept[k]` of a cleared list (a NULL read): the process died (SIGSEGV). Run in a child
# process, so that a crash fails this test and not the whole run.
_CUT_REST_MUTATED = """
import sys
from policies.guardrails import secrets
from policies.guardrails._checks_c import cut_rest
from policies.guardrails.spans import Span

text = "token=abcd" + "A" * 20 + "xyzw012345"  # (the stretch [0, 10) holds a stem)
answers = []
for which in ("none", "spans", "kept"):
    # A type only these spans hold (not interned), and a second value where a kept hit starts.
    spans = [Span(0, 40, "secrets", "".join(["generic_", "secret"]), 1),
             Span(10, 30, "secrets", "aws_access_key", 3),
             Span(30, 40, "secrets", "".join(["generic_", "secret"]), 1)]
    kept = [Span(10, 30, "secrets", "aws_access_key", 3), Span(30, 31, "secrets", "x", 3)]

    def rest_of_value(*args):
        {"none": [], "spans": spans, "kept": kept}[which].clear()
        return []

    got = cut_rest(text, text.lower(), spans, kept, secrets.LABELLED, Span, "secrets",
                   rest_of_value, secrets._value_ok, (1, 256, 1024, 40, 48))
    answers.append(repr(got))
assert answers[0] == answers[1] == answers[2], answers
print(answers[0])
"""


@needs_c
def test_cut_rest_survives_a_callback_changing_its_lists() -> None:
    root = Path(__file__).resolve().parents[2]
    path = os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])
    run = subprocess.run(
        [sys.executable, "-c", _CUT_REST_MUTATED],
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, (run.returncode, run.stderr[-2000:])
    assert "generic_secret" in run.stdout  # (the value at 30 is still judged)


# AWS key ids and what may follow them (`secrets._aws`, C `aws_spans`): every prefix, ids glued
# to word characters, documentation ids, separators of every kind (Unicode blanks are `\s`),
# secrets of 39 to 41 characters, and characters of every PyUnicode kind.
_AWS_PIECES = (
    "AKIA", "ASIA", "ABIA", "ACCA", "A3T", "A3TZ", "A3T_", "AKI", "A", "IOSFODNN7ABCDEFG",
    "IOSFODNN7EXAMPLE", "XXXXXXXXXXXXXXXX", "ABCDEFGHIJKLMNOP", "0123456789ABCDEF",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCY9qTzLk2Wq",
    "Zk3jQ9vLw2XpZk3jQ9vLw2XpZk3jQ9vLw2XpZk3j", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    " ", ":", "=", '"', "'", ",", ";", "|", "\t", "\n", "\u2003", "\x85", "\xa0", "        ",
    "_", "/", "+", "x", "7", "\u212a", "\xe9", "\U0001f600",
)  # fmt: skip


@needs_c
def test_aws_spans_in_c_gives_the_python_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(7)
    ids = secrets_found = 0
    heads = ("AKIA", "ASIA", "ABIA", "ACCA", "A3TZ", "A3T_", "AKI", "BKIA")
    bodies = _AWS_PIECES[7:11]
    values = _AWS_PIECES[14:18]
    for _ in range(60_000):
        parts = []
        for _ in range(rng.randint(1, 5)):
            if rng.random() < 0.3:
                parts.append(rng.choice(_AWS_PIECES))
                continue
            value = rng.choice(values)
            value = value[: rng.choice((39, 40, 40, 40))] + rng.choice(("", "", "=", "x", "/"))
            seps = "".join(rng.choice(_AWS_PIECES[18:32]) for _ in range(rng.choice((0, 1, 1, 2))))
            parts.append(rng.choice(heads) + rng.choice(bodies) + seps + value)
        text = "".join(parts)
        want = list(secrets._aws_py(text))
        got = _C.aws_spans(text, Span, secrets.DETECTOR, secrets._AWS_TYPES, checks.random_looking)
        assert got == want, text
        assert list(secrets._aws(text)) == want
        ids += sum(s.type == "aws_access_key" for s in got)
        secrets_found += sum(s.type == "aws_secret_key" for s in got)
    assert ids > 5000 and secrets_found > 200, (ids, secrets_found)
    monkeypatch.setattr(checks, "_C", None)
    assert list(secrets._aws("AKIAIOSFODNN7ABCDEFG")) == [
        Span(0, 20, "secrets", "aws_access_key", 3, True)
    ]


# Bearer tokens (`secrets._bearer`, C `bearer_spans`): labels and blanks, values of 19 to 21 and
# over 2048 characters, `=` runs, placeholders, paths, templates, low entropy, one class, and
# characters of every PyUnicode kind (the Kelvin sign lower-cases to `k`).
_BEARER_PIECES = (
    "Bearer ", "bearer\t", "BEARER  ", "bearer", "Bearer\n", "bearerbearer ", " ",
    "abcdEFGH1234ijklMNOP5678", "abcdEFGH1234ijklMNO", "abcdEFGH1234ijklMNOP", "Zk3jQ9vLw2Xp/+.~_-",
    "xxxxxxxxxxxxxxxxxxxxxxxx", "ababababababababababab", "/etc/ssl/private/key.pem",
    "./certs/aB3dE5gH7jK9mN1pQ.pem", "YOUR_TOKEN_HEREabcdefgh", "Zk3jQ9vLw2XpRt7Yu1Io2Pa3Sd", "==",
    "=", "1234567890123456789012345", "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "\u212a", "\xe9", "\U0001f600", "&", ",", "sk-", "ABCD" * 520,
)  # fmt: skip


@needs_c
def test_bearer_spans_in_c_gives_the_python_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(3)
    found = asked = 0
    real = secrets._bearer_ok

    def ok(value: str) -> bool:
        nonlocal asked
        asked += 1
        return real(value)

    for _ in range(40_000):
        text = "".join(rng.choice(_BEARER_PIECES) for _ in range(rng.randint(1, 8)))
        low = lowered(text)
        want = list(secrets._bearer_py(text, low))
        got = _C.bearer_spans(text, low, Span, secrets.DETECTOR, secrets._BEARER_TYPES, ok)
        assert got == want, text
        assert list(secrets._bearer(text, low)) == want
        found += len(got)
    assert found > 2000 and asked > 100, (found, asked)
    assert _C.bearer_spans("Bearer x", "bearer", Span, "secrets", secrets._BEARER_TYPES, ok) is None
    monkeypatch.setattr(checks, "_C", None)
    text = "Bearer abcdEFGH1234ijklMNOP5678"
    assert list(secrets._bearer(text, text.lower())) == [
        Span(7, 31, "secrets", "bearer_token", 1, True)
    ]
# What `_checks_c.label_scan` passes over or hands back: refused values (placeholders, examples,
# code references, low entropy), `id:` heads, `B"…"` prefixes, AWS-shaped values, stems inside a
# value (with and without a label's operator), kept label verdicts (`tokenizer`, `secret_name`),
# in 1-, 2- and 4-byte strs, and enough labels to fill the memos (MEMO_MAX).
_SCAN_VALUES = (
    "xxxxxxx{i}", "example{i}", "settings.key{i}", "changeme{i}", "{i}-----", "abcdefgh{h}",
    "admin:{h}Qx9z", "os.environ[x]", "a.b.c:{h}", "std::{h}x", "{h}key{h}", "{h}&token={h}",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKE{d}", "Zk3jQ9vLw2Xp{h}", "\u212aabcdefgh{i}",
    "\u00e9t\u00e9{h}zz9", "\u5bc6\u7801{h}Xy7", "\U0001f600{h}Ab3q", "{h}...", "token{h}",
)  # fmt: skip
_SCAN_OPS = ("=", ": ", '="', "='", '=B"', "=b'", "=`", "=@", ">\n  ", " == ", ":=")


@needs_c
def test_the_label_scan_in_c_gives_the_python_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(7)
    differ = []
    for n in range(3000):
        parts = []
        for _ in range(rng.randint(1, 40 if n % 100 else 1500)):
            i = rng.randrange(10**6)
            h = format(i * 2654435761 % 2**32, "x")[: rng.randint(1, 8)]
            value = rng.choice(_SCAN_VALUES).format(i=i, h=h, d=i % 10)
            op = rng.choice(_SCAN_OPS)
            close = op[-1] if op[-1] in "'\"`" else rng.choice(("", " ", ";", "&", ",", "\n"))
            label = rng.choice((*_LABELS, "secret_name", "aws_secret", "my.api-key"))
            parts.append(rng.choice(("", " ", "aws ", "{", "x")) + label + op + value + close)
        text = "".join(parts)
        got, want = _both(text, monkeypatch)
        if got != want:
            differ.append(text)
    assert differ == []


@needs_c
def test_the_label_scan_refuses_bad_arguments() -> None:
    assert _C is not None
    search = secrets._ASSIGN_VALUE[3].search
    good = [search, "token=x", "token=x", 0, "token", 4, {}, {}, 8, 3.0, False, 1024, 3, {}]
    assert _C.label_scan(*good) is None
    with pytest.raises(TypeError):
        _C.label_scan(*good[:-1])
    with pytest.raises(TypeError):
        _C.label_scan(*good[:6], [], *good[7:])
    with pytest.raises(TypeError):
        _C.label_scan(*good[:2], b"token=x", *good[3:])


# `_checks_c.owned_label` is `secrets._owned_label`: labels of each regex after owner words (key
# owners, refused owners, dotted, distinct hex, `_`/`-`/`.` runs, none), with run-ons, suffixes
# that name something else, long `cred` run-ons, operators (`:` after a dotted owner), and
# random words of the label characters, as the label pass finds them and as it never does.
_OWNERS = (
    "", "api_", "x-api-", "aws_secret_access_", "public_", "csrf-", "my.api.", "io.jsonweb",
    "access", "client__", "9e3779b1", "{", "a.b-c_", "subscription", "publishable_", "xsrf",
    "license.", "secret", "_", "-.", "signing_", "master-x_",
)  # fmt: skip
_RUN_ONS = (
    "", "_2", "s", "e", "string", "str", "key", "keys", "value", "_id", "_name", "id", "izer",
    "_url", "name", "_file", "_9_type", "ential", "entials", "entialsssss", "entialsx", "sx",
    "_" * 33, "_env", "var", "_ttl", "ref", "_abc_len",
)  # fmt: skip
_LABEL_OPS = ("=", ": ", ":", " = ", '":', "=>", " := ", "==", ">\n ", "']=")


@needs_c
def test_owned_label_in_c_gives_the_python_answer() -> None:
    assert secrets._LABEL_SCAN_C and _C.LABEL_RULES == secrets._LABEL_RULES
    rng = random.Random(5)
    stems = ("password", "passwd", "pwd", "secret", "token", "cred", "key", "pass", "tok")
    asked = 0
    for n in range(20_000):
        owner = rng.choice(_OWNERS)
        if n % 5 == 0:
            owner = "".join(rng.choice(secrets._KEY_CHARS_STR) for _ in range(rng.randint(0, 40)))
        word = rng.choice(stems) + rng.choice(_RUN_ONS)
        if n % 7 == 0:
            word = "".join(
                rng.choice("abcdefgikmnoprstwxyz_019") for _ in range(rng.randint(1, 12))
            )
        if n % 11 == 0:
            word += "s" * rng.randint(0, 150) + rng.choice(("", "x", "_1", "id"))
        if n % 13 == 0:  # the owner's end and a short word making a name (`na` + `me`)
            owner = rng.choice(("na", "i", "fi", "pa", "le", "pref", "coun", "si", "ex", "u", "e"))
            word = rng.choice(("me", "d", "ds", "le", "th", "ngth", "ix", "nt", "ze", "rl", "ri"))
        op = rng.choice(_LABEL_OPS)
        before = rng.choice(("", " ", "\n", "\u212a", "\U0001f600 "))
        low = before + owner + word + op + rng.choice(("", "value", "\u00e9t\u00e9"))
        ms = len(before) + len(owner)
        for i in range(6):
            # `owner` as the label pass reads it: the key characters before `ms`, up to 40.
            got_owner = owner[len(owner.rstrip(secrets._KEY_CHARS_STR)) :][-40:]
            # As the label pass finds the label (when its regex does), and as given.
            m = secrets._ASSIGN[i].match(low, ms)
            for me in {m.end() if m else ms + len(word), ms + len(word) + len(op)}:
                if me > len(low):
                    continue
                want = secrets._owned_label(low, i, ms, me, got_owner)
                assert _C.owned_label(low, i, ms, me, got_owner) == want, (low, i, ms, me)
                asked += 1
    assert asked > 100_000
    with pytest.raises(ValueError):
        _C.owned_label("token=", 3, 0, 7, "")
    with pytest.raises(ValueError):
        _C.owned_label("token=", 3, 0, 6, "a b")
    with pytest.raises(TypeError):
        _C.owned_label(b"token=", 3, 0, 6, "")


class _CountingC:
    """The C checks, counting the label matches `label_scan` hands back to the Python."""

    def __init__(self) -> None:
        self.handed = 0

    def __getattr__(self, name: str) -> object:
        return getattr(_C, name)

    def label_scan(self, *args: object) -> object:
        m = _C.label_scan(*args)
        self.handed += m is not None
        return m


@needs_c
@pytest.mark.parametrize(
    "text",
    [
        distinct_flood("pwd_glued_owner", 64 * 1024),
        distinct_flood("api_key_after_hex", 64 * 1024),
        distinct_flood("api_key_at_sign", 64 * 1024),
        fill("token=xxxxxxxx&token=xxxxxxxx ", 64 * 1024),
    ],
    ids=["pwd_glued_owner", "api_key_after_hex", "api_key_at_sign", "token_xxxx_twice"],
)
def test_the_label_scan_passes_over_the_floods_of_glued_and_nested_labels(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A label after a distinct owner word, an unquoted value with a `:` that is no `id:secret`,
    a refused value holding a label whose value runs past it, a repeated refused value holding
    labels (`_labels_in_refused`'s kept answer): each paid ~1 us of Python a label (2.0-2.4x
    prose per KB), handed back ~3000 times in 64 KB; now passed over in C."""
    counting = _CountingC()
    monkeypatch.setattr(checks, "_C", counting)
    got = find_spans(text, DETECTORS)
    assert counting.handed <= 20, counting.handed
    monkeypatch.setattr(checks, "_C", None)
    assert got == find_spans(text, DETECTORS)


# Label/value templates for the extended label scan: the four floods' units, values glued to the
# next label (distinct owner words), `id:secret` and `:` values, refused values holding labels
# of their kind (quoted, `&`-joined, placeholders, past REFUSED_LABELS), labels whose value runs
# past the one they are in, and hostile characters.
_GLUED = (
    "pwd = {{{h}", "-----:{h}}}api_key=", "api_key=>@${i}&", "token=xxxxxxxx&token=xxxxxxxx ",
    "token=xxxxxxx{d}&token=xxxxxxx{h}&", "password=changeme{i}&password=", "{h}_token={h}",
    "secret={h}:x{i} ", "api_key=admin:{h}Qx9z ", "api_key=a:b{h}&key=", "token='{h}&token=x'",
    'token="xxxxxxxx&token=Zk3jQ9vLw2Xp{h}" ', "pwd={h}pwd={h}", "{h}.api.key={h}:x ",
    "io.jsonweb{h}token:x{h} ", "token=token=token={h} ", "key=>{h}&api_key=>@{i}",
    "cred=\u212a{h}&cred=", "secret=\U0001f600{h}:\u00e9t\u00e9 ", "token=xxxxxxxx&tokenizer=x{h}",
    "token=os.environ[{h}]&token=", "password=<{h}>&password=", "pwd = {{{h}pwd = {{{h} ",
)  # fmt: skip


@needs_c
def test_the_extended_label_scan_gives_the_python_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(9)
    differ = []
    for n in range(2000):
        parts = []
        for _ in range(rng.randint(1, 40 if n % 100 else 3000)):
            i = rng.randrange(10**6)
            h = format(i * 2654435761 % 2**32, "x")[: rng.randint(1, 8)]
            if rng.random() < 0.3:
                make = DISTINCT_FLOODS[rng.choice(sorted(DISTINCT_FLOODS))]
                parts.append(make(i))
            else:
                parts.append(rng.choice(_GLUED).format(i=i, h=h, d=i % 10))
            if rng.random() < 0.1:
                parts.append(rng.choice((" ", "\n", "aws ", "&", "x", '"', "'")))
        text = "".join(parts)
        got, want = _both(text, monkeypatch)
        if got != want:
            differ.append(text)
    # Repeated refused values holding labels (`_labels_in_refused`'s kept answer), each followed
    # at once by a label: resumed exactly where the Python resumes, or a finding is lost.
    for unit in (
        "token='xxxxxxxx&token=xxxxxxxx'token=Zk3jQ9vLw2Xp7Hq ",
        'secret="changeme&secret=xxxxxxxx"secret="Zk3jQ9vLw2Xp7Hq" ',
        "token=xxxxxxxx&token=xxxxxxxx\ntoken=Zk3jQ9vLw2Xp7Hq&",
        "pwd=xxxxxxxx&pwd=changeme pwd=Hunter2024x ",
        '{"a": "token=xxxxxxxx&token=xxxxxxxx\\ntoken=Zk3jQ9vLw2Xp7Hq"}',
    ):
        for size in (4096, 40 * 1024):
            got, want = _both(fill(unit, size), monkeypatch)
            if got != want:
                differ.append(unit)
    # Past REFUSED_LABELS labels examined inside refused values, such a value is reported whole
    # (even one whose answer was kept before).
    twice = fill("token=xxxxxxxx&token=xxxxxxxx ", 8192)
    text = twice + distinct_flood("token_xxxx_nested", 20 * 1024) + twice
    got, want = _both(text, monkeypatch)
    assert got == want and len(want) > 100
    assert differ == []


@needs_c
def test_the_label_scan_without_the_label_rules_gives_the_python_scan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A build whose label rules are not secrets.py's is called without the last four arguments
    (it hands back every label whose verdict is not kept, and every value holding a stem): the
    same scans."""
    monkeypatch.setattr(secrets, "_LABEL_SCAN_C", False)
    counting = _CountingC()
    monkeypatch.setattr(checks, "_C", counting)
    text = distinct_flood("pwd_glued_owner", 16 * 1024)
    got = find_spans(text, DETECTORS)
    assert counting.handed > 500  # (the glued owner words: each label's verdict in Python)
    monkeypatch.setattr(checks, "_C", None)
    assert got == find_spans(text, DETECTORS)
    monkeypatch.setattr(checks, "_C", _C)
    rng = random.Random(13)
    for _ in range(300):
        parts = []
        for _ in range(rng.randint(1, 40)):
            i = rng.randrange(10**6)
            h = format(i * 2654435761 % 2**32, "x")[: rng.randint(1, 8)]
            parts.append(rng.choice(_GLUED).format(i=i, h=h, d=i % 10))
        got, want = _both("".join(parts), monkeypatch)
        assert got == want


@needs_c
def test_the_extended_label_scan_refuses_bad_arguments() -> None:
    search = secrets._ASSIGN_VALUE[3].search
    match = secrets._ASSIGN[3].match
    base = [search, "token=x", "token=x", 0, "token", 4, {}, {}, 8, 3.0, False, 1024, 3, {}]
    base += [[], Span, "secrets", ("generic_secret", 1, "aws_secret_key", 3, False)]
    assert _C.label_scan(*base, match, {}, [0], 1024) is None
    with pytest.raises(TypeError):
        _C.label_scan(*base, match, {}, [0])
    with pytest.raises(TypeError):
        _C.label_scan(*base, match, [], [0], 1024)
    with pytest.raises(TypeError):
        _C.label_scan(*base, match, {}, (0,), 1024)
    with pytest.raises(TypeError):
        _C.label_scan(*base[:12], "3", *base[13:], match, {}, [0], 1024)
