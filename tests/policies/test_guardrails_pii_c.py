"""The PII scanners and the overlap settling in C (policies/guardrails/_checks_c.c: `pii_emails`,
`pii_phones`, `pii_intl`, `pii_ipv6`, `pii_numeric`, `in_code_groups`, `settle`) give their Python
fallbacks' answers (`pii._emails_py`, `pii._phones_py`, `pii._ipv6_py`, `pii._numeric_py`,
`pii._in_code_groups`, `engine._resolve_overlaps_py`), on random text of every PyUnicode kind,
the guardrail texts and random span lists; and a whole scan is the same with them and without
them."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from policies.guardrails import DETECTORS, checks, engine, pii
from policies.guardrails.spans import Span
from tests.support.guardrail_texts import (
    DISTINCT_FINDINGS,
    FLOODS,
    REPEATED_FINDINGS,
    distinct,
    fill,
)

needs_c = pytest.mark.skipif(
    checks._C is None, reason="policies/guardrails/_checks_c is not built: the Python runs alone"
)

# Pieces that reach each branch of the mailbox scan: local parts cut by `.-+` and the 64 limit,
# `git@`, Message-IDs, reserved domains and TLDs, `xn--` domains, dashes at a label's ends,
# doubled dots, URLs with credentials, whitespace, and characters of every PyUnicode kind.
_EMAIL_UNITS = (
    "@", "a@b.co", "@b.co", ".", "..", "-", "+", "git@h.com", "x@Example.COM", "u@a.test",
    "1.2.3@h.io", "12.34@h.io", " ", "\n", "://", "http://a:b@c.de", "a.b.c", "xn--p1ai",
    "xn--", "Co", "b", "0", "_", "%", "\xe9", "\u212a", "\U0001f600", "@@", "a@b.c-",
    "a@b-.co", "a@-b.co", "q" * 70, "u1@mail.co:", "a@b.localhost", "a@b.locals",
    "x@y.abcdefghijklmnopqrstuvwxyz",
)  # fmt: skip


def _random_text(rng: random.Random) -> str:
    t = "".join(
        rng.choice(_EMAIL_UNITS) if rng.random() < 0.7 else rng.choice("abc@.-0:/ x\xe9\u212a")
        for _ in range(rng.randint(0, 60))
    )
    return t * rng.randint(1, 400) if rng.random() < 0.02 else t


def _same_on_bench_texts(scan: Callable[[str], object], python: Callable[[str], object]) -> None:
    """`scan` (the C path) gives `python`'s answer on every benchmark text, 20,000 characters."""
    texts = [(unit, fill(unit, 20_000)) for unit in FLOODS + REPEATED_FINDINGS]
    texts += [(name, distinct(name, 20_000)) for name in DISTINCT_FINDINGS]
    for name, text in texts:
        assert scan(text) == python(text), name


@needs_c
def test_the_c_mailbox_scan_gives_the_python_spans() -> None:
    rng = random.Random(11)
    for _ in range(30_000):
        text = _random_text(rng)
        got, want = pii._emails(text), pii._emails_py(text)
        assert got == want, text
        assert all(type(s) is Span for s in got)
    _same_on_bench_texts(pii._emails, pii._emails_py)


@needs_c
def test_past_dense_findings_both_report_every_local_run() -> None:
    # Past DENSE_FINDINGS mailboxes, the local run before each domain is reported unchecked.
    text = "x@b.co " * 300 + "git@h.com +.-a@b.co u@example.com 1.2.3@b.co"
    assert pii._emails(text) == pii._emails_py(text)
    assert len(pii._emails(text)) == 304


# Pieces of phones: E.164 cut back to its first groups, a signed decimal, `(415)` with and
# without its space, extensions (of `str.isdigit` digits too), doubled separators, glued words.
_PHONE_UNITS = (
    "+", "+1", "+44 ", "(", "(415)", "(415) ", "555-0132", "555.0132", "555 0132", "x45",
    "X1234567", "x\u0663\u0663", "\u0663", "\xb2", "-", "--", "..", "  ", ".", "/", "/1", "a", "_",
    "9", "0", "1", "12", "123", "1234", " ", "\n", "(0)", "+1 415 555 0132",
    "+44 20 7946 0958 2024 1130", "\xe9", "\u212a", "\U0001f600", "+1.2", "+12.5",
    # `00` phones: cut back before the next `00` group, after IBAN-like groups (`DE89 AB12 `).
    "00", "001 ", "0033 1 42 68 53 00", "001-518-640-0854", "0044 20 7946 0958", "00 ", "DE89 ",
    "AB1 ", "ab ", "0049 30 12345678 0049 ", "4567",
)  # fmt: skip


