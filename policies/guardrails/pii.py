"""PII detector: emails, phones, payment cards, IBANs, national ids, IP addresses.

Every shape is confirmed before it is reported: cards by Luhn and issuer prefix, IBANs by mod-97
and country length, US SSNs by the never-issued ranges, UK NINOs by their prefix rules, IPs by
`ipaddress`. Decisions that keep ordinary text quiet, by design:

- Only *public* IP addresses are personal data: loopback, private (RFC 1918), link-local,
  documentation ranges and CIDR blocks (`10.0.0.0/8`) are not reported; neither are 4-part version
  strings written as `v1.2.3.4` / `version 1.2.3.4`.
- Reserved example domains (RFC 2606/6761: example.com/.net/.org, .example, .test, .invalid,
  .localhost) are placeholders, not people, and are not reported; neither is `git@host`.
- Phones need a recognisable format: `+` and 8-15 digits (E.164), NANP with separators
  (`(415) 555-0132`, `415-555-0132`), or a trunk-0 national number with spaces (`020 7946 0958`).
  Bare digit runs, dates and versions are never phones.

All numeric shapes share one regex pass (and the two upper-case-led ones another), because each
extra pass over the text costs more than the whole classification of its few candidates.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

from policies.guardrails.checks import IBAN_LENGTHS, card_brand_ok, iban_ok, luhn_ok, ssn_ok
from policies.guardrails.spans import Span

DETECTOR = "pii"

# One pass for every digit-led shape: a single leading class keeps CPython's fast prefix scan,
# the alternatives after it dispatch on what that first character was.
_NUMERIC = re.compile(
    r"[0-9](?:"
    r"(?P<iban>(?<=[A-Z][A-Z][0-9])[0-9](?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?)"
    r"|(?P<nino>(?:(?<=[A-Z][A-Z][0-9])|(?<=[A-Z][A-Z] [0-9]))[0-9] ?[0-9]{2} ?[0-9]{2} ?[A-D])"
    # Every other shape has at least 7 more digits/separators: one cheap look rejects the
    # short numbers that fill code and logs before any alternative is tried.
    r"|(?=[0-9 .\-]{6})(?:"
    r"(?P<ip>[0-9]{0,2}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3})"
    r"|(?P<ssn>[0-9]{2}(?P<s0>[\- ])[0-9]{2}(?P=s0)[0-9]{4})"
    r"|(?P<nanp>[0-9]{2}(?P<s1>[\-. ])[2-9][0-9]{2}(?P=s1)[0-9]{4})"
    r"|(?P<natl>(?<=0)[0-9]{2,4}[ \-][0-9]{3,4}[ \-]?[0-9]{3,4})"
    r"|(?P<card>[0-9]{3}(?:[ \-]?[0-9]){9,18})"
    r"))"
)
_E164 = re.compile(r"\+[1-9][0-9 ().\-]{6,22}[0-9]")
_NANP_PAREN = re.compile(r"\([2-9][0-9]{2}\) ?[2-9][0-9]{2}[\-. ][0-9]{4}")
_NINO_1 = frozenset("ABCEGHJKLMNOPRSTWXYZ")
_NINO_2 = frozenset("ABCEGHJKLMNPRSTWXYZ")
_EMAIL_DOMAIN = re.compile(
    r"@([A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,24})"
    r"(?![A-Za-z0-9\-])"
)
_LOCAL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
_RESERVED_DOMAINS = ("example.com", "example.net", "example.org")
_RESERVED_TLDS = (".example", ".test", ".invalid", ".localhost", ".local")
# An IPv6 address worth reporting has three groups, so three in a row around its `::`, or three
# colons in a row of groups; times (12:00:03), ports and `std::vector` do not.
_IPV6_CORE = re.compile(
    r"[0-9A-Fa-f]{1,4}+::[0-9A-Fa-f]{1,4}+:|:[0-9A-Fa-f]{1,4}+:[0-9A-Fa-f]{1,4}+:"
    r"|[0-9A-Fa-f]{1,4}+:[0-9A-Fa-f]{1,4}+::[0-9A-Fa-f]"
)
_HEXCOLON = frozenset("0123456789abcdefABCDEF:.")

_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_LEFT_STOP = _ALNUM | frozenset(".-+")
_BAD_NINO = ("BG", "GB", "NK", "KN", "TN", "NT", "ZZ")


def _free_left(text: str, i: int) -> bool:
    return i == 0 or text[i - 1] not in _LEFT_STOP


def _free_right(text: str, j: int) -> bool:
    if j >= len(text):
        return True
    c = text[j]
    if c in _ALNUM:
        return False
    if c in ".-/" and j + 1 < len(text) and text[j + 1].isdigit():
        return False
    return True


def _ip4(text: str, s: int, e: int) -> bool:
    value = text[s:e]
    if any(len(o) > 1 and o[0] == "0" for o in value.split(".")):
        return False
    try:
        addr = ipaddress.IPv4Address(value)
    except ValueError:
        return False
    if not addr.is_global:
        return False
    before = text[max(0, s - 9) : s].lower()
    return not (before.endswith("v") or before.rstrip().endswith("version"))


def _phone_digits_ok(value: str, lo: int, hi: int) -> bool:
    if "  " in value or ".." in value or "--" in value:
        return False
    n = sum(c.isdigit() for c in value)
    return lo <= n <= hi


def _card(value: str) -> int:
    """Length of the card number at the start of `value` (0 if none), trying group prefixes."""
    seps = {c for c in value if not c.isdigit()}
    if len(seps) > 1:
        return 0
    if not seps:
        digits = value
        ok = 13 <= len(digits) <= 19 and card_brand_ok(digits) and luhn_ok(digits)
        return len(value) if ok else 0
    sep = seps.pop()
    groups = value.split(sep)
    for k in range(len(groups), 2, -1):
        digits = "".join(groups[:k])
        if 13 <= len(digits) <= 19 and card_brand_ok(digits) and luhn_ok(digits):
            return len(sep.join(groups[:k]))
    return 0


def _numeric(text: str) -> Iterator[Span]:
    for m in _NUMERIC.finditer(text):
        kind = m.lastgroup
        s, e = m.span()
        if kind == "iban" or kind == "nino":
            s -= 3 if text[s - 1] == " " else 2
            yield from _iban_nino(text, kind, s, e)
            continue
        if not _free_left(text, s):
            continue
        value = m.group()
        if kind == "ip":
            if _free_right(text, e) and _ip4(text, s, e):
                yield Span(s, e, DETECTOR, "ip_address")
        elif kind == "ssn":
            if _free_right(text, e) and ssn_ok(value[:3], value[4:6], value[7:]):
                yield Span(s, e, DETECTOR, "us_ssn")
        elif kind == "nanp":
            if value[0] in "23456789" and _free_right(text, e):
                yield Span(s, e, DETECTOR, "phone")
        elif kind == "natl":
            if _free_right(text, e) and _phone_digits_ok(value, 10, 11):
                yield Span(s, e, DETECTOR, "phone")
        else:
            n = _card(value)
            if n and _free_right(text, s + n):
                yield Span(s, s + n, DETECTOR, "payment_card")


def _phones(text: str) -> Iterator[Span]:
    if "+" in text:
        for m in _E164.finditer(text):
            s, e = m.span()
            if (s == 0 or text[s - 1] not in _ALNUM) and _free_right(text, e):
                value = m.group()
                if value.count(".") == 1:
                    continue  # a signed decimal, not a dotted phone number
                if _phone_digits_ok(value, 8, 15):
                    yield Span(s, e, DETECTOR, "phone")
    for m in _NANP_PAREN.finditer(text):
        s, e = m.span()
        if (s == 0 or text[s - 1] not in _ALNUM) and _free_right(text, e):
            yield Span(s, e, DETECTOR, "phone")


def _iban_nino(text: str, kind: str | None, s: int, e: int) -> Iterator[Span]:
    """IBANs and NINOs start with two letters, found from the numeric pass's first digit."""
    if s > 0 and text[s - 1] in _ALNUM:
        return
    value = text[s:e]
    if kind == "nino":
        if not _free_right(text, e) or value[:2] in _BAD_NINO:
            return
        if value[0] not in _NINO_1 or value[1] not in _NINO_2:
            return
        if " " in value and value.count(" ") != 4:
            return
        yield Span(s, e, DETECTOR, "uk_nino")
        return
    want = IBAN_LENGTHS.get(value[:2])
    if want is None or value[2] == " ":
        return
    count = 0
    end = s
    for i in range(s, e):
        if text[i] != " ":
            count += 1
            if count == want:
                end = i + 1
                break
    if count != want or not _free_right(text, end):
        return
    if iban_ok(text[s:end].replace(" ", "")):
        yield Span(s, end, DETECTOR, "iban")


