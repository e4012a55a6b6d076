"""A text dense with findings pays each distinct finding's checks once (verdicts kept per scan
on the window they read), IPv4 addresses are judged in int arithmetic, Luhn in C, and the token
around a mailbox is found in one forward pass: the detectors find exactly what they found before,
on random texts that repeat values in changing contexts (so the kept verdicts are used)."""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Iterator

import pytest

from policies.guardrails import checks, pii, secrets
from policies.guardrails.spans import Span, lowered


# The detectors before: every check on every finding.
def _old_luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i & 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _old_ip4(text: str, s: int, e: int) -> bool:
    value = text[s:e]
    octets = value.split(".")
    if any(len(o) > 1 and o[0] == "0" for o in octets):
        return False
    a, b = octets[0], octets[1]
    if a in ("10", "127") or (a == "192" and b == "168") or (a == "172" and 16 <= int(b) <= 31):
        return False
    try:
        addr = ipaddress.IPv4Address(value)
    except ValueError:
        return False
    if not addr.is_global or text[e : e + 9].lower() == ".in-addr.":
        return False
    before = text[max(0, s - 9) : s].lower()
    return not (before.endswith("v") or before.rstrip().endswith("version"))


def _old_card(value: str) -> int:
    """Length of the card number at the start of `value` (0 if none): one separator style per
    number, trying group prefixes, so `4012…1881 4012-8888-…` yields the first card alone."""
    first = value[0:1]
    head = value
    for i, c in enumerate(value):
        if not c.isdigit():
            sep = c
            # The number's own separator is its first; a different one starts the next number.
            other = "-" if sep == " " else " "
            cut = value.find(other, i)
            head = value[:cut] if cut >= 0 else value
            break
    else:
        sep = ""
    if not first:
        return 0
    lead = head.split(sep)[0] if sep else head
    if 13 <= len(lead) <= 19 and checks.card_brand_ok(lead) and _old_luhn(lead):
        return len(lead)  # an unseparated number followed by another
    if not sep:
        return 0
    groups = head.split(sep)
    for k in range(len(groups), 2, -1):
        digits = "".join(groups[:k])
        if 13 <= len(digits) <= 19 and checks.card_brand_ok(digits) and _old_luhn(digits):
            return len(sep.join(groups[:k]))
    return 0


def _old_numeric(text: str) -> Iterator[Span]:
    pos = 0
    while (m := pii._NUMERIC.search(text, pos)) is not None:
        pos = m.end()
        kind = m.lastgroup
        s, e = m.span()
        if kind == "iban" or kind == "nino":
            s -= 3 if text[s - 1] == " " else 2
            yield from pii._iban_nino(text, kind, s, e)
            continue
        if not pii._free_left(text, s):
            continue
        value = m.group()
        if kind == "ip":
            if pii._free_right(text, e) and _old_ip4(text, s, e):
                yield Span(s, e, pii.DETECTOR, "ip_address")
        elif kind == "ssn":
            if pii._free_right(text, e) and checks.ssn_ok(value[:3], value[4:6], value[7:]):
                yield Span(s, e, pii.DETECTOR, "us_ssn")
        elif kind == "ssn9":
            labelled = pii._SSN_LABEL.search(text, max(0, s - 40), s) is not None
            if (
                labelled
                and pii._free_right(text, e)
                and checks.ssn_ok(value[:3], value[3:5], value[5:])
            ):
                yield Span(s, e, pii.DETECTOR, "us_ssn")
        elif kind == "nanp" and value[0] in "23456789":
            if (end := pii._phone_end(text, e)) > 0:
                yield Span(s, end, pii.DETECTOR, "phone")
        elif kind == "natl" or (kind == "nanp" and value[0] == "0"):
            if pii._in_code_groups(text, s):
                continue  # the digits of an IBAN's groups, not a phone
            if pii._phone_digits_ok(value, 10, 11) and (end := pii._phone_end(text, e)) > 0:
                yield Span(s, end, pii.DETECTOR, "phone")
        elif kind == "card":
            n = _old_card(value)
            if n and pii._free_right(text, s + n):
                yield Span(s, s + n, pii.DETECTOR, "payment_card")
                pos = s + n  # the rest of the run may hold the next card


