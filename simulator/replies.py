"""Deterministic reply content: text of an exact token length and tool-call arguments.

The same request always gets the same answer (seeded by sha256 of the last message), so
tests, benchmarks and replays compare byte-for-byte.
"""

from __future__ import annotations

import hashlib
import math
from functools import lru_cache
from typing import Any, TypeGuard

import orjson

from simulator.tokenizer import PROSE_FACTOR_CAP, count_tokens

WORDS: tuple[str, ...] = tuple(
    """able about above across act add after again air all also always amber among and animal
    answer any apple area arm art ask autumn away back ball bank base basket bear beauty bed
    before begin bell best better big bird black blue boat body book bottle box boy bread bridge
    bright bring brother brown build busy cake call calm camera candle car care carry castle cat
    chair chalk change cheap cherry child circle city class clean clear clock close cloud coast
    coffee cold color common copper corner count country cover cow cream cross crowd cup current
    dance dark day deep desert door dream dress drink drive dust eagle early earth east easy
    eight empty engine even evening every face fair family farm fast feather field fire first
    fish five flag floor flower fly focus follow food forest forward four fox free fresh friend
    garden gate gentle glass gold good grass great green ground group grow half hand happy
    harbor hard hat heart heavy high hill home honey horse hour house idea island jacket jelly
    journey jump kettle key kind king kite lake lamp land large late leaf learn lemon letter
    light line lion little long loud lucky machine map market meadow metal middle milk mirror
    moon morning mountain music name narrow near nest new night noble north number ocean office
    olive open orange paper park path peace pencil pepper piano pilot pine planet plant plate
    pocket pond quiet rain river road rock roof rope round salt sand school sea seed shadow ship
    silver simple sky snow""".split()
)
assert len(WORDS) == 256


def seed_digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def _prose_tokens(length: int, factor: float) -> int:
    if factor == 1.0:
        return (length + 3) // 4
    return math.ceil(length * min(factor, PROSE_FACTOR_CAP) / 4)


def prose_length_for_tokens(tokens: int, factor: float) -> int:
    """Longest ASCII prose length that the tokenizer counts as exactly `tokens` tokens."""
    f = 1.0 if factor == 1.0 else min(factor, PROSE_FACTOR_CAP)
    length = int(tokens * 4 / f) + 1
    while length > 0 and _prose_tokens(length, factor) > tokens:
        length -= 1
    return length


@lru_cache(maxsize=8192)
def reply_text(digest: bytes, tokens: int, factor: float) -> str:
    """Prose of exactly `tokens` tokens for a model whose tokenizer factor is `factor`."""
    if tokens <= 0:
        return ""
    length = prose_length_for_tokens(tokens, factor)
    words: list[str] = []
    size = 0
    block = digest
    while size < length:
        for byte in block:
            word = WORDS[byte]
            words.append(word)
            size += len(word) + 1
            if size >= length:
                break
        block = hashlib.sha256(block).digest()
    words[0] = words[0].capitalize()
    text = " ".join(words)[:length]
    # Same length, so the same token count: end like a sentence.
    return text[:-1] + "." if length > 1 else text


def split_words(text: str, words_per_chunk: int) -> list[str]:
    """Stream deltas: groups of words, each keeping its leading space, concatenating to text."""
    if not text:
        return []
    parts = text.split(" ")
    chunks = []
    for i in range(0, len(parts), words_per_chunk):
        chunk = " ".join(parts[i : i + words_per_chunk])
        chunks.append(chunk if i == 0 else " " + chunk)
    return chunks


