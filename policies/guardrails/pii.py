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

import bisect
import ipaddress
import itertools
import re
import socket
import string
from collections.abc import Iterator

from policies.guardrails import checks
from policies.guardrails.checks import (
    DENSE_FINDINGS,
    IBAN_LENGTHS,
    MEMO_MAX,
    card_ok,
    iban_ok,
    ssn_ok,
)
from policies.guardrails.spans import Span

DETECTOR = "pii"
# A Span built without the named-tuple constructor's Python frame, for the loops that may run once
# per few characters of hostile text (every field given).
_new = tuple.__new__

# One pass for every digit-led shape: a single leading class keeps CPython's fast prefix scan,
# the alternatives after it dispatch on what that first character was.
_NUMERIC = re.compile(
    # Every shape goes on after its first digit with a digit, a space, a dot or a dash: one look
    # refuses the last digit of each number in C before the alternatives are tried.
    # A digit after a digit starts none of them (each needs a letter, a space or no digit before
    # its first digit): refused at once (`4 934 93…` tried the lookbehinds below at every digit).
    r"[0-9](?<![0-9][0-9])(?=[0-9 .\-])(?:"
    r"(?P<iban>(?<=[A-Za-z][A-Za-z][0-9])[0-9](?:[ \-]?[A-Za-z0-9]{4}){2,7}"
    r"(?:[ \-]?[A-Za-z0-9]{1,4})?)"
    r"|(?P<nino>(?:(?<=[A-Za-z][A-Za-z][0-9])|(?<=[A-Za-z][A-Za-z] [0-9]))[0-9] ?[0-9]{2} ?[0-9]{2}"
    r" ?[A-Da-d])"
    # Every other shape has at least 7 more digits/separators: one cheap look rejects the
    # short numbers that fill code and logs before any alternative is tried. A second look
    # needs what each of them starts with: two more digits, or an IP's dot within three. Text
    # of short groups (`01 01 01 …`, `12-12-…`) passes the first look at every digit and then
    # failed each alternative in turn (1.8-2.1x the cost of prose); it stops here.
    # A number glued to a word, a number or a sign on its left (`_LEFT_STOP`) is none of these
    # (checked below as well): refused before any look, so a text of such numbers
    # (`820858.2820858.2…`, no finding) no longer tries every alternative at every digit.
    # What each shape needs first, the second look: three digits (`card`, `ssn9`, `natl`), two and
    # a separator and 2-3 digits and a separator and four digits (`ssn`, `nanp`), two after a 0
    # and a separator and two (`natl`), or an IP's dot within three (`4 934 934…` failed `ssn`
    # and `nanp` at every number).
    r"|(?<![A-Za-z0-9_.+\-][0-9])(?=[0-9 .\-]{6})"
    r"(?=[0-9]{3}|[0-9]{2}[\-. ][0-9]{2,3}[\-. ][0-9]{4}|(?<=0)[0-9]{2}[ \-][0-9]{2}"
    r"|[0-9]{0,2}\.)(?:"
    r"(?P<ip>[0-9]{0,2}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3})"
    r"|(?P<ssn>[0-9]{2}(?P<s0>[\-. ])[0-9]{2}(?P=s0)[0-9]{4})"
    r"|(?P<nanp>[0-9]{2}(?P<s1>[\-. ])[2-9][0-9]{2}(?P=s1)[0-9]{4})"
    # Trunk-0 national numbers in groups: `020 7946 0958`, `0490 75 40 81`, `0688 872 49 99`.
    r"|(?P<natl>(?<=0)[0-9]{2,4}+(?:[ \-][0-9]{2,7}+){1,4}+)"
    # Possessive, as `natl` above: each digit is taken one way only and nothing follows to
    # backtrack for, so the same match, without the state a greedy repeat of a group saves per
    # digit (a text of cards paid ~0.3 µs a card for it).
    r"|(?P<card>[0-9]{3}(?:[ \-]?[0-9]){9,18}+)"
    # Nine bare digits: a US SSN only right after its label (`SSN: 078051123`), checked below.
    r"|(?P<ssn9>[0-9]{8}(?![0-9]))"
    r"))"
)
# The label that makes nine bare digits an SSN: `SSN`, `SSN#`, `social security (number|no)`,
# maybe with `is`, right before them.
_SSN_LABEL = re.compile(
    r"(?:\bssn|\bss\s*#|social\s+security(?:\s+(?:number|no|num)\b)?)(?:\s+(?:is|was|of))?"
    r"[^0-9a-z\n]{0,12}$",
    re.IGNORECASE,
)
# The phone shapes below refuse a number glued on its left in the regex (as `_NUMERIC` does), so a
# refused candidate never runs over the start of the number after it.
_E164 = re.compile(r"\+(?<![A-Za-z0-9_]\+)[1-9][0-9 ().\-]{6,22}[0-9]")
# The same numbers dialled with the `00` international prefix, with separators (`001-518-640-0854`).
_INTL_00 = re.compile(r"0(?<![A-Za-z0-9_.+\-]0)0[1-9][0-9]{0,3}[ \-][0-9 \-]{5,20}[0-9]")
# Groups before a number that make it the tail of an IBAN-like code (`DE89 A704 0044 …`): at
# least one group mixes letters and digits.
_GROUPS_BEFORE = re.compile(r"(?:[A-Za-z0-9]{1,4} ){1,8}$")
# What `_in_code_groups` reads before a number, and `_phone_end` after a candidate's end: a phone
# candidate's verdict is a function of `text[s - _GROUPS_BACK : e + _PHONE_AFTER]` (its regex
# match `text[s:e]` and that much either side), kept for the scan on it, so a text repeating one
# number pays for its checks once. Kept for windows wholly inside the text, at most MEMO_MAX;
# and a memo that found nothing again in its first `_MEMO_TRIAL` windows is no longer used, so
# a text of distinct numbers pays for their checks alone, not for keys as well (each verdict found
# again gives it room up to MEMO_MAX). The same for the other verdicts kept on a window below.
_GROUPS_BACK = 45  # `_GROUPS_BEFORE` takes at most 40 (and `_MIXED_GROUP` looks further)
_PHONE_AFTER = 8
_MEMO_TRIAL = 128
# A group of `_GROUPS_BEFORE` that mixes letters and digits has a letter next to a digit.
_MIXED_GROUP = re.compile(r"[A-Za-z][0-9]|[0-9][A-Za-z]")
_LETTER = re.compile(r"[A-Za-z]")  # what `_MIXED_GROUP` needs, found by a fast scan
# The first digit groups of a national candidate (`_NUMERIC`'s `natl`, or `nanp` led by a 0:
# digits, single separators) that hold 10-11 digits, the most there are: the whole candidate if
# it holds 10-11 (`_phone_digits_ok`: it has no doubled separator), else `_groups_head`'s cut,
# in one match.
_NATL_HEAD = re.compile(r"[0-9](?:[ .\-]?[0-9]){9,10}(?![0-9])")
# `_groups_head(value, 10, 17, intl=True)` of a `00` candidate (`_INTL_00`: digits, runs of
# separators), in one match: the first groups holding 10-17 digits, the most there are, before
# any later group led by `00` and a digit.
_INTL_HEAD = re.compile(r"[0-9](?:[0-9]|[ \-]+(?!00[0-9])[0-9]){9,16}(?![0-9])")
_NANP_PAREN = re.compile(r"\((?<![A-Za-z0-9_]\()[2-9][0-9]{2}\) ?[2-9][0-9]{2}[\-. ][0-9]{4}")
_NINO_1 = frozenset("ABCEGHJKLMNOPRSTWXYZ")
_NINO_2 = frozenset("ABCEGHJKLMNPRSTWXYZ")
# From an `@` with a local-part character before it (one with none is no mailbox: `@b.co@b.co…`
# cost a Python step each).
_EMAIL_DOMAIN = re.compile(
    r"@(?<=[A-Za-z0-9._%+\-]@)([A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9\-]+)*"
    r"\.(?:[A-Za-z]{2,24}|xn--[A-Za-z0-9\-]{1,59}))"
    r"(?![A-Za-z0-9\-])"
)
_LOCAL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
_RESERVED_DOMAINS = ("example.com", "example.net", "example.org")
_LOCAL_MAX = 64  # the longest local part (RFC 5321)
_LOCAL_RUN = re.compile(r"[A-Za-z0-9._%+\-]{0,64}+")  # on the reversed text: `_LOCAL`, backwards
_RESERVED_TLDS = (".example", ".test", ".invalid", ".localhost", ".local")
# An IPv6 address worth reporting has three groups, so three in a row around its `::`, or three
# colons in a row of groups; times (12:00:03), ports and `std::vector` do not. Searched from the
# address's first colon, so the scan only stops at colons (a leading hex class would be tried at
# every a-f of prose), and each colon costs one look in C whatever follows it (`::::`, `://a:`):
# `:h:h:`, or after a hex digit `::h:` / `:h::h` (h: 1-4 hex digits, each run taken whole).
_IPV6_AT = re.compile(
    r":(?:[0-9A-Fa-f]{1,4}+:[0-9A-Fa-f]{1,4}+:"
    r"|(?<=[0-9A-Fa-f]:)(?::[0-9A-Fa-f]{1,4}+:|[0-9A-Fa-f]{1,4}+::[0-9A-Fa-f]))"
)
_IPV6_MAX = 45  # the longest address: six groups and a dotted IPv4 tail
_HEXCOLON_CHARS = "0123456789abcdefABCDEF:."
_HEXCOLON_RUN = re.compile(r"[0-9A-Fa-f:.]*+")

