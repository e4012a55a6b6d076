"""Field-level correspondences between OpenAI chat completions and Anthropic messages.

Shared by the whole-response and the streaming translators so both map reasons and usage alike.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from activities.wire.usage import Usage, parse_anthropic_usage, parse_openai_usage

# The tool an OpenAI `response_format` becomes for an Anthropic target: its input is the answer,
# handed back to the caller as the message content.
RESPONSE_FORMAT_TOOL = "governor_response_format"

_TOOL_ID_OK = re.compile(r"^[a-zA-Z0-9_-]+$")
OPENAI_MAX_TOOL_ID = 40  # OpenAI refuses longer tool_call ids

# Anthropic stop_reason -> OpenAI finish_reason.
FINISH_FROM_ANTHROPIC: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# OpenAI finish_reason -> Anthropic stop_reason.
STOP_FROM_OPENAI: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def finish_from_anthropic(stop_reason: object) -> str | None:
    if stop_reason is None:
        return None
    return FINISH_FROM_ANTHROPIC.get(str(stop_reason), "stop")


def stop_from_openai(finish_reason: object) -> str | None:
    if finish_reason is None:
        return None
    return STOP_FROM_OPENAI.get(str(finish_reason), "end_turn")


def openai_usage_dict(u: Usage) -> dict[str, Any]:
    """OpenAI usage: prompt_tokens counts every input token, cached ones itemised."""
    prompt = u.input_tokens + u.cache_read_tokens + u.cache_write_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": u.output_tokens,
        "total_tokens": prompt + u.output_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cache_read_tokens},
    }


def anthropic_usage_dict(u: Usage) -> dict[str, Any]:
    """Anthropic usage: input_tokens excludes both cache classes."""
    return {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_creation_input_tokens": u.cache_write_tokens,
        "cache_read_input_tokens": u.cache_read_tokens,
    }


def usage_of_openai(usage: object) -> Usage:
    return parse_openai_usage(usage if isinstance(usage, dict) else {}, None)


def usage_of_anthropic(usage: object) -> Usage:
    return parse_anthropic_usage(usage if isinstance(usage, dict) else {}, None)


def anthropic_message_id(openai_id: object) -> str:
    text = openai_id if isinstance(openai_id, str) and openai_id else "governor"
    return text if text.startswith("msg_") else "msg_" + text


def openai_completion_id(anthropic_id: object) -> str:
    text = anthropic_id if isinstance(anthropic_id, str) and anthropic_id else "governor"
    return text if text.startswith("chatcmpl-") else "chatcmpl-" + text


def anthropic_tool_id(call_id: object, fallback: str) -> str:
    """A tool-call id as Anthropic validates it (`^[a-zA-Z0-9_-]+$`); the same input always
    maps to the same id, so a tool_use and its tool_result still pair up."""
    text = call_id if isinstance(call_id, str) and call_id else fallback
    if _TOOL_ID_OK.match(text):
        return text
    return "toolu_" + re.sub(r"[^a-zA-Z0-9_-]", "_", text)[:48] + "_" + _short_hash(text)


def openai_tool_id(call_id: object, fallback: str) -> str:
    """A tool-call id within OpenAI's 40-character limit; deterministic, like the above."""
    text = call_id if isinstance(call_id, str) and call_id else fallback
    if len(text) <= OPENAI_MAX_TOOL_ID:
        return text
    return text[: OPENAI_MAX_TOOL_ID - 9] + "_" + _short_hash(text)


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]
