"""Validators that turn a regex shape into a confident finding.

Shapes alone are noisy (any 16 digits, any 40 base64 chars); checksums, entropy and a short list of
placeholders are what keep ordinary text quiet.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import math
import re
from collections import Counter, _count_elements  # type: ignore[attr-defined]

import orjson

try:  # the pure checks in C (setup.py; optional): the same answers, ~10x faster per value
    from policies.guardrails import _checks_c as _C
except ImportError:  # not built (no compiler): the Python versions below
    _C = None

# Each digit to the digit sum of its double (Luhn's doubled positions).
_LUHN_DOUBLE = str.maketrans("0123456789", "0246813579")
# How many values a detector remembers a verdict for within one scan (a text repeating one value
# pays for its checks once; distinct values each pay, as on any text).
MEMO_MAX = 1024
# Findings of one type in one scan after which a detector reports that type's further candidates
# on the regex and its cheap checks alone (its costly ones, run once per finding, made a text of
# distinct findings 4-8x prose per KB). Safe: every further candidate is still reported, so
# mutate mode redacts at least what it did; a rule covering the type (flag, block) has already
# fired on the first finding. Only a text holding more findings of one type than this can see a
# finding the full checks would have dropped (a placeholder value, a private address).
DENSE_FINDINGS = 256
# Labels inside refused labelled values one scan examines (`token=xxxx&token=…`: each label of
# the value's kind inside it, and its head, is judged). Past it, a refused value holding a label
# of its kind is reported whole, with every label and value in it, without its checks: what the
# labels held stays redacted (over-redaction, never under-redaction), and a run of such labels
# costs one step per value instead of one per label (2.1-2.7x prose per KB before). Only a text
# holding more than this many such labels sees it (a dump of placeholder chains): there a block
# or flag rule on `password`/`generic_secret` fires where the full checks found nothing.
REFUSED_LABELS = 1024


def luhn_ok(digits: str) -> bool:
    """Payment card checksum (ISO/IEC 7812) of ASCII digits: each character's code is 48 plus its
    digit, so the sum of the bytes less 48 per digit is the digit sum, all in C."""
    doubled = digits[-2::-2].translate(_LUHN_DOUBLE)
    total = sum(digits[-1::-2].encode()) + sum(doubled.encode()) - 48 * len(digits)
    return total % 10 == 0


def card_brand_ok(digits: str) -> bool:
    """Issuer prefix and length of a major card network; random digit runs rarely fit both."""
    n = len(digits)
    if digits[0] == "4":
        return n in (13, 16, 19)
    p2 = int(digits[:2])
    p4 = int(digits[:4])
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:
        return n == 16
    if p2 in (34, 37):
        return n == 15
    if digits.startswith("6011") or p2 == 65 or 644 <= int(digits[:3]) <= 649 or p2 == 62:
        return 16 <= n <= 19
    if 3528 <= p4 <= 3589:
        return 16 <= n <= 19
    if 300 <= int(digits[:3]) <= 305 or p2 in (36, 38, 39):
        return 14 <= n <= 19
    return False


def card_ok(digits: str) -> bool:
    """`card_brand_ok(digits) and luhn_ok(digits)`: in C where built (~0.1 µs a card number
    instead of ~1 µs; its own `None` for anything but ASCII digits, asked of the Python)."""
    if _C is not None and (verdict := _C.card_ok(digits)) is not None:
        return verdict
    return card_brand_ok(digits) and luhn_ok(digits)


# Registry lengths (ISO 13616, SWIFT IBAN registry) of every IBAN country; others are not IBANs.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30,
    "KZ": 20, "LB": 28, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22,
    "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29,
    "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27,
    "TN": 24, "TR": 26, "UA": 29, "VG": 24, "XK": 20,
    "AL": 28, "BI": 27, "BY": 28, "DJ": 27, "FK": 18, "HN": 28, "IQ": 23, "LC": 32, "LY": 25,
    "MN": 20, "NI": 28, "OM": 23, "RU": 33, "SC": 31, "SD": 18, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "VA": 22, "YE": 30,
}  # fmt: skip


def iban_ok(compact: str) -> bool:
    """ISO 7064 mod-97 check of an IBAN without spaces."""
    if IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    moved = compact[4:] + compact[:4]
    if moved.isascii() and moved.isalnum():  # each letter to its two digits (`A` 10 … `Z` 35)
        return int(moved.translate(_IBAN_DIGITS)) % 97 == 1
    num = "".join(str(int(c, 36)) for c in moved)
    return int(num) % 97 == 1


_IBAN_DIGITS = str.maketrans(
    {c: str(int(c, 36)) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"}
)


def ssn_ok(area: str, group: str, serial: str) -> bool:
    """US SSN ranges never issued: area 000, 666, 900-999; group 00; serial 0000."""
    return area != "000" and area != "666" and area[0] != "9" and group != "00" and serial != "0000"


def entropy(value: str) -> float:
    """Shannon entropy in bits per character."""
    n = len(value)
    if n == 0:
        return 0.0
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values())


_LOWER = frozenset("abcdefghijklmnopqrstuvwxyz")
_UPPER = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_DIGIT = frozenset("0123456789")


def char_classes(value: str) -> int:
    """How many of lower, upper, digit, other appear: real credentials mix at least two."""
    chars = set(value)
    lower = not chars.isdisjoint(_LOWER)
    upper = not chars.isdisjoint(_UPPER)
    digit = not chars.isdisjoint(_DIGIT)
    other = bool(chars - _LOWER - _UPPER - _DIGIT)
    return lower + upper + digit + other


# `c * log2(c)` for every count a value up to `_XLOGX_MAX` characters can hold.
_XLOGX_MAX = 4096
_XLOGX = (0.0, *(c * math.log2(c) for c in range(1, _XLOGX_MAX + 1)))
# How far from a threshold `entropy_at_least` trusts its own sum: both it and `entropy` are
# within ~1e-13 of the exact value for any value it takes, so beyond this they agree.
_ENTROPY_MARGIN = 1e-9
_NOT_ALNUM = str.maketrans("", "", "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")


def entropy_at_least(value: str, min_entropy: float) -> bool:
    """`entropy(value) >= min_entropy`, with the same answer: the entropy as `log2(n)` less the
    mean of `c * log2(c)` over the characters' counts (a table look-up each), and `entropy`
    itself only where that lands within `_ENTROPY_MARGIN` of the threshold. The counts are all
    it needs, whatever their order, so it leaves out one logarithm and two divisions per
    distinct character (a text of distinct tokens pays this once per token). In C where built
    (the same sum, its own `None` where this would ask `entropy`)."""
    if _C is not None:
        if (verdict := _C.entropy_at_least(value, min_entropy)) is not None:
            return verdict
        return entropy(value) >= min_entropy
    return _entropy_at_least_py(value, min_entropy)


def _entropy_at_least_py(value: str, min_entropy: float) -> bool:
    """`entropy_at_least` in Python (and where the C is not built)."""
    n = len(value)
    if n == 0 or n > _XLOGX_MAX:
        return entropy(value) >= min_entropy
    counts: dict[str, int] = {}
    _count_elements(counts, value)
    h = math.log2(n) - sum(map(_XLOGX.__getitem__, counts.values())) / n
    if abs(h - min_entropy) < _ENTROPY_MARGIN:
        return entropy(value) >= min_entropy
    return h >= min_entropy


def two_char_classes(value: str) -> bool:
    """`char_classes(value) >= 2`: in C where built, else `_two_char_classes_py`."""
    if _C is not None:
        return _C.two_char_classes(value)
    return _two_char_classes_py(value)


def _two_char_classes_py(value: str) -> bool:
    """`char_classes(value) >= 2` in C-level string tests for ASCII values (every key and
    token): letters of one case alone, digits alone, or no letter or digit is one class."""
    if not value.isascii():
        return char_classes(value) >= 2
    if value.isalnum():  # letters and digits only
        if value.isalpha():
            return not (value.islower() or value.isupper())  # both cases
        return not value.isdigit()  # letters and digits
    return len(value.translate(_NOT_ALNUM)) < len(value)  # an `other` and a letter or digit


def random_looking(value: str, min_entropy: float = 3.0) -> bool:
    """A token that looks generated rather than typed as a placeholder (sk-xxxx…, abcabc…)."""
    if _C is not None:
        if (verdict := _C.random_looking(value, min_entropy)) is not None:
            return verdict
        return entropy(value) >= min_entropy  # (`None`: two classes, entropy at the bar)
    return _two_char_classes_py(value) and _entropy_at_least_py(value, min_entropy)


_PLACEHOLDER_WORDS = (
    "example", "placeholder", "your_", "your-", "yourpass", "changeme", "change_me", "change-me",
    "redacted", "dummy", "sample", "xxxx", "****", "....", "####", "%(", "%s",
    "secret_here", "token_here", "key_here", "replace", "insert", "todo", "fixme", "null", "none",
    "not-a-real", "not_a_real", "not-real", "not_real", "fake-", "fake_", "-fake", "_fake",
    "path/to/",
)  # fmt: skip


def _any_word(words: tuple[str, ...]) -> re.Pattern[str]:
    """One regex finding any of `words`, grouped by first character: the regex tries one
    alternative per distinct first character at each position, not one per word."""
    heads: dict[str, list[str]] = {}
    for w in words:
        heads.setdefault(w[0], []).append(re.escape(w[1:]))
    return re.compile("|".join(f"{re.escape(h)}(?:{'|'.join(t)})" for h, t in heads.items()))


# One search for all of them instead of one `in` per word (placeholder() runs on every candidate).
# Searched in the lower-cased value; any hit makes it a placeholder (`placeholder`'s cheapest
# refusal, which callers judging many values may try first).
PLACEHOLDER_WORD = _PLACEHOLDER_WORD = _any_word(_PLACEHOLDER_WORDS)
# A file path with an extension (`/etc/ssl/client.key`, `./certs/ca.pem`, `C:\\keys\\a.pfx`):
# where a secret is kept, not the secret (base64 has slashes but no dots).
_FILE_PATH = re.compile(r"(?:~|\.{1,2})?/(?:[\w.-]+/)+[\w.-]+|[a-z]:\\(?:[\w.-]+\\)+[\w.-]+")


_TEMPLATE = re.compile(
    r"\$\{[a-z0-9_.:\- ]{1,64}+\}|\{\{[a-z0-9_.\-|'\"() ]{1,64}+\}\}|\$[a-z_][a-z0-9_]*+$"
)


def placeholder(value: str) -> bool:
    """Template values people leave in configs and docs; flagging them is noise."""
    low = value.lower()
    # The word search first: it refuses most placeholders (`xxxx…`, `changeme…`, `example…`) in
    # one C step, and the answer is the same whichever of these is tried first.
    return _PLACEHOLDER_WORD.search(low) is not None or placeholder_shape(low)


_PLACEHOLDER_VALUES = frozenset(
    ("password", "passwd", "secret", "token", "pass", "pwd", "undefined", "true", "false")
)


# The C checks hold these constants too: a build of other ones (stale) is not used.
if _C is not None and (
    _C.XLOGX_MAX != _XLOGX_MAX
    or _C.ENTROPY_MARGIN != _ENTROPY_MARGIN
    or _C.PLACEHOLDER_WORDS != _PLACEHOLDER_WORDS
    or frozenset(_C.PLACEHOLDER_VALUES) != _PLACEHOLDER_VALUES
    or not hasattr(_C, "value_ok")
    or not hasattr(_C, "card_ok")
):
    _C = None


def placeholder_shape(low: str, three: bool = False) -> bool:
    """`placeholder` but for its word search, on the value lower-cased (`low`): every check is
    a placeholder, so their order leaves the answer as it is. `three`: the caller knows `low`
    has three distinct characters or more."""
    if not low or low[0] in "$%@<" or low in _PLACEHOLDER_VALUES:
        return True
    if not three and (not (rest := low.replace(low[0], "")) or not rest.replace(rest[0], "")):
        return True  # at most two distinct characters
    if low.endswith("here"):
        return True  # `…AccessTokenHere`, `paste_key_here`
    if ("<" in low and ">" in low) or (("$" in low or "{" in low) and _TEMPLATE.search(low)):
        return True  # `<your-key>`, `${DB_PASSWORD}`, `{{ secrets.token }}`
    if low[0] in "/~.\\" or low[1:3] == ":\\":
        m = _FILE_PATH.fullmatch(low)
        if m is not None and "." in low.rsplit("/", 1)[-1].rsplit("\\", 1)[-1]:
            return True  # a path to a file (with an extension), not its content
    return False


def placeholder_head(head: str) -> bool:
    """Whether every value starting with `head` is a placeholder or an example (`placeholder`
    or `example_value`): by the checks that hold of a value once they hold of its head (a
    placeholder word, `<…>`, a leading `$`/`%`/`@`/`<`, `EXAMPLE`, an ascending run). Lower-
    casing maps each character alone but for a final sigma, which no word here holds."""
    low = head.lower()
    return (
        _PLACEHOLDER_WORD.search(low) is not None
        or low.startswith(("$", "%", "@", "<"))
        or ("<" in low and ">" in low)
        or "EXAMPLE" in head
        or _ascending_run(head, 8)
    )


def jwt_header_ok(header_b64: str) -> bool:
    """The first JWT part must decode to a JSON object naming its `alg`."""
    try:
        raw = base64.urlsafe_b64decode(header_b64 + "=" * (-len(header_b64) % 4))
        obj = orjson.loads(raw)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        return False
    return isinstance(obj, dict) and "alg" in obj


# Each byte to its predecessor: `b.translate(_PRED)[i] == a[i]` is `b[i] == a[i] + 1`.
_PRED = bytes((c - 1) & 0xFF for c in range(256))


def _ascending_run(value: str, n: int) -> bool:
    """`n` (≥ 2) consecutive code points in a row (`abcdefgh`, `12345678`): in C where built."""
    if _C is not None:
        return _C.ascending_run(value, n)
    return _ascending_run_py(value, n)


def _ascending_run_py(value: str, n: int) -> bool:
    """`n` (≥ 2) consecutive code points in a row (`abcdefgh`, `12345678`). ASCII values (every
    key and token) in a handful of C-level steps, whatever their length: the steps where the
    next character is the previous one plus one are the zero bytes of `value[:-1]` XOR
    `value[1:]` lowered by one, and a run is `n - 1` zero bytes in a row."""
    if len(value) < n:
        return False
    if value.isascii():
        raw = value.encode("ascii")
        head, tail = raw[:-1], raw[1:].translate(_PRED)
        steps = int.from_bytes(head, "big") ^ int.from_bytes(tail, "big")
        return bytes(n - 1) in steps.to_bytes(len(head), "big")
    run = 1
    for a, b in itertools.pairwise(value):
        run = run + 1 if ord(b) - ord(a) == 1 else 1
        if run >= n:
            return True
    return False


def example_value(value: str) -> bool:
    """Documentation keys: AWS's `…EXAMPLE` ids, or a typed alphabet/counting run
    (`AIzaSyabcdefghijklmnop…`, `sk-…1234567890`) that no generator produces."""
    return "EXAMPLE" in value or _ascending_run(value, 8)


def json_object_b64(part: str) -> bool:
    """A base64url JWT part that decodes to a JSON object (an unsigned token's payload)."""
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        return isinstance(orjson.loads(raw), dict)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        return False
