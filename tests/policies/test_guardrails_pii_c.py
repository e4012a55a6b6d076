"""The PII scanners and the overlap settling in C (policies/guardrails/_checks_c.c: `pii_emails`,
`pii_phones`, `pii_intl`, `pii_ipv6`, `settle`) give their Python fallbacks' answers
(`pii._emails_py`, `pii._phones_py`, `pii._ipv6_py`, `engine._resolve_overlaps_py`), on random
text of every PyUnicode kind, the guardrail texts and random span lists; and a whole scan is the
same with them and without them."""

from __future__ import annotations

import random

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


@needs_c
def test_the_c_mailbox_scan_gives_the_python_spans() -> None:
    rng = random.Random(11)
    for _ in range(30_000):
        text = _random_text(rng)
        got, want = pii._emails(text), pii._emails_py(text)
        assert got == want, text
        assert all(type(s) is Span for s in got)
    for unit in FLOODS + REPEATED_FINDINGS:
        text = fill(unit, 20_000)
        assert pii._emails(text) == pii._emails_py(text), unit
    for name in DISTINCT_FINDINGS:
        text = distinct(name, 20_000)
        assert pii._emails(text) == pii._emails_py(text), name


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
    for unit in FLOODS + REPEATED_FINDINGS:
        text = fill(unit, 20_000)
        assert pii._phones(text) == pii._phones_py(text), unit
    for name in DISTINCT_FINDINGS:
        text = distinct(name, 20_000)
        assert pii._phones(text) == pii._phones_py(text), name


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
    for unit in FLOODS + REPEATED_FINDINGS:
        text = fill(unit, 20_000)
        assert pii._ipv6(text) == pii._ipv6_py(text), unit
    for name in DISTINCT_FINDINGS:
        text = distinct(name, 20_000)
        assert pii._ipv6(text) == pii._ipv6_py(text), name


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
