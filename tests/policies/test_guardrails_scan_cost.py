"""What the guardrails' scan costs per KB on hostile text, against prose, for every detector family.

Issue 9's bar is 2x prose for text that finds nothing (`benchmarks/guardrails_overhead.py` measures
it on 256 KB); floods are held to 3x here, so a loaded machine does not fail them, while a detector
doing heavy work at every occurrence of a short token (a Python step per colon made `::` 13.8x)
still does. Texts made of findings, one every few bytes, each pay the checks and the span of a
finding that must be redacted: repeated ones are held to 3x, distinct ones to what they cost now
(`_DISTINCT_BOUND`). Both costs are the CPU time of this thread, the best of several interleaved
runs in this one process, never an absolute time. The texts are `tests/support/guardrail_texts.py`.
"""

from __future__ import annotations

import re
import time

import pytest

from policies.guardrails import DETECTORS
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

# Held above 3x: what it costs now, with room for noise. `@b.co@b.co…` is a chain of
# overlapping mailboxes (`co@b.co`), one every 5 bytes, each found and then settled against the
# next.
_UNIT_BOUND = {"@b.co": 4.5}
# A refused chain of placeholder labels repeated: its inner labels are examined once per window
# (~3.2x at 256 KB).
_UNIT_BOUND["token=xxxxxxxx&token=xxxxxxxx "] = 4.5
# A bearer value holding 20 AKIA ids: each id is found and settled against the value (2.9x before
# cut labelled values were searched again, 3.1x since).
_UNIT_BOUND["Bearer " + "AKIAIOSFODNN7ABCDEFG." * 20 + " "] = 4.0
# Trunk-0 phones one space apart: each pays the IBAN-groups look (a space before it) and the cut
# of its candidate back to its own groups (~4.9x at 256 KB against prose at its speed; a newline
# apart ~2.4x).
_UNIT_BOUND["020 7946 0958 "] = 6.0
# Repeated IBANs: each pays its mod-97 check and a phone candidate refused by the IBAN-groups look
# (~4.4x).
_UNIT_BOUND["DE89 3704 0044 0532 0130 00 "] = 6.0
# Phones dialled with `00` one space apart: each is also tried as a national number and as a card
# by the numeric pass, and cut back by both (~5.9x; found in pairs of 20 digits at 2x before).
_UNIT_BOUND["001 518 640 0854 "] = 7.5


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
def test_adversarial_text_costs_at_most_3x_prose_per_kb(unit: str) -> None:
    prose, text = _fill(PROSE), _fill(unit)
    find_spans(prose, DETECTORS)
    bound = _UNIT_BOUND.get(unit, 3.0)
    p1, a1 = _best(prose), _best(text)
    ratio = a1 / min(p1, _best(prose))
    if ratio > bound:  # measured again before failing: one noisy moment is not a regression
        ratio = min(ratio, _best(text, 9) / _best(prose, 9))
    assert ratio <= bound, f"{unit!r}: {ratio:.1f}x prose"


@pytest.mark.parametrize("name", sorted(DISTINCT_FLOODS))
def test_floods_of_distinct_values_cost_at_most_3x_prose_per_kb(name: str) -> None:
    """Labels whose distinct values the checks refuse: no kept verdict helps, and each label
    inside a refused value is examined (6-8x prose when each was judged to the end of the run)."""
    prose, text = _fill(PROSE), distinct_flood(name, _SIZE)
    find_spans(prose, DETECTORS)
    bound = _FLOOD_BOUND.get(name, 3.0)
    ratio = _best(text) / min(_best(prose), _best(prose))
    if ratio > bound:
        ratio = min(ratio, _best(text, 9) / _best(prose, 9))
    assert ratio <= bound, f"{name}: {ratio:.1f}x prose"


# Floods held above 3x: what they cost now (5.7-6.4x prose at 256 KB, quiet), over issue 9's 2x
# bar. A label every 16-20 bytes whose distinct value passes the placeholder and example checks
# and is refused by its entropy costs ~9 µs of Python per label (regex match, value match, the
# checks, the search for labels inside it); prose of that length costs ~1.8 µs.
_FLOOD_BOUND = {"secret_low_entropy": 8.0, "api_key_after_hex": 8.0}


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


# Where a text of distinct findings is held above 3x: what it costs now (CPU time, 64 KB, on a
# loaded 2-core VM), with room for noise. Each pays a few microseconds of Python per finding
# (IPv6 networks, a labelled AWS secret found by two labels and its entropy, card Luhn and
# issuer checks, an E.164 phone and the NANP number inside it).
_DISTINCT_BOUND = {
    "card": 4.0, "card_dash": 4.0, "card_bare": 4.0, "phone_e164": 4.0, "openai_key": 4.0,
    "github_token": 4.0, "bearer": 4.0, "ipv6": 6.0, "aws_secret": 6.0,
    # Each cut value pays a labelled value's checks once more (~4.8x; ~3.1x and ~2.4x uncut).
    "cut_token": 6.0, "cut_password": 6.0,
    # Each pays three labelled values' checks: the refused one, its head, the second label's.
    "refused_token": 6.0,
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(DISTINCT_FINDINGS))
def test_distinct_findings_cost_a_bounded_multiple_of_prose_per_kb(name: str) -> None:
    prose, text = _fill(PROSE), distinct(name, _SIZE)
    find_spans(prose, DETECTORS)
    bound = _DISTINCT_BOUND.get(name, 3.0)
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


def test_prose_scans_at_most_3_1_word_regex_passes() -> None:
    """Every ratio above is against prose, so prose getting slower hides behind them: this holds
    prose to a reference the guardrails do not touch, one C pass of a word regex over the same
    text (both CPU time in this thread). ~2.6 now; 3.5 when a lookbehind leading three phone
    regexes cost them CPython's fast scan for their first literal (prose 105 -> 157 µs/KB)."""
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
    if ratio > 3.1:
        ratio = min(ratio, _best(prose, 15) / words_pass(15))
    assert ratio <= 3.1, f"prose scan: {ratio:.2f} word-regex passes"