_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_LEFT_STOP = _ALNUM | frozenset(".-+")
_NOT_LETTERS = str.maketrans("", "", "0123456789 -")
_BAD_NINO = ("BG", "GB", "NK", "KN", "TN", "NT", "ZZ")
# The IPv4 networks that are not global for `ipaddress` (Python 3.11): its private networks (IANA
# special-purpose: loopback, RFC 1918, link-local, documentation, benchmarking, reserved) and the
# shared address space. Keyed by first octet; an address whose first octet is not a key is global.
_NOT_GLOBAL_V4_NETS = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/29", "192.0.0.170/31", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4", "255.255.255.255/32",
)  # fmt: skip


def _by_first_octet(nets: tuple[str, ...]) -> dict[int, tuple[tuple[int, int], ...]]:
    out: dict[int, list[tuple[int, int]]] = {}
    for net in map(ipaddress.IPv4Network, nets):
        shift = 32 - net.prefixlen
        first = int(net.network_address)
        for a in range(first >> 24, (int(net.broadcast_address) >> 24) + 1):
            out.setdefault(a, []).append((first >> shift, shift))
    return {a: tuple(r) for a, r in out.items()}


_NOT_GLOBAL_V4 = _by_first_octet(_NOT_GLOBAL_V4_NETS)
# The IPv6 networks that are not global for `ipaddress` (Python 3.11), as (network >> shift, shift).
_NOT_GLOBAL_V6 = tuple(
    (int(net.network_address) >> (128 - net.prefixlen), 128 - net.prefixlen)
    for net in map(
        ipaddress.IPv6Network,
        ("::1/128", "::/128", "::ffff:0:0/96", "100::/64", "2001::/23", "2001:2::/48",
         "2001:db8::/32", "2001:10::/28", "fc00::/7", "fe80::/10"),
    )
)  # fmt: skip


