"""`POST /v1/embeddings`: the OpenAI embeddings wire protocol, simulated.

Vectors are deterministic (sha256 of each input, unit length) so the same text always embeds the
same; `dimensions` and `encoding_format` (`float` or `base64`, the openai SDK's default) as the
real API; usage counts input tokens with the model's tokenizer.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from typing import Any

import orjson
from aiohttp import web

from simulator.errors import openai_error
from simulator.openai_api import read_openai_request
from simulator.state import STATE_KEY
from simulator.tokenizer import count_tokens

DEFAULT_DIMENSIONS = 1536
MAX_DIMENSIONS = 3072


def embedding(text: str, dims: int) -> list[float]:
    values: list[float] = []
    block = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
    while len(values) < dims:
        values.extend((b - 127.5) / 127.5 for b in block)
        block = hashlib.sha256(block).digest()
    values = values[:dims]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


async def embeddings(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    parsed = await read_openai_request(request, state)
    if isinstance(parsed, web.Response):
        return parsed
    body, spec = parsed
    data = body.get("input")
    items: list[Any] = [data] if isinstance(data, str) else data if isinstance(data, list) else []
    if not items:
        return openai_error(400, "'input' must be a non-empty string or array.", param="input")
    dims = body.get("dimensions", DEFAULT_DIMENSIONS)
    if isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= MAX_DIMENSIONS:
        return openai_error(400, f"'dimensions' must be an integer in [1, {MAX_DIMENSIONS}].",
                            param="dimensions")
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        return openai_error(400, "'encoding_format' must be 'float' or 'base64'.",
                            param="encoding_format")
    state.count(spec, "embeddings")
    out = []
    tokens = 0
    for i, item in enumerate(items):
        text = item if isinstance(item, str) else " ".join(str(t) for t in item)
        tokens += count_tokens(text, spec.tokenizer_factor) if isinstance(item, str) else len(item)
        vec = embedding(text, dims)
        value: Any = vec
        if fmt == "base64":
            value = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
        out.append({"object": "embedding", "index": i, "embedding": value})
    doc = {"object": "list", "data": out, "model": spec.version,
           "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    return web.Response(body=orjson.dumps(doc), content_type="application/json")
