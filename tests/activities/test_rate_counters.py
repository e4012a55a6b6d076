"""The bounded rate counters: least recently charged out first, an evicted counter's window
remembered so the counter is read back (never restarted from 0), and what calls settle while a
counter is out or being read back counted once."""

from __future__ import annotations

from activities.rate_counters import RateCounters


def test_the_least_recently_charged_counter_goes_first_and_its_window_is_remembered() -> None:
    c = RateCounters(cap=2)
    c.add(("r", "a", 0.0), 1, 10)
    c.add(("r", "b", 0.0), 1, 10)
    c.add(("r", "a", 0.0), 1, 10)  # a used last: b is the oldest
    c.add(("r", "c", 0.0), 1, 10)
    assert list(c) == [("r", "a", 0.0), ("r", "c", 0.0)]
    assert c.forgotten == {("r", 0.0): 1} and c.evicted == 1
    # b must be read back; a counter of another window (or rule) starts from 0 as before
    assert c.missing([("r", "b", 0.0), ("r", "a", 0.0), ("r", "d", 3600.0), ("q", "b", 0.0)]) == [
        ("r", "b", 0.0)
    ]


def test_a_call_settling_while_its_counter_is_out_is_left_to_the_ledger_row() -> None:
    c = RateCounters(cap=1)
    c.add(("r", "a", 0.0), 1, 10)
    c.add(("r", "b", 0.0), 1, 10)  # a out
    c.add(("r", "a", 0.0), 1, 10)  # not restarted from this call alone
    assert ("r", "a", 0.0) not in c and c.missing([("r", "a", 0.0)])
    c.reading[("r", "a", 0.0)] = held = [0, 0]  # a read-back in progress: counted on top
    c.add(("r", "a", 0.0), 1, 7)
    assert held == [1, 7] and ("r", "a", 0.0) not in c


def test_ended_windows_drop_their_counters_and_evictions() -> None:
    c = RateCounters(cap=1)
    c.add(("r", "a", 0.0), 1, 1)
    c.add(("r", "b", 0.0), 1, 1)
    c.drop_ended({"r": 3600.0}, 3600.0)
    assert not c and not c.forgotten
    c.add(("r", "a", 3600.0), 1, 1)
    assert c[("r", "a", 3600.0)] == [1, 1]
