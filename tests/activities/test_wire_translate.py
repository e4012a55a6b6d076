"""Cross-provider request/response translation: what a routed caller sends must arrive intact."""

from __future__ import annotations

from typing import Any

import pytest

from activities.wire.errors import WireError
from activities.wire.translate import (
    anthropic_request_to_openai,
    anthropic_response_to_openai,
    openai_request_to_anthropic,
    openai_response_to_anthropic,
)

WEATHER_TOOL_OPENAI = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}

WEATHER_TOOL_ANTHROPIC = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}

OPENAI_CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            },
            {
                "id": "call_2",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
            },
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    {"role": "tool", "tool_call_id": "call_2", "content": "24C"},
    {"role": "assistant", "content": "Paris 18C, Rome 24C."},
    {"role": "user", "content": "Thanks"},
]


def test_openai_conversation_becomes_anthropic_turns_with_tool_blocks() -> None:
    out = openai_request_to_anthropic(
        {"model": "intent-fast", "messages": OPENAI_CONVERSATION, "tools": [WEATHER_TOOL_OPENAI]},
        "claude-haiku-4-5",
    )
    assert out["model"] == "claude-haiku-4-5"
    assert out["system"] == "Be brief."
    assert out["max_tokens"] == 4096  # no catalog maximum passed: the fallback
    assert out["tools"] == [WEATHER_TOOL_ANTHROPIC]
    assert out["messages"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "call_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "call_2",
                    "name": "get_weather",
                    "input": {"city": "Rome"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "24C"},
            ],
        },
        {"role": "assistant", "content": "Paris 18C, Rome 24C."},
        {"role": "user", "content": "Thanks"},
    ]


def test_openai_to_anthropic_to_openai_keeps_messages_and_tools() -> None:
    original = {
        "messages": OPENAI_CONVERSATION,
        "tools": [WEATHER_TOOL_OPENAI],
        "tool_choice": "auto",
        "max_completion_tokens": 300,
    }
    back = anthropic_request_to_openai(openai_request_to_anthropic(original, "claude"), "gpt")
    assert back["messages"] == OPENAI_CONVERSATION
    assert back["tools"] == [WEATHER_TOOL_OPENAI]
    assert back["tool_choice"] == "auto"
    assert back["max_completion_tokens"] == 300


def test_anthropic_to_openai_to_anthropic_keeps_messages_and_tools() -> None:
    original = {
        "model": "claude",
        "max_tokens": 500,
        "system": "Be brief.",
        "tools": [WEATHER_TOOL_ANTHROPIC],
        "tool_choice": {"type": "any"},
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"}],
            },
        ],
    }
    back = openai_request_to_anthropic(anthropic_request_to_openai(original, "gpt"), "claude")
    assert back["messages"] == original["messages"]
    assert back["system"] == "Be brief."
    assert back["tools"] == original["tools"]
    assert back["tool_choice"] == {"type": "any"}
    assert back["max_tokens"] == 500


def test_several_system_and_developer_messages_become_system_blocks() -> None:
    out = openai_request_to_anthropic(
        {
            "messages": [
                {"role": "system", "content": "A"},
                {
                    "role": "developer",
                    "content": [
                        {"type": "text", "text": "B", "cache_control": {"type": "ephemeral"}}
                    ],
                },
                {"role": "user", "content": "hi"},
            ]
        },
        "claude",
    )
    assert out["system"] == [
        {"type": "text", "text": "A"},
        {"type": "text", "text": "B", "cache_control": {"type": "ephemeral"}},
    ]


def test_user_content_parts_map_text_images_and_cache_control() -> None:
    out = openai_request_to_anthropic(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "text",
                            "text": "What is this?",
                            "cache_control": {"type": "ephemeral"},
                        },
                        {
                            "type": "image_url",
                            "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                        },
                        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                    ],
                }
            ]
        },
        "claude",
    )
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?", "cache_control": {"type": "ephemeral"}},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


def test_anthropic_images_become_openai_image_urls() -> None:
    out = anthropic_request_to_openai(
        {
            "max_tokens": 10,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {
                                "type": "base64",
                                "media_type": "image/jpeg",
                                "data": "QUJD",
                            },
                        },
                        {"type": "text", "text": "describe"},
                    ],
                }
            ],
        },
        "gpt",
    )
    assert out["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,QUJD"}},
                {"type": "text", "text": "describe"},
            ],
        }
    ]


