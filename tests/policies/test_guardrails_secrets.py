"""Secret kinds other scanners' test suites name: each fixed kind found with its type and span,
their near misses left alone, and every new pattern linear on hostile 1 MB inputs."""

from __future__ import annotations

import base64
import random
import time

import pytest

from policies.guardrails import scan

SALT = b"salt"
SECRETS = frozenset({"secrets"})
R20 = "k7Qz2mX9vB4nW8pL3sT6"  # 20 random-looking token characters
R32 = "Zf3D0LXCM3EIMbgJpUNnkRtOfOueHznB"
B86 = "qYaZm3m8+Z2aYAiSDzzvStkTUgZXl29U76lDJ0qiob7bbV4g7kjtwO+FI2QoptGdZgEdtsAYzG8T0hl5TeftWA"


def _found(text: str) -> list[tuple[str, str]]:
    return [(f.type, text[f.start : f.end]) for f in scan(text, SECRETS, SALT)]


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        (f"x glffct-{R20} y", "gitlab_token", f"glffct-{R20}"),
        (f"x glft-{R20} y", "gitlab_token", f"glft-{R20}"),
        (f"x glimt-{R20}abcde y", "gitlab_token", f"glimt-{R20}abcde"),
        (f"x glagent-{R20 * 2}{R20[:10]} y", "gitlab_token", f"glagent-{R20 * 2}{R20[:10]}"),
        (f"x gloas-{R32 * 2} y", "gitlab_token", f"gloas-{R32 * 2}"),
        (f"x glsoat-{R20} y", "gitlab_token", f"glsoat-{R20}"),
        (f"x glrt-{R20} y", "gitlab_token", f"glrt-{R20}"),
        (f"x GR1348941{R20} y", "gitlab_token", f"GR1348941{R20}"),
        (f"Cookie: _gitlab_session={R32.lower()}", "gitlab_token",
         f"_gitlab_session={R32.lower()}"),
        (f"k sk_test_{R32} z", "stripe_key", f"sk_test_{R32}"),
        (f"k rk_live_{R32} z", "stripe_key", f"rk_live_{R32}"),
        (f"k rk_test_{R32} z", "stripe_key", f"rk_test_{R32}"),
        ("t 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", "huggingface_token",
         "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"),
        (f"hooks.slack.com/services/T024BE7LD/B01ABCD2E/{R20}x", "slack_webhook",
         f"hooks.slack.com/services/T024BE7LD/B01ABCD2E/{R20}x"),
        ("xoxa-2-511111111-31111111111-3111111111111-e039d02840a0b9379c", "slack_token",
         "xoxa-2-511111111-31111111111-3111111111111-e039d02840a0b9379c"),
        ("t xoxp-523423-234243-234233-e039d02840a0b9379c", "slack_token",
         "xoxp-523423-234243-234233-e039d02840a0b9379c"),
        (f"account_key: '{B86}=='", "azure_storage_key", f"{B86}=="),
        ("client_secret=bP88Q~rcBcYjzzOhg1Hnn76Wm3jGgakZiZ.8vMgR", "azure_ad_client_secret",
         "bP88Q~rcBcYjzzOhg1Hnn76Wm3jGgakZiZ.8vMgR"),
        ("curl --cacert ca.crt -u elastic:P@ssw0rd$1 https://localhost:9200", "curl_basic_auth",
         "P@ssw0rd$1"),
        ("curl -H 'Authorization: Basic " + base64.b64encode(b"admin:s3cr3t-Pw").decode() + "'",
         "http_basic_auth", base64.b64encode(b"admin:s3cr3t-Pw").decode()),
    ],
)  # fmt: skip
def test_named_kind_is_found_with_its_type_and_span(text: str, kind: str, value: str) -> None:
    assert (kind, value) in _found(text)


def test_unsigned_jwt_with_alg_none_is_a_jwt() -> None:
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').decode().rstrip("=")
    payload = base64.urlsafe_b64encode(b'{"sub":"1234567890","admin":true}').decode().rstrip("=")
    token = f"{header}.{payload}."
    assert _found(f"auth {token} end") == [("jwt", token)]
    assert _found(f"auth {header}.{payload} end") == [("jwt", f"{header}.{payload}")]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (f'var genericToken string = "{R32}"', R32),
        (f'$genericToken .= "{R32}"', R32),
        (f'System.setProperty("GENERIC_TOKEN", "{R32}")', R32),
        (f'generic_TOKEN ::= "{R32}"', R32),
        (f'generic_TOKEN :::= "{R32}"', R32),
        (f'generic_TOKEN ?= "{R32}"', R32),
        (f"<genericToken>\n    {R32}\n</genericToken>", R32),
        (f'if (api_key == "{R32}") {{', R32),
        (f"todo_secret_do_not_commit = {R32}", R32),
        (f"mySecretString={R32}", R32),
    ],
)
def test_generic_assignment_in_code_contexts(text: str, value: str) -> None:
    assert [v for _, v in _found(text)] == [value]


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        # An unquoted `id:secret` pair is no code reference (`a.b:`, `next_label:`): an
        # undotted name, a colon, and what follows judged as the value.
        (f"password: admin:{R20}", "password", f"admin:{R20}"),
        (f"api_key={R20[:6]}:{R32}", "generic_secret", f"{R20[:6]}:{R32}"),
        (f"secret-key: svc_user:{R32}", "generic_secret", f"svc_user:{R32}"),
        (f"api.key = svc:{R20}", "generic_secret", f"svc:{R20}"),
        (f'token: "svc:{R32}"', "generic_secret", f"svc:{R32}"),
    ],
)
def test_an_id_and_its_secret_after_a_label_is_a_secret(text: str, kind: str, value: str) -> None:
    assert _found(text) == [(kind, value)]