def _old_emails(text: str) -> Iterator[Span]:
    for m in pii._EMAIL_DOMAIN.finditer(text):
        at = m.start()
        s = at
        while s > 0 and text[s - 1] in pii._LOCAL and at - s < 64:
            s -= 1
        while s < at and text[s] in ".-+":
            s += 1
        if s == at or text[s:at] == "git":
            continue
        local = text[s:at]
        if local.count(".") >= 2 and local.replace(".", "").isdigit():
            continue  # a Message-ID (`<1424802164.20800.165263@host>`), not a mailbox
        token_start = max(text.rfind(" ", 0, s), text.rfind("\n", 0, s)) + 1
        if "://" in text[token_start:s]:
            continue  # user:password@host inside a URL, not a mailbox
        domain = m.group(1).lower()
        if domain.endswith(pii._RESERVED_DOMAINS) or domain.endswith(pii._RESERVED_TLDS):
            continue
        yield Span(s, m.end(), pii.DETECTOR, "email")


_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-.")


def _owner_start(low: str, i: int, m: re.Match[str]) -> int:
    k = m.start()
    while k > 0 and low[k - 1] in _KEY_CHARS and m.start() - k < 40:
        k -= 1
    owner = low[k : m.start()]
    if i == 5 and not owner.rstrip("_-. ").endswith(secrets._KEY_OWNERS):
        return -1
    word = secrets._WORD.match(low, m.start())
    assert word is not None
    if not secrets._label_ok(owner + word.group(), word.group(), owner):
        return -1
    if low[m.end() - 1] == ":" and "." in owner:
        return -1  # a dotted coordinate (`io.jsonwebtoken:jjwt`), not an assignment
    return k


def _old_value(
    low: str, i: int, k: int, ms: int, value: str, start: int, quoted: bool
) -> Span | None:
    value = value.rstrip(".")
    kind = "password" if i < 2 else "generic_secret"
    near = low[max(0, k - 40) : ms]
    if i >= 2 and "aws" in near and secrets._AWS_SECRET_VALUE.fullmatch(value):
        if checks.random_looking(value, 4.0) and "EXAMPLE" not in value:
            return Span(start, start + 40, "secrets", "aws_secret_key", secrets._SPECIFIC)
        return None
    if secrets._value_ok(value, quoted, kind):
        return Span(start, start + len(value), secrets.DETECTOR, kind, secrets._GENERIC)
    return None


def _old_assignments(text: str, low: str) -> Iterator[Span]:
    """The label pass done plainly: every label examined, no verdict kept, no dense bound."""
    for i, regex in enumerate(secrets._ASSIGN):
        pos = 0
        while (m := regex.search(low, pos)) is not None:
            pos = m.end()
            k = _owner_start(low, i, m)
            if k < 0:
                continue
            v = secrets._VALUE.match(text, m.end())
            if v is None:
                continue
            pos = v.end()  # a label inside this value is part of it, not a new assignment
            g = v.lastindex or 4
            found = _old_value(low, i, k, m.start(), v.group(g), v.start(g), g < 4)
            if found is not None:
                yield found
                continue
            # Unless it is refused: the scan goes on from the first label of its kind inside
            # it (its operator too: a value may be a label's name), and its head up to that
            # label (or a parameter before it) is judged alone.
            n = m.end()
            while (inner := regex.search(low, n)) is not None and inner.start() < v.end(g):
                n = inner.end()
                k2 = _owner_start(low, i, inner)
                if inner.end() > v.end(g) or k2 < 0:
                    continue
                if secrets._VALUE.match(text, inner.end()) is None:
                    continue
                hs, he = v.start(g), max(v.start(g), k2)
                param = secrets._PARAM.search(text, hs, inner.end())
                if param is not None and param.start() < he:
                    he = param.start()
                if he - hs >= 8:
                    head = _old_value(low, i, k, m.start(), text[hs:he], hs, g < 4)
                    if head is not None:
                        yield head
                pos = inner.start()
                break