@needs_c
def test_the_c_phone_scan_gives_the_python_spans() -> None:
    rng = random.Random(12)
    for _ in range(30_000):
        t = "".join(
            rng.choice(_PHONE_UNITS) if rng.random() < 0.6 else rng.choice("0123456789 .-()+x")
            for _ in range(rng.randint(0, 40))
        )
        t = t * rng.randint(1, 200) if rng.random() < 0.02 else t
        assert pii._phones(t) == pii._phones_py(t), t
    _same_on_bench_texts(pii._phones, pii._phones_py)


# Pieces of IPv6 text: global, documentation, loopback, IPv4-mapped (the `ipaddress` call-back),
# netmasks, CIDR blocks, glued words, runs too long for an address, times and `std::`.
_IPV6_UNITS = (
    ":", "::", ":::", "2001:4860:4860::8888", "2001:db8::1", "::1", "0:0:0:0:0:ffff:8.8.8.8",
    "::0:ffff:10.0.0.1", "::0:FFFF:0808:0808", "ffff:ffff::", "FFFF:ffff:0::", "fe80::1",
    "1:2:3:4:5:6:7:8", "12345:", "abcd:", "a:b:c", "0:0:0", "/64", "/", "x", "g", ".", "..",
    "1.2.3.4", " ", "\n", "\xe9", "\u212a", "\U0001f600", "_", "std::vector", "12:00:03", "a::b",
    "a::b:c", "2001:4860:", "dead:beef::cafe", "ff:ff:ff:ff:ff:ff:ff:ff:ff",
)  # fmt: skip


@needs_c
@pytest.mark.skipif(pii._IPV6_C is None, reason="built without inet_pton (Windows)")
def test_the_c_ipv6_scan_gives_the_python_spans() -> None:
    rng = random.Random(13)
    found = 0
    for _ in range(30_000):
        t = "".join(
            rng.choice(_IPV6_UNITS)
            if rng.random() < 0.6
            else rng.choice("0123456789abcdefABCDEF:. /xg")
            for _ in range(rng.randint(0, 40))
        )
        t = t * rng.randint(1, 200) if rng.random() < 0.02 else t
        got = pii._ipv6(t)
        assert got == pii._ipv6_py(t), t
        found += len(got)
    assert found > 1000
    _same_on_bench_texts(pii._ipv6, pii._ipv6_py)


# Pieces of numbers: IBANs (mixed case, too short, unknown country), NINOs (bad prefixes, spaces),
# public, private, reserved and malformed IPv4 addresses before and after `v`, `version` and
# `.in-addr.`, cards of every layout (cut back to their first groups), SSNs with every separator
# and never-issued range, nine bare digits after every SSN label (and a newline), NANP and trunk-0
# phones with extensions, `00` phones after IBAN-like groups, and characters of every PyUnicode
# kind (`\u0130` and `\u212a` lower-case to ASCII letters, `\u017f` matches `s` ignoring case).
_NUMERIC_UNITS = (
    "DE89 3704 0044 0532 0130 00", "DE89", "GB82 WEST 1234 5698 7654 32", "gb82 west",
    "Gb82 WEST 1234", "XX89 3704 0044", "AB 12 34 56 C", "AB123456C", "QQ 12 34 56 A",
    "GB 12 34 56 A", "AB 123456C", "8.8.8.8", "10.0.0.1", "1.2.3.4", "v", "version ", "VERSION\t",
    ".in-addr.", "IN-ADDR.", "4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111111",
    "5500 0000 0000 0004", "378282246310005", "4012 8888 8888 1881 4012-8888-8888-1881",
    "078-05-1120", "078.05.1120", "078 05 1120", "SSN: ", "ssn#", "SS #", "social security number ",
    "Social  Security no", "is ", "was ", "of ", "078051123", "415-555-0132", "415.555.0132",
    "020 7946 0958", "0490 75 40 81", "0688 872 49 99", "01 01 01", "x123", "X45", "0044 ",
    "AB1 ", " ", "  ", "-", ".", "/", "\n", "_", "+", "0", "00", "1", "12", "123", "1234", "12345",
    "a", "Z",
    "\xe9", "\u212a", "\u0130", "\u017f", "\U0001f600", "\u0663", "\xa0", "ab ", "9", "666", "000",
    "900-12-3456", "123-00-4567", "255", "256", "01", "08.8.8.8", "192.168.1.1", "100.64.0.1",
    "2221 0000 0000 0009", "6011 0000 0000 0004", "3530111333300000", "12.34", "#",
)  # fmt: skip