@pytest.mark.parametrize(
    ("openai_choice", "anthropic_choice"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"type": "tool", "name": "get_weather"},
        ),
    ],
)
def test_tool_choice_maps_both_ways(openai_choice: Any, anthropic_choice: Any) -> None:
    to_anthropic = openai_request_to_anthropic(
        {
            "messages": [{"role": "user", "content": "x"}],
            "tools": [WEATHER_TOOL_OPENAI],
            "tool_choice": openai_choice,
        },
        "claude",
    )
    assert to_anthropic["tool_choice"] == anthropic_choice
    to_openai = anthropic_request_to_openai(
        {
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "x"}],
            "tools": [WEATHER_TOOL_ANTHROPIC],
            "tool_choice": anthropic_choice,
        },
        "gpt",
    )
    assert to_openai["tool_choice"] == openai_choice


def test_parallel_tool_calls_false_disables_parallel_tool_use_and_back() -> None:
    out = openai_request_to_anthropic(
        {
            "messages": [{"role": "user", "content": "x"}],
            "tools": [WEATHER_TOOL_OPENAI],
            "tool_choice": "required",
            "parallel_tool_calls": False,
        },
        "claude",
    )
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    back = anthropic_request_to_openai({**out, "max_tokens": 5}, "gpt")
    assert back["parallel_tool_calls"] is False
    assert back["tool_choice"] == "required"


def test_sampling_limits_and_stop_map_to_anthropic() -> None:
    out = openai_request_to_anthropic(
        {
            "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 77,
            "temperature": 1.7,
            "top_p": 0.9,
            "stop": "END",
            "stream": True,
            "user": "u-1",
        },
        "claude",
    )
    assert out["max_tokens"] == 77
    # 1.7 clamps to Anthropic's 1.0, its default, so only top_p goes (Claude takes one of them)
    assert "temperature" not in out
    assert out["top_p"] == 0.9
    assert out["stop_sequences"] == ["END"]
    assert out["stream"] is True
    assert out["metadata"] == {"user_id": "u-1"}


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    out = openai_request_to_anthropic(
        {
            "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 10,
            "max_completion_tokens": 20,
        },
        "claude",
    )
    assert out["max_tokens"] == 20


def test_anthropic_streaming_request_asks_openai_for_usage() -> None:
    out = anthropic_request_to_openai(
        {
            "max_tokens": 64,
            "stream": True,
            "stop_sequences": ["A", "B"],
            "temperature": 0.2,
            "system": [
                {"type": "text", "text": "S1", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "S2"},
            ],
            "metadata": {"user_id": "u-9"},
            "messages": [{"role": "user", "content": "x"}],
        },
        "gpt-4o-mini",
    )
    assert out["stream"] is True
    assert out["stream_options"] == {"include_usage": True}
    assert out["max_completion_tokens"] == 64
    assert out["stop"] == ["A", "B"]
    assert out["temperature"] == 0.2
    assert out["user"] == "u-9"
    assert out["messages"][0] == {
        "role": "system",
        "content": [{"type": "text", "text": "S1"}, {"type": "text", "text": "S2"}],
    }


def test_tool_results_become_tool_messages_before_the_users_text() -> None:
    out = anthropic_request_to_openai(
        {
            "max_tokens": 5,
            "messages": [
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "shot", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "content": [
                                {"type": "text", "text": "took it"},
                                {
                                    "type": "image",
                                    "source": {
                                        "type": "base64",
                                        "media_type": "image/png",
                                        "data": "AAA=",
                                    },
                                },
                            ],
                        },
                        {"type": "text", "text": "what do you see?"},
                    ],
                },
            ],
        },
        "gpt",
    )
    assert out["messages"] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "shot", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "took it"},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA="}},
                {"type": "text", "text": "what do you see?"},
            ],
        },
    ]


def test_thinking_blocks_are_not_sent_to_openai() -> None:
    out = anthropic_request_to_openai(
        {
            "max_tokens": 5,
            "messages": [
                {"role": "user", "content": "q"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": "s"},
                        {"type": "text", "text": "a"},
                    ],
                },
            ],
        },
        "gpt",
    )
    assert out["messages"][1] == {"role": "assistant", "content": "a"}


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("not a dict", "request body must be a JSON object"),
        ({}, "messages must be an array"),
        ({"messages": []}, "at least one user or assistant"),
        ({"messages": ["hi"]}, "messages[0] must be a JSON object"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "'input_audio' cannot be sent",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}],
                    }
                ]
            },
            "http(s) or data URL",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "c", "function": {"name": "f", "arguments": "{oops"}}
                        ],
                    }
                ]
            },
            "not valid JSON",
        ),
        ({"messages": [{"role": "tool", "content": "x"}]}, "tool_call_id"),
        ({"messages": [{"role": "user", "content": "x"}], "n": 3}, "'n' cannot be served"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "positive integer"),
        ({"messages": [{"role": "user", "content": "x"}], "stop": 5}, "stop must be"),
        (
            {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "file_search"}]},
            "only function tools",
        ),
        (
            {
                "messages": [{"role": "user", "content": "x"}],
                "tools": [WEATHER_TOOL_OPENAI],
                "tool_choice": "sometimes",
            },
            "tool_choice must be",
        ),
    ],
)
def test_untranslatable_openai_requests_raise_clear_wire_errors(body: Any, needle: str) -> None:
    with pytest.raises(WireError) as info:
        openai_request_to_anthropic(body, "claude")
    assert needle in str(info.value)
    assert info.value.code in ("invalid_request", "unsupported_field")


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"messages": None}, "messages must be an array"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "'user' or 'assistant'"),
        ({"messages": [{"role": "user", "content": [{"type": "tool_result"}]}]}, "tool_use_id"),
        (
            {"messages": [{"role": "user", "content": [{"type": "search_result"}]}]},
            "'search_result' cannot be sent",
        ),
        (
            {
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "web_search_20250305", "name": "web_search"}],
            },
            "server tool",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}], "max_tokens": "many"},
            "positive integer",
        ),
    ],
)
def test_untranslatable_anthropic_requests_raise_clear_wire_errors(body: Any, needle: str) -> None:
    with pytest.raises(WireError) as info:
        anthropic_request_to_openai(body, "gpt")
    assert needle in str(info.value)


