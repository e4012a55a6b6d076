"""The IPv6 scan led by each address's first colon finds exactly what the hex-led core regex
searched from every position finds (the scan before the windows and the colon-led regex)."""

from __future__ import annotations

import random
import re

from policies.guardrails import pii

_ALPHA = "0123456789abcdefABCDEF:.:::xg/ \n"
_SEEDS = ("2001:4860:4860::8888", "fe80::1", "::1", "2a00:1450:4001:82b::200e", "12:00:03",
          "std::vector", "ffff:ffff::", "2606:4700::6810:85e5/64", "a:b:c:d:e:f:1:2",
          "::ffff:198.51.100.7", "2001:db8:0:0:0:0:2:1", "1:2:3:4:5:6:77.88.99.1", "x::0",
          "a" * 44 + "::1:2", "2001:4860:4860:0000:0000:0000:0000:8888", "://a:", "::::")
# The core regex the scan used to search from every position: led by a hex digit, it was tried
# at every a-f of prose.
_CORE = re.compile(
    r"[0-9A-Fa-f]{1,4}+::[0-9A-Fa-f]{1,4}+:|:[0-9A-Fa-f]{1,4}+:[0-9A-Fa-f]{1,4}+:"
    r"|[0-9A-Fa-f]{1,4}+:[0-9A-Fa-f]{1,4}+::[0-9A-Fa-f]"
)


_HEXCOLON = frozenset("0123456789abcdefABCDEF:.")


def _every_position(text: str) -> list[pii.Span]:
    """The reference: the core regex searched from every position (the scan before windows)."""
    out = []
    pos, n = 0, len(text)
    while (m := _CORE.search(text, pos)) is not None:
        s, e = m.start(), m.end()
        while s > 0 and text[s - 1] in _HEXCOLON:
            s -= 1
        while e < n and text[e] in _HEXCOLON:
            e += 1
        pos = e
        value = text[s:e].rstrip(".")
        if sum(1 for g in value.split(":") if g) < 3:
            continue
        if (s > 0 and text[s - 1] in pii._ALNUM) or (e < n and text[e] in pii._ALNUM):
            continue
        try:
            addr = pii.ipaddress.IPv6Address(value)
        except ValueError:
            continue
        if value.lower().startswith("ffff:ffff:"):
            continue
        if addr.is_global and (e >= n or text[e] != "/"):
            out.append(pii.Span(s, s + len(value), pii.DETECTOR, "ip_address"))
    return out


def test_the_colon_led_ipv6_scan_matches_the_scan_from_every_position() -> None:
    rnd = random.Random(7)
    found = 0
    for _ in range(20_000):
        parts = [rnd.choice(_SEEDS) * rnd.choice((1, 1, 1, 2, 5)) if rnd.random() < 0.3 else
                 "".join(rnd.choice(_ALPHA) for _ in range(rnd.randint(0, 60)))
                 for _ in range(rnd.randint(1, 6))]
        text = rnd.choice(["", " ", "x"]).join(parts)
        got = list(pii._ipv6(text))
        assert got == _every_position(text), text
        found += len(got)
    assert found > 1_000  # the generator does produce addresses


def test_a_colon_flood_is_scanned_in_linear_time_and_finds_nothing() -> None:
    assert list(pii._ipv6(":" * 200_000)) == []
