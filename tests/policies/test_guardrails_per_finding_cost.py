"""The per-finding work of the detectors made cheaper gives exactly the answers it gave before:
each rewritten step is checked against a copy of the code it replaced, on random inputs shaped
like what reaches it (issue 9: a text dense with distinct findings paid each step per finding)."""

from __future__ import annotations

import base64
import binascii
import bisect
import ipaddress
import itertools
import random
import re
import string
from operator import itemgetter, le

from policies.guardrails import checks, injection, pii, secrets
from policies.guardrails.engine import _resolve_overlaps
from policies.guardrails.spans import Span
from tests.support.guardrail_reference import placeholder_as_written

_START, _END = itemgetter(0), itemgetter(1)


# The code before.
def _old_random_looking(value: str, min_entropy: float = 3.0) -> bool:
    return checks.char_classes(value) >= 2 and checks.entropy(value) >= min_entropy


def _old_resolve_overlaps(spans: list[Span]) -> list[Span]:
    spans.sort()
    if all(map(le, map(_END, spans), map(_START, itertools.islice(spans, 1, None)))):
        return spans
    spans.sort(key=lambda s: (-s.priority, s.start - s.end, s.start))
    starts: list[int] = []
    kept: list[Span] = []
    for s in spans:
        i = bisect.bisect_right(starts, s.start)
        if i > 0 and kept[i - 1].end > s.start:
            continue
        if i < len(kept) and kept[i].start < s.end:
            continue
        starts.insert(i, s.start)
        kept.insert(i, s)
    return kept


_ALPHABETS = (
    string.ascii_letters + string.digits, "abc", "ab12", "AB", "aB", "01", "!@#", "a!", "é1a",
    "xX-_", string.printable, "abcdefgh", "abcdefghijklmnop", "\u0391\u0392\u03b3\u03b412",
    "0123456789abcdef",
)  # fmt: skip


def test_random_looking_answers_as_before() -> None:
    rng = random.Random(9)
    for i in range(30_000):
        alphabet = rng.choice(_ALPHABETS)
        n = rng.choice((0, 1, 2, 5, 8, 12, 16, 20, 32, 40, 64, 100, 256)) if i % 7 else i % 90
        value = "".join(rng.choice(alphabet) for _ in range(n))
        for t in (2.5, 3.0, 3.5, 4.0):
            assert checks.random_looking(value, t) == _old_random_looking(value, t), (value, t)
    # Entropies exactly at a threshold (k characters equally often: log2(k) bits), and past the
    # table of counts (the plain computation).
    for k in (4, 6, 8, 11, 12, 16, 23, 32):
        for rep in (1, 2, 3, 5):
            base = (string.ascii_letters + string.digits)[:k]
            value = "".join(base[j % k] for j in range(k * rep))
            for t in (2.0, 2.5, 3.0, 3.5, 4.0, 5.0):
                assert checks.random_looking(value, t) == _old_random_looking(value, t)
    long = "".join(rng.choice(string.ascii_letters) for _ in range(checks._XLOGX_MAX + 10))
    assert checks.random_looking(long, 4.0) == _old_random_looking(long, 4.0)


def test_overlaps_resolve_as_before() -> None:
    rng = random.Random(9)
    for k in range(30_000):
        n, size = rng.randint(0, 30), rng.choice((10, 50, 200, 2000))
        spans = []
        for _ in range(n):
            s = rng.randint(0, size)
            e = s + rng.randint(0 if k % 5 == 0 else 1, 15)  # some empty hits too
            spans.append(
                Span(s, e, rng.choice(("pii", "secrets")), rng.choice("abc"), rng.randint(1, 3),
                     rng.random() < 0.9)
            )  # fmt: skip
        assert _resolve_overlaps(list(spans)) == _old_resolve_overlaps(list(spans)), spans
    for step, size in ((5, 9), (3, 7), (4, 4), (6, 7)):  # chains of hits of one length
        spans = [Span(i * step, i * step + size, "pii", "email") for i in range(500)]
        spans += [Span(7, 30, "secrets", "x", 3), Span(900, 901, "pii", "y", 1)]
        assert _resolve_overlaps(list(spans)) == _old_resolve_overlaps(list(spans))