def _disjoint(nets: tuple[tuple[int, int], ...]) -> tuple[list[int], list[int]]:
    """The first and last addresses of `(network >> shift, shift)` networks, as sorted disjoint
    ranges (overlapping ones merged)."""
    ranges: list[list[int]] = []
    for lo, hi in sorted((net << shift, ((net + 1) << shift) - 1) for net, shift in nets):
        if ranges and lo <= ranges[-1][1] + 1:
            ranges[-1][1] = max(ranges[-1][1], hi)
        else:
            ranges.append([lo, hi])
    return [r[0] for r in ranges], [r[1] for r in ranges]


# The addresses of those networks as sorted ranges: an address is in one if it is in the last range
# starting at or before it (one bisect; comparing it with every network cost a text of distinct
# addresses ~1 µs each).
_NOT_GLOBAL_V6_FIRST, _NOT_GLOBAL_V6_LAST = _disjoint(_NOT_GLOBAL_V6)
# The same ranges for the C scan (`_checks_c.pii_ipv6`): each range's first and last address,
# 16 bytes each, big-endian.
_NOT_GLOBAL_V6_BYTES = b"".join(
    lo.to_bytes(16, "big") + hi.to_bytes(16, "big")
    for lo, hi in zip(_NOT_GLOBAL_V6_FIRST, _NOT_GLOBAL_V6_LAST, strict=True)
)
# How far either side of an IPv4 address `_ip4` looks (`version `, `.in-addr.`, the boundaries).
_IP_CONTEXT = 9


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


def _extension(text: str, e: int) -> int:
    """End of a phone number with its extension (`x4587`, `x0135`) if one follows, else `e`."""
    if e < len(text) and text[e] in "xX":
        k = e + 1
        while k < len(text) and k - e <= 6 and text[k].isdigit():
            k += 1
        if 2 <= k - e <= 6:
            return k
    return e


def _in_code_groups(text: str, s: int) -> bool:
    """The groups before `text[s]` make it the tail of an IBAN-like code; judged on
    `text[s - 45 : s]` alone (`_GROUPS_BACK`)."""
    # Cheap looks first (a text of phone numbers pays this per number): `_GROUPS_BEFORE` ends
    # with a space, and what it finds is in the window `_MIXED_GROUP` searches here, which needs
    # a letter (found by a fast scan: `_MIXED_GROUP`, with no first character to scan for, costs
    # ~1.3 µs over a window of digits), so its search starts just before the first letter.
    if not s or text[s - 1] != " ":
        return False
    lo = max(0, s - _GROUPS_BACK)
    if (letter := _LETTER.search(text, lo, s)) is None or not _MIXED_GROUP.search(
        text, max(lo, letter.start() - 1), s
    ):
        return False
    m = _GROUPS_BEFORE.search(text, lo, s)
    if m is None:
        return False
    return _MIXED_GROUP.search(m.group()) is not None


def _phone_end(text: str, e: int) -> int:
    """Where a phone candidate ending at `e` really ends (after an extension), or -1; judged on
    `text[e : e + 8]` alone (`_PHONE_AFTER`): an extension of up to 6 digits after an `x`, and
    the two characters `_free_right` reads after it."""
    e = _extension(text, e)
    return e if _free_right(text, e) else -1


def _ip4(text: str, s: int, e: int) -> bool:
    """A public IPv4 address at `text[s:e]` (free on both sides), judged on `text[s - 9 : e + 9]`
    alone (`_IP_CONTEXT`)."""
    if not (_free_left(text, s) and _free_right(text, e) and _ip4_global(text[s:e])):
        return False
    if text[e : e + 9].lower() == ".in-addr.":
        return False  # reverse-DNS labels (`1.0.0.127.in-addr.arpa`) are the address reversed
    before = text[max(0, s - 9) : s].lower()
    return not (before.endswith("v") or before.rstrip().endswith("version"))


def _ip4_global(value: str) -> bool:
    """`ipaddress.IPv4Address(value).is_global` (False when it is no address: an octet over 255,
    or a leading zero), in int arithmetic: a text dense with addresses pays a few steps each."""
    octets = value.split(".")
    if any(len(o) > 1 and o[0] == "0" for o in octets):
        return False
    a, b, c, d = map(int, octets)
    if a > 255 or b > 255 or c > 255 or d > 255:
        return False
    ranges = _NOT_GLOBAL_V4.get(a)
    if ranges is None:
        return True
    ip = a << 24 | b << 16 | c << 8 | d
    return not any(ip >> shift == net for net, shift in ranges)


