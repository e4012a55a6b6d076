"""What the guardrails' scan costs per KB on hostile text, against prose, for every detector family.

Issue 9's bar is 2x prose for text that finds nothing (`benchmarks/guardrails_overhead.py` measures
it on 256 KB). These tests catch regressions on any machine, not that bar: each bound is ~1.5x
what this text costs on the development VM, because a ratio is not the same on every CPU (the CI
machine measured `@b.co` at 4.7x and `+1 415 555 0132 ` at 3.0x where the development VM measured
3.6x and 2.3x, before their scans moved to C). Floods and texts of findings are held to 4x by
default, so a detector doing heavy work at every occurrence of a short token (a Python step per
colon made `::` 13.8x) still fails. Texts made of findings, one every few bytes, each pay the
checks and the span of a finding that must be redacted; those costing more, or far less, are held
to what they cost now (`_UNIT_BOUND`, `_DISTINCT_BOUND`). Both costs are the CPU time of this
thread, the best of several interleaved runs in this one process, never an absolute time. The
texts are `tests/support/guardrail_texts.py`.
"""

from __future__ import annotations

import importlib
import re
import time

import pytest

from policies.guardrails import DETECTORS, checks
from policies.guardrails.engine import find_spans
from tests.support.guardrail_texts import (
    DISTINCT_FINDINGS,
    DISTINCT_FLOODS,
    DISTINCT_TYPES,
    FLOODS,
    PROSE,
    REPEATED_FINDINGS,
    distinct,
    distinct_flood,
    fill,
)

_SIZE = 64 * 1024

# The default bound of the tests below (see the module's docstring).
_DEFAULT_BOUND = 4.0
# Held below the default since their loops moved to C (`_checks_c.pii_emails`, `pii_phones`,
# `pii_intl`, `pii_ipv6`, `settle`): ~1.5-2x what they cost now on the development VM (64 KB).
# `@b.co@b.co…` is a chain of overlapping mailboxes (`co@b.co`), one every 5 bytes, each found and
# then settled against the next (~3.6x in Python).
_UNIT_BOUND = {"@b.co": 2.0, "a@b.co ": 2.0, "a@b.co,": 2.0}  # (~1.0x, 0.8x, 0.8x)
_UNIT_BOUND |= {"(415) 555-0132 ": 2.5, "+1 415 555 0132 ": 2.5}  # (~1.4x, 1.3x)
_UNIT_BOUND["2001:4860:4860::8888 "] = 2.5  # (~1.4x)
# A refused chain of placeholder labels repeated: its inner labels are examined once per window
# (~3.2x at 256 KB).
_UNIT_BOUND["token=xxxxxxxx&token=xxxxxxxx "] = 4.5
# Where the C checks (policies/guardrails/_checks_c.c) are not built, the texts they hold under
# the default bound are held to what their Python fallback costs: a bearer value holding 20 AKIA
# ids, each found and settled against the value (~3.1x in Python, ~1.2x with the C `aws_spans`).
_PYTHON_UNIT_BOUND = {"Bearer " + "AKIAIOSFODNN7ABCDEFG." * 20 + " ": 4.5}
# and the PII texts held below it since their loops moved to C (`_UNIT_BOUND` above): the chain of
# mailboxes (~3.6x in Python), the `00`-dialled phones (~5.9x at 256 KB), the rest (default).
_PYTHON_UNIT_BOUND |= {"@b.co": 6.0, "001 518 640 0854 ": 8.0}
_PYTHON_UNIT_BOUND |= dict.fromkeys(
    ("a@b.co ", "a@b.co,", "(415) 555-0132 ", "+1 415 555 0132 ", "2001:4860:4860::8888 "),
    _DEFAULT_BOUND,
)
# The texts of numbers, since their pass moved to C (`_checks_c.pii_numeric`, and the IBAN-groups
# look of `pii_intl`): ~0.55-0.75x prose at 64 KB (1.8-2.3x at 256 KB before).
_NUMERIC_UNITS = ("DE89 3704 0044 0532 0130 00 ", "020 7946 0958 ", "8.8.8.8 ", "SSN: 078051123 ",
                  "078-05-1120 ", "4111 1111 1111 1111 ")  # fmt: skip