def _old_card(value: str) -> int:
    first = value[0:1]
    head = value
    for i, c in enumerate(value):
        if not c.isdigit():
            sep = c
            other = "-" if sep == " " else " "
            cut = value.find(other, i)
            head = value[:cut] if cut >= 0 else value
            break
    else:
        sep = ""
    if not first:
        return 0
    lead = head.split(sep)[0] if sep else head
    if 13 <= len(lead) <= 19 and checks.card_brand_ok(lead) and checks.luhn_ok(lead):
        return len(lead)
    if not sep:
        return 0
    groups = head.split(sep)
    for k in range(len(groups), 2, -1):
        digits = "".join(groups[:k])
        if 13 <= len(digits) <= 19 and checks.card_brand_ok(digits) and checks.luhn_ok(digits):
            return len(sep.join(groups[:k]))
    return 0


def _old_phone_digits_ok(value: str, lo: int, hi: int) -> bool:
    if "  " in value or ".." in value or "--" in value:
        return False
    n = sum(c.isdigit() for c in value)
    return lo <= n <= hi


def _old_in_code_groups(text: str, s: int) -> bool:
    m = pii._GROUPS_BEFORE.search(text, max(0, s - 45), s)
    if m is None:
        return False
    return any(
        any(c.isalpha() for c in g) and any(c.isdigit() for c in g) for g in m.group().split()
    )


def _old_iban_ok(compact: str) -> bool:
    if checks.IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    moved = compact[4:] + compact[:4]
    num = "".join(str(int(c, 36)) for c in moved)
    return int(num) % 97 == 1


def _old_iban(text: str, s: int, e: int) -> list[Span]:
    if s > 0 and text[s - 1] in pii._ALNUM:
        return []
    value = text[s:e].upper()
    want = checks.IBAN_LENGTHS.get(value[:2])
    if want is None or value[2] in " -":
        return []
    letters = [c for c in text[s:e] if c.isalpha()]
    if not (all(c.isupper() for c in letters) or all(c.islower() for c in letters)):
        return []
    count = 0
    end = s
    for i in range(s, e):
        if text[i] not in " -":
            count += 1
            if count == want:
                end = i + 1
                break
    if count != want or not pii._free_right(text, end):
        return []
    if _old_iban_ok(text[s:end].replace(" ", "").replace("-", "").upper()):
        return [Span(s, end, pii.DETECTOR, "iban")]
    return []


def _old_ipv6(text: str) -> list[Span]:
    out = []
    pos, n = 0, len(text)
    while (m := pii._IPV6_AT.search(text, pos)) is not None:
        s, lo = m.start(), max(0, m.start() - pii._IPV6_MAX - 1)
        while s > lo and text[s - 1] in "0123456789abcdefABCDEF:.":
            s -= 1
        e = pos = pii._HEXCOLON_RUN.match(text, m.end()).end()  # type: ignore[union-attr]
        value = text[s:e].rstrip(".")
        if len(value) > pii._IPV6_MAX or sum(1 for g in value.split(":") if g) < 3:
            continue
        if (s > 0 and text[s - 1] in pii._ALNUM) or (e < n and text[e] in pii._ALNUM):
            continue
        try:
            addr = ipaddress.IPv6Address(value)
        except ValueError:
            continue
        if value.lower().startswith("ffff:ffff:"):
            continue
        if addr.is_global and (e >= n or text[e] != "/"):
            out.append(Span(s, s + len(value), pii.DETECTOR, "ip_address"))
    return out


def _old_placeholder_few_chars(low: str) -> bool:
    return len(set(low)) <= 2


def _old_decoded_kind(blob: str) -> str | None:
    if blob.islower() or blob.isupper():
        return None
    try:
        decoded = base64.b64decode(blob[:16384] + "=" * (-len(blob[:16384]) % 4))
        low = decoded.decode("ascii").lower()
    except (binascii.Error, ValueError):
        return None
    if any(n in low for n in injection._B64_NEEDLES) and any(
        True for _ in injection._phrase_hits(low)
    ):
        return "encoded_injection"
    words = low.split()
    letters = sum(c.isalpha() or c == " " for c in low)
    if len(words) >= 4 and letters >= 0.85 * len(low) and low.isprintable():
        return "encoded_prose"
    return None