# Everything but digits that the phone regexes (`_E164`, `_INTL_00`, `_NUMERIC`'s `natl` and
# `nanp`) take.
_PHONE_SEPARATORS = b" ().-+"


def _phone_digits_ok(value: str, lo: int, hi: int) -> bool:
    """Between `lo` and `hi` digits and no doubled separator in `value` (of the phone regexes:
    ASCII digits and separators), counted in C."""
    if "  " in value or ".." in value or "--" in value:
        return False
    # What is left once the separators are deleted (bytes: one C pass) is the digits.
    n = len(value.encode().translate(None, _PHONE_SEPARATORS))
    return lo <= n <= hi


# The phone regexes' separators, each made a space: a candidate's digit groups by one split.
_SEPARATOR_SPACE = str.maketrans("().-+", "     ")


def _groups_head(value: str, lo: int, hi: int, intl: bool = False) -> int:
    """Length of the longest run of first digit groups of `value` (a phone candidate: ASCII
    digits and separators) that holds `lo`-`hi` digits, or 0: the phone a candidate that took
    the groups after it holds (`020 7946 0958 24 hours`). If `intl`, a later group led by `00`
    (`0033`, `001`) starts the next number, not this one's."""
    n = head = i = 0
    for group in value.translate(_SEPARATOR_SPACE).split(" "):
        if group:
            if intl and n and group.startswith("00") and len(group) >= 3:
                break
            n += len(group)
            if n > hi:
                break
            i += len(group)
            if n >= lo:
                head = i
        i += 1  # the separator after it
    return head


# A card candidate that starts with four groups of four (one separator), then ends, or goes on
# with the other separator or with a group of four digits or more.
_CARD_4X4 = re.compile(r"[0-9]{4}([ \-])[0-9]{4}\1[0-9]{4}\1[0-9]{4}(?:$|(?!\1)[ \-]|\1[0-9]{4})")


def _card(value: str) -> int:
    """Length of the card number at the start of `value` (0 if none): one separator style per
    number, trying group prefixes, so `4012…1881 4012-8888-…` yields the first card alone.
    `value` is the numeric regex's card: ASCII digits, spaces and dashes, a digit first."""
    # The common layout first: four groups of four, alone or before the other separator or a
    # group of four digits or more. Of the group prefixes below, only those four hold 13-19
    # digits, so the number is theirs or none.
    if len(value) >= 19 and value[4] in " -" and (m := _CARD_4X4.match(value)) is not None:
        digits = value[:19].replace(m.group(1), "")
        return 19 if card_ok(digits) else 0
    lead = value.lstrip("0123456789")
    if not lead:  # digits only
        n = len(value)
        return n if 13 <= n <= 19 and card_ok(value) else 0
    i = len(value) - len(lead)  # the first separator
    sep = lead[0]
    # The number's own separator is its first; a different one starts the next number.
    cut = value.find("-" if sep == " " else " ", i)
    head = value[:cut] if cut >= 0 else value
    if 13 <= i <= 19 and card_ok(value[:i]):
        return i  # an unseparated number followed by another
    # The first k groups (k >= 3, most first) whose digits are 13-19 long: the digits of the
    # first k of `head` (single separators between digit groups) are a prefix of all of them.
    groups = head.split(sep)
    ends = list(itertools.accumulate(map(len, groups)))  # digits in the first k: ends[k - 1]
    digits = head.replace(sep, "")
    for k in range(min(len(groups), bisect.bisect_right(ends, 19)), 2, -1):
        n = ends[k - 1]
        if n < 13:
            break
        if card_ok(digits[:n]):
            return n + k - 1  # with its k - 1 separators
    return 0