ANTHROPIC_RESPONSE = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-haiku-4-5-20251001",
    "content": [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 10,
        "output_tokens": 20,
        "cache_read_input_tokens": 300,
        "cache_creation_input_tokens": 40,
    },
}


def test_anthropic_response_becomes_openai_completion_with_cache_usage() -> None:
    out = anthropic_response_to_openai(ANTHROPIC_RESPONSE, created=1700000000)
    assert out["object"] == "chat.completion"
    assert out["created"] == 1700000000
    assert out["model"] == "claude-haiku-4-5-20251001"
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Checking."
    assert choice["message"]["tool_calls"] == [
        {
            "id": "toolu_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        }
    ]
    assert out["usage"] == {
        "prompt_tokens": 350,
        "completion_tokens": 20,
        "total_tokens": 370,
        "prompt_tokens_details": {"cached_tokens": 300},
    }


def test_openai_response_becomes_anthropic_message_with_cache_usage() -> None:
    resp = {
        "id": "chatcmpl-9",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                },
            }
        ],
        "usage": {
            "prompt_tokens": 1500,
            "completion_tokens": 12,
            "total_tokens": 1512,
            "prompt_tokens_details": {"cached_tokens": 1280},
        },
    }
    out = openai_response_to_anthropic(resp)
    assert out["type"] == "message"
    assert out["id"] == "msg_chatcmpl-9"
    assert out["stop_reason"] == "tool_use"
    assert out["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}
    ]
    assert out["usage"] == {
        "input_tokens": 220,
        "output_tokens": 12,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 1280,
    }


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
    ],
)
def test_stop_reasons_map_to_finish_reasons(stop_reason: str, finish_reason: str) -> None:
    resp = {**ANTHROPIC_RESPONSE, "stop_reason": stop_reason}
    assert anthropic_response_to_openai(resp)["choices"][0]["finish_reason"] == finish_reason


@pytest.mark.parametrize(
    ("finish_reason", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
        ("function_call", "tool_use"),
    ],
)
def test_finish_reasons_map_to_stop_reasons(finish_reason: str, stop_reason: str) -> None:
    resp = {
        "choices": [
            {
                "index": 0,
                "finish_reason": finish_reason,
                "message": {"role": "assistant", "content": "x"},
            }
        ]
    }
    assert openai_response_to_anthropic(resp)["stop_reason"] == stop_reason


def test_response_round_trip_keeps_text_tools_and_usage() -> None:
    back = openai_response_to_anthropic(anthropic_response_to_openai(ANTHROPIC_RESPONSE))
    assert back["content"] == ANTHROPIC_RESPONSE["content"]
    assert back["stop_reason"] == "tool_use"
    # OpenAI has no cache-write field: those tokens come back as plain input.
    assert back["usage"] == {
        "input_tokens": 50,
        "output_tokens": 20,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 300,
    }


def test_model_emitted_invalid_tool_json_is_kept_not_dropped() -> None:
    resp = {
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{bad"},
                        }
                    ],
                },
            }
        ]
    }
    out = openai_response_to_anthropic(resp)
    assert out["content"][0]["input"] == {"_raw_arguments": "{bad"}


def test_mid_conversation_system_messages_are_translated_in_position() -> None:
    body = {"model": "m", "max_tokens": 8, "system": "top",
            "messages": [{"role": "user", "content": "a"},
                         {"role": "system", "content": [{"type": "text", "text": "mid"}]},
                         {"role": "user", "content": "b"}]}
    out = anthropic_request_to_openai(body, "gpt-4o")
    assert [(m["role"], m["content"]) for m in out["messages"]] == [
        ("system", "top"), ("user", "a"), ("system", "mid"), ("user", "b")]