def test_numbers_checks_answer_as_before() -> None:
    rng = random.Random(9)
    for i in range(40_000):
        chars = rng.choice(("0123456789", "0123456789 ", "0123456789-", "0123456789 -", "40 "))
        value = rng.choice("0123456789") + "".join(rng.choice(chars) for _ in range(i % 26))
        if i % 3 == 0:  # a card number's groups, maybe another number after it
            digits = "4" + "".join(rng.choice(string.digits) for _ in range(rng.choice((12, 15))))
            sep = rng.choice((" ", "-", ""))
            value = sep.join(digits[k : k + 4] for k in range(0, len(digits), 4))
            value += rng.choice(("", " 1234", "-12", " 5555-4444"))
        assert pii._card(value) == _old_card(value), value
        for lo, hi in ((8, 15), (10, 11), (10, 17)):
            phone = rng.choice(("", "+")) + value + rng.choice(("", " .()", "  ", "--"))
            assert pii._phone_digits_ok(phone, lo, hi) == _old_phone_digits_ok(phone, lo, hi)
        text = "".join(rng.choice("ab0129 XZ-") for _ in range(i % 60))
        for s in range(0, len(text) + 1, 7):
            assert pii._in_code_groups(text, s) == _old_in_code_groups(text, s), (text, s)


def _iban_like(rng: random.Random) -> str:
    country = rng.choice(sorted(checks.IBAN_LENGTHS))
    alphabet = string.digits + (string.ascii_uppercase if rng.random() < 0.3 else "")
    bban = "".join(rng.choice(alphabet) for _ in range(checks.IBAN_LENGTHS[country] - 4))
    check = 98 - _old_iban_mod(bban + country + "00")
    iban = country + f"{check:02d}" + bban
    if rng.random() < 0.3:
        iban = iban[:-1] + rng.choice(string.digits)  # mostly a wrong check now
    if rng.random() < 0.2:
        iban = iban.lower()
    sep = rng.choice(("", " ", "-", " "))
    out = sep.join(iban[k : k + 4] for k in range(0, len(iban), 4))
    if rng.random() < 0.2:  # a character dropped or a separator doubled somewhere
        k = rng.randint(0, len(out))
        out = out[:k] + rng.choice((" ", "-", "  ", "x", "")) + out[k + 1 :]
    return out


def _old_iban_mod(compact: str) -> int:
    return int("".join(str(int(c, 36)) for c in compact)) % 97


def test_ibans_are_found_as_before() -> None:
    rng = random.Random(9)
    for _ in range(8_000):
        text = rng.choice((" ", ", ", "", "\n", "-")).join(
            _iban_like(rng) if rng.random() < 0.7 else rng.choice(("AB 12 34 56 C", "x", "1234"))
            for _ in range(rng.randint(1, 4))
        )
        old = sorted(
            span
            for m in pii._NUMERIC.finditer(text)
            if m.lastgroup == "iban"
            for span in _old_iban(text, m.start() - 2, m.end())
        )
        new = sorted(
            span
            for m in pii._NUMERIC.finditer(text)
            if m.lastgroup == "iban"
            for span in pii._iban_nino(text, "iban", m.start() - 2, m.end())
        )
        assert new == old, text
        compact = _iban_like(rng).replace(" ", "").replace("-", "").upper()
        assert checks.iban_ok(compact) == _old_iban_ok(compact), compact


_V6_BASES = (
    "::1", "::", "::ffff:8.8.8.8", "::ffff:10.0.0.1", "100::", "2001::", "2001:2::", "2001:db8::",
    "2001:10::", "fc00::", "fe80::", "2001:4860::", "ffff:ffff::", "64:ff9b::", "2002::",
    "2001:1f::", "2001:20::", "2001:1ff::",
)  # fmt: skip


def _v6_like(rng: random.Random) -> str:
    if rng.random() < 0.5:  # in or near each network ipaddress treats apart
        base = int(ipaddress.IPv6Address(rng.choice(_V6_BASES)))
        addr = ipaddress.IPv6Address(
            (base + rng.randint(0, 2 ** rng.choice((0, 8, 40, 96)))) % 2**128
        )
        value = rng.choice((addr.compressed, addr.exploded))
    else:
        value = ":".join(
            format(rng.randint(0, 65535), rng.choice(("x", "X", "04x")))
            for _ in range(rng.randint(2, 9))
        )
        if rng.random() < 0.3:
            value = value.replace(":", "::", 1)
    if rng.random() < 0.1:
        value += "." + str(rng.randint(0, 300))
    if rng.random() < 0.1:
        value += rng.choice(("/64", "g", ".", ":", "::"))
    return value


def test_ipv6_addresses_are_found_as_before() -> None:
    rng = random.Random(9)
    for _ in range(10_000):
        sep = rng.choice((" ", ", ", "", "x", "\n", "1"))
        text = sep.join(_v6_like(rng) for _ in range(rng.randint(1, 6)))
        assert pii._ipv6(text) == _old_ipv6(text), text
    text = " ".join(_v6_like(rng) for _ in range(3_000))  # past the kept verdicts' bound
    assert pii._ipv6(text) == _old_ipv6(text)


