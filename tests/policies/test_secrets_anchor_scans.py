"""The Azure storage-key and AD-secret scans found from a regex on their `==` / `Q~` find exactly
what the loops stepping from every occurrence of `==` / `Q~` in Python found."""

from __future__ import annotations

import base64
import random
import re
from collections.abc import Iterator

from policies.guardrails import secrets
from policies.guardrails.spans import Span, lowered

_B64_86 = re.compile(r"[A-Za-z0-9+/]{86}")


def _old_storage(text: str, low: str) -> Iterator[Span]:
    pos = 0
    while (i := text.find("==", pos)) >= 0:
        pos = i + 2
        start = i - 86
        if start < 0 or text[i - 1] not in secrets._B64_CHARS:
            continue
        if not _B64_86.fullmatch(text, start, i):
            continue
        if (start and text[start - 1] in secrets._B64_CHARS) or text[
            i + 2 : i + 3
        ] in secrets._B64_CHARS:
            continue
        if text[start - 11 : start] == "AccountKey=":
            continue
        near = low[max(0, start - 256) : start]
        if any(w in near for w in secrets._AZURE_CONTEXT) and secrets.random_looking(
            text[start:i], 4.0
        ):
            yield Span(start, i + 2, secrets.DETECTOR, "azure_storage_key", secrets._SPECIFIC)


def _old_aad(text: str) -> Iterator[Span]:
    pos = 0
    while (i := text.find("Q~", pos)) >= 0:
        pos = i + 2
        start = i - 4
        if start < 0 or not text[i - 1].isdigit():
            continue
        if not all(c in secrets._AAD_CHARS for c in text[start:i]):
            continue
        if start and (text[start - 1] in secrets._AAD_CHARS or text[start - 1] == "-"):
            continue
        tail = secrets._AAD_TAIL.match(text, i + 2)
        if tail and secrets.random_looking(text[start : tail.end()], 3.5):
            pos = tail.end()
            yield Span(
                start, tail.end(), secrets.DETECTOR, "azure_ad_client_secret", secrets._SPECIFIC
            )


def test_anchor_regex_scans_find_what_the_occurrence_loops_found() -> None:
    rnd = random.Random(11)
    alpha = "Aa0+/=Q~.-_9 x\n٣"
    found = 0
    for _ in range(20_000):
        parts = []
        for _ in range(rnd.randint(1, 5)):
            r = rnd.random()
            if r < 0.25:
                key = base64.b64encode(rnd.randbytes(64)).decode()
                key = rnd.choice(("", "", "=", " ", "a")) + key[rnd.randint(0, 1) :]
                parts.append(rnd.choice(("storage ", "account_key=", "AccountKey=", "", "-")) + key)
            elif r < 0.5:
                head = "".join(rnd.choice("abcXYZ123~._") for _ in range(3)) + rnd.choice("18٣x")
                tail = "".join(
                    rnd.choice("abcdefXYZ0123456789_~.-") for _ in range(rnd.randint(28, 36))
                )
                parts.append(head + "Q~" + tail)
            else:
                parts.append("".join(rnd.choice(alpha) for _ in range(rnd.randint(0, 40))))
        text = rnd.choice(("", " ", "=", "\n")).join(parts)
        low = lowered(text)
        new = list(secrets._azure_storage_shape(text, low)) + list(secrets._azure_ad(text))
        assert new == list(_old_storage(text, low)) + list(_old_aad(text)), text
        found += len(new)
    assert found > 2_000
