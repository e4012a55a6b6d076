"""Which client tool sent a call, and the session id it already carries.

Coding agents and agent frameworks are configured only by a base URL: they never send Governor's
headers. They do name themselves (User-Agent, a few product headers) and the coding agents send
their own session id on every call; this module reads both, so their sessions are governed and
the adoption panel can count calls per tool. Pure: a function of the request headers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

# Session-id headers the popular clients send when no X-Governor-Session-ID is given
# (Claude Code: X-Claude-Code-Session-Id; Codex CLI: session_id / session-id).
DEFAULT_CLIENT_SESSION_HEADERS: tuple[str, ...] = (
    "x-claude-code-session-id",
    "session-id",
    "session_id",
)

# (tool, header, lower-case prefix of its value). First match wins, so the specific products
# come before the SDKs they are built on (Claude Code speaks through the anthropic TS SDK).
_SIGNATURES: tuple[tuple[str, str, str], ...] = (
    ("claude-code", "x-claude-code-session-id", ""),
    ("claude-code", "user-agent", "claude-cli/"),
    ("claude-code", "user-agent", "claude-code/"),
    ("codex", "originator", "codex"),
    ("codex", "user-agent", "codex"),
    ("openai-agents", "user-agent", "agents/python"),
    ("vercel-ai-sdk", "user-agent", "ai-sdk/"),
    ("langchain", "user-agent", "langchain"),
    ("pydantic-ai", "user-agent", "pydantic-ai"),
    ("llm", "user-agent", "llm/"),
    ("cursor", "user-agent", "cursor"),
    ("aider", "user-agent", "aider"),
    ("openai-python", "user-agent", "openai/python"),
    ("openai-js", "user-agent", "openai/js"),
    ("anthropic-python", "user-agent", "anthropic/python"),
    ("anthropic-js", "user-agent", "anthropic/js"),
    ("governor-sdk", "user-agent", "governor"),
)
# (The async SDK clients say `AsyncOpenAI/Python …`, `AsyncAnthropic/Python …`.)
# The AI SDK names itself inside a longer User-Agent ("... ai-sdk/openai/2.0.0").
_UA_ANYWHERE: tuple[tuple[str, str], ...] = (("vercel-ai-sdk", " ai-sdk/"),)

MAX_CLIENT_SESSION_ID = 256


def client_tool(headers: Mapping[str, str]) -> str | None:
    """The recognised client tool (`claude-code`, `codex`, …) or None: a bounded label set."""
    for tool, header, prefix in _SIGNATURES:
        value = headers.get(header)
        if value is not None:
            low = value.lower()
            if low.startswith(prefix) or (low.startswith("async") and low[5:].startswith(prefix)):
                return tool
    ua = headers.get("user-agent")
    if ua:
        low = ua.lower()
        for tool, needle in _UA_ANYWHERE:
            if needle in low:
                return tool
    return None


def client_session_id(headers: Mapping[str, str], names: Sequence[str]) -> str | None:
    """The first non-empty session id among the configured client headers (lower-case names)."""
    for name in names:
        value = headers.get(name)
        if value is not None:
            value = value.strip()
            if value:
                return value
    return None