def test_ipv6_values_parse_as_ipaddress_parses_them() -> None:
    """`_ip6_global` parses with libc's inet_pton: on runs of hex, colons and dots (what reaches
    it) it accepts and reads exactly what `ipaddress.IPv6Address` does."""
    rng = random.Random(11)
    edge = ("::ffff:1.2.3.04", "1:2:3:4:5:6:7::8", "1:2:3:4:5:6:7:8::", "::1:2:3:4:5:6:7:8",
            "1::2::3", ":1::", "1::", "::", "::1.2.3.4", "1:2:3:4:5:6:1.2.3.4", "00000::",
            "1:2:3:4:5:6:7:1.2.3.4", "::ffff:256.1.1.1", "::1.2.3", "::01.2.3.4", ":::",
            "1.2.3.4::", "::ffff:1.2.3.4:1", "12345::", "1:2:3:4:5:6:7:")  # fmt: skip
    values = list(edge) + [_v6_like(rng) for _ in range(50_000)]
    values += ["".join(rng.choice("0123456789abcdefABCDEF:::..") for _ in range(rng.randint(1, 45)))
               for _ in range(100_000)]  # fmt: skip
    accepted = 0
    for value in values:
        try:
            want = int(ipaddress.IPv6Address(value))
        except ValueError:
            want = None
        if want is None:
            assert not pii._ip6_global(value), value
            continue
        accepted += 1
        if not value.lower().startswith("ffff:ffff:") and want >> 32 != 0xFFFF:
            assert pii._ip6_global(value) == ipaddress.IPv6Address(want).is_global, value
    assert accepted > 20_000


def test_emails_are_found_as_before_without_the_look_back() -> None:
    old_regex = re.compile(pii._EMAIL_DOMAIN.pattern.replace("@(?<=[A-Za-z0-9._%+\\-]@)", "@"))
    assert old_regex.pattern != pii._EMAIL_DOMAIN.pattern
    rng = random.Random(9)
    pieces = ("@b.co", "a@b.co", "@", "x.", "user", ".", "-", "+", "://", " ", "\n",
              "git@github.com", "a@example.com", "1.2.3@h.io", "\u00e9@b.co", "@@b.co",
              "u%@x.org")  # fmt: skip
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 20))) for _ in range(8_000)]
    texts.append("".join(rng.choice(pieces) for _ in range(20_000)))  # past the dense bound
    new = [pii._emails(t) for t in texts]
    saved = pii._EMAIL_DOMAIN
    try:
        pii._EMAIL_DOMAIN = old_regex
        old = [pii._emails(t) for t in texts]
    finally:
        pii._EMAIL_DOMAIN = saved
    assert new == old


def test_placeholders_and_base64_blobs_answer_as_before() -> None:
    rng = random.Random(9)
    alphabets = (string.ascii_letters + string.digits, "ab", "aA", "xX-", "a", "\u00df", "example")
    for i in range(40_000):
        value = "".join(rng.choice(rng.choice(alphabets)) for _ in range(i % 30))
        low = value.lower()
        assert (not low or not (r := low.replace(low[0], "")) or not r.replace(r[0], "")) == (
            _old_placeholder_few_chars(low)
        )
    words = ("hello", "world", "ignore", "all", "previous", "instructions", "the", "a", "tab\t",
             "1234", "x!", "you are now", "system prompt", "Syst\u00e8me")  # fmt: skip
    for i in range(8_000):
        if i % 3:
            raw = " ".join(rng.choice(words) for _ in range(rng.randint(1, 12))).encode()
        else:
            raw = bytes(rng.randint(0, 255) for _ in range(rng.randint(20, 60)))
        blob = base64.b64encode(raw).decode()
        assert injection._decoded_kind(blob) == _old_decoded_kind(blob), blob
    # What the blob scan hands over: runs of the base64 alphabet without padding, any length
    # (random tokens, prose encodings cut anywhere).
    b64 = string.ascii_letters + string.digits + "+/"
    for i in range(20_000):
        if i % 2:
            blob = "".join(rng.choice(b64) for _ in range(rng.randint(32, 90)))
        else:
            raw = " ".join(rng.choice(words) for _ in range(rng.randint(4, 30))).encode()
            blob = base64.b64encode(raw).decode().rstrip("=")[rng.randint(0, 3) :]
        assert injection._decoded_kind(blob) == _old_decoded_kind(blob), blob


