"""The Anthropic stream rewriter (activities.guardrails._AnthropicRewriter) on its own: a run of
text blocks is one text to the guard, and what it releases goes back to the block each character
came from, each block's stop after its text. Streams the real API never sends (blocks that
interleave, a delta after its block's stop) keep every character once, in its own block."""

from __future__ import annotations

from typing import Any

import orjson

from activities.guardrails import _AnthropicRewriter
from activities.wire.sse import SSEParser
from policies.guardrails import GuardrailEvent, StreamGuard, load_guardrails

_CFG = load_guardrails(
    "type: gateway-guardrails-config\nname: s\nrules:\n  - id: s\n"
    "    hooks: [request-output]\n    detectors: [secrets, pii]\n    mode: mutate\n"
)
SECRET = "sk-ant-api03-" + "Zx8vQ2mN7pL4kR9tW3yB6cF1hJ5dG0sA" * 2 + "AA"


class _Guard:
    """What the rewriter reads of a CallGuard."""

    protocol = "anthropic"

    def __init__(self) -> None:
        self.events: list[GuardrailEvent] = []

    def stream_guard(self, hook: str) -> StreamGuard:
        return StreamGuard(_CFG, hook, {}, b"salt")

    def record(self, events: list[GuardrailEvent]) -> None:
        self.events.extend(events)


def _sse(ev: dict[str, Any]) -> bytes:
    return b"event: " + ev["type"].encode() + b"\ndata: " + orjson.dumps(ev) + b"\n\n"


def _start(i: int, text: str = "") -> bytes:
    return _sse(
        {"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": text}}
    )


def _delta(i: int, text: str) -> bytes:
    return _sse(
        {"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": text}}
    )


def _stop(i: int) -> bytes:
    return _sse({"type": "content_block_stop", "index": i})


_END = _sse({"type": "message_delta", "delta": {"stop_reason": "end_turn"}}) + _sse(
    {"type": "message_stop"}
)


def _run(pieces: list[bytes]) -> tuple[list[list[dict[str, Any]]], dict[int, str]]:
    """The events sent after each piece, and each block's text as the caller reads it."""
    rw = _AnthropicRewriter(_Guard(), True, False)  # type: ignore[arg-type]
    sent: list[list[dict[str, Any]]] = []
    texts: dict[int, str] = {}
    for piece in pieces:
        evs = [orjson.loads(e.data) for e in SSEParser().feed(rw.piece(piece))]
        sent.append(evs)
        for ev in evs:
            if ev["type"] == "content_block_delta":
                texts[ev["index"]] = texts.get(ev["index"], "") + ev["delta"]["text"]
    return sent, texts


def _order(sent: list[list[dict[str, Any]]]) -> list[tuple[str, int | None]]:
    return [(ev["type"], ev.get("index")) for evs in sent for ev in evs]


def test_adjacent_blocks_keep_their_text_and_a_split_secret_is_redacted() -> None:
    a = "Here is the key you asked for: " + SECRET[:20]
    b = SECRET[20:] + " and that is all. " * 10
    sent, texts = _run([_start(0), _delta(0, a), _stop(0), _start(1), _delta(1, b), _stop(1), _END])
    assert SECRET[:20] not in texts[0] and "[REDACTED:anthropic_api_key]" in texts[0]
    assert texts[1] == " and that is all. " * 10
    order = _order(sent)
    assert order.index(("content_block_stop", 0)) > max(
        i for i, e in enumerate(order) if e == ("content_block_delta", 0)
    )


def test_interleaved_text_blocks_keep_each_character_once_in_its_own_block() -> None:
    # Two text blocks open at once (the API sends one at a time): each block's text went to
    # both blocks (its range ran to the end of what was released).
    a, b = "a" * 150 + " ", "b" * 150 + " "
    sent, texts = _run([_start(0), _start(1), _delta(0, a), _delta(1, b), _stop(0), _stop(1), _END])
    assert texts == {0: a, 1: b}
    order = _order(sent)
    for i in (0, 1):
        last_text = max(k for k, e in enumerate(order) if e == ("content_block_delta", i))
        assert order.index(("content_block_stop", i)) > last_text


def test_a_delta_after_its_blocks_stop_is_kept_in_its_block() -> None:
    a, late = "a" * 150 + " ", "late text. " * 3
    _, texts = _run([_start(0), _delta(0, a), _stop(0), _delta(0, late), _END])
    assert texts == {0: a + late}


def test_an_empty_text_block_stop_is_not_held_behind_later_text() -> None:
    # Its text (none) is all released at its stop: the stop, and the next block's start, go
    # out at once, not when the next block's text is first released.
    sent, texts = _run(
        [_start(0), _stop(0), _start(1), _delta(1, "x " * 60), _delta(1, "y " * 200), _END]
    )
    assert [(e["type"], e.get("index")) for e in sent[1]] == [("content_block_stop", 0)]
    assert [(e["type"], e.get("index")) for e in sent[2]] == [("content_block_start", 1)]
    assert texts == {1: "x " * 60 + "y " * 200}