def _numeric_py(text: str) -> list[Span]:
    out: list[Span] = []
    add = out.append
    # Verdicts kept for this scan (at most MEMO_MAX each), so a text repeating one address or
    # card number pays for its checks once: an address's on its context window (`_ip4` reads
    # nothing else), a card's on the digits the regex took.
    seen_ip: dict[str, bool] = {}
    seen_card: dict[str, int] = {}
    seen_label: dict[str, bool] = {}  # an SSN label's, on the text it reads
    # An IBAN's or a NINO's end less its start (-1: none), on `text[s - 1 : e + 2]`: all that
    # `_iban_nino` reads of a candidate `text[s:e]`.
    seen_iban: dict[str, int] = {}
    seen_nino: dict[str, int] = {}
    room_iban = room_nino = _MEMO_TRIAL  # windows each may still keep (`_MEMO_TRIAL`)
    # A national phone candidate's end less its start (-1: none), on its window (`_natl_end`).
    seen_natl: dict[str, int] = {}
    room_natl = _MEMO_TRIAL
    n_text = len(text)
    ips = 0  # found so far: from DENSE_FINDINGS on, the regex and the boundaries decide
    pos = 0
    while (m := _NUMERIC.search(text, pos)) is not None:
        pos = m.end()
        kind = m.lastgroup
        s, e = m.span()
        if kind == "ip":
            if ips >= DENSE_FINDINGS:  # `_free_left` and `_free_right`, inline
                c = text[e] if e < n_text else " "
                if (s == 0 or text[s - 1] not in _LEFT_STOP) and not (
                    c in _ALNUM or (c in ".-/" and e + 1 < n_text and text[e + 1].isdigit())
                ):
                    add(_new(Span, (s, e, DETECTOR, "ip_address", 2, True)))
                continue
            if s < _IP_CONTEXT or e + _IP_CONTEXT > n_text:
                ok = _ip4(text, s, e)  # a window cut by the text's edge: judged on its own
            else:
                key = text[s - _IP_CONTEXT : e + _IP_CONTEXT]
                ok = seen_ip.get(key)  # type: ignore[assignment]
                if ok is None:
                    ok = _ip4(text, s, e)
                    if len(seen_ip) < MEMO_MAX:
                        seen_ip[key] = ok
            if ok:
                ips += 1
                add(_new(Span, (s, e, DETECTOR, "ip_address", 2, True)))
            continue
        if kind == "iban" or kind == "nino":
            s -= 3 if text[s - 1] == " " else 2
            iban = kind == "iban"
            if not s or e + 2 > n_text or (room_iban if iban else room_nino) <= 0:
                out.extend(_iban_nino(text, kind, s, e))
                continue
            seen = seen_iban if iban else seen_nino
            key = text[s - 1 : e + 2]
            if (n := seen.get(key, -2)) == -2:
                n = -1
                for span in _iban_nino(text, kind, s, e):
                    add(span)
                    n = span.end - s
                seen[key] = n
                if iban:
                    room_iban -= 1
                else:
                    room_nino -= 1
                continue
            if iban:
                room_iban = MEMO_MAX - len(seen)
            else:
                room_nino = MEMO_MAX - len(seen)
            if n >= 0:
                add(_new(Span, (s, s + n, DETECTOR, "iban" if iban else "uk_nino", 2, True)))
            continue
        if s and text[s - 1] in _LEFT_STOP:  # `_free_left`, inline
            continue
        value = m.group()
        if kind == "card":  # the most frequent kind of a text of numbers: tested first
            n = seen_card.get(value, -1)
            if n < 0:
                n = _card(value)
                if len(seen_card) < MEMO_MAX:
                    seen_card[value] = n
            # `_free_right(text, s + n)`, inline.
            if n and (
                (j := s + n) >= n_text
                or not (
                    (c := text[j]) in _ALNUM
                    or (c in ".-/" and j + 1 < n_text and text[j + 1].isdigit())
                )
            ):
                add(_new(Span, (s, j, DETECTOR, "payment_card", 2, True)))
                pos = j  # the rest of the run may hold the next card
        elif kind == "ssn":
            if _free_right(text, e) and ssn_ok(value[:3], value[4:6], value[7:]):
                add(_new(Span, (s, e, DETECTOR, "us_ssn", 2, True)))
        elif kind == "ssn9":
            # The label search reads `text[s - 41 : s]` (`\b` looks one before its window),
            # its verdict kept for this scan.
            key = text[max(0, s - 41) : s]
            labelled = seen_label.get(key)  # type: ignore[assignment]
            if labelled is None:
                labelled = _ssn_labelled(text, s)
                if len(seen_label) < MEMO_MAX:
                    seen_label[key] = labelled
            if labelled and _free_right(text, e) and ssn_ok(value[:3], value[3:5], value[5:]):
                add(_new(Span, (s, e, DETECTOR, "us_ssn", 2, True)))
        elif kind == "nanp" and value[0] in "23456789":
            # `_phone_end(text, e)`, inline where no extension can follow.
            if e < n_text and (
                (c := text[e]) in _ALNUM
                or (c in ".-/" and e + 1 < n_text and text[e + 1].isdigit())
            ):
                if c not in "xX" or (end := _phone_end(text, e)) < 0:
                    continue
            else:
                end = e
            add(_new(Span, (s, end, DETECTOR, "phone", 2, True)))
        elif kind == "natl" or (kind == "nanp" and value[0] == "0"):
            if s >= _GROUPS_BACK and e + _PHONE_AFTER <= n_text and room_natl > 0:
                key = text[s - _GROUPS_BACK : e + _PHONE_AFTER]
                if (end := seen_natl.get(key, -2)) == -2:
                    end = _natl_end(text, s, e, value)
                    seen_natl[key] = end - s if end >= 0 else -1
                    room_natl -= 1
                else:
                    room_natl = MEMO_MAX - len(seen_natl)
                    if end >= 0:
                        end += s
            else:
                end = _natl_end(text, s, e, value)
            if end >= 0:
                add(_new(Span, (s, end, DETECTOR, "phone", 2, True)))
                pos = end
    return out


def _ssn_labelled(text: str, s: int) -> bool:
    """Nine bare digits at `text[s]` follow an SSN label (`_SSN_LABEL`); judged on
    `text[s - 41 : s]` alone."""
    return _SSN_LABEL.search(text, max(0, s - 40), s) is not None


