"""The loop detector: rates over a sliding window, baselines, repeats."""

from __future__ import annotations

import pytest

from policies.loops import (
    baselines_by_tag,
    extend_run,
    is_loop,
    is_repeating,
    p95,
    prompt_fingerprint,
    prune_events,
    rate_baseline,
    rate_signal_action,
    repeat_run,
    session_peak_rates,
    token_rate,
    window_tokens,
)
from policies.request_text import request_view


def test_token_rate_counts_only_events_inside_the_window() -> None:
    events = [(100.0, 5000), (900.0, 1000), (1000.0, 500)]
    # window 600 s ending at 1000: the first event is out; 1500 tokens per 600 s = 9000/h
    assert token_rate(events, 1000.0, 600) == 9000.0
    assert window_tokens(events, 1000.0, 600) == 1500


def test_token_rate_of_an_idle_session_is_zero() -> None:
    assert token_rate([], 1000.0, 600) == 0.0


def test_token_rate_rejects_a_non_positive_window() -> None:
    with pytest.raises(ValueError, match="window_seconds"):
        token_rate([], 0.0, 0)


def test_prune_keeps_what_a_window_can_still_see() -> None:
    assert prune_events([(1.0, 1), (50.0, 2), (99.0, 3)], 100.0, 50) == [(99.0, 3)]


def test_p95_is_an_observed_value() -> None:
    values = [float(v) for v in range(1, 101)]
    assert p95(values) == 95.0
    assert p95([7.0]) == 7.0
    assert p95([3.0, 1.0, 2.0]) == 3.0


def test_p95_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        p95([])


def test_too_few_sessions_use_the_configured_default() -> None:
    assert rate_baseline(1000.0, 3, 5, None, 50_000.0) == (50_000.0, "default")
    assert rate_baseline(None, 0, 5, None, 50_000.0) == (50_000.0, "default")
    assert rate_baseline(1000.0, 5, 5, None, 50_000.0) == (1000.0, "observed")
    assert rate_baseline(1000.0, 5, 5, 7000.0, 50_000.0) == (7000.0, "configured")


def test_loop_is_strictly_above_three_times_the_baseline() -> None:
    assert not is_loop(3000.0, 1000.0)
    assert is_loop(3000.1, 1000.0)
    assert is_loop(2001.0, 1000.0, multiplier=2.0)
    assert not is_loop(1e9, 0.0)


def test_session_peak_rate_is_its_busiest_bucket() -> None:
    rows = [("a", 0.0, 100), ("a", 0.0, 100), ("a", 600.0, 50), ("b", 0.0, 10)]
    rates = session_peak_rates(rows, 600)
    assert rates == {"a": 1200.0, "b": 60.0}


def test_baselines_group_sessions_by_workflow_tag() -> None:
    rates = {"s1": 100.0, "s2": 200.0, "s3": 50.0, "s4": 999.0}
    tags = {"s1": "triage", "s2": "triage", "s3": "review", "s4": None}
    assert baselines_by_tag(rates, tags) == {"triage": (200.0, 2), "review": (50.0, 1)}


def test_same_last_message_has_the_same_fingerprint() -> None:
    a = {"messages": [{"role": "user", "content": "one"}, {"role": "user", "content": "go"}]}
    b = {"messages": [{"role": "user", "content": "other"}, {"content": "go", "role": "user"}]}
    c = {"messages": [{"role": "user", "content": "stop"}]}
    fp = [prompt_fingerprint(request_view("openai", x)) for x in (a, b, c)]
    assert fp[0] == fp[1]
    assert fp[0] != fp[2]


def test_fingerprint_reads_the_normalised_view_of_the_newest_message() -> None:
    """Text parts are read joined, as the model reads them (the view, not the body's shape):
    `go` sent as one string or as two parts is the same prompt, on both protocols; the role
    still counts, and a newest message with no text (an image) is never a repeat."""
    one = {"messages": [{"role": "user", "content": "go on"}]}
    two = [{"type": "text", "text": "go "}, {"type": "text", "text": "on"}]
    parts = {"messages": [{"role": "user", "content": two}]}
    as_tool = {"messages": [{"role": "tool", "tool_call_id": "t", "content": "go on"}]}
    for protocol in ("openai", "anthropic"):
        fp = prompt_fingerprint(request_view(protocol, one))
        assert fp == prompt_fingerprint(request_view(protocol, parts)) != ""
    assert prompt_fingerprint(request_view("openai", as_tool)) != prompt_fingerprint(
        request_view("openai", one)
    )
    image = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
    only_image = {"messages": [{"role": "user", "content": "go on"}, image]}
    fp = prompt_fingerprint(request_view("openai", only_image))
    assert fp == ""
    assert not is_repeating([fp, fp, fp], 3)


def test_repeats_count_only_an_unbroken_run() -> None:
    assert repeat_run(["x", "y", "y", "y"], "y") == 3
    assert not is_repeating(["y", "y", "x", "y"], 3)
    assert is_repeating(["x", "y", "y", "y"], 3)
    assert not is_repeating([], 3)


def test_the_incremental_run_equals_repeat_run_over_the_bounded_history() -> None:
    """extend_run (O(1) per call, what the loop guard keeps) against repeat_run over the last
    `cap` fingerprints, on seeded random sequences with long runs and text-less prompts."""
    import random
    from collections import deque

    rng = random.Random(7)
    for cap in (1, 3, 32):
        for _ in range(200):
            history: deque[str] = deque(maxlen=cap)
            last: str | None = None
            run = 0
            for _ in range(rng.randint(1, 120)):
                fp = rng.choice(["a", "a", "a", "b", ""])
                history.append(fp)
                run, last = extend_run(last, run, fp, cap), fp
                assert run == repeat_run(history, fp)


def test_the_rate_signal_acts_only_against_a_trusted_or_configured_baseline() -> None:
    assert rate_signal_action("observed", "kill", "alert") == "kill"
    assert rate_signal_action("configured", "kill", "alert") == "kill"
    assert rate_signal_action("default", "kill", "alert") == "alert"


def _agent_turn(protocol: str, result: str, note: str) -> dict:
    """A coding agent's request: the model asked for a tool, the tool answered, and the agent
    appended text of its own that changes every turn (Claude Code adds a token count)."""
    if protocol == "anthropic":
        return {"messages": [
            {"role": "user", "content": "read notes.txt"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": f"tu_{note}",
                                               "name": "Read", "input": {"path": "notes.txt"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"tu_{note}",
                                          "content": result}]},
            {"role": "user", "content": [{"type": "text", "text": f"<left>{note}</left>"}]},
        ]}  # fmt: skip
    return {"messages": [
        {"role": "user", "content": "read notes.txt"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call_{note}", "type": "function",
             "function": {"name": "Read", "arguments": '{"path": "notes.txt"}'}}]},
        {"role": "tool", "tool_call_id": f"call_{note}", "content": result},
        {"role": "user", "content": f"<left>{note}</left>"},
    ]}  # fmt: skip


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_an_agent_repeating_one_tool_call_is_a_repeat_whatever_text_it_appends(
    protocol: str,
) -> None:
    fps = [prompt_fingerprint(request_view(protocol, _agent_turn(protocol, "note 42", n)))
           for n in ("1000", "941", "882")]  # fmt: skip
    assert fps[0] == fps[1] == fps[2] != ""
    assert is_repeating(fps, 3)
    other = prompt_fingerprint(request_view(protocol, _agent_turn(protocol, "note 43", "1000")))
    assert other != fps[0]  # another tool result is progress, not a repeat