_NUMERIC_CHARS = "0123456789 .-/xXaAsSnN#\n_+"


def _numeric_text(rng: random.Random) -> str:
    t = "".join(
        rng.choice(_NUMERIC_UNITS) if rng.random() < 0.5 else rng.choice(_NUMERIC_CHARS)
        for _ in range(rng.randint(0, 40))
    )
    return t * rng.randint(1, 300) if rng.random() < 0.03 else t


@needs_c
def test_the_c_numeric_scan_gives_the_python_spans() -> None:
    rng = random.Random(14)
    found: dict[str, int] = {}
    for _ in range(30_000):
        text = _numeric_text(rng)
        got = pii._numeric(text)
        assert got == pii._numeric_py(text), text
        assert all(type(s) is Span for s in got)
        for s in got:
            found[s.type] = found.get(s.type, 0) + 1
    # Every type is found, past DENSE_FINDINGS addresses in one text too.
    assert min(found.values()) > 1000 and len(found) == 6, found
    _same_on_bench_texts(pii._numeric, pii._numeric_py)
    text = "8.8.8.8 10.0.0.1 v1.2.3.4 " * 300
    assert pii._numeric(text) == pii._numeric_py(text)


@needs_c
def test_the_c_code_groups_look_gives_the_python_answer() -> None:
    rng = random.Random(15)
    units = ("DE89 ", "AB12 ", "ab ", "1234 ", "12345 ", "A ", "1 ", " ", "-", "x", "\xe9")
    units += ("\u212a", "\U0001f600")
    for _ in range(20_000):
        text = "".join(rng.choice(units) for _ in range(rng.randint(0, 20)))
        for s in range(len(text) + 1):
            assert checks._C.in_code_groups(text, s) == pii._in_code_groups(text, s), (text, s)  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        checks._C.in_code_groups("ab ", 4)  # type: ignore[union-attr]
    with pytest.raises(TypeError):
        checks._C.in_code_groups(b"ab ", 1)  # type: ignore[union-attr]


@needs_c
def test_the_c_numeric_scan_refuses_wrong_arguments() -> None:
    c = checks._C
    good = ["8.8.8.8", Span, "pii", pii._NUMERIC_TYPES, 2, True, 256, pii._NOT_GLOBAL_V4_BYTES,
            pii._IBAN_TABLE, pii._ssn_labelled]  # fmt: skip
    assert c.pii_numeric(*good) == [(0, 7, "pii", "ip_address", 2, True)]  # type: ignore[union-attr]
    for i, bad in ((0, b"8.8.8.8"), (1, list), (3, ("a",) * 5), (3, ["a"] * 6), (6, 2.5),
                   (7, b"1234567"), (8, b"x" * 675), (9, None)):  # fmt: skip
        args = list(good)
        args[i] = bad
        with pytest.raises(TypeError):
            c.pii_numeric(*args)  # type: ignore[union-attr]
    with pytest.raises(TypeError):
        c.pii_numeric(*good[:9])  # type: ignore[union-attr]

    # An error raised by the label look is passed on, the list built so far dropped.
    def boom(text: str, s: int) -> bool:
        raise RuntimeError("label")

    with pytest.raises(RuntimeError):
        c.pii_numeric("SSN: 078051123", *good[1:9], boom)  # type: ignore[union-attr]


def _random_spans(rng: random.Random) -> list[Span]:
    n, room = rng.randint(2, 30), rng.choice((5, 20, 60))
    spans = []
    for _ in range(n):
        s = rng.randint(0, room)
        e = s + rng.choice((0, 1, 2, 3, 5, 9, 9, 9, rng.randint(0, 15)))
        det, typ = rng.choice(("pii", "secrets")), rng.choice(("email", "phone"))
        spans.append(Span(s, e, det, typ, rng.choice((2, 2, 2, 1, 3))))
    return sorted(spans)