def _numeric(text: str) -> list[Span]:
    """The IP addresses, IBANs, NINOs, cards, SSNs and national phones of `_numeric_py`: in C
    where built (one call: a text of numbers paid ~1-3 µs of Python per candidate)."""
    if _C is not None:
        return _C.pii_numeric(
            text, Span, DETECTOR, _NUMERIC_TYPES, 2, True, DENSE_FINDINGS,
            _NOT_GLOBAL_V4_BYTES, _IBAN_TABLE, _ssn_labelled,
        )  # fmt: skip
    return _numeric_py(text)


def _natl_end(text: str, s: int, e: int, value: str) -> int:
    """End of the trunk-0 national phone that the numeric regex's candidate `value`
    (`text[s:e]`) starts, or -1; judged on `text[s - _GROUPS_BACK : e + _PHONE_AFTER]` alone."""
    # The regex took every group it could: a phone may be the first ones alone (`020 7946 0958
    # 24 hours`), and the scan goes on after it.
    if (m := _NATL_HEAD.match(value)) is None:
        return -1
    e = s + m.end()
    if _in_code_groups(text, s):
        return -1  # the digits of an IBAN's groups
    return _phone_end(text, e)


def _phones(text: str) -> list[Span]:
    """The phones of `_phones_py`: its E.164, `(415) 555-0132` and `00` loops in C where built
    (two calls: a text of phones paid ~2-3 µs of Python per phone)."""
    if _C is None:
        return _phones_py(text)
    out = _C.pii_phones(text, Span, DETECTOR, "phone", 2, True)
    out.extend(_C.pii_intl(text, Span, DETECTOR, "phone", 2, True))
    return out


def _phones_py(text: str) -> list[Span]:
    out: list[Span] = []
    add = out.append
    n = len(text)
    if "+" in text:
        # An E.164 candidate's end less its start (-1: none) on `text[s - 1 : e + 8]`, all that
        # `_e164_end` reads, kept for this scan.
        seen_e164: dict[str, int] = {}
        room = _MEMO_TRIAL
        for m in _E164.finditer(text):
            s, e = m.span()
            if s and e + _PHONE_AFTER <= n and room > 0:
                key = text[s - 1 : e + _PHONE_AFTER]
                if (end := seen_e164.get(key, -2)) == -2:
                    end = _e164_end(text, s, e, m.group())
                    seen_e164[key] = end - s if end >= 0 else -1
                    room -= 1
                else:
                    room = MEMO_MAX - len(seen_e164)
                    if end >= 0:
                        end += s
            else:
                end = _e164_end(text, s, e, m.group())
            if end >= 0:
                add(_new(Span, (s, end, DETECTOR, "phone", 2, True)))
    for m in _NANP_PAREN.finditer(text):
        s, e = m.span()
        if (s == 0 or text[s - 1] not in _ALNUM) and (end := _phone_end(text, e)) > 0:
            add(_new(Span, (s, end, DETECTOR, "phone", 2, True)))
    _intl_phones(text, out)
    return out


def _intl_phones(text: str, out: list[Span]) -> None:
    """The phones dialled with `00` (`_INTL_00`), added to `out`."""
    add = out.append
    n = len(text)
    # A `00` candidate's verdict on its window (`_intl`), kept for this scan: where the scan goes
    # on and the phone's end, less its start.
    seen: dict[str, tuple[int, int]] = {}
    room = _MEMO_TRIAL
    pos = 0
    while (m := _INTL_00.search(text, pos)) is not None:
        s, e = m.span()
        if s >= _GROUPS_BACK and e + _PHONE_AFTER <= n and room > 0:
            key = text[s - _GROUPS_BACK : e + _PHONE_AFTER]
            if (got := seen.get(key)) is None:
                pos, end = _intl(text, s, e, m.group())
                seen[key] = (pos - s, end - s if end >= 0 else -1)
                room -= 1
            else:
                room = MEMO_MAX - len(seen)
                pos = s + got[0]
                end = s + got[1] if got[1] >= 0 else -1
        else:
            pos, end = _intl(text, s, e, m.group())
        if end >= 0:
            add(_new(Span, (s, end, DETECTOR, "phone", 2, True)))


def _e164_end(text: str, s: int, e: int, value: str) -> int:
    """End of the E.164 phone that the candidate `value` (`text[s:e]`) starts, or -1; judged on
    `text[s - 1 : e + _PHONE_AFTER]` alone. (The regex refuses a `+` glued to a word on its left.)
    """
    # `_phone_digits_ok(value, 8, 15)`, inline: a text of phones pays this per phone.
    if (
        "  " in value
        or ".." in value
        or "--" in value
        or not 8 <= len(value.encode().translate(None, _PHONE_SEPARATORS)) <= 15
    ):
        # The regex took groups after the number (`+44 20 7946 0958 2024 1130`): the phone may
        # be its first ones alone.
        if not (k := _groups_head(value, 8, 15)) or not _phone_digits_ok(value := value[:k], 8, 15):
            return -1
        e = s + k
    if value.count(".") == 1:
        return -1  # a signed decimal, not a dotted phone number
    # `_phone_end(text, e)`, inline where no extension can follow.
    n = len(text)
    if e < n and ((c := text[e]) in _ALNUM or (c in ".-/" and e + 1 < n and text[e + 1].isdigit())):
        return _phone_end(text, e) if c in "xX" else -1
    return e


