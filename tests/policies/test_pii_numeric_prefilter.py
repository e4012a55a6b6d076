"""The numeric PII pass with its one-character look after the first digit and the private-range
shortcut before parsing an IPv4 address finds exactly what it found without them."""

from __future__ import annotations

import ipaddress
import random
import re

import pytest

from policies.guardrails import pii


def _old_ip4(text: str, s: int, e: int) -> bool:
    if not (pii._free_left(text, s) and pii._free_right(text, e)):
        return False  # checked by the pass before `_ip4` was called
    value = text[s:e]
    if any(len(o) > 1 and o[0] == "0" for o in value.split(".")):
        return False
    try:
        addr = ipaddress.IPv4Address(value)
    except ValueError:
        return False
    if not addr.is_global or text[e : e + 9].lower() == ".in-addr.":
        return False
    before = text[max(0, s - 9) : s].lower()
    return not (before.endswith("v") or before.rstrip().endswith("version"))


# The pass before: the alternatives tried at every digit.
_OLD_NUMERIC = re.compile(pii._NUMERIC.pattern.replace(r"[0-9](?=[0-9 .\-])(?:", r"[0-9](?:", 1))
_SEEDS = ("10.0.4.17", "172.16.8.2", "172.15.0.1", "172.32.9.9", "192.168.1.1", "192.169.0.1",
          "127.0.0.1", "8.8.8.8", "1.0.0.127.in-addr.arpa", "v1.2.3.4", "300.1.1.1", "010.1.1.1",
          "4111 1111 1111 1111", "078-05-1120", "415-555-0132", "020 7946 0958", "SSN 078051123",
          "DE89 3704 0044 0532 0130 00", "AB 12 34 56 C", "GB82WEST12345698765432", "12-12-12",
          "0490 75 40 81", "5105105105105100", "01 01 01 01")  # fmt: skip


@pytest.mark.parametrize("seed", [3, 4])
def test_numeric_pass_finds_what_it_found_before_the_shortcuts(seed: int) -> None:
    rnd = random.Random(seed)
    alpha = "0123456789 .-x\nAB:,/"
    found = 0
    for _ in range(10_000):
        parts = [rnd.choice(_SEEDS) if rnd.random() < 0.5 else
                 "".join(rnd.choice(alpha) for _ in range(rnd.randint(0, 25)))
                 for _ in range(rnd.randint(1, 5))]  # fmt: skip
        text = rnd.choice(("", " ", ", ", "\n", ".")).join(parts)
        got = list(pii._numeric(text))
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(pii, "_NUMERIC", _OLD_NUMERIC)
            mp.setattr(pii, "_ip4", _old_ip4)
            assert got == list(pii._numeric(text)), text
        found += len(got)
    assert found > 3_000