# What the texts are made of: findings and near-findings of each shape, and the contexts that
# change their verdicts (`version `, `.in-addr.`, a URL before a mailbox, glued characters).
_IPS = ("8.8.8.8", "1.1.1.1", "10.0.4.17", "172.16.8.2", "172.15.0.1", "172.32.9.9",
        "192.168.1.1", "192.169.0.1", "127.0.0.1", "100.64.0.1", "100.63.255.255",
        "100.128.0.0", "169.254.3.3", "192.0.0.7", "192.0.0.8", "192.0.0.170", "192.0.0.172",
        "192.0.2.55", "192.0.3.1", "198.18.0.1", "198.20.0.1", "198.51.100.9", "198.51.101.9",
        "203.0.113.7", "203.0.114.7", "240.0.0.1", "239.255.255.255", "255.255.255.255",
        "0.1.2.3", "300.1.1.1", "1.2.3.256", "010.1.1.1", "1.02.3.4", "224.0.0.1")  # fmt: skip
_CARDS = ("4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111111", "5105105105105100",
          "378282246310005", "6011 1111 1111 1117", "4012888888881881", "4111 1111 1111 1112",
          "3530111333300000", "4111 1111 1111 1111 4012 8888 8888 1881")  # fmt: skip
_MAILS = ("a@b.co", "jane.doe@mail.example.org", "x@example.com", "git@github.com",
          "1424802164.20800.165263@host.net", "me@my.test", "--a.b@c.de", "u@xn--bcher-kva.de",
          "https://user:pw@host.com", "ftp://x@y.org", "a" * 70 + "@long.org", "Mo@Zesty.CA",
          "p@q.io,r@s.io", "a@b.c0", "x.y+z@sub.domain.museum")  # fmt: skip
_CONTEXT = (" ", ", ", "\n", ".", "v", "version ", " ", "x", "-", "/", "<", ">", ".in-addr.arpa ",
            "://", "see ", "ip=", "(", ")", "  ", "\t", "ion ", ".in-xyz ", "://a/")  # fmt: skip


def _text(rnd: random.Random, pieces: tuple[str, ...]) -> str:
    # Few distinct pieces repeated in changing contexts: many verdicts are kept ones.
    chosen = rnd.sample(pieces, 3)
    out = []
    for _ in range(rnd.randint(5, 60)):
        out.append(rnd.choice(chosen) if rnd.random() < 0.6 else rnd.choice(pieces))
        out.append(rnd.choice(_CONTEXT) if rnd.random() < 0.3 else " ")
    return "".join(out)


@pytest.mark.parametrize("seed", [1, 2])
def test_numeric_pass_finds_what_it_found_before(seed: int) -> None:
    rnd = random.Random(seed)
    found = 0
    for _ in range(1500):
        text = _text(rnd, _IPS + _CARDS)
        got = pii._numeric(text)
        assert got == list(_old_numeric(text)), text
        found += len(got)
    assert found > 20_000


@pytest.mark.parametrize("seed", [1, 2])
def test_emails_find_what_they_found_before(seed: int) -> None:
    rnd = random.Random(seed)
    found = 0
    for _ in range(1500):
        text = _text(rnd, _MAILS)
        got = pii._emails(text)
        assert got == list(_old_emails(text)), text
        found += len(got)
    assert found > 10_000


_LABELS = ("password=", "pwd: ", "secret_key = ", "api_key: \"", "'apiKey': '", "token_id: ",
           "tokenizer: ", "aws_secret_access_key=", "credentials=", "db.password: ", "x_token=",
           "public_key=", "PASSWORD=", "key=", "access_key := ", "passwd => '",
           "<apiToken>\n  ")  # fmt: skip
_VALUES = ("Hunter2024", "changeme", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
           "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzzzzzzzz7Qa", "os.environ['X']", "${DB_PASSWORD}",
           "s3cr3t-Value-42", "abcdefgh12", "Tr0ub4dor&3", "get_token()", "<your-key>", "xK9#mQ2$",
           "settings.api_key", "AKIAIOSFODNN7EXAMPLE", "9f8e7d6c5b4a39281706f5e4d3c2b1a0",
           "Hunter2024\"", "'Hunter2024'", "a" * 300,
           "Xq9Lm2Pz7Rt4Vw8Ny3Kb6Hd1Fg5Js0Ac2Ee4Gi6K")  # fmt: skip