_UNIT_BOUND |= dict.fromkeys(_NUMERIC_UNITS, 1.5)
_PYTHON_UNIT_BOUND |= dict.fromkeys(_NUMERIC_UNITS, _DEFAULT_BOUND)
# In Python, trunk-0 phones one space apart: each pays the IBAN-groups look (a space before it)
# and the cut of its candidate back to its own groups (~4.9x at 256 KB against prose at its speed;
# a newline apart ~2.4x).
_PYTHON_UNIT_BOUND["020 7946 0958 "] = 6.0
# Repeated IBANs: each pays its mod-97 check and a phone candidate refused by the IBAN-groups look
# (~4.4x in Python).
_PYTHON_UNIT_BOUND["DE89 3704 0044 0532 0130 00 "] = 6.5
# Phones dialled with `00` one space apart: each is also tried as a national number and as a card
# by the numeric pass, and cut back by both (~5.9x in Python; ~1.45x since the `00` loop is C).
_UNIT_BOUND["001 518 640 0854 "] = 2.5
# `authorization: basic authorization…`: each value's length is refused before base64 decodes it
# (~0.6-0.8x; a caught decode error made it 2.3-2.6x at 256 KB).
_UNIT_BOUND["authorization: basic "] = 1.2
# A refused value holding a label of its kind, repeated: with the C label pass, each one's kept
# answer (`_labels_in_refused`'s) is looked up in C (~1.3x; 2.1x when each was handed to Python).
if checks._C is not None:
    _UNIT_BOUND["token=xxxxxxxx&token=xxxxxxxx "] = 2.6


def _fill(unit: str) -> str:
    return fill(unit, _SIZE)


def _best(text: str, runs: int = 5) -> float:
    best = float("inf")
    for _ in range(runs):
        t0 = time.thread_time()  # CPU time: other processes on the machine do not count
        find_spans(text, DETECTORS)
        best = min(best, time.thread_time() - t0)
    return best


@pytest.mark.parametrize("unit", FLOODS + REPEATED_FINDINGS)
def test_adversarial_text_costs_a_bounded_multiple_of_prose_per_kb(unit: str) -> None:
    prose, text = _fill(PROSE), _fill(unit)
    find_spans(prose, DETECTORS)
    bound = _UNIT_BOUND.get(unit, _DEFAULT_BOUND)
    if checks._C is None:
        bound = _PYTHON_UNIT_BOUND.get(unit, bound)
    p1, a1 = _best(prose), _best(text)
    ratio = a1 / min(p1, _best(prose))
    if ratio > bound:  # measured again before failing: one noisy moment is not a regression
        ratio = min(ratio, _best(text, 9) / _best(prose, 9))
    assert ratio <= bound, f"{unit!r}: {ratio:.1f}x prose"


@pytest.mark.parametrize("name", sorted(DISTINCT_FLOODS))
def test_floods_of_distinct_values_cost_a_bounded_multiple_of_prose_per_kb(name: str) -> None:
    """Labels whose distinct values the checks refuse: no kept verdict helps, and each label
    inside a refused value is examined (6-8x prose when each was judged to the end of the run)."""
    prose, text = _fill(PROSE), distinct_flood(name, _SIZE)
    find_spans(prose, DETECTORS)
    bound = _FLOOD_BOUND.get(name, _DEFAULT_BOUND)
    ratio = _best(text) / min(_best(prose), _best(prose))
    if ratio > bound:
        ratio = min(ratio, _best(text, 9) / _best(prose, 9))
    assert ratio <= bound, f"{name}: {ratio:.1f}x prose"


# No flood of distinct values is held above the default: each costs 1.2-1.8x prose with the C
# value checks (policies/guardrails/_checks_c.c) and at most ~3.8x with their Python fallback (a
# label every ~18 bytes whose value passes every cheap check and is refused by its last one: its
# entropy or an ascending run).
_FLOOD_BOUND: dict[str, float] = {}
# Without the C checks, the labels of digits in ascending runs cost the Python entropy and run
# checks per value (~3.7-4.4x at 64 KB on a loaded VM).
if checks._C is None:
    _FLOOD_BOUND["pwd_ascending_run"] = 5.5
