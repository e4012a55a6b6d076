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

Linear time on any input (hostile prompts are up to the body limit): every run of token characters
is matched possessively (`{20,}+`) and its length checked in Python, so a failed candidate never
backtracks through its run, and a candidate's run is consumed whole, so a text of `sk-sk-sk-…` or
`eyJeyJ…` costs one pass, not one pass per occurrence. Labelled values and bearer tokens resume
after the value they examined; private-key blocks find their END marker from one shared list.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterator

from policies.guardrails.checks import jwt_header_ok, placeholder, random_looking
from policies.guardrails.spans import Span, boundary_before

DETECTOR = "secrets"

_AWS = re.compile(
    r"(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}(?![A-Za-z0-9])"
    r"(?:[\s\"',:;|=]{1,8}([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=]))?"
)
_GCP = re.compile(r"AIza[0-9A-Za-z_\-]{35}+(?![0-9A-Za-z_\-])")
# Runs are possessive and unbounded; `_max_len` turns the old `{20,400}` upper bounds into checks.
_SK = re.compile(
    r"sk-(?:(ant-[a-z]{2,8}+[0-9]{0,3}+-)|(or-v1-)|(?:proj-|svcacct-|admin-)?)"
    r"([A-Za-z0-9_\-]{20,}+)"
)
_GH = re.compile(r"(?:gh[pousr]_[A-Za-z0-9]{36,}+|github_pat_[A-Za-z0-9_]{50,}+)(?![A-Za-z0-9_])")
_GL = re.compile(r"gl(?:pat|ptt|dt|rt|cbt)-([A-Za-z0-9_\-]{20,}+)")
_SLACK_TOKEN = re.compile(r"xox[abposre]-([A-Za-z0-9\-]{10,250})")
_SLACK_APP = re.compile(r"xapp-([A-Za-z0-9\-]{20,250})")
_SLACK_HOOK = re.compile(
    r"https://hooks\.slack\.com/(?:services|workflows|triggers)/([A-Za-z0-9_/\-]{20,200})"
)
_STRIPE = re.compile(r"k_live_([A-Za-z0-9]{20,}+)(?![A-Za-z0-9])")
_LLM = (
    (re.compile(r"hf_[A-Za-z]{34,}+(?![A-Za-z0-9_\-])"), "huggingface_token", 3 + 40),
    (re.compile(r"gsk_[A-Za-z0-9]{48,}+(?![A-Za-z0-9_\-])"), "groq_api_key", 4 + 56),
    (re.compile(r"r8_[A-Za-z0-9]{37,}+(?![A-Za-z0-9_\-])"), "replicate_api_token", 3 + 40),
    (re.compile(r"xai-[A-Za-z0-9]{60,}+(?![A-Za-z0-9_\-])"), "xai_api_key", 4 + 100),
    (re.compile(r"pplx-[A-Za-z0-9]{40,}+(?![A-Za-z0-9_\-])"), "perplexity_api_key", 5 + 56),
)
# Always consumes a whole `eyJ…` run (and the two parts after it when present); `_jwt` checks the
# part lengths, so `eyJeyJeyJ…` is one candidate, not one backtracking scan per `eyJ`.
_JWT = re.compile(
    r"(ey[JA][A-Za-z0-9_\-]*+)(?:\.(ey[JA][A-Za-z0-9_\-]*+)(\.[A-Za-z0-9_\-]{0,2048}+)?)?"
)
# `#` is not legal unescaped in a URL password, but people paste such URLs anyway.
_URL_PASSWORD = re.compile(r"://([^\s:@/?#\[\]\"'<>]{0,64}+):([^\s@/?\"'<>]{1,128}+)@[A-Za-z0-9\[]")
_AZURE = (
    (re.compile(r"AccountKey=([A-Za-z0-9+/]{40,100}={0,2})"), "azure_storage_key", 4.0),
    (re.compile(r"SharedAccessKey=([A-Za-z0-9+/]{40,46}={0,2})"), "azure_sas_token", 4.0),
    (re.compile(r"sig=([A-Za-z0-9%+/]{30,120}(?:%3D|=){0,2})"), "azure_sas_token", 3.5),
)
_PEM_BEGIN = re.compile(r"-----BEGIN (?:[A-Z0-9]++ ){0,3}PRIVATE KEY(?: BLOCK)?-----")
_PEM_END = re.compile(r"-----END (?:[A-Z0-9]++ ){0,3}PRIVATE KEY(?: BLOCK)?-----")
_PEM_MAX_BODY = 16384
# An unterminated block (a stream still arriving): the base64 lines and headers seen so far.
_PEM_BODY = re.compile(
    r"(?:(?:\s|\\[nr])*+(?:[A-Za-z0-9+/]{16,}+={0,2}+|[A-Za-z\-]++:[^\n\\]*+))*+"
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
_BEARER_VALUE = re.compile(r"[A-Za-z0-9\-._~+/]{20,2048}+=*+")
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
    regex: re.Pattern[str], kind: str, group: int = 0, max_len: int = 0, min_entropy: float = 3.0
) -> Callable[[str], Iterator[Span]]:
    def find(text: str) -> Iterator[Span]:
        for m in regex.finditer(text):
            value = m.group(group)
            if max_len and len(value) > max_len:
                continue
            if boundary_before(text, m.start()) and random_looking(value, min_entropy):
                yield Span(m.start(), m.end(), DETECTOR, kind, _SPECIFIC)

    return find


