"""Request validation as the real APIs document it (SIMULATED: the checks Governor's translation
must pass, with messages shaped like the providers'). A request that breaks one is answered 400
in the protocol's own error JSON, as the real endpoint would.

Anthropic messages: max_tokens at most the model's output maximum; temperature in 0..1, and not
together with top_p (as for the current Claude models the simulator serves); image
`media_type` one of image/jpeg, image/png, image/gif, image/webp; document `media_type`
application/pdf (base64); tool_use ids and tool_result tool_use_ids match ^[a-zA-Z0-9_-]+$;
thinking budget_tokens >= 1024 and below max_tokens.
OpenAI chat completions: max_(completion_)tokens at most the model's output maximum; temperature
in 0..2; at most 4 stop sequences; image data URLs of png, jpeg, gif or webp; tool_call ids at
most 40 characters.
"""

from __future__ import annotations

import re
from typing import Any

from simulator.errors import BadRequest
from simulator.models import ModelSpec

ANTHROPIC_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
OPENAI_IMAGE_FORMATS = ("png", "jpeg", "gif", "webp")
OPENAI_MAX_STOP = 4
OPENAI_MAX_TOOL_ID = 40


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_anthropic(body: dict[str, Any], spec: ModelSpec, max_tokens: int) -> None:
    limit = spec.max_output_tokens
    if limit and max_tokens > limit:
        raise BadRequest(
            f"max_tokens: {max_tokens} > {limit}, which is the maximum allowed number of output "
            f"tokens for {spec.name} (simulated validation)"
        )
    temperature = body.get("temperature")
    if temperature is not None and (not _number(temperature) or not 0 <= temperature <= 1):
        raise BadRequest("temperature: Input should be less than or equal to 1 "
                         "(simulated validation)")
    if body.get("temperature") is not None and body.get("top_p") is not None:
        raise BadRequest("`temperature` and `top_p` cannot both be specified for this model. "
                         "Please use only one. (simulated validation)")
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or budget < 1024:
            raise BadRequest("thinking.enabled.budget_tokens: Input should be greater than or "
                             "equal to 1024 (simulated validation)")
        if budget >= max_tokens:
            raise BadRequest("`max_tokens` must be greater than `thinking.budget_tokens` "
                             "(simulated validation)")
    for i, message in enumerate(body.get("messages") or ()):
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            _anthropic_blocks(content, f"messages.{i}.content")


def _anthropic_blocks(blocks: list[Any], where: str) -> None:
    for j, block in enumerate(blocks):
        if not isinstance(block, dict):
            continue
        at = f"{where}.{j}"
        kind = block.get("type")
        source = block.get("source")
        if kind in ("image", "document") and isinstance(source, dict):
            if source.get("type") == "base64":
                allowed = ANTHROPIC_IMAGE_TYPES if kind == "image" else ("application/pdf",)
                if source.get("media_type") not in allowed:
                    names = ", ".join(f"'{a}'" for a in allowed)
                    raise BadRequest(
                        f"{at}.{kind}.source.base64.media_type: Input should be {names} "
                        "(simulated validation)"
                    )
        elif kind == "tool_use":
            if not _TOOL_ID.match(str(block.get("id") or "")):
                raise BadRequest(f"{at}.tool_use.id: String should match pattern "
                                 "'^[a-zA-Z0-9_-]+$' (simulated validation)")
        elif kind == "tool_result":
            if not _TOOL_ID.match(str(block.get("tool_use_id") or "")):
                raise BadRequest(f"{at}.tool_result.tool_use_id: String should match pattern "
                                 "'^[a-zA-Z0-9_-]+$' (simulated validation)")
            inner = block.get("content")
            if isinstance(inner, list):
                _anthropic_blocks(inner, f"{at}.content")


def check_openai(body: dict[str, Any], spec: ModelSpec, max_tokens: int | None) -> None:
    limit = spec.max_output_tokens
    if limit and max_tokens is not None and max_tokens > limit:
        raise BadRequest(
            f"max_tokens is too large: {max_tokens}. This model supports at most {limit} "
            f"completion tokens, whereas you provided {max_tokens}. (simulated validation)",
            "max_tokens",
        )
    temperature = body.get("temperature")
    if temperature is not None and (not _number(temperature) or not 0 <= temperature <= 2):
        raise BadRequest("Invalid 'temperature': decimal above maximum value. Expected a value "
                         "<= 2. (simulated validation)", "temperature")
    stop = body.get("stop")
    if isinstance(stop, list) and len(stop) > OPENAI_MAX_STOP:
        raise BadRequest(f"Invalid 'stop': array too long. Expected an array with maximum length "
                         f"{OPENAI_MAX_STOP}. (simulated validation)", "stop")
    for i, message in enumerate(body.get("messages") or ()):
        if not isinstance(message, dict):
            continue
        for j, call in enumerate(message.get("tool_calls") or ()):
            if isinstance(call, dict) and len(str(call.get("id") or "")) > OPENAI_MAX_TOOL_ID:
                raise BadRequest(
                    f"Invalid 'messages[{i}].tool_calls[{j}].id': string too long. Expected a "
                    f"string with maximum length {OPENAI_MAX_TOOL_ID}. (simulated validation)",
                    f"messages.[{i}].tool_calls.[{j}].id",
                )
        if len(str(message.get("tool_call_id") or "")) > OPENAI_MAX_TOOL_ID:
            raise BadRequest(f"Invalid 'messages[{i}].tool_call_id': string too long. "
                             "(simulated validation)", f"messages.[{i}].tool_call_id")
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "image_url":
                    _openai_image(part.get("image_url"))


def _openai_image(image: Any) -> None:
    url = image.get("url") if isinstance(image, dict) else image
    if isinstance(url, str) and url.startswith("data:"):
        media = url[5:].partition(";")[0].partition(",")[0].lower()
        fmt = media.removeprefix("image/")
        if not media.startswith("image/") or fmt not in OPENAI_IMAGE_FORMATS:
            raise BadRequest(
                "You uploaded an unsupported image. Please make sure your image has of one the "
                f"following formats: {list(OPENAI_IMAGE_FORMATS)}. (simulated validation)",
                "messages",
            )