# With the label pass's step in C (`_checks_c.label_scan`), the floods whose labels it passes over
# cost ~1.0-1.7x (2.0-2.6x before): held to ~1.5x that.
if checks._C is not None:
    for _name in ("token_xxxx", "password_changeme", "api_key_example", "api_key_code_ref",
                  "secret_low_entropy", "secret_ascending_run", "cred_quoted_low_entropy",
                  "token_kelvin_ascending", "secret_entropy_eight_distinct",
                  "pwd_ascending_run",
                  # (and, since it passes over labels after distinct owner words, `:` values
                  # that are no `id:secret` and labels whose value runs past theirs: 2.0-2.4x
                  # before, ~1.3-1.4x now)
                  "pwd_glued_owner", "api_key_after_hex", "api_key_at_sign"):  # fmt: skip
        _FLOOD_BOUND[_name] = 2.6


@pytest.mark.parametrize("name", sorted(DISTINCT_FLOODS))
def test_floods_of_distinct_values_find_next_to_nothing(name: str) -> None:
    """The plain ones find nothing; the nested ones too until REFUSED_LABELS labels inside
    refused values were examined, then each refused value holding labels is reported whole
    (one per 256 bytes at most)."""
    found = find_spans(distinct_flood(name, _SIZE), DETECTORS)
    if name.endswith("_nested"):
        assert len(found) <= _SIZE // 200
    else:
        assert found == []


# Where a text of distinct findings is held above 4x (or below, where its scan is C): ~1.5x what
# it costs now on the development VM (CPU time, 64 KB; the figure in brackets). Each pays a few
# microseconds of Python per finding (a labelled AWS secret found by two labels and its entropy,
# card Luhn and issuer checks, the NANP number inside an E.164 phone).
_DISTINCT_BOUND = {
    # Since the numeric pass moved to C (`_checks_c.pii_numeric`): ~0.6-0.7x.
    "card": 1.5, "card_dash": 1.5, "card_bare": 1.5, "ssn": 1.5, "ipv4": 1.5, "phone_nanp": 1.5,
    "github_token": 4.5,  # (2.9x)
    # Reported in C from the label regex's head since session 9 (`label_scan`: ~1.5x on this
    # machine, 2.7x before; 4.0x on the VM before): its Python fallback below.
    "aws_secret": 3.5,
    # Below the default since their scans moved to C (2.8x, ~2x and ~3x in Python).
    "ipv6": 2.0, "email": 2.0, "phone_e164": 2.5,  # (0.8x, 1.0x, 1.5x)
    # Each pays three labelled values' checks: the refused one, its head, the second label's.
    "refused_token": 5.0,  # (3.1x)
}  # fmt: skip


# Held under the default with the C checks, to what their Python fallback costs without them:
# bearer tokens (~1.1x with the C `bearer_spans`, ~2.7x in Python) and cut labelled values, each
# paying a labelled value's checks once more (~2.5x and ~2.2x with the C `cut_rest` and
# `aws_spans`, ~4.5x in Python).
_PYTHON_DISTINCT_BOUND = {"bearer": 4.5, "cut_token": 7.0, "cut_password": 7.0}
# A labelled AWS secret found by two labels and its entropy, each label in Python (4.0x).
_PYTHON_DISTINCT_BOUND |= {"aws_secret": 6.5}
# The numeric pass in Python: cards pay their Luhn and issuer checks (3.2x, 3.0x, 2.6x), the others
# the default.
_PYTHON_DISTINCT_BOUND |= {"card": 5.0, "card_dash": 5.0, "card_bare": 4.5}
_PYTHON_DISTINCT_BOUND |= dict.fromkeys(("ssn", "ipv4", "phone_nanp"), _DEFAULT_BOUND)
# And the PII scans moved to C: IPv6 (~2.8x in Python), mailboxes and E.164 phones (default).
_PYTHON_DISTINCT_BOUND |= {"ipv6": 5.0, "email": _DEFAULT_BOUND, "phone_e164": _DEFAULT_BOUND}


