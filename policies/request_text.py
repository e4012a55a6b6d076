"""One normalised view of a request's text, built once per call and read by every consumer.

Guardrail hooks, token estimation, prompt hashing and stored text all need "the text of this
request"; walking the protocol's message shape separately for each gave four slightly different
answers (a secret split over two content parts was missed by the guardrails because they looked
at each part alone). `request_view` walks an OpenAI chat or Anthropic messages body once:

- a **segment** is a run of adjacent text parts of one message (or one tool result), joined with
  nothing between them — the way the model reads them — and tagged with the input hook that
  guards it (`request-input` for system/developer/user text, `tool-output` for tool results,
  `""` for what the caller's own assistant turns said, which no input hook scans);
- each segment keeps where every part sits in the body (`Piece.path` and its offsets in the
  segment's text), so a redaction found in the joined text is written back part by part;
- `text` is every segment, newline-joined: what is hashed, stored and counted;
- each segment knows its message, so the loop detector fingerprints the newest one.

Pure: no I/O; malformed shapes are skipped, never raised on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import orjson

Protocol = Literal["openai", "anthropic"]
Path = tuple[str | int, ...]

INPUT = "request-input"
TOOL_OUTPUT = "tool-output"
OUTPUT = "request-output"

_OPENAI_ROLE_HOOK = {
    "system": INPUT,
    "developer": INPUT,
    "user": INPUT,
    "tool": TOOL_OUTPUT,
    "function": TOOL_OUTPUT,
}


@dataclass(frozen=True, slots=True)
class Piece:
    """One text part: where it is in the body, and its offsets in its segment's text."""

    path: Path
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Segment:
    hook: str  # request-input | tool-output | "" (not scanned on the way in)
    text: str
    pieces: tuple[Piece, ...]
    message: int = -1  # index in `messages` (-1: the Anthropic top-level `system`)


@dataclass(frozen=True, slots=True)
class RequestText:
    segments: tuple[Segment, ...]
    last_message: int = -1  # index of the newest message (-1: none)

    @property
    def text(self) -> str:
        """The whole prompt, one segment per line (hashes, token estimates, stored text)."""
        return "\n".join(s.text for s in self.segments if s.text)

    def for_hook(self, hook: str) -> list[Segment]:
        return [s for s in self.segments if s.hook == hook and s.text]


class _Builder:
    def __init__(self) -> None:
        self.segments: list[Segment] = []
        self._hook = ""
        self._texts: list[str] = []
        self._pieces: list[Piece] = []
        self._len = 0
        self.message = -1  # the message the parts being added belong to

    def add(self, hook: str, path: Path, text: str, writable: bool = True) -> None:
        if not text:
            return
        if self._texts and hook != self._hook:
            self.cut()
        self._hook = hook
        if writable:
            self._pieces.append(Piece(path, self._len, self._len + len(text)))
        self._texts.append(text)
        self._len += len(text)

    def cut(self) -> None:
        """End the current segment: the next part is not read together with the previous."""
        if self._texts:
            text = "".join(self._texts)
            self.segments.append(Segment(self._hook, text, tuple(self._pieces), self.message))
        self._texts, self._pieces, self._len = [], [], 0


def _content(b: _Builder, hook: str, content: object, path: Path, anthropic: bool) -> None:
    if isinstance(content, str):
        b.add(hook, path, content)
        b.cut()
        return
    if not isinstance(content, list):
        return
    for i, part in enumerate(content):
        if isinstance(part, str):
            b.add(hook, (*path, i), part)
            continue
        if not isinstance(part, dict):
            b.cut()
            continue
        ptype = part.get("type")
        if ptype in ("text", "input_text"):
            text = part.get("text")
            if isinstance(text, str):
                b.add(hook, (*path, i, "text"), text)
        elif ptype == "refusal":
            text = part.get("refusal")
            if isinstance(text, str):
                b.add(hook, (*path, i, "refusal"), text)
        elif ptype == "tool_result" and anthropic:
            b.cut()
            _content(b, TOOL_OUTPUT, part.get("content"), (*path, i, "content"), True)
            b.cut()
        elif ptype == "tool_use" and anthropic:
            b.cut()
            if part.get("input"):
                b.add("", (*path, i, "input"), orjson.dumps(part["input"]).decode(), False)
            b.cut()
        else:
            b.cut()  # an image or file between two text parts separates them
    b.cut()


