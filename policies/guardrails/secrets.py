"""Secrets detector: provider credentials, key material, tokens, passwords.

Speed is the design constraint (the proxy scans every prompt). CPython's `re` finds a literal
prefix about ten times faster than it tries a character class at every position, so every
pattern here starts with a fixed string (`AKIA`, `sk-`, `ghp_`, `://`, `password` ...) and
anything a prefix cannot express (the `s`/`r` of `sk_live_`, word boundaries) is checked in
Python on the rare hit.

Generic assignments (`password=`, `api_key: ...`) are reported only when the value looks typed
by a person or generated, not like a placeholder or code: at least 8 characters, at least two
character classes (so `password=changeme` is not a finding, `password=Hunter2024` is), Shannon
entropy of at least 2.5 bits/char (3.0 for tokens and keys), and not a reference such as
`os.environ[...]`, `settings.api_key`, `${VAR}` or `<your-key>`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from policies.guardrails.checks import jwt_header_ok, placeholder, random_looking
from policies.guardrails.spans import Span, boundary_before

DETECTOR = "secrets"

_AWS = re.compile(
    r"(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}(?![A-Za-z0-9])"
    r"(?:[\s\"',:;|=]{1,8}([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=]))?"
)
_GCP = re.compile(r"AIza[0-9A-Za-z_\-]{35}(?![0-9A-Za-z_\-])")
_SK = re.compile(
    r"sk-(?:(ant-[a-z]{2,8}[0-9]{0,3}-)|(or-v1-)|(?:proj-|svcacct-|admin-)?)"
    r"([A-Za-z0-9_\-]{20,400})(?![A-Za-z0-9_\-])"
)
_GH = re.compile(
    r"(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{50,255})(?![A-Za-z0-9_])"
)
_GL = re.compile(r"gl(?:pat|ptt|dt|rt|cbt)-([A-Za-z0-9_\-]{20,64})(?![A-Za-z0-9_\-])")
_SLACK_TOKEN = re.compile(r"xox[abposre]-([A-Za-z0-9\-]{10,250})")
_SLACK_APP = re.compile(r"xapp-([A-Za-z0-9\-]{20,250})")
_SLACK_HOOK = re.compile(
    r"https://hooks\.slack\.com/(?:services|workflows|triggers)/([A-Za-z0-9_/\-]{20,200})"
)
_STRIPE = re.compile(r"k_live_([A-Za-z0-9]{20,247})(?![A-Za-z0-9])")
_LLM = (
    (re.compile(r"hf_[A-Za-z]{34,40}(?![A-Za-z0-9_\-])"), "huggingface_token"),
    (re.compile(r"gsk_[A-Za-z0-9]{48,56}(?![A-Za-z0-9_\-])"), "groq_api_key"),
    (re.compile(r"r8_[A-Za-z0-9]{37,40}(?![A-Za-z0-9_\-])"), "replicate_api_token"),
    (re.compile(r"xai-[A-Za-z0-9]{60,100}(?![A-Za-z0-9_\-])"), "xai_api_key"),
    (re.compile(r"pplx-[A-Za-z0-9]{40,56}(?![A-Za-z0-9_\-])"), "perplexity_api_key"),
)
_JWT = re.compile(r"(ey[JA][A-Za-z0-9_\-]{8,})\.ey[JA][A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{0,2048}")
# `#` is not legal unescaped in a URL password, but people paste such URLs anyway.
_URL_PASSWORD = re.compile(r"://([^\s:@/?#\[\]\"'<>]{0,64}):([^\s@/?\"'<>]{1,128})@[A-Za-z0-9\[]")
_AZURE = (
    (re.compile(r"AccountKey=([A-Za-z0-9+/]{40,100}={0,2})"), "azure_storage_key", 4.0),
    (re.compile(r"SharedAccessKey=([A-Za-z0-9+/]{40,46}={0,2})"), "azure_sas_token", 4.0),
    (re.compile(r"sig=([A-Za-z0-9%+/]{30,120}(?:%3D|=){0,2})"), "azure_sas_token", 3.5),
)
_PEM = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----"
    r"(?:(?P<end>[\s\S]{0,16384}?-----END (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----)"
    r"|(?:(?:\s|\\[nr])*(?:[A-Za-z0-9+/]{16,}={0,2}|[A-Za-z\-]+:[^\n\\]*))*)"
)

# Labelled values, matched on the lower-cased text; one literal-led regex per label ending.
_OP = r"[\"']?[ \t]*(?::=|=>|[:=])[ \t]*"
_ASSIGN = (
    re.compile(r"pass(?:word|wd)" + _OP),
    re.compile(r"pwd" + _OP),
    re.compile(r"secret" + _OP),
    re.compile(r"token" + _OP),
    re.compile(r"credentials?" + _OP),
    re.compile(r"key" + _OP),
)
# What must precede `key` for it to label a secret (`api_key`, `accessKey`, `secret-key` ...).
_KEY_OWNERS = ("api", "access", "auth", "private", "secret", "client", "master", "signing",
               "encryption", "subscription", "license", "account")  # fmt: skip
_VALUE = re.compile(
    r"[brfu]?(?:\"([^\"\s]{1,256})\"|'([^'\s]{1,256})'|`([^`\s]{1,256})`)"
    r"|([^\s\"'`,;)}\]<>]{1,256})"
)
_CODE_REF = re.compile(r"[A-Za-z_$][\w$]*(?:[.\[(:].*)?")
_BEARER = re.compile(r"bearer[ \t]+")
_BEARER_VALUE = re.compile(r"[A-Za-z0-9\-._~+/]{20,2048}=*")
_AWS_SECRET_VALUE = re.compile(r"[A-Za-z0-9/+]{40}")
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-.")

_SPECIFIC = 3
_GENERIC = 1


def _aws(text: str) -> Iterator[Span]:
    for m in _AWS.finditer(text):
        if not boundary_before(text, m.start()) or text[m.start() : m.start() + 20].endswith(
            "EXAMPLE"
        ):
            continue
        yield Span(m.start(), m.start() + 20, DETECTOR, "aws_access_key", _SPECIFIC)
        sk = m.group(1)
        if sk and random_looking(sk, 4.0) and "EXAMPLE" not in sk:
            yield Span(m.start(1), m.end(1), DETECTOR, "aws_secret_key", _SPECIFIC)


def _simple(
    regex: re.Pattern[str], kind: str, group: int = 0, min_entropy: float = 3.0
) -> Callable[[str], Iterator[Span]]:
    def find(text: str) -> Iterator[Span]:
        for m in regex.finditer(text):
            if boundary_before(text, m.start()) and random_looking(m.group(group), min_entropy):
                yield Span(m.start(), m.end(), DETECTOR, kind, _SPECIFIC)

    return find


def _sk(text: str) -> Iterator[Span]:
    for m in _SK.finditer(text):
        if not boundary_before(text, m.start()) or not random_looking(m.group(3), 3.5):
            continue
        kind = (
            "anthropic_api_key" if m.group(1) else "openrouter_api_key" if m.group(2)
            else "openai_api_key"
        )  # fmt: skip
        yield Span(m.start(), m.end(), DETECTOR, kind, _SPECIFIC)


def _slack(text: str) -> Iterator[Span]:
    for regex, kind in ((_SLACK_TOKEN, "slack_token"), (_SLACK_APP, "slack_token"),
                        (_SLACK_HOOK, "slack_webhook")):  # fmt: skip
        for m in regex.finditer(text):
            body = m.group(1).replace("-", "").replace("/", "")
            if boundary_before(text, m.start()) and random_looking(body, 3.0):
                yield Span(m.start(), m.end(), DETECTOR, kind, _SPECIFIC)


def _stripe(text: str) -> Iterator[Span]:
    for m in _STRIPE.finditer(text):
        s = m.start() - 1
        if s >= 0 and text[s] in "sr" and boundary_before(text, s):
            if random_looking(m.group(1), 3.5):
                yield Span(s, m.end(), DETECTOR, "stripe_key", _SPECIFIC)


def _llm(text: str) -> Iterator[Span]:
    for regex, kind in _LLM:
        for m in regex.finditer(text):
            if boundary_before(text, m.start()) and random_looking(m.group(0), 3.5):
                yield Span(m.start(), m.end(), DETECTOR, kind, _SPECIFIC)


def _jwt(text: str) -> Iterator[Span]:
    for m in _JWT.finditer(text):
        if boundary_before(text, m.start()) and jwt_header_ok(m.group(1)):
            yield Span(m.start(), m.end(), DETECTOR, "jwt", _SPECIFIC)


def _url_password(text: str) -> Iterator[Span]:
    for m in _URL_PASSWORD.finditer(text):
        pw = m.group(2)
        if placeholder(pw) or (pw.isdigit() and len(pw) <= 5):
            continue
        yield Span(m.start(2), m.end(2), DETECTOR, "connection_string_password", _SPECIFIC)


def _azure(text: str) -> Iterator[Span]:
    for regex, kind, min_entropy in _AZURE:
        for m in regex.finditer(text):
            if random_looking(m.group(1), min_entropy):
                yield Span(m.start(1), m.end(1), DETECTOR, kind, _SPECIFIC)


def _pem(text: str) -> Iterator[Span]:
    for m in _PEM.finditer(text):
        head = text[max(0, m.start() - 24) : m.start()]
        kind = "gcp_service_account_key" if '"private_key"' in head else "private_key"
        complete = m.group("end") is not None
        yield Span(m.start(), m.end(), DETECTOR, kind, _SPECIFIC, complete)


_FAMILIES: tuple[Callable[[str], Iterator[Span]], ...] = (
    _aws,
    _simple(_GCP, "gcp_api_key"),
    _sk,
    _simple(_GH, "github_token"),
    _simple(_GL, "gitlab_token", 1),
    _slack,
    _stripe,
    _llm,
    _jwt,
    _url_password,
    _azure,
    _pem,
)


def _value_ok(value: str, quoted: bool, kind: str) -> bool:
    if len(value) < 8 or placeholder(value):
        return False
    if not quoted:
        # Unquoted values in code are expressions: `settings.api_key`, `get_token()`, `API_KEY`.
        if "(" in value or "[" in value or "{" in value:
            return False
        if _CODE_REF.fullmatch(value) and (
            "." in value or ":" in value or not any(c.isdigit() for c in value)
        ):
            return False
    return random_looking(value, 2.5 if kind == "password" else 3.0)


def _assignments(text: str, low: str) -> Iterator[Span]:
    for i, regex in enumerate(_ASSIGN):
        for m in regex.finditer(low):
            k = m.start()
            while k > 0 and low[k - 1] in _KEY_CHARS and m.start() - k < 40:
                k -= 1
            owner = low[k : m.start()]
            if i == 5 and not owner.rstrip("_-. ").endswith(_KEY_OWNERS):
                continue
            v = _VALUE.match(text, m.end())
            if v is None:
                continue
            g = v.lastindex or 4
            value = v.group(g).rstrip(".")
            kind = "password" if i < 2 else "generic_secret"
            near = low[max(0, k - 40) : m.start()]
            if i >= 2 and "aws" in near and _AWS_SECRET_VALUE.fullmatch(value):
                if random_looking(value, 4.0) and "EXAMPLE" not in value:
                    start = v.start(g)
                    yield Span(start, start + 40, DETECTOR, "aws_secret_key", _SPECIFIC)
                continue
            if _value_ok(value, g < 4, kind):
                start = v.start(g)
                yield Span(start, start + len(value), DETECTOR, kind, _GENERIC)


def _bearer(text: str, low: str) -> Iterator[Span]:
    for m in _BEARER.finditer(low):
        v = _BEARER_VALUE.match(text, m.end())
        if v and not placeholder(v.group()) and random_looking(v.group(), 3.0):
            yield Span(v.start(), v.end(), DETECTOR, "bearer_token", _GENERIC)


def find_secrets(text: str, low: str) -> list[Span]:
    """All secret spans in `text` (`low` is its same-length lower-case copy)."""
    out: list[Span] = []
    for family in _FAMILIES:
        out.extend(family(text))
    out.extend(_assignments(text, low))
    if "bearer" in low:
        out.extend(_bearer(text, low))
    return out
