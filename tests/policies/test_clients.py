"""Client tools and their own session ids, read from request headers; model aliases."""

from __future__ import annotations

import textwrap

import pytest

from policies.clients import client_session_id, client_tool
from policies.config.gateway import build_config
from policies.config.models import ApiKey, Settings
from policies.config.yamlsource import ConfigErrors
from policies.decision import lookup_model
from policies.identity import resolve_identity
from policies.refusals import Refusal
from tests.policies.test_config_errors import BASE

CLAUDE = "claude-cli/2.1.332 (external, sdk-cli)"


@pytest.mark.parametrize(("headers", "tool"), [
    ({"user-agent": "claude-cli/2.1.332 (external, sdk-cli)"}, "claude-code"),
    ({"x-claude-code-session-id": "s", "user-agent": "Anthropic/JS 0.60.0"}, "claude-code"),
    ({"originator": "codex_exec", "user-agent": "whatever"}, "codex"),
    ({"user-agent": "codex_cli_rs/0.171.0 (Ubuntu 24.4.0; x86_64)"}, "codex"),
    ({"user-agent": "Agents/Python 0.6.1"}, "openai-agents"),
    ({"user-agent": "ai/5.0.0 ai-sdk/openai/2.0.30"}, "vercel-ai-sdk"),
    ({"user-agent": "ai-sdk/openai/2.0.30"}, "vercel-ai-sdk"),
    ({"user-agent": "AsyncOpenAI/Python 3.51.0"}, "openai-python"),
    ({"user-agent": "Anthropic/Python 2.10.0"}, "anthropic-python"),
    ({"user-agent": "curl/8.5.0"}, None),
    ({}, None),
])
def test_client_tool_is_recognised_from_headers(headers, tool) -> None:
    assert client_tool(headers) == tool


def test_x_governor_tool_names_the_tool_over_user_agent_detection() -> None:
    assert client_tool({"x-governor-tool": " Triage-Bot ", "user-agent": "curl/8"}) == "triage-bot"
    assert client_tool({"x-governor-tool": "codex", "user-agent": CLAUDE}) == "codex"
    assert client_tool({"x-governor-tool": "", "user-agent": CLAUDE}) == "claude-code"


@pytest.mark.parametrize("value", ["a" * 33, "bad tool", "-x", "tool/1", "ünï", "a\x00"])
def test_a_bad_x_governor_tool_is_a_400_naming_the_header(value) -> None:
    with pytest.raises(Refusal) as e:
        client_tool({"x-governor-tool": value})
    assert e.value.status == 400 and "X-Governor-Tool" in e.value.message


def test_client_session_id_takes_the_first_configured_header_with_a_value() -> None:
    names = Settings().client_session_headers
    assert client_session_id({"x-claude-code-session-id": " cc "}, names) == "cc"
    assert client_session_id({"session_id": "codex-1"}, names) == "codex-1"
    assert client_session_id({"session-id": ""}, names) is None
    assert client_session_id({"x-my-agent-run": "r1"}, ("x-my-agent-run",)) == "r1"


KEY = ApiKey(id="k", hash="sha256:" + "ab" * 32, user="u", team="t")


def test_identity_uses_the_client_session_id_only_without_a_governor_session_header() -> None:
    s = Settings()
    i = resolve_identity(KEY, {"x-claude-code-session-id": "cc-1"}, s)
    assert i.session_id == "cc-1" and i.client == "claude-code"
    i = resolve_identity(KEY, {"x-claude-code-session-id": "cc-1", "x-tfy-session-id": "t"}, s)
    assert i.session_id == "t"
    off = Settings(client_session_headers=())
    assert resolve_identity(KEY, {"x-claude-code-session-id": "cc-1"}, off).session_id is None
    with pytest.raises(Refusal) as e:
        resolve_identity(KEY, {"session_id": "x" * 300}, s)
    assert e.value.code == "invalid_header"


def test_client_session_headers_must_be_header_names() -> None:
    with pytest.raises(ValueError, match="not an HTTP header name"):
        Settings(client_session_headers=("bad header",))


ROUTING = textwrap.dedent("""\
    type: gateway-load-balancing-config
    name: fast
    aliases: [claude-haiku-4-5-20251001, gpt-5-codex]
    rules: [{id: a, target: {provider: anthropic, model: haiku}}]
    ---
    type: gateway-load-balancing-config
    name: cheap
    aliases: [{alias}]
    rules: [{id: a, target: {provider: openai, model: mini}}]
    """)


def test_aliases_resolve_to_their_virtual_model() -> None:
    cfg = build_config([*BASE, ("r.yaml", ROUTING.replace("{alias}", "mini-alias"))])
    assert lookup_model(cfg, "gpt-5-codex").name == "fast"
    assert lookup_model(cfg, "mini-alias").name == "cheap"
    with pytest.raises(Refusal) as e:
        lookup_model(cfg, "gpt-17")
    assert e.value.status == 404


@pytest.mark.parametrize(("alias", "why"), [
    ("gpt-5-codex", "already names virtual model 'fast'"),
    ("fast", "is the name of a virtual model"),
])
def test_conflicting_aliases_are_config_errors_with_their_line(alias, why) -> None:
    with pytest.raises(ConfigErrors) as e:
        build_config([*BASE, ("r.yaml", ROUTING.replace("{alias}", alias))])
    (err,) = e.value.errors
    assert why in err.message and err.file == "r.yaml" and err.line == 8
