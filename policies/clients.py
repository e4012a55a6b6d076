"""Which client tool sent a call, and the session id it already carries.

Coding agents and agent frameworks are configured only by a base URL: they never send Governor's
headers. They do name themselves (User-Agent, a few product headers) and the coding agents send
their own session id on every call; this module reads both, so their sessions are governed and
the adoption panel can count calls per tool. Pure: a function of the request headers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from policies.refusals import Refusal

# Session-id headers the popular clients send when no X-Governor-Session-ID is given
# (Claude Code: X-Claude-Code-Session-Id; Codex CLI: session_id / session-id).
DEFAULT_CLIENT_SESSION_HEADERS: tuple[str, ...] = (
    "x-claude-code-session-id",
    "session-id",
    "session_id",
)

# Product headers that name a client outright (checked first: Claude Code speaks through the
# anthropic TS SDK, so its User-Agent alone could be mistaken for the SDK's).
_PRODUCT_HEADERS: tuple[tuple[str, str, str], ...] = (
    ("claude-code", "x-claude-code-session-id", ""),
    ("codex", "originator", "codex"),
)
# (tool, lower-case User-Agent prefix), specific products before the SDKs they are built on.
# The async SDK clients say `AsyncOpenAI/Python …`, `AsyncAnthropic/Python …`: a leading
# "async" is ignored.
_UA_PREFIXES: tuple[tuple[str, str], ...] = (
    ("claude-code", "claude-cli/"),
    ("claude-code", "claude-code/"),
    ("codex", "codex"),
    ("openai-agents", "agents/python"),
    ("vercel-ai-sdk", "ai-sdk/"),
    ("langchain", "langchain"),
    ("pydantic-ai", "pydantic-ai"),
    ("llm", "llm/"),
    ("cursor", "cursor"),
    ("aider", "aider"),
    ("openai-python", "openai/python"),
    ("openai-js", "openai/js"),
    ("anthropic-python", "anthropic/python"),
    ("anthropic-js", "anthropic/js"),
    ("governor-sdk", "governor"),
)
# The AI SDK names itself inside a longer User-Agent ("... ai-sdk/openai/2.0.0").
_UA_ANYWHERE: tuple[tuple[str, str], ...] = (("vercel-ai-sdk", " ai-sdk/"),)


# `X-Governor-Tool: <name>` names the tool outright (an in-house agent, a script): lower-cased,
# 1-32 characters of a-z 0-9 . _ - (the ledger's `client_tool`; never a metric label).
TOOL_HEADER = "x-governor-tool"
_TOOL_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")


def client_tool(headers: Mapping[str, str]) -> str | None:
    """The client tool: `X-Governor-Tool` when sent (a bad value is a 400 `invalid_header`),
    else the one recognised from product headers or User-Agent (`claude-code`, `codex`, …, a
    bounded set), else None."""
    named = headers.get(TOOL_HEADER)
    if named is not None and named.strip():
        tool = named.strip().lower()
        if not _TOOL_NAME.fullmatch(tool):
            raise Refusal(400, "invalid_header",
                          "X-Governor-Tool must be 1-32 characters of a-z, 0-9, '.', '_' or "
                          "'-' starting with a letter or digit (e.g. claude-code, triage-bot)")
        return tool
    for tool, header, prefix in _PRODUCT_HEADERS:
        value = headers.get(header)
        if value is not None and value.lower().startswith(prefix):
            return tool
    ua = headers.get("user-agent")
    if not ua:
        return None
    low = ua.lower()
    bare = low[5:] if low.startswith("async") else low
    for tool, prefix in _UA_PREFIXES:
        if bare.startswith(prefix):
            return tool
    for tool, needle in _UA_ANYWHERE:
        if needle in low:
            return tool
    return None


def client_session_id(headers: Mapping[str, str], names: Sequence[str]) -> str | None:
    """The first non-empty session id among the configured client headers (lower-case names)."""
    return client_session_header(headers, names)[0]


def client_session_header(
    headers: Mapping[str, str], names: Sequence[str]
) -> tuple[str | None, str | None]:
    """(that session id, the header it came from), or (None, None)."""
    for name in names:
        value = headers.get(name)
        if value is not None:
            value = value.strip()
            if value:
                return value, name
    return None, None
