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
A labelled value that loses its overlap to a more specific hit inside it (`token=AKIA…&token=…`)
is searched again beside the hit (`rest_of_values`), once per value, for the labels it held and
the rest of the value. A labelled value the checks refuse is no value: the labels of its kind
inside it are examined in turn (`_labels_in_refused`), each once, the repeating window once.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import functools
import re
from collections.abc import Callable, Iterable, Iterator
from itertools import repeat
from operator import itemgetter, sub

from policies.guardrails import checks as _checks
from policies.guardrails.checks import (
    DENSE_FINDINGS,
    MEMO_MAX,
    PLACEHOLDER_WORD,
    REFUSED_LABELS,
    entropy_at_least,
    example_value,
    json_object_b64,
    jwt_header_ok,
    placeholder,
    placeholder_head,
    placeholder_shape,
    random_looking,
    two_char_classes,
)
from policies.guardrails.spans import WORD_CHARS, Span, boundary_before

DETECTOR = "secrets"
# A Span built without the named-tuple constructor's Python frame (once per finding).
_new = tuple.__new__

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
# GitLab's token prefix family (personal, pipeline-trigger, deploy, runner, CI-build, feature-flag
# client, feed, incoming-mail, agent, OAuth-app, SCIM), legacy runner registration tokens
# (`GR1348941…`) and the session cookie.
# One literal-led regex each: an alternation at the start would cost a pass trying every position.
_GL = tuple(
    re.compile(prefix + r"([A-Za-z0-9_\-]{20,}+)")
    for prefix in (r"gl(?:pat|ptt|dt|rt|cbt|ffct|ft|imt|agent|oas|soat)-", "GR1348941",
                   "_gitlab_session=")
)  # fmt: skip
_SLACK_TOKEN = re.compile(r"xox[abposre]-([A-Za-z0-9\-]{10,250})")
_SLACK_APP = re.compile(r"xapp-([A-Za-z0-9\-]{20,250})")
# With or without a scheme (`hooks.slack.com/services/…` pasted from a config); boundary checked.
_SLACK_HOOK = re.compile(
    r"hooks\.slack\.com/(?:services|workflows|triggers)/([A-Za-z0-9_/\-]{20,200})"
)
# Secret (`sk_`) and restricted (`rk_`) keys, live and test mode; the `s`/`r` is checked in Python.
_STRIPE = re.compile(r"k_(?:live|test|prod)_([A-Za-z0-9]{20,}+)(?![A-Za-z0-9])")
_LLM = (
    (re.compile(r"hf_[A-Za-z]{34,}+(?![A-Za-z0-9_\-])"), "huggingface_token", 3 + 40),
    (re.compile(r"api_org_[A-Za-z]{34,}+(?![A-Za-z0-9_\-])"), "huggingface_token", 8 + 40),
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
# JWT-shaped pairs whose header does not decode (`ey7q5x….eyKu3r….`), found from the rarer `.ey`
# (prose is full of `ey`: they, key, money); the header is looked up in a bounded window before.
_JWT_DOT = re.compile(r"\.(ey[A-Za-z0-9_\-]{17,}+)\.([A-Za-z0-9_\-]{0,2048}+)")
_JWT_HEAD = re.compile(r"ey[A-Za-z0-9]{17,510}+$")
# `#` is not legal unescaped in a URL password, but people paste such URLs anyway.
_URL_PASSWORD = re.compile(r"://([^\s:@/?#\[\]\"'<>]{0,64}+):([^\s@/?\"'<>]{1,128}+)@[A-Za-z0-9\[]")
_AZURE = (
    (re.compile(r"AccountKey=([A-Za-z0-9+/]{40,100}={0,2})"), "azure_storage_key", 4.0),
    (re.compile(r"SharedAccessKey=([A-Za-z0-9+/]{40,46}={0,2})"), "azure_sas_token", 4.0),
    (re.compile(r"sig=([A-Za-z0-9%+/]{30,120}(?:%3D|=){0,2})"), "azure_sas_token", 3.5),
)
# A 64-byte storage account key is 86 base64 characters and `==`; reported when the text around it
# names the storage account (`account_key`, `AZURE_STORAGE_KEY`, `-storagekey`).
# Found from its `==` (one look back in C: a Python step per `==` made `====…` 2x prose).
_B64_86_END = re.compile(r"==(?<=[A-Za-z0-9+/]{86}==)(?<![A-Za-z0-9+/]{87}==)(?![A-Za-z0-9+/])")
_B64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_AZURE_CONTEXT = ("account", "storage", "azure", "blob")
# Azure AD (Entra) client secrets: three characters, a digit, `Q~`, then 31-34 more.
_AAD_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_~.")
# Found from its `Q~`: four characters before, the last a digit, none glued before them.
_AAD_HEAD = re.compile(r"Q~(?<=[A-Za-z0-9_~.]{3}[0-9]Q~)(?<![A-Za-z0-9_~.\-]....Q~)")
_AAD_TAIL = re.compile(r"[A-Za-z0-9_~.\-]{31,34}+(?![A-Za-z0-9_~.\-])")
# `curl -u user:pass` / `--user user:pass`, and `Authorization: Basic <base64 of user:pass>`.
_CURL_USER = re.compile(r"(?:-u|--user)[ \t]++[\"']?+([^\s\"':]{0,64}+):([^\s\"']{1,128}+)")
_BASIC = re.compile(r"authorization[\"']?[ \t]*[:=][ \t]*[\"']?basic[ \t]++")
_BASIC_VALUE = re.compile(r"[A-Za-z0-9+/]{4,1024}+={0,2}+")
_PEM_BEGIN = re.compile(r"-----BEGIN (?:[A-Z0-9]++ ){0,3}PRIVATE KEY(?: BLOCK)?-----")
_PEM_END = re.compile(r"-----END (?:[A-Z0-9]++ ){0,3}PRIVATE KEY(?: BLOCK)?-----")
_PEM_MAX_BODY = 16384
# An unterminated block (a stream still arriving): the base64 lines and headers seen so far.
_PEM_BODY = re.compile(
    r"(?:(?:\s|\\[nr])*+(?:[A-Za-z0-9+/]{16,}+={0,2}+|[A-Za-z\-]++:[^\n\\]*+))*+"
)

# Labelled values, matched on the lower-cased text; one literal-led regex per label ending.
# A label may run on (`secret_key_2`, `todo_secret_do_not_commit`, `mySecretString`); then an
# optional closing quote or `]`, an optional Go type (`var x string = …`), and one operator of the
# languages people paste: `=`, `:`, `:=`, `::=`, `:::=`, `?=`, `.=`, `+=`, `=>`, comparisons
# (`if (key == "…")`), a call's next argument (`setProperty("X_TOKEN", "…")`) or an XML element
# whose value sits on the next line (`<apiToken>\n  …\n</apiToken>`).
_OP = (
    r"[\"'\]]?(?:[ \t]++string)?[ \t]*+"
    r"(?:(?:[=!]==?+|=>|:{0,3}=|\?=|\.=|\+=|:|(?<=[\"']),)[ \t]*+|>[ \t\r\n]{0,64}+)"
)
# What must precede `key` for it to label a secret (`api_key`, `accessKey`, `secret-key` ...).
_KEY_OWNERS = ("api", "access", "auth", "private", "secret", "client", "master", "signing",
               "encryption", "subscription", "license", "account")  # fmt: skip
# A label that names something about the secret, not the secret: `credentialsId`, `secret_name`,
# `access_token_url`, `TokenFile`, `key_length`.
_NOT_SECRET_SUFFIX = ("id", "ids", "name", "names", "file", "url", "uri", "path", "type", "len",
                      "length", "count", "size", "ttl", "expiry", "expires", "header", "prefix",
                      "ref", "env", "var")  # fmt: skip
# The label rules of `_label_ok` are also in each regex, so a text of labels it refuses
# (`key=key=…`, `tokenizer: …`) or of labels whose value is too short to report (`token: token:
# …`) is refused in C at each occurrence instead of costing a Python step (2-3x prose per KB);
# `_label_ok` and `_value_ok` still decide, these only drop candidates that cannot pass them.
# A stem may run on with `_`/digits (`secret_key_2`, up to 32 characters) or a short suffix
# (`secretKey`, `mySecretString`), and the label may not end like the name of something else
# (only a `_`/digit run-on can: no stem or short suffix ends like one). The names are looked up
# by the label's last letter: each lookbehind costs a step.
_LAST = "ndtyse" + "".join(sorted({x[-1] for x in _NOT_SECRET_SUFFIX} - set("ndtyse")))
_NOT_A_NAME = (
    "(?:"
    + "|".join(
        f"(?<={c})" + "".join(f"(?<!{x})" for x in _NOT_SECRET_SUFFIX if x.endswith(c))
        for c in _LAST
        if any(x.endswith(c) for x in _NOT_SECRET_SUFFIX)
    )
    + f"|(?<![{_LAST}]))"
)
_RUN_ON = (
    r"(?:[_0-9][a-z0-9_]{0,31}+(?![a-z0-9_])" + _NOT_A_NAME
    + r"|(?:string|str|keys|key|value|s|e)?+(?![a-z0-9_]))"
)  # fmt: skip


# `key` itself must follow an owner word, with at most two separators between (`api__key`). Tried
# only where the letter or separator before `key` can end one, then by that last letter: each
# lookbehind costs a step at every `key`.
def _key_owned() -> str:
    def after(sep: str) -> str:
        last = sorted({o[-1] for o in _KEY_OWNERS})
        return "|".join(
            f"(?<={c}{sep}key)(?:"
            + "|".join(f"(?<={o}{sep}key)" for o in _KEY_OWNERS if o.endswith(c))
            + ")"
            for c in last
        )

    return (
        f"(?<=[{''.join(sorted({o[-1] for o in _KEY_OWNERS}))}_.-]key)"
        f"(?:(?<=[a-z]key)(?:{after('')})"
        f"|(?<=[a-z][_.-]key)(?:{after('[_.-]')})"
        f"|(?<=[_.-][_.-]key)(?:{after('[_.-]{2}')}))"
    )


_KEY_OWNED = _key_owned()
# A value worth examining has at least 8 characters (`_value_ok`), quoted or not, and is not a
# code reference that `_value_ok` refuses whatever follows: a dotted name then `:`, `(` or `[`
# (`next_label:`, `get_token()`, `os.environ[…]`), within the first 250 characters.
_LONG_VALUE = (
    r"(?=[brfu@]?(?:\"[^\"\s]{8}|'[^'\s]{8}|`[^`\s]{8}|[^\s\"'`,;)}\]<>]{8}))"
    r"(?!(?=[\w$.]{0,249}+(?![\w$.]))[A-Za-z_$][\w$]*+(?:\.[A-Za-z_$][\w$]*+)*+[\[(:])"
)
# The same, but for an undotted name then `:` and more (not `:` or `/`: `std::`, `https://`),
# which may be an id and its secret (`AKIA…:…`, `admin:…`; `_value_ok`): taken by the label pass
# alone (`_ASSIGN_VALUE`), which goes on as before where `_value_ok` refuses it. The labels inside
# values (`_ASSIGN`) are as they were.
_LONG_OR_ID_VALUE = (
    r"(?=[brfu@]?(?:\"[^\"\s]{8}|'[^'\s]{8}|`[^`\s]{8}|[^\s\"'`,;)}\]<>]{8}))"
    r"(?!(?=[\w$.]{0,249}+(?![\w$.]))[A-Za-z_$][\w$]*+"
    r"(?:(?:\.[A-Za-z_$][\w$]*+)++[\[(:]|[\[(]|:(?![^\s\"'`,;)}\]<>:/])))"
)
_STEM_RES = (r"pass(?:word|wd)", "pwd", "secret", "token", r"cred(?:entials*+|s)?+",
             "key" + _KEY_OWNED)  # fmt: skip
_ASSIGN = tuple(
    re.compile(stem + _RUN_ON + "(?>" + _OP + ")" + _LONG_VALUE)  # the operator as matched alone
    for stem in _STEM_RES
)
_VALUE = re.compile(
    r"[brfu@]?(?:\"([^\"\s]{1,256})\"|'([^'\s]{1,256})'|`([^`\s]{1,256})`)"
    r"|([^\s\"'`,;)}\]<>]{1,256})"
)
# The label regexes with `_VALUE` after them in a lookahead that always succeeds (the same
# matches): one match gives the label and, in groups 1-4, its value as `_VALUE.match` finds it
# in `text` (its classes hold no letter but the prefix's, so on `low` it is the same value but
# where a quoted one's prefix is an upper-case `B`, `R`, `F` or `U` in `text`).
_ASSIGN_VALUE = tuple(
    re.compile(
        stem + _RUN_ON + "(?>" + _OP + ")" + _LONG_OR_ID_VALUE + "(?=" + _VALUE.pattern + "|)"
    )
    for stem in _STEM_RES
)
# The label regexes' heads, the label and its operator (`_ASSIGN_VALUE` without its value's
# lookaheads): the C step of the label pass (`_LABEL_SCAN_VALUES`) searches with these and reads
# the value there itself.
_ASSIGN_HEAD = tuple(re.compile(stem + _RUN_ON + "(?>" + _OP + ")") for stem in _STEM_RES)
# The run `_VALUE`'s unquoted alternative takes, with no bound.
_RUN = re.compile(r"[^\s\"'`,;)}\]<>]*+")
_CODE_REF = re.compile(r"[A-Za-z_$][\w$]*+(?:\.[A-Za-z_$][\w$]*+)*+(?:[\[(:].*)?")
# An unquoted id and its secret (`AKIA…:…`, `admin:…`): an undotted name, `:`, and a rest led by
# neither `:` nor `/` (`std::`, `https://`); judged as its rest, the secret (group 1).
_ID_SECRET = re.compile(r"[A-Za-z_$][\w$]*+:([^:/].*)")
# How such a value starts where `_LONG_OR_ID_VALUE` takes it (its name within 250 characters).
_ID_HEAD = re.compile(r"[A-Za-z_$][\w$]{0,248}+:")
_BEARER = re.compile(r"bearer[ \t]+")
_BEARER_VALUE = re.compile(r"[A-Za-z0-9\-._~+/]{20,2048}+=*+")
_AWS_SECRET_VALUE = re.compile(r"[A-Za-z0-9/+]{40}")
# Token body lengths GitLab issues, where fixed (by the prefix's first four characters).
_GL_LENGTHS = {"glim": (25, 25), "glag": (50, 50), "gloa": (64, 64), "glso": (20, 50),
               "GR13": (20, 50), "_git": (32, 32)}  # fmt: skip
_HEX = re.compile(r"[0-9a-f]+")
_KEY_CHARS_STR = "abcdefghijklmnopqrstuvwxyz0123456789_-."
_KEY_CHARS = frozenset(_KEY_CHARS_STR)

_SPECIFIC = 3
_GENERIC = 1


# `_aws` in C (policies/guardrails/_checks_c.c `aws_spans`), which reads `_AWS` as written there.
_AWS_C = _checks._C is not None and getattr(_checks._C, "AWS", None) == _AWS.pattern
_AWS_TYPES = ("aws_access_key", "aws_secret_key", _SPECIFIC)


def _aws(text: str) -> Iterable[Span]:
    """AWS key ids, and the secret after one: in one C pass where built (a text packed with ids
    paid ~1.4 us an id in the loop below), else `_aws_py`."""
    if (c := _checks._C) is not None and _AWS_C:
        spans: list[Span] = c.aws_spans(text, Span, DETECTOR, _AWS_TYPES, random_looking)
        return spans
    return _aws_py(text)


def _aws_py(text: str) -> Iterator[Span]:
    # The loop body runs once per key id found: a text packed with ids (≈ one per 21
    # characters) pays it 50 times per KB, so it is kept to inline checks.
    word = WORD_CHARS
    for m in _AWS.finditer(text):
        start = m.start()
        if start and text[start - 1] in word:
            continue
        key_id = text[start : start + 20]
        if example_value(key_id) or not key_id[4:].strip("X"):
            continue  # `AKIAXXXXXXXXXXXXXXXX`, documentation keys (`…EXAMPLE`)
        yield _new(Span, (start, start + 20, DETECTOR, "aws_access_key", _SPECIFIC, True))
        sk = m.group(1)
        if sk and random_looking(sk, 4.0) and "EXAMPLE" not in sk:
            yield _new(Span, (m.start(1), m.end(1), DETECTOR, "aws_secret_key", _SPECIFIC, True))


def _simple(
    regex: re.Pattern[str], kind: str, group: int = 0, max_len: int = 0, min_entropy: float = 3.0
) -> Callable[[str], Iterator[Span]]:
    def find(text: str) -> Iterator[Span]:
        for m in regex.finditer(text):
            value = m.group(group)
            if max_len and len(value) > max_len:
                continue
            if boundary_before(text, m.start()) and random_looking(value, min_entropy):
                if not example_value(m.group(0)):
                    yield _new(Span, (m.start(), m.end(), DETECTOR, kind, _SPECIFIC, True))

    return find


def _sk(text: str) -> Iterator[Span]:
    for m in _SK.finditer(text):
        if len(m.group(3)) > 400:
            continue
        if not boundary_before(text, m.start()) or not random_looking(m.group(3), 3.5):
            continue
        exact = len(m.group(3)) == 95 and m.group(3).endswith("AA")  # api03/admin01: 93 + `AA`
        if not exact and example_value(m.group(3)):
            continue  # `sk-ant-api03-abc123xyz-…klmnopqrstuvwx…` of the wrong length
        kind = (
            "anthropic_api_key" if m.group(1) else "openrouter_api_key" if m.group(2)
            else "openai_api_key"
        )  # fmt: skip
        yield _new(Span, (m.start(), m.end(), DETECTOR, kind, _SPECIFIC, True))


def _gitlab(text: str) -> Iterator[Span]:
    for m in (m for regex in _GL for m in regex.finditer(text)):
        body = m.group(1)
        if len(body) > 64 or not boundary_before(text, m.start()):
            continue
        lo, hi = _GL_LENGTHS.get(m.group(0)[:4], (20, 64))
        if not lo <= len(body) <= hi:
            continue
        if m.group(0).startswith("glptt-") and not (len(body) == 40 and _HEX.fullmatch(body)):
            continue  # pipeline trigger tokens are exactly 40 hex digits
        if random_looking(body, 3.0):
            yield _new(Span, (m.start(), m.end(), DETECTOR, "gitlab_token", _SPECIFIC, True))


def _slack(text: str) -> Iterator[Span]:
    for regex, kind in ((_SLACK_TOKEN, "slack_token"), (_SLACK_APP, "slack_token"),
                        (_SLACK_HOOK, "slack_webhook")):  # fmt: skip
        for m in regex.finditer(text):
            if boundary_before(text, m.start()) and _slack_body_ok(m.group(1)):
                yield _new(Span, (m.start(), m.end(), DETECTOR, kind, _SPECIFIC, True))


_HEX_TAIL = re.compile(r"[0-9a-f]{16,64}")


def _slack_body_ok(body: str) -> bool:
    """Random as a whole, or ID segments and a random last part (`xoxa-2-5111…-e039d0…`); numeric
    IDs are a version digit or 8+ digits, so `xoxb-12345-abcd234` is a made-up example, unless
    the token has the legacy shape: three distinct IDs of 6+ digits and a hex secret of 16+
    characters (`xoxp-523423-234243-234233-e039d02840a0b9379c`; `xoxp-1234-1234-1234-…` is
    made up)."""
    parts = body.split("-")
    if placeholder(body):
        return False
    ids = parts[:-1]
    legacy = len(ids) >= 3 and len(set(ids)) > 1 and all(p.isdigit() and len(p) >= 6 for p in ids)
    if legacy and _HEX_TAIL.fullmatch(parts[-1]):
        return random_looking(parts[-1], 3.0)  # the legacy shape: three IDs and a hex secret
    if any(p.isdigit() and 2 <= len(p) <= 7 for p in parts):
        return False
    flat = body.replace("-", "").replace("/", "")
    last = parts[-1].rsplit("/", 1)[-1]
    return random_looking(flat, 3.0) or (len(last) >= 10 and random_looking(last, 3.0))


def _stripe(text: str) -> Iterator[Span]:
    for m in _STRIPE.finditer(text):
        s = m.start() - 1
        if len(m.group(1)) <= 247 and s >= 0 and text[s] in "sr" and boundary_before(text, s):
            if random_looking(m.group(1), 3.5):
                yield _new(Span, (s, m.end(), DETECTOR, "stripe_key", _SPECIFIC, True))


def _llm(text: str) -> Iterator[Span]:
    for regex, kind, max_len in _LLM:
        for m in regex.finditer(text):
            if (
                m.end() - m.start() <= max_len
                and boundary_before(text, m.start())
                and random_looking(m.group(0), 3.5)
            ):
                yield _new(Span, (m.start(), m.end(), DETECTOR, kind, _SPECIFIC, True))


def _jwt_ok(header: str, payload: str, sig: str | None) -> bool:
    """Signed or unsigned (`alg: none`, empty or absent signature) JWTs whose header names `alg`;
    a `ey….ey….` pair that does not decode still counts when both parts are long and random, the
    shape scanners report (a redacted or truncated token is still a credential leak)."""
    if jwt_header_ok(header):
        return sig is not None or json_object_b64(payload)
    return (
        sig is not None and not header.startswith("eyJ")
        and len(header) >= 19 and len(payload) >= 19
        and header[2:].isalnum() and random_looking(header, 3.0) and random_looking(payload, 3.0)
    )  # fmt: skip


def _jwt(text: str) -> Iterator[Span]:
    pos = 0
    while (m := _JWT.search(text, pos)) is not None:
        header, payload, sig = m.group(1), m.group(2), m.group(3)
        if len(header) >= 11 and payload is not None and len(payload) >= 11:
            pos = m.end()
            if boundary_before(text, m.start()) and _jwt_ok(header, payload, sig):
                yield _new(Span, (m.start(), m.end(), DETECTOR, "jwt", _SPECIFIC, True))
        else:
            pos = m.end(1)  # the next `eyJ` after this run may start a token of its own


def _jwt_shaped(text: str) -> Iterator[Span]:
    for m in _JWT_DOT.finditer(text):
        h = _JWT_HEAD.search(text, max(0, m.start() - 512), m.start())
        if h is None or h.group().startswith(("eyJ", "eyA")):
            continue  # `eyJ…` headers must decode (`_jwt`)
        if not boundary_before(text, h.start()):
            continue
        if _jwt_ok(h.group(), m.group(1), "." + m.group(2)):
            yield _new(Span, (h.start(), m.end(), DETECTOR, "jwt", _SPECIFIC, True))


def _url_password(text: str) -> Iterator[Span]:
    for m in _URL_PASSWORD.finditer(text):
        pw = m.group(2)
        if placeholder(pw) or (pw.isdigit() and len(pw) <= 5):
            continue
        kind = "connection_string_password"
        yield _new(Span, (m.start(2), m.end(2), DETECTOR, kind, _SPECIFIC, True))


def _azure(text: str) -> Iterator[Span]:
    for regex, kind, min_entropy in _AZURE:
        for m in regex.finditer(text):
            if random_looking(m.group(1), min_entropy):
                yield _new(Span, (m.start(1), m.end(1), DETECTOR, kind, _SPECIFIC, True))


def _azure_storage_shape(text: str, low: str) -> Iterator[Span]:
    for m in _B64_86_END.finditer(text):
        i = m.start()
        start = i - 86
        if text[start - 11 : start] == "AccountKey=":
            continue  # reported by `_azure`
        near = low[max(0, start - 256) : start]
        if any(w in near for w in _AZURE_CONTEXT) and random_looking(text[start:i], 4.0):
            yield _new(Span, (start, i + 2, DETECTOR, "azure_storage_key", _SPECIFIC, True))


def _azure_ad(text: str) -> Iterator[Span]:
    pos = 0
    while (m := _AAD_HEAD.search(text, pos)) is not None:
        i = m.start()
        pos = i + 2
        start = i - 4
        tail = _AAD_TAIL.match(text, i + 2)
        if tail and random_looking(text[start : tail.end()], 3.5):
            pos = tail.end()
            kind = "azure_ad_client_secret"
            yield _new(Span, (start, tail.end(), DETECTOR, kind, _SPECIFIC, True))


def _curl_user(text: str, low: str) -> Iterator[Span]:
    for m in _CURL_USER.finditer(text):
        user, pw = m.group(1), m.group(2)
        if len(pw) < 6 or pw == user or pw[0] in "$%{[<(" or user[:1] in ("<", "$", "{"):
            continue
        if placeholder(pw):
            continue
        if random_looking(pw, 2.5):
            yield _new(Span, (m.start(2), m.end(2), DETECTOR, "curl_basic_auth", _SPECIFIC, True))


def _basic_auth(text: str, low: str) -> Iterator[Span]:
    for m in _BASIC.finditer(low):
        v = _BASIC_VALUE.match(text, m.end())
        if v is None:
            continue
        # Base64 decodes only where its data characters and padding fit 4-character groups:
        # `n % 4` is 0, or 2 with `==`, or 3 with `=` (a decoding error raised and caught cost
        # ~3 us per `authorization: basic authorization…`, 2.3x prose per KB).
        value = v.group()
        data = len(value.rstrip("="))
        if (r := data % 4) and r + len(value) - data != 4:
            continue
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        if b":" in raw and raw.isascii() and raw[:1] != b":":
            yield _new(Span, (v.start(), v.end(), DETECTOR, "http_basic_auth", _SPECIFIC, True))


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
            body = text[m.end() : ends[k]].strip()
            if len(body) < 16 or placeholder(body):
                pos = end.end()  # `BEGIN PRIVATE KEY` / `anything` / `END`: a placeholder block
                continue
            if held is not None:
                yield held
                held = None
            yield _new(Span, (m.start(), end.end(), DETECTOR, kind, _SPECIFIC, True))
            pos = end.end()
        else:
            rest = _PEM_BODY.match(text, m.end())
            pos = max(rest.end() if rest else 0, m.end())
            start = m.start() if held is None else held.start
            held = _new(Span, (start, pos, DETECTOR, held.type if held else kind, _SPECIFIC, False))
    if held is not None:
        yield held


_FAMILIES: tuple[Callable[[str], Iterable[Span]], ...] = (
    _aws,
    _simple(_GCP, "gcp_api_key"),
    _sk,
    _simple(_GH, "github_token", 0, 11 + 255),
    _gitlab,
    _slack,
    _stripe,
    _llm,
    _jwt,
    _jwt_shaped,
    _url_password,
    _azure,
    _azure_ad,
    _pem,
)


def _value_ok(value: str, quoted: bool, kind: str, counted: bool = False) -> bool:
    """Whether `value` (after a label of the type `kind`) is reported: 8 characters or more, not
    a placeholder, an example or (unquoted) a code reference, and random-looking. Every check
    is a refusal, so their order leaves the answer as it is: the cheapest first. `counted`: the
    caller found enough distinct characters in it."""
    if len(value) < 8:
        return False
    pw = kind == "password"
    low = value.lower()
    if not quoted and ":" in value and (pair := _ID_SECRET.fullmatch(value)) is not None:
        # An id and its secret: judged as the secret (but for a placeholder word in the id).
        return PLACEHOLDER_WORD.search(low) is None and _value_ok(pair.group(1), quoted, kind)
    # With the C checks built (policies/guardrails/_checks_c.c), all of the checks below in one
    # call, with the same answer (this chain cost ~3.7 us per value, a flood of distinct labels
    # 3-4x prose per KB), or `None` where a regex (`_TEMPLATE`, `_FILE_PATH`) or `entropy` must
    # decide: then the checks below do.
    if (c := _checks._C) is not None and (
        verdict := c.value_ok(
            value, low, quoted, 0 if counted else 6 if pw else 8, 2.5 if pw else 3.0
        )
    ) is not None:
        return verdict
    if PLACEHOLDER_WORD.search(low):
        return False  # (one C search refuses most placeholder values)
    if not quoted:
        # Unquoted values in code are expressions: `settings.api_key`, `get_token()`, `API_KEY`.
        if "(" in value or "[" in value or "{" in value:
            return False
        if _CODE_REF.fullmatch(value) and ("." in value or ":" in value or not _has_digit(value)):
            return False
    # Entropy is at most log2 of the number of distinct characters: under 2 ** 2.5 (a password)
    # or 2 ** 3, it is under the bar, whatever the other checks say.
    if not counted and len(set(value)) < (6 if pw else 8):
        return False
    # (Lower-casing an ASCII value maps at most two of its characters to one: it keeps three of
    # its six or more distinct ones, so it is not a placeholder of two.)
    if placeholder_shape(low, value.isascii()) or example_value(value):
        return False
    return two_char_classes(value) and entropy_at_least(value, 2.5 if pw else 3.0)


_ASCII_DIGIT = re.compile(r"[0-9]")


def _has_digit(value: str) -> bool:
    """`any(c.isdigit() for c in value)`: in one C search for ASCII values (the digits
    `str.isdigit` knows beyond ASCII, `²` or `٣`, are looked for only where a value has any)."""
    if value.isascii():
        return _ASCII_DIGIT.search(value) is not None
    return any(c.isdigit() for c in value)


_WORD = re.compile(r"[a-z0-9_]*+")
_NOT_SECRET_OWNER = ("public", "csrf", "xsrf", "publishable")
_CONTINUATIONS = ("", "s", "e", "string", "str", "key", "keys", "value")
_LABEL_OK_STEMS = ("password", "passwd", "pwd", "secret", "token", "cred", "key")


def _label_ok(label: str, word: str, owner: str) -> bool:
    """`word` is the matched label with its run-on (`secret_key_2`, `tokenizer`): it may run on
    only with `_`/digits (`api_token_123`) or a short suffix (`secretKey`, `mySecretString`)."""
    for stem in _LABEL_OK_STEMS:
        if word.startswith(stem):
            rest = word[len(stem) :]
            if stem == "cred" and rest.startswith(("ential", "s")):
                rest = rest.split("s", 1)[1] if rest.startswith("s") else rest[6:].lstrip("s")
            if not (rest in _CONTINUATIONS or rest[0] in "_0123456789"):
                return False
            break
    if label.endswith(_NOT_SECRET_SUFFIX) or owner.rstrip("_-. ").endswith(_NOT_SECRET_OWNER):
        return False
    return True


# How far before its label an assignment's verdict looks: the owner word (`aws_secret_access_key`,
# up to 40 characters) and 40 more for the context (`aws`) before it.
_LABEL_CONTEXT = 80
# Longer than a label and its operator without whitespace (stem, run-on of up to 32, quote, `:=`).
_LABEL_TAIL = 64


# Label verdicts kept for one scan (`_label_start`), by regex, owner word and label.
_Labels = dict[tuple[int, str, str], int]


def _label_start(low: str, i: int, ms: int, me: int, labels: _Labels | None = None) -> int:
    """Where the label `low[ms:me]` (of `_ASSIGN[i]`) starts with its owner word (`api_` of
    `api_key=`), or -1 if it labels no secret. Reads only `low[ms - 40 : me]`. The verdict
    depends on the owner word and the label alone (the label's word ends before its operator),
    so it is kept in `labels` on them: a text of labels between distinct values pays for each
    owner word and label once."""
    # The owner word: the run of key characters before the label, up to 40.
    if ms and low[ms - 1] in _KEY_CHARS:
        owner = low[max(0, ms - 40) : ms]
        owner = owner[len(owner.rstrip(_KEY_CHARS_STR)) :]
    else:
        owner = ""  # (most labels: a blank or punctuation before them)
    if labels is None:
        return _owned_label(low, i, ms, me, owner)
    key = (i, owner, low[ms:me])
    got = labels.get(key)
    if got is None:
        got = _owned_label(low, i, ms, me, owner)
        got = got if got < 0 else ms - got
        if len(labels) < MEMO_MAX:
            labels[key] = got
    return got if got < 0 else ms - got


def _owned_label(low: str, i: int, ms: int, me: int, owner: str) -> int:
    """`_label_start` given the owner word before `ms`: `_label_ok` on the owner word and the
    label's word, the word's part kept (`_label_word`), so a label after distinct owner words (a
    value glued to the next label) pays only for the owner's."""
    if owner:
        bare = owner.rstrip("_-. ")
        if i == 5 and not bare.endswith(_KEY_OWNERS):
            return -1
        if bare.endswith(_NOT_SECRET_OWNER):
            return -1
        if low[me - 1] == ":" and "." in owner:
            return -1  # a dotted coordinate (`io.jsonwebtoken:jjwt`), not an assignment
    elif i == 5:
        return -1  # `key` needs an owner word
    word = _label_word(low[ms:me])
    # (The label, owner word and all, may not end like the name of something else: the word
    # has 3 characters or more and the names 7 at most, so 4 of the owner's are enough.)
    if not word or (owner[-4:] + word).endswith(_NOT_SECRET_SUFFIX):
        return -1
    return ms - len(owner)


@functools.lru_cache(maxsize=4096)
def _label_word(label: str) -> str:
    """The word of `label` (a label regex's match: stem, run-on, operator) if `_label_ok` takes it
    with no owner word, else "". A pure function of the label, so kept across scans (bounded)."""
    m = _WORD.match(label)
    assert m is not None
    return m.group() if _label_ok(m.group(), m.group(), "") else ""


def _assignment(
    text: str, low: str, i: int, ms: int, me: int, v: re.Match[str]
) -> tuple[bool, _Found | None]:
    """Whether the value `v` after the label `low[ms:me]` (of `_ASSIGN[i]`) was examined (the
    scan resumes after it), and the finding (offsets from `me`, type, priority) if it is one.
    Reads only `low[ms - _LABEL_CONTEXT : me]` and the value."""
    k = _label_start(low, i, ms, me)
    if k < 0:
        return False, None
    g = v.lastindex or 4
    return True, _judged(low, i, k, ms, v.group(g), v.start(g) - me, g < 4)


def _judged(
    low: str, i: int, k: int, ms: int, value: str, start: int, quoted: bool
) -> tuple[int, int, str, int] | None:
    """The finding (`start` and its end, type, priority) if `value` is one after the label at
    `low[ms:]` (of `_ASSIGN[i]`, with its owner word from `k`). Reads only `low[k - 40 : ms]`."""
    value = value.rstrip(".")
    kind = "password" if i < 2 else "generic_secret"
    if i >= 2 and _AWS_SECRET_VALUE.fullmatch(value) and "aws" in low[max(0, k - 40) : ms]:
        if random_looking(value, 4.0) and "EXAMPLE" not in value:
            return (start, start + 40, "aws_secret_key", _SPECIFIC)
        return None
    if _value_ok(value, quoted, kind):
        return (start, start + len(value), kind, _GENERIC)
    return None


# Each label regex's literal start: a stretch of a cut value is searched from these (a search
# from the stretch's start would run on past its end to the next label of the text), and a
# refused value is searched for labels only if it holds its regex's.
_STEMS = ("pass", "pwd", "secret", "token", "cred", "key")
# Finds each of `_STEMS` (and a few other words): where it finds nothing, none is there.
_ANY_STEM = re.compile(r"[pstck](?:ass|wd|ecret|oken|red|ey)")
# How far past a stretch, or a refused value, its label regexes read: a stem, a run-on of 33, a
# quote, an operator, 64 blanks before an XML element's value and the 251 characters
# `_LONG_VALUE` looks at (a label needing more, all blanks past the value's end, is not one).
_REST_READS = 400
# A finding's offsets (from its value's start, or in the text), type and priority.
_Found = tuple[int, int, str, int]
# A labelled value: its start and end, where its match ends (past a closing quote), and
# whether it is quoted.
_Value = tuple[int, int, int, bool]


def _labels_in_refused(
    text: str,
    low: str,
    i: int,
    ms: int,
    me: int,
    val: _Value,
    held: dict[object, tuple[tuple[_Found, ...], int]],
    labels: _Labels | None = None,
    tally: list[int] | None = None,
    first: re.Match[str] | None = None,
) -> tuple[tuple[_Found, ...], int]:
    """What the refused value `val` after the label `low[ms:me]` (of `_ASSIGN[i]`) holds in labels
    of that regex, and where the scan resumes.

    A label inside the value (its name and operator in it: `&token=`, not the name the value
    is in `'token_hex', 'token_urlsafe'`) ends it: the value's head up to the label, or up to a
    parameter before it (`&region=`), is judged as a value of its own, and the label labels
    what follows it, examined as the label pass would from there. A value found ends the
    search (the scan resumes after it: labels inside it are part of it); a refused one is
    searched in turn; one holding no label ends it where it ends; a label from its end on
    is left to the scan. Each label examined counts one in `tally`. Kept for this scan on the
    window it reads (a text repeating one refused
    value, `token=token=…`, pays for it once). Reads only `low[ms - _LABEL_CONTEXT : stop]` and
    `text[me:stop]`, `stop` being `_REST_READS` past `val` (a label or value needing more, all
    blanks or a run-on, is cut there). `first`: the label regex's match at the first stem
    inside the value, if the caller has it."""
    end = val[2]
    stop = end + _REST_READS
    # Looked up before the first label inside is: only a value holding one is kept, and the key
    # holds all that finding it reads (a repeated window pays for neither).
    w = max(0, ms - _LABEL_CONTEXT)
    key = (i, ms - w, low[w:stop], text[me:stop])
    got = held.get(key)
    if got is not None:
        found, resume = got
        if not found:
            return (), resume + ms
        return tuple((a + ms, b + ms, t, p) for a, b, t, p in found), resume + ms
    inner = _label_inside(text, low, i, me, val, stop, labels, first)
    if inner is None:
        return (), end  # no label inside: the value ends where it ends
    out: list[_Found] = []
    k = _label_start(low, i, ms, me, labels)
    regex, stem = _ASSIGN[i], _STEMS[i]
    run_end = -1  # where the unquoted run the values are in ends, once read
    outer = True  # `val` is the refused value; the others are judged here
    while True:
        if tally is not None:
            tally[0] += 1
        head = ""
        hs = he = val[0]
        if inner is not None:
            # The value's head: up to the label inside it, or a parameter before that.
            he = max(hs, inner[2])
            param = _PARAM.search(text, hs, inner[1])  # `&password=` is one
            if param is not None and param.start() < he:
                he = param.start()
            head = text[hs:he]
        # A head that is a placeholder or an example makes the value one (it holds a label, so
        # it is no AWS secret): refused without reading it on (`placeholder_head`; its word
        # looked for in `low` first, where an ASCII word is one of the head's lower-cased).
        refused = he - hs >= 8 and (
            PLACEHOLDER_WORD.search(low, hs, he) is not None or placeholder_head(head)
        )
        if not outer and not refused:
            vs, ve, vend, quoted = val
            if not _refused_by_head(text, low, i, val) and (
                f := _judged(low, i, k, ms, text[vs:ve], vs, quoted)
            ):
                out.append(f)
                resume = vend
                break
        if inner is None:
            resume = val[2]
            break
        # The head judged as a value of its own (unless refused above and not AWS-shaped).
        if len(head) >= 8 and (
            not refused or (i >= 2 and _AWS_SECRET_VALUE.fullmatch(head.rstrip(".")))
        ):
            if f := _judged(low, i, k, ms, head, val[0], val[3]):
                out.append(f)
        ms, me, k, val = inner
        if ms >= end:
            resume = ms
            break
        outer = False
        # `_label_inside`, done here where the next label is at the first stem in an unquoted
        # value and its verdict is kept (a run of labels).
        vs, ve, _, quoted = val
        p = low.find(stem, me, ve)
        n = -1  # the owner word's length, if the label's verdict is kept and it is one
        if (
            p >= 0
            and not quoted
            and labels is not None
            and (m := regex.match(low, p, stop)) is not None
            and (pe := m.end()) + 1 < ve
        ):
            owner = ""
            if low[p - 1] in _KEY_CHARS:
                owner = low[max(0, p - 40) : p]
                owner = owner[len(owner.rstrip(_KEY_CHARS_STR)) :]
            n = labels.get((i, owner, low[p:pe]), -1)
        if n >= 0:
            # Its value is the unquoted run `val` is in (read once: every value from here on
            # starts inside the one before), up to 256 characters.
            if run_end < 0:
                run = _RUN.match(text, ve, stop)
                assert run is not None
                run_end = run.end()
            ve = min(pe + 256, run_end)
            inner = (p, pe, p - n, (pe, ve, ve, False))
        else:
            inner = _label_inside(text, low, i, me, val, stop, labels)
            run_end = -1  # its value may start another run (`…&token="…"`)
    if len(held) < MEMO_MAX:
        o = key[1] + w  # the first label's start
        held[key] = (tuple((a - o, b - o, t, p) for a, b, t, p in out), resume - o)
    return tuple(out), resume


def _refused_by_head(text: str, low: str, i: int, val: _Value) -> bool:
    """Whether `_judged` refuses the value `val` (after a label of `_ASSIGN[i]`) on what its
    head, up to the next stem of its regex inside it, holds: a code reference's bracket
    (unquoted), a placeholder or an example (`placeholder_head`); never an AWS-shaped value
    (judged on its context). A refused value holding labels of its kind is judged this way
    first, so a run of such labels (`token=xxxxxxx0&token=xxxxxxx1&…`) judges each character
    in one head, not in every value that runs over it (256 characters per label)."""
    vs, ve, _, quoted = val
    cut = low.find(_STEMS[i], vs + 1, ve)
    if cut < 0:
        return False
    if i >= 2 and ve - vs >= 40 and _AWS_SECRET_VALUE.fullmatch(text[vs:ve].rstrip(".")):
        return False
    head = text[vs:cut]
    if not quoted and ("(" in head or "[" in head or "{" in head):
        return True
    return placeholder_head(head)


def _label_inside(
    text: str,
    low: str,
    i: int,
    me: int,
    val: _Value,
    stop: int,
    labels: _Labels | None = None,
    first: re.Match[str] | None = None,
) -> tuple[int, int, int, _Value] | None:
    """The first label of `_ASSIGN[i]` inside the value `val` (after a label ending at `me`)
    that labels a secret and has a value within `text[:stop]`: its start, end, start with its
    owner word, and its value (as `_VALUE.match(text, end, stop)` finds it). `first`: the
    regex's match at the first stem inside the value (up to `stop`), if the caller has it."""
    regex = _ASSIGN[i]
    stem = _STEMS[i]
    end = val[1]
    pos = me
    # Each label starts with its regex's stem: tried at each stem in the value (a search would
    # run on past the value to the next label of the text).
    while (ms := low.find(stem, pos, end)) >= 0:
        if first is not None and first.start() == ms:
            m = first
        else:
            m = regex.match(low, ms, stop)
        if m is None:
            pos = ms + 1
            continue
        pos = m.end()
        if pos > end:
            return None  # the value is this label's name (`'token_hex', '…'`)
        if labels is not None and not (ms and low[ms - 1] in _KEY_CHARS):
            n = labels.get((i, "", low[ms:pos]), -2)  # as in `_assignments`
            k = _label_start(low, i, ms, pos, labels) if n == -2 else ms if n == 0 else -1
        else:
            k = _label_start(low, i, ms, pos, labels)
        if k < 0:
            continue
        if not val[3] and pos + 1 < end:
            # Inside an unquoted value no quote can open one (the characters at `pos` and
            # after are the value's): the unquoted run from `pos`, up to 256 characters, is
            # this value's from `pos` on and what follows it; only that is read.
            run = _RUN.match(text, end, min(pos + 256, stop))
            assert run is not None
            return ms, pos, k, (pos, run.end(), run.end(), False)
        value = _VALUE.match(text, pos, stop)
        if value is not None:
            g = value.lastindex or 4
            return ms, pos, k, (value.start(g), value.end(g), value.end(), g < 4)
    return None


# The C step of the label pass (`_checks_c.label_scan`) reports spans itself (AWS secrets after a
# kept label, and each value past DENSE_FINDINGS) where built with that and where the reach it
# reads them with is this module's (80 characters of context, resumed 64 before a value's end).
_LABEL_SCAN_REPORTS = getattr(_checks._C, "LABEL_SCAN_REPORTS", None) == (
    _LABEL_CONTEXT,
    _LABEL_TAIL,
)
# It also reads each label's value itself (`_LONG_OR_ID_VALUE` and `_VALUE`, as written there),
# searching with the label regexes' heads (`_ASSIGN_HEAD`): the value's lookaheads cost the regex
# ~1 us a label (a text of labelled findings: aws_secret 1.9x prose per KB).
_LABEL_SCAN_VALUES = (
    _LABEL_SCAN_REPORTS
    and getattr(_checks._C, "LONG_OR_ID_VALUE", None) == _LONG_OR_ID_VALUE
    and getattr(_checks._C, "VALUE", None) == _VALUE.pattern
)
# No verdict kept yet (`_assignments`).
_UNSEEN: _Found = (0, 0, "", 0)
# `_checks_c.label_scan` given `_ASSIGN[i].match`, `held`, `tally` and REFUSED_LABELS (after its
# reports' arguments) also passes over a label whose verdict is not kept (`_owned_label` in C),
# an unquoted value with a `:` that is no `id:secret`, and a refused value holding a stem of its
# regex whose step here ends in a `continue` or in `_labels_in_refused`'s kept answer of no
# finding (a distinct owner word, a value glued to the next label, a repeated refused value
# holding labels: ~1 us of Python a label, 2.0-2.4x prose per KB): where the C reads these
# rules as written here.
_LABEL_RULES = (
    _STEMS, _KEY_OWNERS, _NOT_SECRET_OWNER, _NOT_SECRET_SUFFIX, _CONTINUATIONS, _LABEL_OK_STEMS,
    _ID_SECRET.pattern, _KEY_CHARS_STR, _REST_READS, _LABEL_CONTEXT,
)  # fmt: skip
_LABEL_SCAN_C = _LABEL_SCAN_REPORTS and getattr(_checks._C, "LABEL_RULES", None) == _LABEL_RULES
# An AWS secret after an `aws` context (`_judged`).
_AWS_SECRET_FOUND: _Found = (0, 40, "aws_secret_key", _SPECIFIC)


def _assignments(text: str, low: str) -> Iterator[Span]:
    # Verdicts kept for this scan (at most MEMO_MAX each): a label's on its owner word and label
    # (`_label_start`), a value's on its kind, quoting and text (what `_judged` reads, but for an
    # AWS-shaped value, judged each time in its context), so a text repeating one labelled value
    # pays for its label, placeholder, example and entropy checks once, and one of distinct values
    # for each label once; and what refused values hold (`_labels_in_refused`).
    judged: dict[tuple[bool, bool], dict[str, _Found | None]] = {}
    held: dict[object, tuple[tuple[_Found, ...], int]] = {}
    labels: _Labels = {}
    tally = [0]  # labels examined inside refused values (REFUSED_LABELS)
    # `_value_ok` in C where built (policies/guardrails/_checks_c.c; `None`: not built).
    value_ok = None if _checks._C is None else _checks._C.value_ok
    # The label pass's common step in C where built: it passes over the labels whose value the
    # checks refuse with no stem of its regex inside (~1-3 us of Python each, a flood of distinct
    # refused values 2-3x prose per KB) and returns the next match this loop must examine.
    scan = None if _checks._C is None else _checks._C.label_scan
    # Found so far, by type: from DENSE_FINDINGS on, a value the label regex (which refuses the
    # labels and code references `_label_ok` and `_value_ok` would) took is one of that type.
    count = {"password": 0, "generic_secret": 0}
    find = low.find
    # Spans the C step reports itself (`_LABEL_SCAN_REPORTS`), yielded before the match it
    # hands back: AWS secrets after a kept label, and past DENSE_FINDINGS each value (a text
    # of findings paid ~2 us of Python a value).
    reported: list[Span] = []
    for i, (regex, regex_value, head) in enumerate(
        zip(_ASSIGN, _ASSIGN_VALUE, _ASSIGN_HEAD, strict=True)
    ):
        pw = i < 2
        kind = "password" if pw else "generic_secret"
        stem = _STEMS[i]
        reach = len(stem) - 1  # a stem starting before a value's end may run on past it
        # Value verdicts, unquoted and quoted, of this type.
        memos = (judged.setdefault((pw, False), {}), judged.setdefault((pw, True), {}))
        search = regex_value.search
        few, bar = (6, 2.5) if pw else (8, 3.0)  # (`_value_ok`: distinct characters, entropy)
        pos = 0
        report = (kind, _GENERIC, "aws_secret_key", _SPECIFIC, False)
        dense_report = (kind, _GENERIC, "aws_secret_key", _SPECIFIC, True)
        # (With the reports, `label_scan`'s last four arguments where it reads `_LABEL_RULES`.)
        more = (regex.match, held, tally, REFUSED_LABELS) if _LABEL_SCAN_C else ()
        # The C step's search, and after `more` the full regex's where it reads values itself.
        scan_search = search
        if _LABEL_SCAN_VALUES:
            scan_search, more = head.search, (*more, (search, regex_value.match))
        while True:
            if scan is None:
                m = search(low, pos)
            elif _LABEL_SCAN_REPORTS:
                m = scan(
                    scan_search, text, low, pos, stem, reach, *memos, few, bar, pw, MEMO_MAX, i,
                    labels, reported, Span, DETECTOR,
                    dense_report if count[kind] >= DENSE_FINDINGS else report, *more,
                )  # fmt: skip
                if reported:
                    yield from reported
                    reported.clear()
            elif count[kind] >= DENSE_FINDINGS:
                m = search(low, pos)
            else:
                m = scan(
                    search, text, low, pos, stem, reach, *memos, few, bar, pw, MEMO_MAX, i, labels
                )
            if m is None:
                break
            ms, me = m.span()
            pos = me
            # The value, as `_VALUE.match(text, me)` finds it (group `g`, `text[gs:ge]`).
            if (g := m.lastindex) is None:
                continue  # nothing to examine, whatever the label
            gs, ge = m.span(g)
            if gs - me == 2 and text[me] not in "brfu@":
                v = _VALUE.match(text, me)  # `B"…"`: no prefix in `text`
                if v is None:
                    continue
                g = v.lastindex or 4
                gs, ge = v.span(g)
            quoted = g < 4
            vend = ge + 1 if quoted else ge  # where the value's match ends (past its quote)
            if count[kind] >= DENSE_FINDINGS:
                value = text[gs:ge].rstrip(".")
                # An AWS secret after an `aws` context is judged in full (its type is not this).
                if pw or not (
                    "aws" in low[max(0, ms - _LABEL_CONTEXT) : ms]
                    and _AWS_SECRET_VALUE.fullmatch(value)
                ):
                    yield _new(Span, (gs, gs + len(value), DETECTOR, kind, _GENERIC, True))
                    # Resumed in this value's tail: a label there (the checks may have refused
                    # this one) can have its value after it; one further in has it inside.
                    pos = max(me, vend - _LABEL_TAIL)
                    continue
            # The value's verdict first (`_judged`, done here but for an AWS-shaped value: judged
            # on the label's context, so not kept): a refused value holding no label of this
            # regex is resumed after whether its label labels a secret or not (the scan would go
            # on inside it, where no match starts), so most labels' verdicts are never needed.
            # The first stem of this regex starting inside the value (or its closing quote).
            p = find(stem, me, vend + reach)
            value = text[gs:ge]
            if (found := (memo := memos[quoted]).get(value, _UNSEEN)) is _UNSEEN:
                stripped = value.rstrip(".")
                if not pw and len(stripped) == 40 and _AWS_SECRET_VALUE.fullmatch(stripped):
                    found = _UNSEEN  # judged below, once its label is
                else:
                    found = None
                    if value_ok is not None:
                        # `_value_ok` in one C call, its distinct characters counted there
                        # (`None`: a regex or `entropy` decides, in `_value_ok`).
                        # (An unquoted value with a `:` may be an `id:secret`: `_value_ok`.)
                        ok = (
                            None
                            if not quoted and ":" in stripped
                            else value_ok(stripped, stripped.lower(), quoted, few, bar)
                        )
                        if ok is None:
                            ok = _value_ok(stripped, quoted, kind)
                    else:
                        # Its distinct characters counted first (one C call, the cheapest
                        # refusal of `_value_ok`) where that is cheap, 64 characters at most,
                        # and where it saves the most: with no stem inside (one holding a label
                        # of this regex is most often a placeholder chain, refused by its word
                        # first).
                        counted = p < 0 and ge - gs <= 64
                        ok = (not counted or len(set(stripped)) >= few) and _value_ok(
                            stripped, quoted, kind, counted
                        )
                    if ok:
                        found = (0, len(stripped), kind, _GENERIC)
                    if len(memo) < MEMO_MAX:
                        memo[value] = found
            if (
                not quoted
                and _ID_HEAD.match(value) is not None
                and (found is None or _ANY_STEM.search(low, gs, ge) is not None)
            ):
                # An `id:…` value refused, or holding a label's stem (`env:x-secret:`, where the
                # label and what it labels are the scan's): no value, as the label regex said.
                pos = ms + 1
                continue
            if found is None and p < 0:
                pos = vend
                continue
            # The label's verdict, looked up here as `_label_start` does (most labels have no
            # owner word: a blank or punctuation before them).
            owner = ""
            if ms and low[ms - 1] in _KEY_CHARS:
                owner = low[ms - 40 if ms > 40 else 0 : ms]
                owner = owner[len(owner.rstrip(_KEY_CHARS_STR)) :]
            if (n := labels.get(lkey := (i, owner, low[ms:me]), -2)) == -2:
                k = _owned_label(low, i, ms, me, owner)
                if len(labels) < MEMO_MAX:
                    labels[lkey] = k if k < 0 else ms - k
            else:
                k = ms - n if n >= 0 else -1  # (kept: the owner word's length, or -1)
            if k < 0:
                continue  # no label: the scan goes on inside its value
            # A label inside a value found is part of it, not a new assignment; a refused value
            # is none, so a label of this kind inside it (`token=<example>&token=…`) labels what
            # follows it.
            pos = vend
            if found is _UNSEEN:
                # `_judged` of the AWS-shaped `stripped` (not kept: judged on its context).
                if "aws" in low[k - 40 if k > 40 else 0 : ms]:
                    found = None
                    if random_looking(stripped, 4.0) and "EXAMPLE" not in stripped:
                        found = _AWS_SECRET_FOUND
                else:
                    found = _judged(low, i, k, ms, value, 0, quoted)
            if found is None:
                # Searched for labels of its kind (at a stem: the first one tried here, where
                # most values hold none that is a label, `settings.key`).
                # (Unquoted, a label's operator inside it is a `=` or `:`: blanks, `,` and `>`
                # end such a value.)
                if (
                    0 <= p <= ge - len(stem)  # (one inside the value: `find(stem, me, ge)`)
                    and (quoted or "=" in value or ":" in value)
                    and (
                        (first := regex.match(low, p, pos + _REST_READS)) is not None
                        or find(stem, p + 1, ge) >= 0
                    )
                ):
                    if tally[0] >= REFUSED_LABELS:
                        # Reported without its checks up to its last label of this kind, where
                        # the scan resumes (that label's value may run on past this one):
                        # what the labels before held stays redacted (over-redaction), and
                        # the spans do not overlap (an overlap drops one of them).
                        vs = gs
                        ve = vs + len(value.rstrip("."))
                        q = ge
                        while (q := low.rfind(stem, me, q)) >= 0:
                            # (At `p`, the first stem inside, matched above.)
                            if (
                                first is not None
                                if q == p
                                else regex.match(low, q, pos + _REST_READS) is not None
                            ):
                                ve, pos = min(ve, q), q
                                break
                        if ve - vs >= 8:  # (not counted: DENSE_FINDINGS's spans overlap)
                            yield _new(Span, (vs, ve, DETECTOR, kind, _GENERIC, True))
                        continue
                    if first is not None and first.end() > ge:
                        continue  # its first stem is no label inside it: the value's own name
                    val = (gs, ge, vend, quoted)
                    inner, pos = _labels_in_refused(
                        text, low, i, ms, me, val, held, labels, tally, first
                    )
                    for a, b, t, priority in inner:
                        if t in count:
                            count[t] += 1
                        yield _new(Span, (a, b, DETECTOR, t, priority, True))
                continue
            if found[2] in count:
                count[found[2]] += 1
            yield _new(Span, (gs + found[0], gs + found[1], DETECTOR, found[2], found[3], True))


# `_bearer` in C (policies/guardrails/_checks_c.c `bearer_spans`), which reads `_BEARER` and
# `_BEARER_VALUE` as written there.
_BEARER_C = (
    _checks._C is not None
    and getattr(_checks._C, "BEARER", None) == _BEARER.pattern
    and getattr(_checks._C, "BEARER_VALUE", None) == _BEARER_VALUE.pattern
)
_BEARER_TYPES = ("bearer_token", _GENERIC)


def _bearer(text: str, low: str) -> Iterable[Span]:
    """Bearer tokens: in one C pass where built (a text of distinct tokens paid ~3 us a token in
    the loop below), their verdicts that only a regex or `entropy` can give asked of
    `_bearer_ok`; else `_bearer_py`."""
    if (c := _checks._C) is not None and _BEARER_C:
        spans: list[Span] | None = c.bearer_spans(
            text, low, Span, DETECTOR, _BEARER_TYPES, _bearer_ok
        )
        if spans is not None:
            return spans
    return _bearer_py(text, low)


def _bearer_ok(value: str) -> bool:
    """Whether a bearer token's `value` is reported."""
    return not placeholder(value) and random_looking(value, 3.0)


def _bearer_py(text: str, low: str) -> Iterator[Span]:
    pos = 0
    while (m := _BEARER.search(low, pos)) is not None:
        v = _BEARER_VALUE.match(text, m.end())
        pos = v.end() if v else m.end()
        if v and not placeholder(v.group()) and random_looking(v.group(), 3.0):
            yield _new(Span, (v.start(), v.end(), DETECTOR, "bearer_token", _GENERIC, True))


# Labelled values: found after a label and judged by how they look, at the low priority that lets
# a provider-specific hit inside one win the overlap. The engine hands what such hits leave of one
# to `rest_of_values`.
LABELLED = frozenset({"password", "generic_secret", "bearer_token"})
LABELLED_PRIORITY = _GENERIC
_QUOTES = ('"', "'", "`")
# A parameter after a separator (`&region=`, `;x=`, `\nDEBUG=`: an escaped newline in JSON).
_PARAM = re.compile(r"(?:[&?;,|]|\\[nrt])[A-Za-z_][A-Za-z0-9_.\-]*+=")
_START, _END = itemgetter(0), itemgetter(1)  # of a Span


# `cut_rest` in C (policies/guardrails/_checks_c.c) reads `_ANY_STEM` and `_PARAM` as written
# there, the quotes of `_QUOTES`, and finds at `_GENERIC`, the priority of labelled values.
_CUT_REST_C = (
    _checks._C is not None
    and getattr(_checks._C, "ANY_STEM", None) == _ANY_STEM.pattern
    and getattr(_checks._C, "PARAM", None) == _PARAM.pattern
    and _QUOTES == ('"', "'", "`")
    and LABELLED_PRIORITY == _GENERIC
)


def cut_rest(text: str, low: str, spans: list[Span], kept: list[Span]) -> list[Span] | None:
    """`rest_of_values` of the labelled values in `spans` (sorted) that lost to a more specific
    hit of `kept` (their `_resolve_overlaps`) inside them, chosen as `engine._cut_labelled_values`
    does, in one C call where the C checks are built (a text of cut values paid ~2-4 us a value
    in Python: choosing it, its stretches, its key): the same spans in the same order. A stretch
    holding a label's stem is still `_rest_of_value`'s, and a value's checks `_value_ok`'s (the
    C calls them). None: not built, or input the C leaves to the Python."""
    c = _checks._C
    if c is None or not _CUT_REST_C:
        return None
    return c.cut_rest(
        text, low, spans, kept, LABELLED, Span, DETECTOR, _rest_of_value, _value_ok,
        (LABELLED_PRIORITY, DENSE_FINDINGS, MEMO_MAX, _LABEL_CONTEXT, _REST_READS),
    )  # fmt: skip


def rest_of_values(text: str, low: str, cut: list[tuple[Span, list[Span]]]) -> list[Span]:
    """Secrets in each labelled value of `cut` beside the more specific hits it lost to (each
    value's hits in text order, not overlapping): `token=AKIA…&token=<secret>`,
    `password=<email>:<secret>`.

    The label pass took every label inside the value as part of it; here each one labels what
    follows it up to the next one (or the next hit), and the rest of the value beside a hit, up
    to the first label or parameter, is judged as a value of the labelled value's type. What a
    value holds is kept for this scan on the window it reads and where its hits are (a text
    repeating one cut value pays for it once); that key is built only for a value whose text
    comes again (a text of distinct cut values paid ~2 us each for keys never found again)."""
    out: list[Span] = []
    seen: dict[tuple[object, ...], list[_Found]] = {}
    # A value's key is built only once its text comes again: till then what it held is kept on
    # its text alone (in `seen` as soon as the text comes again; `stored`: len of both).
    once: dict[str, tuple[Span, list[Span], list[_Found]]] = {}
    twice: set[str] = set()
    stored = 0
    for value, hits in cut:
        vs, ve, kind = value.start, value.end, value.type
        stretches = []
        pos = vs
        for h in hits:
            if h.start - pos >= 8:  # else no value of 8 characters fits, labelled or not
                stretches.append((pos, h.start))
            pos = h.end
        if ve - pos >= 8:
            stretches.append((pos, ve))
        if not stretches:
            continue
        quoted = kind == "bearer_token" or text[vs - 1 : vs] in _QUOTES
        found = key = None
        vtext = text[vs:ve]
        if (first := once.pop(vtext, None)) is not None:
            seen[_cut_key(text, low, first[0], first[1])] = first[2]
            twice.add(vtext)
        if vtext in twice:
            key = _cut_key(text, low, value, hits)
            found = seen.get(key)
        if found is None:
            dense = len(out) >= DENSE_FINDINGS
            found = []
            for a, b in stretches:
                found += _rest_of_value(text, low, kind, quoted, a, b, vs, dense)
            if stored < MEMO_MAX:
                stored += 1
                if key is None:
                    once[vtext] = (value, hits, found)
                else:
                    seen[key] = found
        for a, b, t, priority in found:
            out.append(_new(Span, (vs + a, vs + b, DETECTOR, t, priority, True)))
    return out


def _cut_key(text: str, low: str, value: Span, hits: list[Span]) -> tuple[object, ...]:
    """What `rest_of_values` reads of the cut `value` and its `hits`: the window, the value,
    its type and quoting, and where its hits are."""
    vs, ve, kind = value.start, value.end, value.type
    quoted = kind == "bearer_token" or text[vs - 1 : vs] in _QUOTES
    w = max(0, vs - _LABEL_CONTEXT)
    n = len(hits)
    return (
        low[w : ve + _REST_READS], vs - w, text[vs:ve], kind, quoted,
        tuple(map(sub, map(_START, hits), repeat(vs, n))),
        tuple(map(sub, map(_END, hits), repeat(vs, n))),
    )  # fmt: skip


def _rest_of_value(
    text: str, low: str, kind: str, quoted: bool, start: int, end: int, origin: int, dense: bool
) -> list[_Found]:
    """What `text[start:end]`, a stretch of a cut value, holds (offsets from `origin`): the labels
    there with their values, and the value's rest up to the first label or parameter
    (`&region=…`, `\\nDEBUG=…` are values of their own, not this one's), judged as a value
    unless it is a URL's scheme, host or user name beside its password. If `dense` (the text has
    DENSE_FINDINGS of these), values of 8 characters or more are findings without their checks,
    as in the label pass. Reads only `low[start - _LABEL_CONTEXT : end + _REST_READS]` and
    `text[start:end]`."""
    # (Start with the owner word in the stretch, stem, end, regex, start with the owner word.)
    labels: list[tuple[int, int, int, int, int]] = []
    endpos = end + _REST_READS
    # Each stem looked for only if one of them is there (one C search; most stretches hold none).
    if _ANY_STEM.search(low, start, end) is not None:
        for i, (stem, regex) in enumerate(zip(_STEMS, _ASSIGN, strict=True)):
            pos = start
            while (p := low.find(stem, pos, end)) >= 0:
                pos = p + 1
                m = regex.match(low, p, endpos)
                if m is not None and (k := _label_start(low, i, p, m.end())) >= 0:
                    labels.append((max(k, start), p, m.end(), i, k))
    out: list[_Found] = []
    stop = end
    if labels:
        labels.sort()
        starts = [s for s, _, _, _, _ in labels]
        stop = starts[0]
        for _, p, me, i, k in labels:
            # Its value: up to the next label that starts past this one's operator.
            n = bisect.bisect_left(starts, me)
            v = _VALUE.match(text, me, starts[n] if n < len(starts) else end)
            if v is None:
                continue
            if dense and (i < 2 or not _AWS_SECRET_VALUE.fullmatch(v.group(v.lastindex or 4))):
                g = v.lastindex or 4
                if len(value := v.group(g).rstrip(".")) >= 8:
                    a = v.start(g) - origin
                    out.append((a, a + len(value), "password" if i < 2 else "generic_secret",
                                _GENERIC))  # fmt: skip
            else:
                # `_assignment(text, low, i, p, me, v)[1]`, its label's start `k` known.
                g = v.lastindex or 4
                if (f := _judged(low, i, k, p, v.group(g), v.start(g) - me, g < 4)) is not None:
                    out.append((me - origin + f[0], me - origin + f[1], f[2], f[3]))
    if stop - start >= 8:
        param = _PARAM.search(text, start, stop)
        if param is not None:
            stop = param.start()
        piece = text[start:stop]
        value_kind = "password" if kind == "password" else "generic_secret"
        ok = len(piece) >= 8 and "://" not in piece
        if ok and (dense or _value_ok(piece, quoted, value_kind)):
            out.append((start - origin, stop - origin, kind, _GENERIC))
    return out


def find_secrets(text: str, low: str) -> list[Span]:
    """All secret spans in `text` (`low` is its same-length lower-case copy)."""
    out: list[Span] = []
    for family in _FAMILIES:
        out.extend(family(text))
    out.extend(_assignments(text, low))
    if "==" in text:
        out.extend(_azure_storage_shape(text, low))
    if "curl" in low:
        out.extend(_curl_user(text, low))
    if "basic" in low:
        out.extend(_basic_auth(text, low))
    if "bearer" in low:
        out.extend(_bearer(text, low))
    return out
