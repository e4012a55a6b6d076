"""Deterministic reply content: text of an exact token length and tool-call arguments.

The same request always gets the same answer (seeded by sha256 of the last message), so
tests, benchmarks and replays compare byte-for-byte.
"""

from __future__ import annotations

import hashlib
import math
from functools import lru_cache
from typing import Any

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
    value = _value_for(schema, digest, [0])
    return value if isinstance(value, dict) else {}


def _value_for(schema: Any, digest: bytes, counter: list[int]) -> Any:
    if not isinstance(schema, dict):
        counter[0] += 1
        return word_for(digest, counter[0])
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return _value_for(options[0], digest, counter)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties")
        if not isinstance(props, dict):
            return {}
        return {str(name): _value_for(sub, digest, counter) for name, sub in props.items()}
    if kind == "array":
        return [_value_for(schema.get("items", {"type": "string"}), digest, counter)]
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    counter[0] += 1
    return word_for(digest, counter[0])


class Reply:
    """What the simulated model answers, independent of wire protocol."""

    __slots__ = ("arguments", "chunk_chars", "finish", "output_tokens", "text", "tool_name")

    def __init__(
        self,
        text: str,
        output_tokens: int,
        finish: str,
        tool_name: str | None = None,
        arguments: str = "",
        chunk_chars: int = 0,
    ) -> None:
        self.text = text
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


def scripted_reply(text: str, factor: float, chunk_chars: int) -> Reply:
    """The reply a `reply` fault scripts, counted like any reply."""
    return Reply(text, max(1, count_tokens(text, factor)), "stop", chunk_chars=chunk_chars)


def split_fixed(text: str, size: int) -> list[str]:
    """Tool-argument fragments for streaming (the JSON arrives in pieces, as it really does)."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]
