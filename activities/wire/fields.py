"""Every top-level request field of both protocols, and what a cross-protocol translation does
with it: translated (how), refused (400 naming it, unless it holds its neutral value), or ignored
(and why: the target has no such thing and its absence changes nothing the caller relies on).

The translator checks a request against the table before translating, so a field nobody decided
about is refused by name rather than silently dropped; `tests/activities/test_wire_fields.py`
fails when the translator reads a field that has no entry here. Same-protocol calls are relayed
as sent and never consult this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from activities.wire.errors import WireError

Handling = Literal["translated", "refused", "ignored"]
_UNSET: tuple[Any, ...] = (None,)


@dataclass(frozen=True, slots=True)
class FieldRule:
    handling: Handling
    how: str
    # For `refused`: values that mean "not used" and pass (the field is then ignored).
    neutral: tuple[Any, ...] = _UNSET


def _t(how: str) -> FieldRule:
    return FieldRule("translated", how)


def _i(why: str) -> FieldRule:
    return FieldRule("ignored", why)


def _r(why: str, *neutral: Any) -> FieldRule:
    return FieldRule("refused", why, (None, *neutral))


# OpenAI chat completions request -> Anthropic messages request.
OPENAI_TO_ANTHROPIC: dict[str, FieldRule] = {
    "model": _t("replaced by the target's model"),
    "messages": _t("system/developer -> system; user/assistant/tool turns -> alternating "
                   "messages; tool results -> tool_result blocks; images/files -> image/document "
                   "blocks (media types normalised to what Anthropic accepts)"),
    "max_completion_tokens": _t("-> max_tokens"),
    "max_tokens": _t("-> max_tokens (when max_completion_tokens is absent); neither set: the "
                     "target model's max_output_tokens from the pricing catalog"),
    "temperature": _t("-> temperature, clamped to Anthropic's 0..1"),
    "top_p": _t("-> top_p"),
    "stop": _t("-> stop_sequences (a string becomes a one-item list)"),
    "stream": _t("-> stream"),
    "stream_options": _t("include_usage decides whether the caller gets the final usage chunk"),
    "tools": _t("function tools -> tools with input_schema; other tool types refused"),
    "tool_choice": _t("auto/none/required/{function} -> auto/none/any/{tool}"),
    "parallel_tool_calls": _t("false -> tool_choice.disable_parallel_tool_use"),
    "functions": _t("deprecated function list -> tools"),
    "function_call": _t("deprecated function choice -> tool_choice"),
    "user": _t("-> metadata.user_id"),
    "safety_identifier": _t("-> metadata.user_id (when user is absent)"),
    "response_format": _t("json_schema/json_object -> a forced tool whose input is the answer, "
                          "returned to the caller as the message content (finish_reason stop); "
                          "text -> nothing"),
    "reasoning_effort": _t("low/medium/high -> thinking with budget_tokens 1024/4096/16384 "
                           "(kept below max_tokens); none/minimal -> no thinking"),
    "service_tier": _t("auto -> auto, default -> standard_only; flex/scale/priority refused"),
    "n": _r("Anthropic returns one choice per request", 1),
    "logprobs": _r("Anthropic does not return token log probabilities", False),
    "top_logprobs": _r("Anthropic does not return token log probabilities", 0),
    "logit_bias": _r("Anthropic cannot bias or ban tokens", {}),
    "audio": _r("Anthropic messages do not produce audio"),
    "modalities": _r("Anthropic messages produce text only", ["text"]),
    "web_search_options": _r("Anthropic's web search is a server tool with its own shape; "
                             "use an OpenAI target"),
    "seed": _i("Anthropic has no seed; OpenAI's is best-effort determinism, not a contract"),
    "frequency_penalty": _i("Anthropic has no repetition penalties (a sampling knob only)"),
    "presence_penalty": _i("Anthropic has no repetition penalties (a sampling knob only)"),
    "verbosity": _i("Anthropic has no verbosity knob; the prompt decides length"),
    "store": _i("OpenAI's stored-completions feature; nothing to store at Anthropic"),
    "metadata": _i("OpenAI's stored-completions tags; Anthropic metadata holds only user_id"),
    "prediction": _i("a latency hint (predicted output); the answer is the same without it"),
    "prompt_cache_key": _i("OpenAI cache routing hint; Anthropic caching follows the "
                           "cache_control marks, which are translated"),
    "prompt_cache_retention": _i("OpenAI cache retention hint; see prompt_cache_key"),
}

# Anthropic messages request -> OpenAI chat completions request.
ANTHROPIC_TO_OPENAI: dict[str, FieldRule] = {
    "model": _t("replaced by the target's model"),
    "messages": _t("user/assistant turns -> messages; tool_use -> tool_calls; tool_result -> "
                   "tool messages (is_error kept in the content); images/documents -> "
                   "image_url/file parts (media types normalised); mid-conversation system "
                   "messages (beta mid-conversation-system-*) -> system messages in position"),
    "system": _t("-> a leading system message"),
    "max_tokens": _t("-> max_completion_tokens"),
    "temperature": _t("-> temperature"),
    "top_p": _t("-> top_p"),
    "stop_sequences": _t("-> stop (OpenAI accepts at most 4: more is refused)"),
    "stream": _t("-> stream, with stream_options.include_usage for accounting"),
    "tools": _t("custom tools -> function tools; server tools refused"),
    "tool_choice": _t("auto/any/tool/none -> auto/required/{function}/none; "
                      "disable_parallel_tool_use -> parallel_tool_calls false"),
    "metadata": _t("user_id -> user"),
    "service_tier": _t("auto -> auto, standard_only -> default"),
    "output_config": _t("format json_schema -> response_format json_schema (strict); "
                        "effort is ignored like thinking"),
    "output_format": _t("(beta name of output_config.format) -> response_format json_schema"),
    "thinking": _i("OpenAI chat models reason on their own and refuse reasoning_effort unless "
                   "they are reasoning models; thinking blocks in history are dropped"),
    "top_k": _i("OpenAI has no top_k (a sampling knob only)"),
    "context_management": _i("Anthropic server-side context editing; the OpenAI target simply "
                             "receives the whole context"),
    "container": _r("Anthropic code-execution containers exist only at Anthropic"),
    "mcp_servers": _r("Anthropic's server-side MCP connector exists only at Anthropic", []),
}


def admit(body: dict[str, Any], table: dict[str, FieldRule], target: str) -> None:
    """Refuse (WireError naming the field) what `table` refuses or does not know."""
    for key, value in body.items():
        rule = table.get(key)
        if rule is None:
            raise WireError(
                f"request field {key!r} has no known {target} equivalent, so it cannot be "
                f"translated for a {target} target; remove it or route to a model of the "
                "caller's own protocol",
                code="unsupported_field",
            )
        if rule.handling == "refused" and not _is_neutral(value, rule.neutral):
            raise WireError(
                f"request field {key!r} cannot be served by the {target} target: {rule.how}",
                code="unsupported_field",
            )


def _is_neutral(value: Any, neutral: tuple[Any, ...]) -> bool:
    return any(value == n and type(value) is type(n) for n in neutral) or value is None


def markdown_table(table: dict[str, FieldRule]) -> str:
    """The table as the Markdown rows of `activities/wire/README.md` (a test keeps them equal)."""
    rows = ["| field | handling | how / why |", "|---|---|---|"]
    for name, rule in table.items():
        how = rule.how.replace("|", "\\|")
        if rule.handling == "refused" and rule.neutral != _UNSET:
            how += f" (passes when {', '.join(repr(n) for n in rule.neutral[1:])})"
        rows.append(f"| `{name}` | {rule.handling} | {how} |")
    return "\n".join(rows)
