"""The texts the guardrails' cost is judged on: prose, adversarial token floods, and texts made of
findings. Shared by `tests/policies/test_guardrails_scan_cost.py` (bounds, 64 KB) and
`benchmarks/guardrails_overhead.py` (figures, 256 KB), so both judge the same inputs.

Two kinds, judged differently (README, "Guardrail cost"):
- `FLOODS`: short tokens that start (or almost complete) a detector's pattern, repeated, runs of
  numbers that start a shape and fail it, and base64 that decodes to prose; and `DISTINCT_FLOODS`,
  labels with distinct values the checks refuse. They find nothing or next to nothing (at most one
  finding per 200 bytes): what they cost is the scanner's own work, bounded at 2x prose per KB.
- `REPEATED_FINDINGS` and `DISTINCT_FINDINGS`: every few bytes a real finding, each of which must be
  reported and redacted. Their cost is the scan plus a bounded cost per finding.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

PROSE = (Path(__file__).resolve().parents[1] / "policies" / "corpus" / "ordinary.txt").read_text(
    encoding="utf-8"
)

FLOODS = (
    "sk-", "eyJ", "ghp_", "github_pat_", "-----BEGIN PRIVATE KEY-----",
    "api_key=", "password=", "AccountKey=", "bearer ", "://a:", "01 ", "1", "12-", "+1 ", "a@b.",
    "::", "x::0", "0:", "0::", "curl -u a:", "authorization: basic ", "Q~", "==", "glft-",
    "key=", "ikey=", "token: ", "tokenizer: ", "token_id: ", "1Q~", "a==", "api_key: ",
    "password: ",
    # Labels whose values the checks refuse, holding labels of their kind: each label in them is
    # examined (the repeating window once).
    "token=", "pwd=", "token=xxxxxxxx&token=xxxxxxxx ", "password=changeme&password=",
    "system ", "## system\n", " mode", "ignore all ", "you must ", "the user ", "aGVsbG8gd29ybGQ",
    # Runs of numbers that each start a shape and fail it (found by a search over random units):
    # every alternative was tried at every digit (up to 3.9x prose before the left-boundary look).
    "0044 ", "820858.2", "57.0704", "-056627 ", "5  73604", "..0000", "4 93",
    # Base64 that decodes to prose: the text was searched for a cue once per blob (quadratic).
    "aGVsbG8gd29ybGQgdGhpcyBpcyBhIHBsYWluIHRlc3Qgb2Ygd29yZHM= ",
)  # fmt: skip

# One finding per occurrence, the same one repeated.
REPEATED_FINDINGS = (
    "AKIAAAAAAAAAAAAAAAAA ", "password=Hunter2024 ", "8.8.8.8 ", "4111 1111 1111 1111 ",
    "a@b.co ", "a@b.co,", "4111111111111111 ", "415-555-0132 ", "(415) 555-0132 ",
    "+1 415 555 0132 ", "078-05-1120 ", "SSN: 078051123 ", "AB 12 34 56 C ",
    # Trunk-0 phones one space apart: each candidate takes the next phone's groups too and is
    # cut back to its own (`_natl_head`).
    "020 7946 0958 ",
    # The same dialled with `00`, cut back before the next number's `00` group.
    "001 518 640 0854 ",
    "DE89 3704 0044 0532 0130 00 ", "2001:4860:4860::8888 ", "api_key=Zk3jQ9vLw2Xp ",
    "AKIAIOSFODNN7ABCDEFQ ", "Bearer abcdEFGH1234ijklMNOP5678 ",
    # A chain of overlapping mailboxes (`co@b.co`), one every 5 bytes, each settled against the
    # next.
    "@b.co",
    # Labelled values cut by the specific hits inside them: each stretch beside the hits is
    # searched again (labels of several kinds nested in one value; email and IPv4 hits too).
    "token=AKIAIOSFODNN7ABCDEFG&", "api_key=AKIAIOSFODNN7ABCDEFG&token=",
    "password=Xk9mQ2vL7pRt/AKIAIOSFODNN7ABCDEFG/", "token=8.8.8.8&", "password=u@mail.co&",
    "Bearer " + "AKIAIOSFODNN7ABCDEFG." * 20 + " ",
)  # fmt: skip


def _luhn_completed(digits: str) -> str:
    """`digits` and the check digit that makes it pass Luhn."""
    total = sum(
        (2 * int(d) - 9 * (int(d) > 4)) if i % 2 == 0 else int(d)
        for i, d in enumerate(reversed(digits))
    )
    return digits + str(-total % 10)


def _card(i: int, sep: str) -> str:
    number = _luhn_completed("4" + f"{i * 7919 % 10**14:014d}")
    return sep.join(number[k : k + 4] for k in range(0, 16, 4))


def _token(i: int, n: int) -> str:
    """A distinct token of `n` letters and digits that looks generated (entropy, mixed case)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    x = (i + 1) * 2654435761
    out = []
    for _ in range(n):
        x = (x * 6364136223846793005 + 1442695040888963407) % 2**64
        out.append(alphabet[(x >> 32) % 62])
    return "".join(out)


