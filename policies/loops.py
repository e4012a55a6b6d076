"""Loop detection: is a session burning tokens far faster than sessions like it usually do?

Pure functions over explicit inputs (events, values, thresholds), so the session workflow can run
them deterministically and the proxy can run the same ones inline. A *rate* is tokens per hour
measured over a sliding window; a *baseline* is the p95 of per-session rates of one workflow tag.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import orjson

from policies.request_text import TOOL_OUTPUT, RequestText

HOUR = 3600.0
BaselineSource = Literal["observed", "configured", "default"]
LoopAction = Literal["alert", "throttle", "kill"]


def token_rate(events: Iterable[tuple[float, int]], now: float, window_seconds: float) -> float:
    """Tokens per hour over the last `window_seconds` from (timestamp, tokens) events.

    Events older than the window do not count; events "in the future" (clock skew) do.
    """
    if window_seconds <= 0:
        raise ValueError(f"window_seconds must be positive, got {window_seconds}")
    start = now - window_seconds
    total = sum(tokens for ts, tokens in events if ts > start)
    return total * HOUR / window_seconds


def window_tokens(events: Iterable[tuple[float, int]], now: float, window_seconds: float) -> int:
    """Tokens spent in the last `window_seconds` (what a per-session ceiling compares against)."""
    start = now - window_seconds
    return sum(tokens for ts, tokens in events if ts > start)


def prune_events(
    events: Sequence[tuple[float, int]], now: float, keep_seconds: float
) -> list[tuple[float, int]]:
    """Drop events no window can see any more, so state carried through continue-as-new stays
    small."""
    start = now - keep_seconds
    return [e for e in events if e[0] > start]


def p95(values: Sequence[float]) -> float:
    """95th percentile by the nearest-rank method (an actual observed value, never interpolated)."""
    if not values:
        raise ValueError("p95 of no values")
    ordered = sorted(values)
    rank = math.ceil(0.95 * len(ordered))
    return float(ordered[max(rank, 1) - 1])


def rate_baseline(
    observed_p95: float | None,
    sessions: int,
    min_sessions: int,
    configured: float | None,
    default: float,
) -> tuple[float, BaselineSource]:
    """(baseline, source): a baseline the config sets for the tag ("configured"), else an
    observed p95 that enough sessions back ("observed"), else the default ("default")."""
    if configured is not None and configured > 0:
        return configured, "configured"
    if observed_p95 is not None and observed_p95 > 0 and sessions >= min_sessions:
        return observed_p95, "observed"
    return default, "default"


def rate_signal_action(
    source: str, trusted_action: LoopAction, untrusted_action: LoopAction
) -> LoopAction:
    """The rate signal acts (throttle, kill) only against a baseline someone can stand behind:
    a trusted observed p95 or a configured one. Against the default it alerts (by default),
    because no real session of the tag set that number."""
    return untrusted_action if source == "default" else trusted_action


def rate_reason(
    rate: float, window_seconds: float, baseline: float, source: str, multiplier: float,
    tag: str | None, sessions: int,
) -> str:
    """What a rate verdict says: the signal and its figures."""
    backing = f", {sessions} sessions" if source == "observed" else ""
    return (
        f"rate signal: {rate:,.0f} tokens/h over the last {window_seconds:.0f}s "
        f"is {rate / baseline:.1f}x the {source} p95 baseline {baseline:,.0f} tokens/h of "
        f"workflow tag {tag or '(none)'}{backing} (limit {multiplier:g}x)"
    )


def repeat_reason(run: int, threshold: int) -> str:
    return (
        f"repeat signal: the same prompt {run} times in a row "
        f"(threshold {threshold})"
    )


def is_loop(rate: float, baseline: float, multiplier: float = 3.0) -> bool:
    """A session runs away when its rate is strictly above `multiplier` times the baseline."""
    return baseline > 0 and rate > multiplier * baseline


def session_peak_rates(
    buckets: Iterable[tuple[str, float, int]], bucket_seconds: float
) -> dict[str, float]:
    """Peak tokens/hour of each session from (session id, bucket start, tokens) rows.

    The busiest bucket stands for the session, so a burst is compared with bursts, as the live
    sliding window of the same width would see it.
    """
    per: dict[tuple[str, float], int] = {}
    for sid, start, tokens in buckets:
        per[(sid, start)] = per.get((sid, start), 0) + tokens
    peak: dict[str, float] = {}
    scale = HOUR / bucket_seconds
    for (sid, _), tokens in per.items():
        rate = tokens * scale
        if rate > peak.get(sid, 0.0):
            peak[sid] = rate
        else:
            peak.setdefault(sid, rate)
    return peak


def baselines_by_tag(
    rates: Mapping[str, float], tags: Mapping[str, str | None]
) -> dict[str, tuple[float, int]]:
    """p95 of per-session rates and the number of sessions behind it, per workflow tag."""
    grouped: dict[str, list[float]] = {}
    for sid, rate in rates.items():
        tag = tags.get(sid)
        if tag:
            grouped.setdefault(tag, []).append(rate)
    return {tag: (p95(vals), len(vals)) for tag, vals in grouped.items()}


def prompt_fingerprint(view: RequestText, keyed: hmac.HMAC | None = None) -> str:
    """A short hash of what an agent stuck in a loop keeps sending, read from the request's
    normalised view (no walk of its own). "" when there is nothing to compare (never a repeat).

    - An agent turn (tool results after the model's last call): the model's last call (its
      assistant segments: text and tool-call arguments) and the tool output since. Agents add
      volatile text to such turns (Claude Code appends a token count to every one), so the
      caller's own input text there is left out; the same call answered by the same result,
      again and again, is the loop.
    - Otherwise the newest message's text.
    Each segment's hook (input, tool output, the caller's assistant turn) is hashed with it.
    `keyed`: HMAC-SHA256 under the deployment's salt, fed nothing yet (copied per call: cheaper
    than keying anew); the fingerprint is then keyed (what the proxy records in a call's decision
    record: useless without the salt). None: plain SHA-256 (workflows)."""
    segs = view.segments
    tool_at = next((i for i in range(len(segs) - 1, -1, -1) if segs[i].hook == TOOL_OUTPUT), -1)
    call_msg = -1
    if tool_at >= 0:
        # The assistant message the tool output answers: the last assistant segment before it.
        call_msg = next(
            (segs[i].message for i in range(tool_at - 1, -1, -1) if segs[i].hook == ""), -1
        )
        after = any(s.hook == "" and s.message > segs[tool_at].message for s in segs)
        if after:  # the model spoke after the tool output: not an agent turn any more
            call_msg = -1
    h: Any = keyed.copy() if keyed is not None else hashlib.sha256()
    took = False
    for s in segs:
        if call_msg >= 0:
            take = s.message >= call_msg and s.hook in ("", TOOL_OUTPUT)
        else:
            take = s.message == view.last_message and view.last_message >= 0
        if take:
            took = True
            h.update(s.hook.encode())
            h.update(b"\0")
            h.update(s.text.encode("utf-8", "surrogatepass"))
            h.update(b"\0")
    if not took:
        return ""
    return str(h.hexdigest()[:16])


def legacy_prompt_fingerprint(body: Mapping[str, Any]) -> str:
    """The fingerprint session workflows used before `prompt_fingerprint(view)` (the raw newest
    message): kept so their histories replay the decisions they recorded (workflows choose it
    with `workflow.patched`). Not for new code."""
    messages = body.get("messages")
    last: Any = messages[-1] if isinstance(messages, list) and messages else body.get("prompt")
    return hashlib.sha256(orjson.dumps(last, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def repeat_run(history: Sequence[str], fingerprint: str) -> int:
    """How many times in a row `fingerprint` ends `history` (history already includes it)."""
    n = 0
    for h in reversed(history):
        if h != fingerprint:
            break
        n += 1
    return n


def extend_run(last: str | None, run: int, fingerprint: str, cap: int) -> int:
    """`repeat_run` kept incrementally: the run after `fingerprint` follows a history whose last
    entry was `last` ending a run of `run`, in a history of at most `cap` entries. O(1) per
    call where `repeat_run` walks the run (a looping session's whole history, every call)."""
    return min(run + 1, cap) if fingerprint == last else 1


def is_repeating(history: Sequence[str], threshold: int) -> bool:
    """The same prompt `threshold` times in a row is a loop signal (a text-less one never)."""
    return (
        bool(history)
        and bool(history[-1])
        and repeats_over(repeat_run(history, history[-1]), threshold)
    )


def repeats_over(run: int, threshold: int) -> bool:
    """A run of `run` equal (non-empty) prompts ending the history is a repeat signal."""
    return threshold > 0 and run >= threshold
