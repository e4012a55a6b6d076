"""The labelled-value checks refuse cheapest first, with the answers of the full checks.

A value's Shannon entropy is at most log2 of its number of distinct characters, so a value with
fewer than 6 (a password, 2.5 bits) or 8 (3.0 bits) is refused on one `set` before the placeholder,
example and entropy checks; a refused value holding no stem of its label regex is resumed after
without its label's verdict; the owner word's part of a label's verdict is judged apart from the
word's (kept). Each is checked here against the checks as they were written before.
"""

from __future__ import annotations

import random
import re
import string

import pytest

from policies.guardrails import DETECTORS, secrets
from policies.guardrails.checks import (
    PLACEHOLDER_WORD,
    example_value,
    placeholder,
    random_looking,
)
from policies.guardrails.engine import find_spans
from policies.guardrails.spans import lowered
from tests.support.guardrail_reference import placeholder_as_written


def _reference_value_ok(value: str, quoted: bool, kind: str) -> bool:
    """`_value_ok` as written before the cheap refusals were put first."""
    if len(value) < 8 or PLACEHOLDER_WORD.search(value.lower()):
        return False
    # An unquoted id and its secret (`admin:…`): judged as its secret (no code reference).
    pair = re.fullmatch(r"[A-Za-z_$][\w$]*:([^:/].*)", value)
    if not quoted and pair is not None:
        return _reference_value_ok(pair.group(1), quoted, kind)
    if not quoted:
        if "(" in value or "[" in value or "{" in value:
            return False
        if secrets._CODE_REF.fullmatch(value) and (
            "." in value or ":" in value or not secrets._has_digit(value)
        ):
            return False
    if placeholder(value) or example_value(value):
        return False
    return random_looking(value, 2.5 if kind == "password" else 3.0)


# Values at the distinct-character bounds: 5, 6, 7, 8 and 9 distinct characters, spread evenly
# (the highest entropy that many allows: 6 even is 2.58 bits, 8 even is exactly 3.0).
_AT_THE_BOUNDS = [
    "aB3!daB3",  # 5 distinct, 8 long
    "aB3!dEaB",  # 6: 2.5 bits exactly
    "aB3!dEaB3!dE",  # 6 even: 2.58 bits
    "aB3!dEfaB3!dEf",  # 7 even: 2.81 bits
    "aB3!dEfG",  # 8 even: 3.0 bits exactly
    "aB3!dEfGaB3!dEfG",
    "aB3!dEfGh",  # 9
    "aB3!dEfGhaB3!dEfGh",
    "1-----,2",
    "9e37:-----",
    "-----:9e3779b1",
    # 6 distinct (`k`, Kelvin sign, `K`, `å`, Angstrom sign, `Å`), 2 lower-cased: a placeholder.
    "k\u212aK\u00e5\u212b\u00c5kK",
    "\u03a3\u03c3\u03c2\u03a3\u03c3\u03c2ab",  # sigmas
]


@pytest.mark.parametrize("value", _AT_THE_BOUNDS)
@pytest.mark.parametrize("kind", ["password", "generic_secret"])
@pytest.mark.parametrize("quoted", [False, True])
def test_distinct_character_refusal_answers_as_the_full_checks(
    value: str, kind: str, quoted: bool
) -> None:
    expected = _reference_value_ok(value, quoted, kind)
    assert secrets._value_ok(value, quoted, kind) is expected
    assert secrets._value_ok(value + ".", quoted, kind) is _reference_value_ok(
        value + ".", quoted, kind
    )


def test_the_bounds_are_where_the_entropy_puts_them() -> None:
    """6 distinct characters can reach 2.5 bits and 8 can reach 3.0; 5 and 7 cannot."""
    assert secrets._value_ok("aB3!dEaB", False, "password")  # 6 distinct: found
    assert not secrets._value_ok("aB3!daB3", False, "password")  # 5: refused
    assert secrets._value_ok("aB3!dEfG", False, "generic_secret")  # 8 distinct, 3.0 bits
    assert not secrets._value_ok("aB3!dEfaB3!dEf", False, "generic_secret")  # 7
    text = "password=aB3!dEaB password=aB3!daB3 token=aB3!dEfG token=aB3!dEfaB3!dEf "
    found = [(s.type, text[s.start : s.end]) for s in find_spans(text, DETECTORS)]
    assert found == [("password", "aB3!dEaB"), ("generic_secret", "aB3!dEfG")]


