"""PII shapes other recognizer suites claim: extensions, trunk-0 national groups, `00` dialling,
several cards in one string, every IBAN country and lower case, spaced/lower-case NINOs, dotted
SSNs, punycode domains; each with kind and span, near misses quiet, hostile inputs linear."""

from __future__ import annotations

import time

import pytest

from policies.guardrails import scan

SALT = b"salt"
PII = frozenset({"pii"})


def _found(text: str) -> list[tuple[str, str]]:
    return [(f.type, text[f.start : f.end]) for f in scan(text, PII, SALT)]


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("call 345-899-3560x4587 today", "phone", "345-899-3560x4587"),
        ("tel (898)666-3621x0135.", "phone", "(898)666-3621x0135"),
        ("mobile +1-604-696-5272x565", "phone", "+1-604-696-5272x565"),
        ("Phone: 083 564 9312", "phone", "083 564 9312"),
        ("ring 0490 75 40 81 now", "phone", "0490 75 40 81"),
        ("at 0688 872 49 99", "phone", "0688 872 49 99"),
        ("dial 001-518-640-0854", "phone", "001-518-640-0854"),
        ("iban AL47 2121 1009 0000 0002 3569 8741", "iban", "AL47 2121 1009 0000 0002 3569 8741"),
        ("iban VA59001123000012345678", "iban", "VA59001123000012345678"),
        ("iban SC18SSCB11010000000000001497USD", "iban", "SC18SSCB11010000000000001497USD"),
        ("my iban is gb42nawi04454264788619", "iban", "gb42nawi04454264788619"),
        ("dash AL47-2121-1009-0000-0002-3569-8741", "iban", "AL47-2121-1009-0000-0002-3569-8741"),
        ("nino: hh 01 02 03 d", "uk_nino", "hh 01 02 03 d"),
        ("nino tw987654a", "uk_nino", "tw987654a"),
        ("nino: PR 123612C", "uk_nino", "PR 123612C"),
        ("ssn 078.05.1123", "us_ssn", "078.05.1123"),
        ("SSN: 078051123 on file", "us_ssn", "078051123"),
        ("her social security number is 536225491.", "us_ssn", "536225491"),
        ("write to a@xn--d1acufc.xn--p1ai", "email", "a@xn--d1acufc.xn--p1ai"),
    ],
)
def test_claimed_kind_is_found_with_its_span(text: str, kind: str, value: str) -> None:
    assert (kind, value) in _found(text)


def test_every_card_in_one_string_is_found() -> None:
    text = "4012888888881881 4012-8888-8888-1881 4012 8888 8888 1881"
    assert _found(text) == [
        ("payment_card", "4012888888881881"),
        ("payment_card", "4012-8888-8888-1881"),
        ("payment_card", "4012 8888 8888 1881"),
    ]


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("v1.2345678901 4111 1111 1111 1111 x", "payment_card", "4111 1111 1111 1111"),
        ("ref a12345678 415-555-0132 ok", "phone", "415-555-0132"),
        ("build 7.41592794634 8.8.8.8 up", "ip_address", "8.8.8.8"),
        ("id x1234567 078-05-1120 z", "us_ssn", "078-05-1120"),
        ("tag _98765432 020 7946 0958", "phone", "020 7946 0958"),
        ("ab0044 20 7946 0958 0044 20 7946 0958 x", "phone", "0044 20 7946 0958"),
        ("ref a001-518-640-0854 001-518-640-0854", "phone", "001-518-640-0854"),
    ],
)
def test_a_number_after_a_refused_glued_number_is_still_found(
    text: str, kind: str, value: str
) -> None:
    """A number glued to a word or a sign on its left is refused; the number after it is its own
    (it was skipped: the refused candidate ran over it and the scan went on from its end)."""
    assert (kind, value) in _found(text)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        # A trunk-0 phone followed by more digit groups: the groups regex took them all (up to
        # five), the digit count refused the whole, and the phone and what followed went with it.
        ("Call 020 7946 0958 24 hours", [("phone", "020 7946 0958")]),
        ("020 7946 0958 4111 1111 1111 1111",
         [("phone", "020 7946 0958"), ("payment_card", "4111 1111 1111 1111")]),
        ("phones 020 7946 0958 020 7946 0959",
         [("phone", "020 7946 0958"), ("phone", "020 7946 0959")]),
        ("ring 0490 75 40 81 0490 75 40 82 now",
         [("phone", "0490 75 40 81"), ("phone", "0490 75 40 82")]),
        ("0044 0044 0044 0044 0044 415-555-0132", [("phone", "415-555-0132")]),
        # The same for numbers dialled with `+` or `00`: the candidate took the groups after the
        # number (up to 15 or 17 digits) and was refused whole.
        ("Call +44 20 7946 0958 2024 1130 ok", [("phone", "+44 20 7946 0958")]),
        ("fax +33 1 42 68 53 00 75008 Paris", [("phone", "+33 1 42 68 53 00")]),
        ("dial 0044 20 7946 0958 2024 1130 x", [("phone", "0044 20 7946 0958")]),
        ("call 0033 1 42 68 53 00 0033 1 42 68 53 01",
         [("phone", "0033 1 42 68 53 00"), ("phone", "0033 1 42 68 53 01")]),
    ],
)  # fmt: skip
def test_a_number_after_a_refused_longer_candidate_is_still_found(
    text: str, want: list[tuple[str, str]]
) -> None:
    """A phone candidate refused for what it took (more digits than a phone's) no longer hides
    the phone in its first groups, nor what follows that phone."""
    assert _found(text) == want


@pytest.mark.parametrize(
    "text",
    [
        "0044 0044 0044 0044 0044",  # runs of groups that are no phone and no card stay quiet
        "0123 4567 8901 2345 6789 0123",
        "HR12 001 0051 8630 0016 A",  # an invalid IBAN's groups are not a phone
        "DE89 A704 0044 0532 0130 00",
        "LV80 bANK 0000 4351 9500 1",  # mixed case
        "03262 2437 Main St Suite 442",
        "'1.0.0.127.in-addr.arpa'",
        "netmask IPv6Address('ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff0')",
        "<142480216486.20800.16526388040877946887@nightshade.la.mastaler.com>",
        "build 0123456789 finished",
        "order 536225491 shipped",  # nine bare digits without an SSN label
        "SSN: 900123456",  # a never-issued area
        "the SSN column, then row 536225491",
    ],
)
def test_near_misses_are_not_pii(text: str) -> None:
    assert _found(text) == []


@pytest.mark.parametrize(
    "chunk",
    ["0", "0 ", "00 ", "0-", "4012 ", "AB12 ", "ab1", "AB 1", "1x", "x1", "0490 75 ", "@xn--"],
)
def test_hostile_megabyte_scans_in_linear_time(chunk: str) -> None:
    text = (chunk * (1_000_000 // len(chunk) + 1))[:1_000_000]
    t0 = time.perf_counter()
    scan(text, PII, SALT)
    # Loose on purpose: it separates linear from quadratic (minutes on 1 MB), not fast from slow.
    assert time.perf_counter() - t0 < 5.0