def _emails(text: str) -> Iterator[Span]:
    for m in _EMAIL_DOMAIN.finditer(text):
        at = m.start()
        s = at
        while s > 0 and text[s - 1] in _LOCAL and at - s < 64:
            s -= 1
        while s < at and text[s] in ".-+":
            s += 1
        if s == at or text[s:at] == "git":
            continue
        token_start = max(text.rfind(" ", 0, s), text.rfind("\n", 0, s)) + 1
        if "://" in text[token_start:s]:
            continue  # user:password@host inside a URL, not a mailbox
        domain = m.group(1).lower()
        if domain.endswith(_RESERVED_DOMAINS) or domain.endswith(_RESERVED_TLDS):
            continue
        yield Span(s, m.end(), DETECTOR, "email")


def _ipv6(text: str) -> Iterator[Span]:
    pos = 0
    n = len(text)
    while True:
        m = _IPV6_CORE.search(text, pos)
        if m is None:
            return
        s, e = m.start(), m.end()
        while s > 0 and text[s - 1] in _HEXCOLON:
            s -= 1
        while e < n and text[e] in _HEXCOLON:
            e += 1
        pos = e
        value = text[s:e].rstrip(".")
        if sum(1 for g in value.split(":") if g) < 3:
            continue
        if (s > 0 and text[s - 1] in _ALNUM) or (e < n and text[e] in _ALNUM):
            continue
        try:
            addr = ipaddress.IPv6Address(value)
        except ValueError:
            continue
        if addr.is_global and (e >= n or text[e] != "/"):
            yield Span(s, s + len(value), DETECTOR, "ip_address")


def find_pii(text: str) -> list[Span]:
    """All PII spans in `text`."""
    out = list(_numeric(text))
    out.extend(_phones(text))
    if "@" in text:
        out.extend(_emails(text))
    out.extend(_ipv6(text))
    return out