@needs_c
def test_the_c_settling_gives_the_python_answer() -> None:
    rng = random.Random(5)
    for _ in range(50_000):
        spans = _random_spans(rng)
        got = engine._settle(list(spans), engine._resolve_group)  # type: ignore[misc]
        assert got == engine._resolve_overlaps_py(list(spans)), spans


@needs_c
def test_a_scan_is_the_same_without_the_c_scanners(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [fill(u, 8192) for u in REPEATED_FINDINGS] + [
        distinct(n, 8192) for n in DISTINCT_FINDINGS
    ]
    rng = random.Random(3)
    texts += [_random_text(rng) for _ in range(2000)]
    with_c = [engine.find_spans(t, DETECTORS) for t in texts]
    monkeypatch.setattr(pii, "_C", None)
    monkeypatch.setattr(pii, "_IPV6_C", None)
    monkeypatch.setattr(engine, "_settle", None)
    assert [engine.find_spans(t, DETECTORS) for t in texts] == with_c


def _run_child(code: str) -> subprocess.CompletedProcess[str]:
    root = Path(__file__).resolve().parents[2]
    path = os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=60,
    )


# A struct sequence is a tuple subclass whose deallocator reads `n_fields` items (19 for
# os.stat_result) whatever the tuple's size: a Span built of one with `tp_alloc(type, 6)` was read
# past its end when freed (a segfault). Every scanner taking a span type refuses it.
_STRUCT_SEQUENCE_SPANS = """
import gc, os, sys, time
from policies.guardrails import checks, pii, secrets
from policies.guardrails import _checks_c as C
refused = 0
for typ in (os.stat_result, time.struct_time, type(sys.float_info)):
    for call in (
        lambda: C.pii_phones("+1 415 555 0132 " * 20, typ, "pii", "phone", 2, True),
        lambda: C.pii_intl("0044 20 7946 0958 " * 20, typ, "pii", "phone", 2, True),
        lambda: C.pii_numeric("8.8.8.8 4111 1111 1111 1111 " * 20, typ, "pii", pii._NUMERIC_TYPES,
                              2, True, 256, pii._NOT_GLOBAL_V4_BYTES, pii._IBAN_TABLE,
                              pii._ssn_labelled),
        lambda: C.pii_emails("a@b.co " * 20, typ, "pii", "email", 2, True, 10),
        lambda: C.aws_spans("AKIAIOSFODNN7ABCDEFG " * 20, typ, "secrets", ("a", "b", 3),
                            checks.random_looking),
        lambda: C.bearer_spans("Bearer Zk3jQ9vLw2XpQ7mN4bR8 ", "bearer zk3jq9vlw2xpq7mn4br8 ",
                               typ, "secrets", ("bearer_token", 1), secrets._bearer_ok),
    ):
        try:
            got = call()
        except TypeError:
            refused += 1
        else:
            del got
        gc.collect()
print(refused)
"""


@needs_c
def test_a_struct_sequence_is_refused_as_the_span_type() -> None:
    run = _run_child(_STRUCT_SEQUENCE_SPANS)
    assert run.returncode == 0, (run.returncode, run.stderr[-2000:])
    assert run.stdout.split() == ["18"]

    # A class subclassing tuple (or Span) is still built.
    class Sub(Span):
        pass

    got = checks._C.pii_phones("+1 415 555 0132", Sub, "pii", "phone", 2, True)  # type: ignore[union-attr]
    assert got == [(0, 15, "pii", "phone", 2, True)] and type(got[0]) is Sub


# `label_scan` read the owner word before the match's start without checking that start against
# the text: a `search` giving a start past it read far outside the string (a segfault).
_LABEL_SCAN_START_PAST = """
from policies.guardrails import _checks_c as C

class Match:
    lastindex = 4
    def span(self, g=None):
        return (2**40, 6) if g is None else (6, 9)

calls = []
def search(low, pos):
    calls.append(pos)
    return Match() if len(calls) == 1 else None

text = "token=abc token"
got = C.label_scan(search, text, text, 0, "token", 10, {}, {}, 8, 3.0, False, 1024, 3, {})
print(type(got).__name__)
"""


@needs_c
@pytest.mark.skipif(not hasattr(checks._C, "label_scan"), reason="built without label_scan")
def test_the_label_scan_hands_back_a_match_starting_past_the_text() -> None:
    run = _run_child(_LABEL_SCAN_START_PAST)
    assert run.returncode == 0, (run.returncode, run.stderr[-2000:])
    assert run.stdout.split() == ["Match"]  # handed back for the Python to decide