def _intl(text: str, s: int, e: int, value: str) -> tuple[int, int]:
    """Where the scan goes on after the `00` phone candidate `value` (`text[s:e]`), and the end
    of the phone it starts (-1: none); judged on `text[s - _GROUPS_BACK : e + _PHONE_AFTER]`
    alone."""
    if not _phone_digits_ok(value, 10, 17):
        # The groups after the number, maybe the next number (`0033 1 42 68 53 00 0033 …`):
        # the phone may be the first ones alone, and the scan goes on after it.
        if (m := _INTL_HEAD.match(value)) is None or not _phone_digits_ok(
            value[: (k := m.end())], 10, 17
        ):
            return e, -1
        e = s + k
    if _free_left(text, s) and not _in_code_groups(text, s):
        return e, _phone_end(text, e)
    return e, -1


def _iban_nino(text: str, kind: str | None, s: int, e: int) -> Iterator[Span]:
    """IBANs and NINOs start with two letters, found from the numeric pass's first digit."""
    if s > 0 and text[s - 1] in _ALNUM:
        return
    value = text[s:e].upper()
    if kind == "nino":
        if not _free_right(text, e) or value[:2] in _BAD_NINO:
            return
        if value[0] not in _NINO_1 or value[1] not in _NINO_2:
            return
        if value.count(" ") not in (0, 4) and value.find(" ") != 2:
            return  # `AB 12 34 56 C`, `AB123456C`, `AB 123456C`
        if value.count(" ") == 1 and value.find(" ") != 2:
            return
        yield _new(Span, (s, e, DETECTOR, "uk_nino", 2, True))
        return
    want = IBAN_LENGTHS.get(value[:2])
    if want is None or value[2] in " -":
        return
    # `text[s:e]` is the numeric regex's: ASCII letters and digits, spaces and dashes.
    seg = text[s:e]
    letters = seg.translate(_NOT_LETTERS)
    if letters and not (letters.isupper() or letters.islower()):
        return  # `LV80 bANK …`: mixed case is not an IBAN
    if len(seg) - seg.count(" ") - seg.count("-") < want:
        return  # fewer characters than the country's IBANs have
    # Where the `want`-th character that is no separator ends: `want` and the separators before.
    n, end = -1, want
    while end != n:
        n, end = end, want + seg.count(" ", 0, end) + seg.count("-", 0, end)
    end += s
    if not _free_right(text, end):
        return
    if iban_ok(text[s:end].replace(" ", "").replace("-", "").upper()):
        yield _new(Span, (s, end, DETECTOR, "iban", 2, True))


def _mailbox(text: str, rev: str, at: int, end: int) -> int:
    """Start of the mailbox whose domain is `text[at:end]` (`@` and domain), or -1 if it is none;
    judged on `text[at - 64 : end]` alone (`_LOCAL_MAX`) and the text's start. `rev` is the text
    reversed: the local part is the run of local characters before the `@`, up to 64, found there
    by one match."""
    s = at - _local_len(rev, at)
    while s < at and text[s] in ".-+":
        s += 1
    if s == at:
        return -1
    local = text[s:at]
    if local == "git":
        return -1
    if local.count(".") >= 2 and local.replace(".", "").isdigit():
        return -1  # a Message-ID (`<1424802164.20800.165263@host>`), not a mailbox
    domain = text[at + 1 : end].lower()
    if domain.endswith(_RESERVED_DOMAINS) or domain.endswith(_RESERVED_TLDS):
        return -1
    return s


def _local_len(rev: str, at: int) -> int:
    """Length of the run of local-part characters (at most 64) before `text[at]`."""
    i = len(rev) - at
    return _LOCAL_RUN.match(rev, i).end() - i  # type: ignore[union-attr]


def _emails(text: str) -> list[Span]:
    """The mailboxes in `text`: in C where built (`_emails_py`'s spans, in one call: a text of
    mailboxes paid ~2 µs of Python per mailbox), else `_emails_py`."""
    if _C is not None:
        return _C.pii_emails(text, Span, DETECTOR, "email", 2, True, DENSE_FINDINGS)
    return _emails_py(text)


def _emails_py(text: str) -> list[Span]:
    out: list[Span] = []
    add = out.append
    rev, n = text[::-1], len(text)
    local_run, dense = _LOCAL_RUN.match, DENSE_FINDINGS
    # A mailbox's verdict is kept for this scan on its window (at most MEMO_MAX of them): a text
    # repeating one address pays for its checks once. From DENSE_FINDINGS mailboxes on, the local
    # part before a domain the regex took is one, whatever it is.
    seen: dict[str, int] = {}
    found = 0
    # The token around a mailbox (from the last space or newline before it) is found by scanning
    # forward from the previous mailbox, once for the whole text: a search back from each one
    # made a text of mailboxes without newlines quadratic (`a@b.co,` 185x prose). A mailbox
    # found after another never starts before the other's local part ends, and a local part holds
    # neither whitespace nor `://`, so nothing between them is missed.
    urls = "://" in text
    space = url = -1  # the last whitespace, and the last `://`, wholly before `done`
    done = 0
    for m in _EMAIL_DOMAIN.finditer(text):
        at, end = m.span()
        if found >= dense:
            back = local_run(rev, n - at).end() - (n - at)  # type: ignore[union-attr]
            if back:
                add(_new(Span, (at - back, end, DETECTOR, "email", 2, True)))
            continue
        if at < _LOCAL_MAX:
            s = _mailbox(text, rev, at, end)
        else:
            key = text[at - _LOCAL_MAX : end]
            back = seen.get(key)  # the local part's length, 0 if it is no mailbox
            if back is None:
                s = _mailbox(text, rev, at, end)
                back = at - s if s >= 0 else 0
                if len(seen) < MEMO_MAX:
                    seen[key] = back
            s = at - back if back else -1
        if s < 0:
            continue
        if urls:
            if s > done:
                space = max(space, text.rfind(" ", done, s), text.rfind("\n", done, s))
                url = max(url, text.rfind("://", max(0, done - 2), s))
                done = s
            if url > space:
                continue  # user:password@host inside a URL, not a mailbox
        found += 1
        add(_new(Span, (s, end, DETECTOR, "email", 2, True)))
    return out


