"""Scan text for secrets, PII and prompt injection; redact what was found.

Pure and allocation-light: the proxy calls `scan` on every prompt and completion, so detectors
share one lower-cased copy of the text and matched values are dropped as soon as they are
fingerprinted (a Finding can be logged or stored without leaking what it found).
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import itertools
from dataclasses import dataclass
from operator import itemgetter, le, not_, sub

from policies.guardrails import checks
from policies.guardrails.injection import find_injection
from policies.guardrails.pii import find_pii
from policies.guardrails.secrets import (
    LABELLED,
    LABELLED_PRIORITY,
    cut_rest,
    find_secrets,
    rest_of_values,
)
from policies.guardrails.spans import Span, lowered

# `_resolve_overlaps`'s settling in C (checks._C, where built and current), else None.
_settle = getattr(checks._C, "settle", None)
DETECTORS = frozenset({"secrets", "pii", "prompt_injection"})
_START, _END, _PRIORITY = itemgetter(0), itemgetter(1), itemgetter(4)  # of a Span


@dataclass(frozen=True, slots=True)
class Finding:
    """One detected span. `fingerprint` identifies the value across events without revealing it."""

    detector: str
    type: str
    start: int
    end: int
    fingerprint: str


def fingerprint(salt: bytes, value: str) -> str:
    """First 16 hex of HMAC-SHA256(salt, value): stable per salt, useless without it."""
    return hmac.digest(salt, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hex()[:16]


def find_spans(text: str, detectors: frozenset[str]) -> list[Span]:
    """Non-overlapping detector hits in text order (the unfingerprinted core of `scan`)."""
    unknown = detectors - DETECTORS
    if unknown:
        raise ValueError(
            f"unknown detector(s) {sorted(unknown)}; use secrets, pii or prompt_injection"
        )
    if not text:
        return []
    spans: list[Span] = []
    low = lowered(text) if ("secrets" in detectors or "prompt_injection" in detectors) else ""
    if "secrets" in detectors:
        spans.extend(find_secrets(text, low))
    if "pii" in detectors:
        spans.extend(find_pii(text))
    if "prompt_injection" in detectors:
        spans.extend(find_injection(text, low))
    if len(spans) > 1:
        kept = _resolve_overlaps(spans)
        if len(kept) < len(spans) and "secrets" in detectors:
            kept = _cut_labelled_values(text, low, spans, kept)
        spans = kept
    return spans


def _cut_labelled_values(text: str, low: str, spans: list[Span], kept: list[Span]) -> list[Span]:
    """`kept` (`_resolve_overlaps` of `spans`, which it left sorted) with what a labelled value that
    lost to a more specific hit inside it still holds: its stretches that no kept hit covers are
    searched again (`rest_of_values`), so a second label there (`token=AKIA…&token=<secret>`) or
    the rest of the value (`password=<email>:<secret>`) is still found. The stretches are outside
    every kept hit, so only what they yield is settled again."""
    if LABELLED_PRIORITY not in map(_PRIORITY, spans):
        return kept
    # The loop below and `rest_of_values` in one C call where built (the same spans).
    found = cut_rest(text, low, spans, kept)
    if found is None:
        found = _rest_of_cut_values(text, low, spans, kept)
    if not found:
        return kept
    return sorted(kept + _resolve_overlaps(found))


def _rest_of_cut_values(text: str, low: str, spans: list[Span], kept: list[Span]) -> list[Span]:
    """`rest_of_values` of the labelled values of `spans` that lost to a more specific hit of
    `kept` inside them (`secrets.cut_rest` where the C checks are not built)."""
    starts, ends = list(map(_START, kept)), list(map(_END, kept))
    cut: list[tuple[Span, list[Span]]] = []
    # Those kept left out in one C pass (a kept hit is the first kept one that ends after its
    # start, where the bisect below finds it).
    labelled = itertools.compress(spans, map(LABELLED_PRIORITY.__eq__, map(_PRIORITY, spans)))
    for s in itertools.filterfalse(set(kept).__contains__, labelled):
        if s.type not in LABELLED:
            continue
        i = bisect.bisect_right(ends, s.start)  # the first kept hit that ends inside or after s
        hits = kept[i : bisect.bisect_left(starts, s.end, i)]  # those it lost to
        if max(map(_PRIORITY, hits), default=0) > s.priority:  # else settled as before
            cut.append((s, hits))
    return rest_of_values(text, low, cut) if cut else []


def _resolve_overlaps(spans: list[Span]) -> list[Span]:
    """Keep the most specific hit where hits overlap: higher priority, then longer, then earlier.
    Returns the kept spans in text order."""
    spans.sort()  # by start (a Span is a tuple): hits that touch no other are kept as they are
    # Each end against the next start, in C (a text dense with findings has one per few bytes).
    if all(map(le, map(_END, spans), map(_START, itertools.islice(spans, 1, None)))):
        return spans
    if _settle is not None:  # the rest in C (a chain of mailboxes paid ~0.3 µs a hit)
        return _settle(spans, _resolve_group)
    return _resolve_overlaps_py(spans)


def _resolve_overlaps_py(spans: list[Span]) -> list[Span]:
    """`_resolve_overlaps` of sorted spans that overlap, in Python (and where the C is not
    built)."""
    # Each start against the furthest end before it, in C: where it is beyond, a new group of
    # hits begins that touch no hit of another group. Hits of different groups never decide
    # each other's fate, so each group is settled on its own (the same way as all at once): a
    # group of one is kept, two overlapping hits keep the more specific one, and only larger
    # groups pay for the general settling (a text dense with findings has one group per few
    # bytes, most of one or two hits).
    starts, ends = list(map(_START, spans)), list(map(_END, spans))
    # The furthest end so far is each hit's own where the ends never decrease (a text of
    # findings, each maybe holding a shorter one that ends with it): `max` costs a call per hit.
    reach = ends
    if not all(map(le, ends, itertools.islice(ends, 1, None))):
        reach = list(itertools.accumulate(ends, max))
    glued = list(map(le, itertools.islice(starts, 1, None), reach))
    kept: list[Span] = []
    first = 0
    for last in itertools.chain(
        itertools.compress(range(len(glued)), map(not_, glued)), (len(glued),)
    ):
        if last == first:
            kept.append(spans[first])
        elif last == first + 1 and ends[first] > starts[last] < ends[last]:
            # Non-empty and overlapping: the more specific stays (`_specific`, for two hits in
            # text order: higher priority, then longer, then the first).
            a, b = spans[first], spans[last]
            pa, pb = a[4], b[4]
            kept.append(a if pa > pb or (pa == pb and a[1] - a[0] >= b[1] - b[0]) else b)
        else:
            kept.extend(
                _resolve_group(
                    spans[first : last + 1], starts[first : last + 1], ends[first : last + 1]
                )
            )
        first = last + 1
    return kept


def _specific(s: Span) -> tuple[int, int, int]:
    """Sort key of overlapping hits, most specific first."""
    return (-s.priority, s.start - s.end, s.start)


def _resolve_group(spans: list[Span], starts: list[int], ends: list[int]) -> list[Span]:
    """`_resolve_overlaps` of hits that overlap each other (in text order), of these `starts` and
    `ends`."""
    # Hits of one priority and one length (a chain: `a@b.co@b.co…`) are already in that order
    # (text order); others are sorted by `_specific`.
    if len(set(map(_PRIORITY, spans))) > 1 or len(set(map(sub, ends, starts))) > 1:
        spans.sort(key=_specific)
        starts = list(map(_START, spans))
        if not all(map(le, starts, itertools.islice(starts, 1, None))):
            return _resolve_sorted(spans)
        ends = list(map(_END, spans))
    # Settled in text order (a chain of hits of one priority and length: `a@b.co@b.co…`): each
    # one can only collide with the last one kept.
    kept: list[Span] = []
    add = kept.append
    end = -1
    for s, start, s_end in zip(spans, starts, ends, strict=True):
        if end <= start:
            add(s)
            end = s_end
    return kept


def _resolve_sorted(spans: list[Span]) -> list[Span]:
    """`_resolve_overlaps` of hits that overlap each other, sorted by `_specific`."""
    # Kept spans never overlap, so sorted by start they are sorted by end too: one bisect finds
    # the only neighbours a candidate can collide with (O(n log n) for a text full of hits).
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


def scan(
    text: str, detectors: frozenset[str], salt: bytes, spans: list[Span] | None = None
) -> list[Finding]:
    """Findings of the named detectors in `text`, in text order, never overlapping.

    `spans`: `find_spans(text, detectors)` computed elsewhere (a large text is scanned in a
    worker process, off the proxy's event loop)."""
    if spans is None:
        spans = find_spans(text, detectors)
    return [
        Finding(s.detector, s.type, s.start, s.end, fingerprint(salt, text[s.start : s.end]))
        for s in spans
    ]


def redact(text: str, findings: list[Finding]) -> str:
    """Replace each finding's span with `[REDACTED:<type>]` (findings from `scan` of this text)."""
    if not findings:
        return text
    parts: list[str] = []
    pos = 0
    for f in sorted(findings, key=lambda f: f.start):
        if f.start < pos:
            continue
        parts.append(text[pos : f.start])
        parts.append(f"[REDACTED:{f.type}]")
        pos = f.end
    parts.append(text[pos:])
    return "".join(parts)