# Distinct findings, one after another: a kept verdict does not help, so each pays its checks.
DISTINCT_FINDINGS: dict[str, Callable[[int], str]] = {
    "ipv4": lambda i: f"8.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255} ",
    "email": lambda i: f"u{i}@b.co ",
    "password": lambda i: f"password=Hunter{i:06d}x ",
    "api_key": lambda i: f"api_key={_token(i, 24)} ",
    "card": lambda i: _card(i, " ") + " ",
    "card_dash": lambda i: _card(i, "-") + " ",
    "card_bare": lambda i: _card(i, "") + " ",
    "phone_nanp": lambda i: f"{200 + i % 700}-555-{i % 10000:04d} ",
    "phone_e164": lambda i: f"+1 415 {555 + i % 400:03d} {i % 10000:04d} ",
    "ssn": lambda i: f"{100 + i % 500:03d}-{10 + i % 89:02d}-{1000 + i % 9000:04d} ",
    "openai_key": lambda i: f"sk-{_token(i, 48)} ",
    "github_token": lambda i: f"ghp_{_token(i, 36)} ",
    "bearer": lambda i: f"Bearer {_token(i, 32)} ",
    "ipv6": lambda i: f"2001:4860:{i % 65536:x}::{i * 31 % 65536:x} ",
    "aws_secret": lambda i: f"aws_secret_access_key = {_token(i, 40)}\n",
    # Labelled values cut by the specific hit inside them: a second label, the rest past an email.
    "cut_token": lambda i: f"token=AKIA{_token(i, 16).upper()}&token={_token(i + 1, 24)} ",
    "cut_password": lambda i: f"password=u{i}@mail.co:{_token(i, 12)} ",
    # A refused value holding a second label: its head and the second label's value are judged.
    "refused_token": lambda i: f"token=xxxxxxxx&token={_token(i, 24)} ",
}

# The finding type each distinct text is made of.
DISTINCT_TYPES = {
    "ipv4": "ip_address", "email": "email", "password": "password", "card": "payment_card",
    "card_dash": "payment_card", "card_bare": "payment_card", "phone_nanp": "phone",
    "phone_e164": "phone", "ssn": "us_ssn", "api_key": "generic_secret",
    "openai_key": "openai_api_key", "github_token": "github_token", "bearer": "bearer_token",
    "ipv6": "ip_address", "aws_secret": "aws_secret_key", "cut_token": "generic_secret",
    "cut_password": "password", "refused_token": "generic_secret",
}  # fmt: skip


# Floods of distinct values: labels whose values the checks refuse (a placeholder, a documentation
# example, a code reference), each value distinct so no kept verdict helps. They find nothing and
# are judged as floods. Plain, and nested: the `&` runs each value on over the next labels, so
# every label inside a refused value is examined (3.3-4.2x and 6.2-8.0x prose before their
# labels and heads were judged once each).
DISTINCT_FLOODS: dict[str, Callable[[int], str]] = {
    "token_xxxx": lambda i: f"token=xxxxxxx{i} ",
    "password_changeme": lambda i: f"password=changeme{i} ",
    "api_key_example": lambda i: f"api_key=example{i} ",
    "api_key_code_ref": lambda i: f"api_key=settings.key{i} ",
    "token_xxxx_nested": lambda i: f"token=xxxxxxx{i}&",
    "password_changeme_nested": lambda i: f"password=changeme{i}&",
    "api_key_example_nested": lambda i: f"api_key=example{i}&",
    # Found by a randomised search over label/value templates: values refused only by their
    # entropy (past the placeholder and example checks) cost the most per label.
    "secret_low_entropy": lambda i: f"secret={i}-----,",
    "api_key_after_hex": lambda i: (
        "-----:" + format(i * 2654435761 % 2**32, "x")[: 2 + i % 7] + "}api_key="
    ),
    # Found by the same search once the entropy refusals above were cut to a count of distinct
    # characters (session 7): values refused by their last checks, an ascending run (`example`)
    # after a template-looking `$`, the entropy of a quoted value with 8 distinct characters, a
    # leading `@`, an ascending run after a non-ASCII `K` (Kelvin sign: the checks' non-ASCII
    # paths), and values glued to the next label, whose owner word is then distinct each time.
    "secret_ascending_run": lambda i: f"Secret={_hex(i, 8)}abcdefgh$&)",
    "cred_quoted_low_entropy": lambda i: (
        "cred='" + "".join(chr(65 + (i >> (2 * k)) % 26) for k in range(4)) + "-----!ABCD'<"
    ),
    "api_key_at_sign": lambda i: f"api_key=>@${i}&",
    "token_kelvin_ascending": lambda i: f"token='\u212aabcdefgh{i}{{'}}",
    "pwd_glued_owner": lambda i: "pwd = {" + _hex(i, 2 + i % 7),
    # The costliest the search found after that: a value with 8 distinct characters refused by
    # its entropy alone, past every other check, and a password (6 distinct characters are
    # enough to pass their count) refused by an ascending run, a label every 16 bytes.
    "secret_entropy_eight_distinct": lambda i: f"x_secret=-----{_hex(i, 8)}#<",
    "pwd_ascending_run": lambda i: f"pwd=abcdefgh{_hex(i, 4)};",
}


def _hex(i: int, n: int) -> str:
    """Up to `n` hex digits, distinct for each `i` (a multiplicative hash)."""
    return format(i * 2654435761 % 2**32, "x")[:n]


def fill(unit: str, size: int) -> str:
    """`unit` repeated to exactly `size` characters."""
    return (unit * (size // len(unit) + 1))[:size]


def _made(make: Callable[[int], str], size: int) -> str:
    parts, n, i = [], 0, 0
    while n < size:
        parts.append(make(i))
        n, i = n + len(parts[-1]), i + 1
    return "".join(parts)[:size]


def distinct(name: str, size: int) -> str:
    """`size` characters of distinct findings of the kind `name` (a `DISTINCT_FINDINGS` key)."""
    return _made(DISTINCT_FINDINGS[name], size)


def distinct_flood(name: str, size: int) -> str:
    """`size` characters of the flood of distinct values `name` (a `DISTINCT_FLOODS` key)."""
    return _made(DISTINCT_FLOODS[name], size)