def _ipv6(text: str) -> list[Span]:
    """The IPv6 addresses of `_ipv6_py`, in C where built (one call: a text of addresses paid
    ~3 µs of Python per address)."""
    if _IPV6_C is not None:
        return _IPV6_C(
            text, Span, DETECTOR, "ip_address", 2, True, _NOT_GLOBAL_V6_BYTES, _ip6_global
        )
    return _ipv6_py(text)


def _ipv6_py(text: str) -> list[Span]:
    out: list[Span] = []
    pos = 0
    n = len(text)
    seen: dict[str, bool] = {}  # an address's verdict, kept for this scan (at most MEMO_MAX)
    while (m := _IPV6_AT.search(text, pos)) is not None:
        # The run of hex, colons and dots around it; one longer than an address is none.
        lo = max(0, m.start() - _IPV6_MAX - 1)
        s = lo + len(text[lo : m.start()].rstrip(_HEXCOLON_CHARS))
        e = pos = _HEXCOLON_RUN.match(text, m.end()).end()  # type: ignore[union-attr]
        if (s > 0 and text[s - 1] in _ALNUM) or (e < n and text[e] in _ALNUM):
            continue
        value = text[s:e].rstrip(".")
        if len(value) > _IPV6_MAX:
            continue
        ok = seen.get(value)
        if ok is None:
            groups = value.split(":")
            ok = len(groups) - groups.count("") >= 3 and _ip6_global(value)
            if len(seen) < MEMO_MAX:
                seen[value] = ok
        if ok and (e >= n or text[e] != "/"):
            out.append(_new(Span, (s, s + len(value), DETECTOR, "ip_address", 2, True)))
    return out


def _ip6_global(value: str) -> bool:
    """An IPv6 address (not a netmask) that `ipaddress` calls global, its networks compared in
    int arithmetic (an IPv4-mapped address is left to `ipaddress`)."""
    try:
        # libc's parser, not `ipaddress`'s Python one (most of a finding's cost in a text dense
        # with addresses): the same answers on what reaches here (hex, colons and dots; no
        # `%scope`), checked against it in tests/policies/test_guardrails_per_finding_cost.py.
        ip = int.from_bytes(socket.inet_pton(socket.AF_INET6, value), "big")
    except OSError:
        return False
    if value.lower().startswith("ffff:ffff:"):
        return False  # a netmask
    if ip >> 32 == 0xFFFF:
        return ipaddress.IPv6Address(ip).is_global
    i = bisect.bisect_right(_NOT_GLOBAL_V6_FIRST, ip) - 1
    return i < 0 or ip > _NOT_GLOBAL_V6_LAST[i]


# The C scanners (checks._C, where built and current: a build without them, or one emulating other
# patterns than these, is not used here).
_C = checks._C if hasattr(checks._C, "pii_numeric") else None
if _C is not None and (
    _C.NUMERIC != _NUMERIC.pattern
    or _C.GROUPS_BEFORE != _GROUPS_BEFORE.pattern
    or _C.MIXED_GROUP != _MIXED_GROUP.pattern
    or _C.NATL_HEAD != _NATL_HEAD.pattern
    or _C.CARD_4X4 != _CARD_4X4.pattern
):
    _C = None
# What `_C.pii_numeric` reads of this module: the Span types of (ip, iban, nino, card, ssn,
# phone); the not-global IPv4 networks (`_NOT_GLOBAL_V4`) as first and last address, 4 bytes each,
# big-endian; `checks.IBAN_LENGTHS` as a 26 x 26 table (0: no IBAN country).
_NUMERIC_TYPES = ("ip_address", "iban", "uk_nino", "payment_card", "us_ssn", "phone")
_NOT_GLOBAL_V4_BYTES = b"".join(
    (net << shift).to_bytes(4, "big") + (((net + 1) << shift) - 1).to_bytes(4, "big")
    for net, shift in sorted(set(itertools.chain.from_iterable(_NOT_GLOBAL_V4.values())))
)
_IBAN_TABLE = bytes(
    IBAN_LENGTHS.get(a + b, 0) for a in string.ascii_uppercase for b in string.ascii_uppercase
)
_IPV6_C = getattr(_C, "pii_ipv6", None)


def find_pii(text: str) -> list[Span]:
    """All PII spans in `text`."""
    out = _numeric(text)
    out.extend(_phones(text))
    if "@" in text:
        out.extend(_emails(text))
    out.extend(_ipv6(text))
    return out