def _random_value(rnd: random.Random) -> str:
    alphabets = [
        string.ascii_letters + string.digits,
        string.ascii_lowercase + "-_.:",
        "0123456789-",
        string.hexdigits[:16] + "-:",
        "abcdefghijklmnop",
        "aA1$",
        string.printable[:94],
        "k\u212aK\u00e5\u212b\u00c5\u03a3\u03c3\u03c2\u0130\u00e9",
    ]
    a = rnd.choice(alphabets)
    n = rnd.choice([6, 7, 8, 9, 10, 12, 16, 24, 40, 70])
    value = "".join(rnd.choice(a) for _ in range(n))
    if rnd.random() < 0.3:
        value = rnd.choice(["", "$", "<", "%", "@", "~/", "./"]) + value
    if rnd.random() < 0.3:
        value += rnd.choice(["here", "...", "EXAMPLE", ">", "}", "x.pem", ".", "abcdefgh"])
    return value


@pytest.mark.parametrize("seed", [1, 2])
def test_value_checks_answer_as_before_on_random_values(seed: int) -> None:
    rnd = random.Random(seed)
    for _ in range(20000):
        value = _random_value(rnd)
        assert placeholder(value) is placeholder_as_written(value), value
        for kind in ("password", "generic_secret"):
            for quoted in (False, True):
                got = secrets._value_ok(value, quoted, kind)
                assert got is _reference_value_ok(value, quoted, kind), (value, kind, quoted)


def _reference_owned_label(low: str, i: int, ms: int, me: int, owner: str) -> int:
    if i == 5 and not owner.rstrip("_-. ").endswith(secrets._KEY_OWNERS):
        return -1
    word = secrets._WORD.match(low, ms)
    assert word is not None
    if not secrets._label_ok(owner + word.group(), word.group(), owner):
        return -1
    if low[me - 1] == ":" and "." in owner:
        return -1
    return ms - len(owner)


def test_label_verdicts_after_distinct_owner_words_answer_as_before() -> None:
    rnd = random.Random(3)
    owners = ["", "api_", "my", "public_", "csrf-", "x.", "a.b_", "publishable__", "access.",
              "subscription-", "3c6e", "url", "file_", "type", "__", "io.json"]  # fmt: skip
    words = ["token", "secret", "key", "pwd", "password", "creds", "credentials", "secret_key_2",
             "tokenid", "token_url", "secretstring", "keys", "key_len", "token9"]  # fmt: skip
    ops = ["=", ": ", ":", " = ", '"=', ":="]
    checked = 0
    for _ in range(5000):
        owner = rnd.choice(owners) + rnd.choice(["", str(rnd.randint(0, 99)), "_"])
        text = rnd.choice(["", " ", "x "]) + owner + rnd.choice(words) + rnd.choice(ops) + "v" * 9
        low = lowered(text)
        for i, regex in enumerate(secrets._ASSIGN):
            for m in regex.finditer(low):
                ms, me = m.span()
                own = ""
                if ms and low[ms - 1] in secrets._KEY_CHARS:
                    own = low[max(0, ms - 40) : ms]
                    own = own[len(own.rstrip(secrets._KEY_CHARS_STR)) :]
                want = _reference_owned_label(low, i, ms, me, own)
                assert secrets._owned_label(low, i, ms, me, own) == want, text
                checked += 1
    assert checked > 3000


_V = "aB3!dEfGhJ"  # a value the checks take


# Each text with the values the label pass found in it before its refusals were reordered.
@pytest.mark.parametrize(
    ("text", "values"),
    [
        # A refused value (too few distinct characters) whose label is refused too, or taken:
        # the scan resumes at its end either way, as no label of the regex starts inside it.
        (f"tokenizer=1-----,token={_V} ", [_V]),
        (f"token_url=1-----,token={_V} ", [_V]),
        (f"tokenizer=1-----token={_V} ", [_V]),
        # A stem inside the refused value, or running past its 256-character cut.
        ("token=" + "1-" * 127 + f"xtoken={_V} ", []),
        ("token=" + "1-" * 127 + f"token={_V} ", []),
        ("token=" + "1-" * 128 + f"token={_V} ", [_V]),
        ("secret=" + "1-" * 130 + f"secret = {_V} ", [_V]),
        (f"token=1-----token = {_V} ", []),
        (f'token="1-----"token="{_V}" ', [_V]),
        (f"api_key=1-----key: {_V} apikey=1-----,api_key={_V}", [_V]),
        # A quoted value after an upper-case prefix letter (`B"…"` is no bytes literal).
        (f'token=B"{_V}" token=b"{_V}" ', [_V]),
    ],
)
def test_refused_values_resume_the_scan_where_they_did(text: str, values: list[str]) -> None:
    found = list(secrets._assignments(text, lowered(text)))
    assert [text[s.start : s.end] for s in found] == values