@pytest.mark.parametrize(
    "text",
    [
        "token: next_label:",
        "if token: next_label: x",
        'token = os.environ["GENERIC_TOKEN"]',
        "token = settings.token",
        "token = mytool.cli:main_v2",  # an entry point: a dotted name then `:`
        "token: io.jsonwebtoken:jjwt-api-0.11.5",  # a dotted coordinate
        "password: env:DB_PASSWORD",  # a reference: what follows is a name
        "token: std::string_view",
        "token: localhost:8080",  # what follows is too short to be a secret
        "token: https://auth.internal/oauth2/v1/token",  # a URL's scheme, not an id
        "token: self:next_token()",
        "password: admin:changeme123",  # a placeholder after the id
        "token: AKIAIOSFODNN7EXAMPLE:wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ],
)
def test_code_references_and_names_after_a_colon_are_not_secrets(text: str) -> None:
    assert _found(text) == []


def test_a_secret_with_slashes_is_still_a_secret() -> None:
    value = "/3xKq9vB4n/W8pL3sT6Zf3D0L/XCM3EIMbgJpUNnk"  # base64 has slashes, paths have dots
    assert _found(f'client_secret = "{value}"') == [("generic_secret", value)]


@pytest.mark.parametrize(
    "text",
    [
        "key = AKIAXXXXXXXXXXXXXXXX",
        "AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE",
        "-----BEGIN PRIVATE KEY-----\nanything\n-----END PRIVATE KEY-----",
        'notes = "Maven - io.jsonwebtoken:jjwt-jackson-0.11.2"',
        "credentialsId: 'ff083f76-7804-4ef1-80e4-fe975bb9141b'",
        'LLM_SECRET_NAME = "NEXUS-GPT4-API-KEY"',
        "access_token_url='https://github.com/login/oauth/access_token',",
        'publicToken = "9Cnzj4p4WGeKLs1Pt8QuKUpRKfFLfRYC9AIKjbJTWit"',
        "glptt-hellOworld380_testin",
        "glimt-my-tokens_are-correctAB38_280",
        "xoxb-12345-abcd234",
        "xoxp-1234-1234-1234-4ddbc191d40ee098cbaae6f3523ada2d",
        "xoxe.xoxp-1-SlackAppConfigurationAccessTokenHere",
        'curl -u "${_username}:${_password}"',
        "curl -u <user:password> https://test.com/endpoint",
        "curl http://127.0.0.1:5000/file --user user:pass --digest",
        "AIzaSyabcdefghijklmnopqrstuvwxyz1234567",
        "password = ${DB_PASSWORD}",
        "the tokenizer: gpt2-large-v1.2 is loaded",
        '$ export REPLICATE_API_TOKEN="r8-not-a-real-token"',
        '"client_key": "/path/to/client.key",',
        'ssl_secret_key = "/etc/ssl/private/server-2024.key"',
        'api_token: "fake_token_for_the_unit_tests_9f8e"',
    ],
)
def test_near_misses_are_not_secrets(text: str) -> None:
    assert _found(text) == []


@pytest.mark.parametrize(
    "chunk",
    ["ey", "eyJ.", "ey.ey", "Q~", "1Q~", "==", "A" * 86 + "==", "glft-", "GR1348941",
     "hooks.slack.com/services/", "token", "token_", "secret.", "curl -u a:", "-u ",
     "authorization: basic ", "xoxa-2-", "sk_test_", "api_org_", "key ==", "<token>"],
)  # fmt: skip
def test_hostile_megabyte_scans_in_linear_time(chunk: str) -> None:
    text = (chunk * (1_000_000 // len(chunk) + 1))[:1_000_000]
    t0 = time.perf_counter()
    scan(text, SECRETS, SALT)
    # A quadratic pattern takes minutes on 1 MB; linear ones take well under a second even on a
    # loaded machine. The bound is deliberately loose: it catches the complexity class, not speed.
    assert time.perf_counter() - t0 < 5.0


def test_placeholder_words_found_by_one_regex_as_by_one_search_per_word() -> None:
    from policies.guardrails import checks

    rnd = random.Random(5)
    alpha = "abcdefghijklmnopqrstuvwxyz_-*.#%(s/ehr"
    hits = 0
    for _ in range(20_000):
        v = "".join(rnd.choice(alpha) for _ in range(rnd.randint(0, 30)))
        if rnd.random() < 0.3:
            v = v[:5] + rnd.choice(checks._PLACEHOLDER_WORDS)[rnd.randint(0, 1) :] + v[5:]
        want = any(w in v for w in checks._PLACEHOLDER_WORDS)
        assert (checks._PLACEHOLDER_WORD.search(v) is not None) == want, v
        hits += want
    assert hits > 3_000