@pytest.mark.parametrize("name", sorted(DISTINCT_FINDINGS))
def test_distinct_findings_cost_a_bounded_multiple_of_prose_per_kb(name: str) -> None:
    prose, text = _fill(PROSE), distinct(name, _SIZE)
    find_spans(prose, DETECTORS)
    bound = _DISTINCT_BOUND.get(name, _DEFAULT_BOUND)
    if checks._C is None:
        bound = _PYTHON_DISTINCT_BOUND.get(name, bound)
    ratio = _best(text) / min(_best(prose), _best(prose))
    if ratio > bound:
        ratio = min(ratio, _best(text, 9) / _best(prose, 9))
    assert ratio <= bound, f"{name}: {ratio:.1f}x prose"


def test_distinct_texts_hold_their_findings() -> None:
    """The generators make what they say: findings of the named type, one per part."""
    for name, make in DISTINCT_FINDINGS.items():
        text = "".join(make(i) for i in range(50))
        found = [s.type for s in find_spans(text, DETECTORS)]
        assert found.count(DISTINCT_TYPES[name]) >= 45, (name, found[:5])


@pytest.mark.parametrize("unit", FLOODS)
def test_floods_find_next_to_nothing(unit: str) -> None:
    """A flood is judged as text without findings: it finds at most one per 200 bytes (a label
    flood, `api_key=api_key=…`, is one long labelled value every 256 bytes)."""
    assert len(find_spans(_fill(unit), DETECTORS)) <= _SIZE // 200


@pytest.mark.parametrize("unit", REPEATED_FINDINGS)
def test_repeated_finding_texts_are_made_of_findings(unit: str) -> None:
    """A text of repeated findings is judged as such: at least one finding per 40 bytes."""
    assert len(find_spans(_fill(unit), DETECTORS)) >= _SIZE // 40


_WORDS = re.compile(r"\b\w+\b")


def test_prose_scans_at_most_3_3_word_regex_passes() -> None:
    """Every ratio above is against prose, so prose getting slower hides behind them: this holds
    prose to a reference the guardrails do not touch, one C pass of a word regex over the same
    text (both CPU time in this thread). ~2.6 now; 3.5 when a lookbehind leading three phone
    regexes cost them CPython's fast scan for their first literal (prose 105 -> 157 µs/KB), which
    `test_no_guardrail_regex_starts_with_a_lookaround` now refuses without a clock; the bound
    leaves room for CPUs where the ratio differs."""
    prose = _fill(PROSE)
    find_spans(prose, DETECTORS)

    def words_pass(runs: int = 9) -> float:
        best = float("inf")
        for _ in range(runs):
            t0 = time.thread_time()
            _WORDS.findall(prose)
            best = min(best, time.thread_time() - t0)
        return best

    ratio = _best(prose, 9) / words_pass()
    if ratio > 3.3:
        ratio = min(ratio, _best(prose, 15) / words_pass(15))
    assert ratio <= 3.3, f"prose scan: {ratio:.2f} word-regex passes"


def _guardrail_patterns() -> list[tuple[str, re.Pattern[str]]]:
    found = []
    for name in ("checks", "classifiers", "engine", "injection", "pii", "secrets", "stream"):
        module = importlib.import_module(f"policies.guardrails.{name}")
        for key, value in vars(module).items():
            values = value if isinstance(value, tuple | list) else (value,)
            found += [(f"{name}.{key}", p) for p in values if isinstance(p, re.Pattern)]
    return found


def test_no_guardrail_regex_starts_with_a_lookaround() -> None:
    """A search for a regex that starts with a literal skips ahead to each occurrence of it in C;
    one that starts with a lookaround (`(?<!\\d)\\+…`) tries the lookaround at every position.
    Put after the literal (`\\+(?<!\\d\\+)…`), it answers the same. Three phone regexes led
    with one and made prose 1.5x slower, which no ratio to prose can see."""
    patterns = _guardrail_patterns()
    assert len(patterns) > 50
    leading = [k for k, p in patterns if p.pattern.startswith(("(?=", "(?!", "(?<=", "(?<!"))]
    assert leading == []