_LOOKALIKES = (
    ("aws: the vault entry says secret_key = ", "gcp: the vault entry says secret_key = "),
    ("io.jsonwebtoken_settings_token:", "io_jsonwebtoken_settings_token:"),
)


@pytest.mark.parametrize("seed", [1, 2])
def test_assignments_find_what_they_found_before(seed: int) -> None:
    rnd = random.Random(seed)
    found = 0
    for _ in range(800):
        # A few labels and values per text, among them two labels alike in their last characters
        # but not in what is further before (`aws` or not, a dot in the owner or not).
        labels = [*rnd.sample(_LABELS, 3), *rnd.choice(_LOOKALIKES)]
        pieces = tuple(label + value for label in labels for value in rnd.sample(_VALUES, 3))
        text = _text(rnd, pieces)
        low = lowered(text)
        got = list(secrets._assignments(text, low))
        assert got == list(_old_assignments(text, low)), text
        found += len(got)
    assert found > 5_000


def test_luhn_and_ipv4_checks_agree_with_the_reference() -> None:
    rnd = random.Random(7)
    for _ in range(20_000):
        digits = "".join(rnd.choice("0123456789") for _ in range(rnd.randint(1, 19)))
        assert checks.luhn_ok(digits) == _old_luhn(digits), digits
    # Every special network's edges and neighbours, and random addresses.
    edges = []
    for net in map(ipaddress.IPv4Network, pii._NOT_GLOBAL_V4_NETS):
        lo, hi = int(net.network_address), int(net.broadcast_address)
        edges += [lo - 1, lo, lo + 1, hi - 1, hi, hi + 1]
    edges += [rnd.getrandbits(32) for _ in range(50_000)]
    for n in edges:
        if 0 <= n < 2**32:
            value = str(ipaddress.IPv4Address(n))
            assert pii._ip4_global(value) == ipaddress.IPv4Address(value).is_global, value
    for value in ("256.1.1.1", "1.1.1.300", "01.1.1.1", "1.1.1.00", "0.0.0.0"):
        assert pii._ip4_global(value) is False


def _covered(spans: list[Span]) -> set[tuple[str, int]]:
    return {(s.type, i) for s in spans for i in range(s.start, s.end)}


@pytest.mark.parametrize(
    ("pieces", "find", "old"),
    [
        (_IPS + _CARDS, pii._numeric, _old_numeric),
        (_MAILS, pii._emails, _old_emails),
        (
            tuple(label + value for label in _LABELS for value in _VALUES),
            lambda t: list(secrets._assignments(t, lowered(t))),
            lambda t: _old_assignments(t, lowered(t)),
        ),
    ],
)
def test_past_the_dense_bound_every_finding_is_still_covered(pieces, find, old) -> None:  # type: ignore[no-untyped-def]
    """Past DENSE_FINDINGS findings of one type, the cheap path reports (so redaction covers)
    every character of every finding the full checks make, as the same type (below it, the same
    findings: the tests above)."""
    rnd = random.Random(5)
    for _ in range(12):
        text = "".join(rnd.choice(pieces) + rnd.choice(_CONTEXT) for _ in range(3000))
        got, want = find(text), list(old(text))
        assert len(want) > 2 * checks.DENSE_FINDINGS
        assert _covered(want) <= _covered(got)


@pytest.mark.parametrize("unit", ["api_key=", "password=", "AccountKey=", "secret=x:token="])
def test_past_the_dense_bound_labels_inside_values_are_still_covered(unit: str) -> None:
    """A value made of labels (each examined value once skipped the labels inside it): past the
    bound the scan resumes in each value's tail, so every old finding is still covered, and the
    text costs a scan per value, not per label."""
    text = (unit * (200_000 // len(unit)))[:200_000]
    low = lowered(text)
    got, want = list(secrets._assignments(text, low)), list(_old_assignments(text, low))
    assert _covered(want) <= _covered(got)
    assert len(got) <= 2 * max(len(want), checks.DENSE_FINDINGS)
