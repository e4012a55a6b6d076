"""The raw hit a detector reports before the engine fingerprints it."""

from __future__ import annotations

from typing import NamedTuple


class Span(NamedTuple):
    """A detector's hit: offsets into the scanned text, never the matched value itself.

    `priority` settles overlaps (a provider-specific key beats a generic `secret=` assignment);
    `complete` is False while a match could still grow with more text (an unterminated private key
    block), which tells the stream guard to keep holding it back.
    """

    start: int
    end: int
    detector: str
    type: str
    priority: int = 2
    complete: bool = True


_WORD = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
WORD_CHARS = _WORD  # characters `\\w` would glue to a match (ASCII)


def boundary_before(text: str, start: int) -> bool:
    """No word character glued to the left (regex `\\b` would cost a pass per position)."""
    return start == 0 or text[start - 1] not in _WORD


def lowered(text: str) -> str:
    """Lower-case copy with the same offsets (a few Unicode letters grow when lowered)."""
    low = text.lower()
    if len(low) == len(text):
        return low
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