def word_for(digest: bytes, index: int) -> str:
    return WORDS[digest[index % len(digest)] ^ (index // len(digest)) & 0xFF]


def arguments_from_schema(schema: Any, digest: bytes) -> dict[str, Any]:
    """Tool-call arguments that satisfy a JSON schema's properties, deterministically."""
    value = schema_value(schema, digest)
    return value if isinstance(value, dict) else {}


def schema_value(schema: Any, digest: bytes) -> Any:
    """A value valid under `schema` (local `$ref`s, formats, bounds), deterministically."""
    return _value_for(schema, digest, [0], schema if isinstance(schema, dict) else {}, 0)


_FORMATS = {
    "date-time": "2026-01-01T00:00:00Z",
    "date": "2026-01-01",
    "time": "00:00:00",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "192.0.2.1",
}


def _num(v: Any) -> TypeGuard[float]:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _resolve(ref: str, root: dict[str, Any]) -> Any:
    node: Any = root
    for part in ref.removeprefix("#/").split("/") if ref.startswith("#/") else ():
        node = node.get(part) if isinstance(node, dict) else None
    return node if ref.startswith("#") else {}


def _value_for(schema: Any, digest: bytes, counter: list[int], root: dict[str, Any],
               depth: int) -> Any:
    if not isinstance(schema, dict):
        counter[0] += 1
        return word_for(digest, counter[0])
    if depth > 32:  # a recursive schema: stop with the smallest value
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return _value_for(_resolve(ref, root), digest, counter, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            first = next((o for o in options if not (isinstance(o, dict)
                                                     and o.get("type") == "null")), options[0])
            return _value_for(first, digest, counter, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties")
        if not isinstance(props, dict):
            return {}
        return {str(name): _value_for(sub, digest, counter, root, depth + 1)
                for name, sub in props.items()}
    if kind == "array":
        n = schema.get("minItems")
        n = n if isinstance(n, int) and 1 <= n <= 16 else 1
        item = schema.get("items", {"type": "string"})
        return [_value_for(item, digest, counter, root, depth + 1) for _ in range(n)]
    if kind in ("integer", "number"):
        value = 1
        low, high = schema.get("minimum"), schema.get("maximum")
        xlow, xhigh = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        if _num(low) and value < low:
            value = math.ceil(low)
        if _num(xlow) and value <= xlow:
            value = math.floor(xlow) + 1
        if _num(high) and value > high:
            value = math.floor(high)
        if _num(xhigh) and value >= xhigh:
            value = math.ceil(xhigh) - 1
        return value
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt in _FORMATS:
        return _FORMATS[fmt]
    counter[0] += 1
    word = word_for(digest, counter[0])
    low = schema.get("minLength")
    if isinstance(low, int) and len(word) < low:
        word = (word * (low // len(word) + 1))[:low]
    high = schema.get("maxLength")
    if isinstance(high, int) and high >= 0:
        word = word[:high]
    return word


class Reply:
    """What the simulated model answers, independent of wire protocol."""

    __slots__ = (
        "arguments", "blocks", "chunk_chars", "finish", "output_tokens", "text", "tool_name"
    )

    def __init__(
        self,
        text: str,
        output_tokens: int,
        finish: str,
        tool_name: str | None = None,
        arguments: str = "",
        chunk_chars: int = 0,
        blocks: tuple[str, ...] | None = None,
    ) -> None:
        self.text = text
        # Anthropic text blocks the text is sent in (one unless scripted: `BLOCK_BREAK`)
        self.blocks = blocks if blocks is not None else (text,)
        self.chunk_chars = chunk_chars  # stream in pieces of this many characters, not words
        self.output_tokens = output_tokens
        # "stop", "length" or "tool"; each protocol maps it to its own stop reason.
        self.finish = finish
        self.tool_name = tool_name
        self.arguments = arguments


def text_reply(digest: bytes, target: int, max_tokens: int | None, factor: float) -> Reply:
    """`target` tokens of prose, cut to `max_tokens` (finish "length") when that is smaller."""
    if max_tokens is not None and max_tokens < target:
        return Reply(reply_text(digest, max_tokens, factor), max_tokens, "length")
    return Reply(reply_text(digest, target, factor), target, "stop")


def tool_reply(digest: bytes, name: str, schema: Any, factor: float) -> Reply:
    arguments = orjson.dumps(arguments_from_schema(schema, digest)).decode()
    tokens = count_tokens(arguments, factor) + count_tokens(name, factor) + 4
    return Reply("", tokens, "tool", name, arguments)


def json_reply(digest: bytes, schema: Any, factor: float) -> Reply:
    """Structured output: JSON valid under `schema` (None: any JSON object) as the reply text."""
    if schema is None:
        value: Any = {"answer": reply_text(digest, 12, factor)}
    else:
        value = schema_value(schema, digest)
    text = orjson.dumps(value).decode()
    return Reply(text, max(1, count_tokens(text, factor)), "stop", chunk_chars=16)


def scripted_tool_reply(name: str, arguments: dict[str, Any], factor: float) -> Reply:
    """The tool call a `tool_call` fault rule scripts, counted like any tool call."""
    text = orjson.dumps(arguments).decode()
    return Reply("", count_tokens(text, factor) + count_tokens(name, factor) + 4, "tool", name,
                 text)


# In a scripted reply, where the Anthropic answer starts a new text block (as the real API does
# around citations); the OpenAI answer is the parts joined.
BLOCK_BREAK = "\x1f"


def scripted_reply(text: str, factor: float, chunk_chars: int) -> Reply:
    """The reply a `reply` fault scripts, counted like any reply; `BLOCK_BREAK` in `text`
    splits the Anthropic answer into several text blocks."""
    blocks = tuple(text.split(BLOCK_BREAK))
    text = "".join(blocks)
    tokens = max(1, count_tokens(text, factor))
    return Reply(text, tokens, "stop", chunk_chars=chunk_chars, blocks=blocks)


def split_fixed(text: str, size: int) -> list[str]:
    """Tool-argument fragments for streaming (the JSON arrives in pieces, as it really does)."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]
