"""Classifier detectors on a streamed answer (hooks `request-output` and `tool-input`).

A stream's text is only whole at its end, so that is where its classifiers run, on what the
pattern hooks let through (the answer's text deltas, and each tool call's argument fragments
joined):

- `flag` / `allow`: the stream is relayed untouched (only parsed to collect the text); at its
  end the verdicts are asked off the caller's path and recorded when they arrive;
- `block`: the deltas are relayed as they come, but the stream's terminal events (OpenAI: the
  chunk with a `finish_reason`, the usage chunk, `[DONE]`; Anthropic: `message_delta`,
  `message_stop`) are held until the verdicts (each within its `timeout_ms`). A match — or no
  verdict under `fail_closed` — ends the stream with the protocol's error event instead
  (`guardrail_blocked` / `guardrail_unavailable`), so an SDK raises rather than returning a
  finished answer, and the call is recorded with that error. Text already relayed cannot be
  taken back: a deployment that must never show an unvetted answer sends non-streamed calls
  (whose answer is held whole) or sets a pattern rule, which sees every delta before the caller.

A stream cut short, killed or refused by a pattern hook is not classified (there is no answer
to judge; the call is already recorded with its error).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from activities import classifiers
from activities.router import UpstreamResult
from activities.wire.errors import stream_error
from activities.wire.sse import SSEParser, encode_sse
from activities.wire.usage import Protocol
from policies.guardrails.classifiers import OUTPUT_HOOKS, ClassifierSpec
from policies.refusals import Refusal


class _Tail(list[str]):
    """The newest characters of one text, as the parts it arrived in (`size`: their total)."""

    __slots__ = ("size",)

    def __init__(self) -> None:
        super().__init__()
        self.size = 0


class StreamText:
    """The text of a caller-protocol SSE stream, event by event: the answer's text and each tool
    call's arguments, each kept to its newest `limit` characters (the classifier sees at most
    `max_text_chars`), and whether an event is a terminal one."""

    __slots__ = ("_limit", "_protocol", "text", "tools")

    def __init__(self, protocol: Protocol, limit: int) -> None:
        self._protocol = protocol
        self._limit = limit
        self.text = _Tail()
        self.tools: dict[int, _Tail] = {}

    def texts(self) -> dict[str, list[str]]:
        """{hook: texts} as `activities.classifiers.classify` takes them."""
        return {
            "request-output": ["".join(self.text)] if self.text else [],
            "tool-input": ["".join(t) for t in self.tools.values()],
        }

    def event(self, name: str | None, data: bytes) -> bool:
        """Collect one event's text; True when it is a terminal event (end of the answer)."""
        if data == b"[DONE]":
            return True
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(doc, dict):
            return False
        if self._protocol == "openai":
            return self._openai(doc)
        return self._anthropic(name, doc)

    def _tool(self, index: int) -> _Tail:
        tail = self.tools.get(index)
        if tail is None:
            tail = self.tools[index] = _Tail()
        return tail

    def _add(self, tail: _Tail, s: object) -> None:
        """Append `s`; past twice the limit, keep only the newest `limit` characters (a running
        total, so each delta costs O(1) however long the answer)."""
        if not isinstance(s, str) or not s:
            return
        tail.append(s)
        tail.size += len(s)
        if tail.size > 2 * self._limit:
            whole = "".join(tail)[-self._limit :]
            tail[:] = [whole]
            tail.size = len(whole)

    def _openai(self, doc: dict[str, Any]) -> bool:
        choices = doc.get("choices")
        if isinstance(choices, list) and not choices and doc.get("usage") is not None:
            return True  # the usage chunk after the finish
        end = False
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                self._add(self.text, delta.get("content"))
                calls = delta.get("tool_calls")
                for c in calls if isinstance(calls, list) else ():
                    fn = c.get("function") if isinstance(c, dict) else None
                    if isinstance(fn, dict):
                        idx = c.get("index", 0)
                        key = idx if isinstance(idx, int) else 0
                        self._add(self._tool(key), fn.get("arguments"))
            if choice.get("finish_reason"):
                end = True
        return end

    def _anthropic(self, name: str | None, doc: dict[str, Any]) -> bool:
        kind = doc.get("type", name)
        if kind in ("message_delta", "message_stop"):
            return True
        idx = doc.get("index")
        key = idx if isinstance(idx, int) else 0
        if kind == "content_block_start":
            block = doc.get("content_block")
            if isinstance(block, dict):
                if block.get("type") == "text":
                    self._add(self.text, block.get("text"))
                elif block.get("type") in ("tool_use", "server_tool_use"):
                    tail = self._tool(key)
                    if block.get("input"):
                        self._add(tail, orjson.dumps(block["input"]).decode())
        elif kind == "content_block_delta":
            delta = doc.get("delta")
            if isinstance(delta, dict):
                if delta.get("type") == "text_delta":
                    self._add(self.text, delta.get("text"))
                elif delta.get("type") == "input_json_delta":
                    self._add(self._tool(key), delta.get("partial_json"))
        return False


def classify_stream(
    g: Any, res: UpstreamResult, specs: tuple[ClassifierSpec, ...]
) -> None:
    """Wrap `res.stream` (already rewritten by the pattern hooks, if any) so the output hooks'
    classifiers judge the answer at its end (`specs`: this call's output-hook classifiers)."""
    assert res.stream is not None
    limit = max(s.max_text_chars for s in specs)
    hold = any(s.blocking for s in specs)
    res.stream = _classified(g, res, res.stream, StreamText(g.protocol, limit), hold)


def _encoded(name: str | None, data: bytes) -> bytes:
    """One parsed SSE event as bytes again (`[DONE]` as OpenAI sends it)."""
    return b"data: [DONE]\n\n" if data == b"[DONE]" else encode_sse(data, name)


async def _classified(
    g: Any, res: UpstreamResult, inner: AsyncIterator[bytes], col: StreamText, hold: bool
) -> AsyncIterator[bytes]:
    parser = SSEParser()
    held: list[bytes] = []  # block: from the first terminal event on, what waits for a verdict
    try:
        async for piece in inner:
            events = parser.feed(piece)
            if not hold:
                for ev in events:
                    col.event(ev.event, ev.data)
                yield piece
                continue
            out: list[bytes] = []
            for ev in events:
                end = col.event(ev.event, ev.data)
                (held if end or held else out).append(_encoded(ev.event, ev.data))
            if res.finished or held:
                # The relay has seen the end: nothing more goes out until the verdict (the
                # caller's side accounts the call on the first piece after the end).
                held[:0] = out
            elif out:
                yield b"".join(out)
        if hold:
            for ev in parser.flush():  # a last event without its blank line
                col.event(ev.event, ev.data)
                held.append(_encoded(ev.event, ev.data))
        if res.stream_error is not None:  # refused by a pattern hook, or cut upstream
            if held:
                yield b"".join(held)
            return
        texts = col.texts()
        try:
            await classifiers.classify(g, OUTPUT_HOOKS, lambda hook: texts.get(hook, []))
        except Refusal as r:
            res.stream_error = r.code
            res.finished = True
            yield stream_error(g.protocol, r.code, r.message, r.status)
            return
        if held:
            yield b"".join(held)
    finally:
        await inner.aclose()  # type: ignore[attr-defined]