def _old_value_ok(value: str, quoted: bool, kind: str) -> bool:
    if len(value) < 8:
        return False
    # An unquoted id and its secret (`admin:…`): judged as its secret (no code reference).
    pair = re.fullmatch(r"[A-Za-z_$][\w$]*:([^:/].*)", value)
    if not quoted and pair is not None:
        low = value.lower()
        return not checks._PLACEHOLDER_WORD.search(low) and _old_value_ok(
            pair.group(1), quoted, kind
        )
    if not quoted:
        if "(" in value or "[" in value or "{" in value:
            return False
        if secrets._CODE_REF.fullmatch(value) and (
            "." in value or ":" in value or not any(c.isdigit() for c in value)
        ):
            return False
    if placeholder_as_written(value) or checks.example_value(value):
        return False
    return checks.random_looking(value, 2.5 if kind == "password" else 3.0)


def test_labelled_value_checks_answer_as_before() -> None:
    """The placeholder word search tried first, and the digit test in one search for ASCII
    values (issue 9: floods of distinct refused labelled values paid each check per value)."""
    rng = random.Random(9)
    pieces = ("xxxx", "changeme", "example", "EXAMPLE", "settings.key", "os.environ[", "get()",
              "${A}", "{{ a }}", "<k>", "/etc/a.key", "here", "$", "%", "@", "token", ":", ".",
              "\u00b2", "\u0663", "\u00e9", "\u03a3", "_", "-", "abcdefgh", "1234")  # fmt: skip
    alphabets = (string.ascii_letters + string.digits, "ab1", "xX", string.printable)
    for _ in range(40_000):
        value = "".join(
            rng.choice(pieces)
            if rng.random() < 0.4
            else "".join(rng.choices(rng.choice(alphabets), k=rng.randint(1, 10)))
            for _ in range(rng.randint(1, 5))
        )
        assert checks.placeholder(value) == placeholder_as_written(value), value
        assert secrets._has_digit(value) == any(c.isdigit() for c in value), value
        for quoted in (True, False):
            for kind in ("password", "generic_secret"):
                assert secrets._value_ok(value, quoted, kind) == _old_value_ok(value, quoted, kind)


def test_a_placeholder_head_makes_every_value_after_it_a_placeholder() -> None:
    """`placeholder_head` holds of a head only where `placeholder` or `example_value` holds of
    every value starting with it (a refused value's labels are judged on their heads)."""
    rng = random.Random(9)
    pieces = ("xxxx", "changeme", "example", "EXAMPLE", "<k", ">", "$", "%", "@", "abcdefgh",
              "\u03a3", "\u0130", "here", "token=", "&", "/", "a")  # fmt: skip
    alphabets = (string.ascii_letters + string.digits, "xX&=", string.printable, "\u03a3\u03c3a")
    held = 0
    for _ in range(40_000):
        head, tail = (
            "".join(
                rng.choice(pieces)
                if rng.random() < 0.3
                else "".join(rng.choices(rng.choice(alphabets), k=rng.randint(1, 6)))
                for _ in range(rng.randint(1, 4))
            )
            for _ in range(2)
        )
        if checks.placeholder_head(head):
            held += 1
            value = head + tail
            assert checks.placeholder(value) or checks.example_value(value), (head, tail)
    assert held > 5_000


def test_values_inside_unquoted_values_are_read_as_the_value_regex_reads_them() -> None:
    """`_label_inside` takes a label's value inside an unquoted value from the run it is in
    (reading only past that value's end): the same span as `_VALUE.match`."""
    rng = random.Random(9)
    units = ("token=xxxxxxx{}&", "token={}", "&token=", "/token=b{}", "x", '"', "'", " ", ";",
             "token=", "b'", "r\"", "a1" * 40, "é²")  # fmt: skip
    checked = 0
    for _ in range(3_000):
        text = "token=" + "".join(
            rng.choice(units).format(rng.randint(0, 99)) for _ in range(rng.randint(1, 80))
        )
        low = text.lower()
        v = secrets._VALUE.match(text, 6)
        if v is None:
            continue
        g = v.lastindex or 4
        val = (v.start(g), v.end(g), v.end(), g < 4)
        stop = v.end() + secrets._REST_READS
        me = 6
        while (inner := secrets._label_inside(text, low, 3, me, val, stop)) is not None:
            _, me, _, val = inner
            want = secrets._VALUE.match(text, me, stop)
            assert want is not None
            g = want.lastindex or 4
            assert val == (want.start(g), want.end(g), want.end(), g < 4), text
            checked += 1
    assert checked > 1_000