def request_view(protocol: Protocol, body: dict[str, Any]) -> RequestText:
    """The normalised text view of an OpenAI chat or Anthropic messages request body."""
    b = _Builder()
    anthropic = protocol == "anthropic"
    if anthropic:
        _content(b, INPUT, body.get("system"), ("system",), True)
    messages = body.get("messages")
    last = -1
    if isinstance(messages, list):
        last = len(messages) - 1
        for i, msg in enumerate(messages):
            if not isinstance(msg, dict):
                continue
            b.cut()
            b.message = i
            role = msg.get("role")
            if anthropic:
                # A mid-conversation system message is system content: the input hook's.
                hook = INPUT if role in ("user", "system") else ""
            else:
                hook = _OPENAI_ROLE_HOOK.get(role, "") if isinstance(role, str) else ""
            _content(b, hook, msg.get("content"), ("messages", i, "content"), anthropic)
            calls = msg.get("tool_calls")
            if not anthropic and isinstance(calls, list):
                for j, call in enumerate(calls):
                    fn = call.get("function") if isinstance(call, dict) else None
                    if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                        path: Path = ("messages", i, "tool_calls", j, "function", "arguments")
                        b.add("", path, fn["arguments"])
                        b.cut()
    elif not anthropic:  # an embeddings request: its `input` strings
        data = body.get("input")
        if isinstance(data, str):
            b.add(INPUT, ("input",), data)
        elif isinstance(data, list):
            for k, item in enumerate(data):
                if isinstance(item, str):
                    b.add(INPUT, ("input", k), item)
                    b.cut()
    b.cut()
    return RequestText(tuple(b.segments), last)


def anthropic_output_view(content: object) -> list[Segment]:
    """The answer's text of an Anthropic response (`content`, its list of blocks): each run of
    adjacent text blocks one `request-output` segment, joined as the caller reads them (a
    secret split over two blocks is one secret), its pieces at `("content", i, "text")`. A
    tool call, thinking or any other block between two text blocks separates them."""
    if not isinstance(content, list):
        return []  # not an answer's shape: nothing to scan
    b = _Builder()
    _content(b, OUTPUT, content, ("content",), True)
    return [s for s in b.segments if s.hook == OUTPUT and s.text]


def redacted_pieces(segment: Segment, spans: Iterable[tuple[int, int, str]]) -> dict[Path, str]:
    """New text of each part a redaction touches: `(start, end, type)` spans of the segment's
    text, non-overlapping. A span over several parts puts its `[REDACTED:<type>]` marker in the
    part where it starts and removes its tail from the parts after."""
    ordered = sorted(spans)
    out: dict[Path, str] = {}
    text = segment.text
    k = 0  # pieces are in text order: one walk over both lists
    for p in segment.pieces:
        while k < len(ordered) and ordered[k][1] <= p.start:
            k += 1
        parts: list[str] = []
        pos = p.start
        j = k
        while j < len(ordered) and ordered[j][0] < p.end:
            start, end, kind = ordered[j]
            parts.append(text[pos : max(start, p.start)])
            if start >= p.start:
                parts.append(f"[REDACTED:{kind}]")
            pos = min(end, p.end)
            j += 1
        if parts:
            parts.append(text[pos : p.end])
            out[p.path] = "".join(parts)
    return out


def with_texts(body: dict[str, Any], texts: dict[Path, str]) -> dict[str, Any]:
    """A copy of `body` with the text at each path replaced; containers on the way are copied,
    everything else is shared with `body`."""
    root: dict[str, Any] = dict(body)
    copied: set[Path] = {()}
    for path, value in texts.items():
        node: Any = root
        for depth, key in enumerate(path[:-1]):
            child = node[key]
            sub = path[: depth + 1]
            if sub not in copied:
                child = dict(child) if isinstance(child, dict) else list(child)
                node[key] = child
                copied.add(sub)
            node = child
        node[path[-1]] = value
    return root