def _sk(text: str) -> Iterator[Span]:
    for m in _SK.finditer(text):
        if len(m.group(3)) > 400:
            continue
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
        if len(m.group(1)) <= 247 and s >= 0 and text[s] in "sr" and boundary_before(text, s):
            if random_looking(m.group(1), 3.5):
                yield Span(s, m.end(), DETECTOR, "stripe_key", _SPECIFIC)


def _llm(text: str) -> Iterator[Span]:
    for regex, kind, max_len in _LLM:
        for m in regex.finditer(text):
            if (
                m.end() - m.start() <= max_len
                and boundary_before(text, m.start())
                and random_looking(m.group(0), 3.5)
            ):
                yield Span(m.start(), m.end(), DETECTOR, kind, _SPECIFIC)


def _jwt(text: str) -> Iterator[Span]:
    pos = 0
    while (m := _JWT.search(text, pos)) is not None:
        header, payload, sig = m.group(1), m.group(2), m.group(3)
        if len(header) >= 11 and payload is not None and len(payload) >= 11 and sig is not None:
            pos = m.end()
            if boundary_before(text, m.start()) and jwt_header_ok(header):
                yield Span(m.start(), m.end(), DETECTOR, "jwt", _SPECIFIC)
        else:
            pos = m.end(1)  # the next `eyJ` after this run may start a token of its own


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
    if "-----BEGIN " not in text:
        return
    ends: list[int] | None = None  # END markers' offsets, found once for every BEGIN
    pos = 0
    held: Span | None = None  # an unterminated block: one that follows directly joins it
    while (m := _PEM_BEGIN.search(text, pos)) is not None:
        if held is not None and text[held.end : m.start()].strip():
            yield held
            held = None
        if ends is None:
            ends = [e.start() for e in _PEM_END.finditer(text, m.end())]
        head = text[max(0, m.start() - 24) : m.start()]
        kind = "gcp_service_account_key" if '"private_key"' in head else "private_key"
        k = bisect.bisect_left(ends, m.end())
        if k < len(ends) and ends[k] - m.end() <= _PEM_MAX_BODY:
            end = _PEM_END.match(text, ends[k])
            assert end is not None
            if held is not None:
                yield held
                held = None
            yield Span(m.start(), end.end(), DETECTOR, kind, _SPECIFIC, True)
            pos = end.end()
        else:
            body = _PEM_BODY.match(text, m.end())
            pos = max(body.end() if body else 0, m.end())
            start = m.start() if held is None else held.start
            held = Span(start, pos, DETECTOR, held.type if held else kind, _SPECIFIC, False)
    if held is not None:
        yield held


_FAMILIES: tuple[Callable[[str], Iterator[Span]], ...] = (
    _aws,
    _simple(_GCP, "gcp_api_key"),
    _sk,
    _simple(_GH, "github_token", 0, 11 + 255),
    _simple(_GL, "gitlab_token", 1, 64),
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
        pos = 0
        while (m := regex.search(low, pos)) is not None:
            pos = m.end()
            k = m.start()
            while k > 0 and low[k - 1] in _KEY_CHARS and m.start() - k < 40:
                k -= 1
            owner = low[k : m.start()]
            if i == 5 and not owner.rstrip("_-. ").endswith(_KEY_OWNERS):
                continue
            v = _VALUE.match(text, m.end())
            if v is None:
                continue
            pos = v.end()  # a label inside this value is part of it, not a new assignment
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
    pos = 0
    while (m := _BEARER.search(low, pos)) is not None:
        v = _BEARER_VALUE.match(text, m.end())
        pos = v.end() if v else m.end()
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
