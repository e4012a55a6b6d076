"""A labelled value (`token=…`, `api_key: "…"`, `Authorization: Bearer …`) that loses an overlap to
a more specific hit inside it (an AWS key id, a GitHub token, a JWT, an email) is cut, not lost:
a second label inside it, and the rest of the value on either side of the hit, are still found
and redacted, by the whole-text scan and by the stream guard alike."""

from __future__ import annotations

import base64
import random
import string

import pytest

from policies.guardrails import (
    DETECTORS,
    StreamGuard,
    engine,
    evaluate,
    load_guardrails,
    redact,
    scan,
    secrets,
)
from policies.guardrails.engine import find_spans

SALT = b"salt"
SECRETS = frozenset({"secrets"})
R80 = "C3J27XDCG2LmlZGEONYlgCtjfIZ4SOcMz9CPVNPkNa1Hedcm4pMbXDuCL1mHoOsFaQfDPrAJ71fTquWo"
R24 = "GsbeKXgzg2sye9b2Rann76dE"
AKIA = "AKIAIOSFODNN7ABCDEFG"
GH = "ghp_yTzAeKOmXRrvftva9AW7hipTgadDZFlRJmCG"
STRIPE = "sk_live_mUXiAPyhzAnar3ZLt4bnlz2M"
JWT = (
    base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').decode().rstrip("=")
    + "."
    + base64.urlsafe_b64encode(b'{"sub":"1234567890","name":"x"}').decode().rstrip("=")
    + ".mfsB4HbQLXjjlAFbVV6q9rXxtNDFyuzX9k1gnneGEYG"
)
MAIL = "jane.doe@fastmail.com"
PLANTED = (R80, R24)  # what no redacted text may still hold

# (text, findings in text order as (type, value)) with all detectors on.
CASES = [
    # The known miss: a second `token=` inside the first one's value, past an AWS key id.
    (f"token={AKIA}&token={R80}", [("aws_access_key", AKIA), ("generic_secret", R80)]),
    (f"api_key={GH}&api_key={R80}", [("github_token", GH), ("generic_secret", R80)]),
    (f"password={STRIPE}&password={R24}", [("stripe_key", STRIPE), ("password", R24)]),
    (f"secret_key={JWT}&secret_key={R80}", [("jwt", JWT), ("generic_secret", R80)]),
    (f"token={AKIA}&token={GH}&token={R80}",
     [("aws_access_key", AKIA), ("github_token", GH), ("generic_secret", R80)]),
    # JSON and XML values: quoted, `;` and `&` are inside the value.
    (f'{{"token": "{AKIA}&token={R80}"}}', [("aws_access_key", AKIA), ("generic_secret", R80)]),
    (f'{{"token": "{AKIA};token={R80}"}}', [("aws_access_key", AKIA), ("generic_secret", R80)]),
    (f'{{"api_key": "{GH};password={R24}"}}', [("github_token", GH), ("password", R24)]),
    (f"<apiToken>\n  {AKIA}&token={R80}\n</apiToken>",
     [("aws_access_key", AKIA), ("generic_secret", R80)]),
    # `;` and a newline end an unquoted value: the second label was always found.
    (f"token={AKIA};token={R80}", [("aws_access_key", AKIA), ("generic_secret", R80)]),
    (f"token={AKIA}\ntoken={R80}", [("aws_access_key", AKIA), ("generic_secret", R80)]),
    # The rest of the value past the hit, with no second label: a value of the label's type.
    (f"token={AKIA}/{R80}", [("aws_access_key", AKIA), ("generic_secret", "/" + R80)]),
    (f"password={MAIL}:{R24}", [("email", MAIL), ("password", ":" + R24)]),
    # An AWS key id and its secret as one unquoted `id:secret` value: no code reference.
    (f"token: {AKIA}:{R80}", [("aws_access_key", AKIA), ("generic_secret", ":" + R80)]),
    (f"password = {AKIA}:{R24}", [("aws_access_key", AKIA), ("password", ":" + R24)]),
    (f"api-key: {AKIA}:{R80}", [("aws_access_key", AKIA), ("generic_secret", ":" + R80)]),
    (f"api.key={AKIA}:{R80}", [("aws_access_key", AKIA), ("generic_secret", ":" + R80)]),
    (f"secret: '{AKIA}:{R80}'", [("aws_access_key", AKIA), ("generic_secret", ":" + R80)]),
    (f"token=8.8.8.8:{R24}", [("ip_address", "8.8.8.8"), ("generic_secret", ":" + R24)]),
    (f"Authorization: Bearer {JWT}/{R80}", [("jwt", JWT), ("bearer_token", "/" + R80)]),
    (f"Authorization: Bearer {AKIA}.{R80}",
     [("aws_access_key", AKIA), ("bearer_token", "." + R80)]),
    (f"token={AKIA}/{R80}&region=eu-central-1",
     [("aws_access_key", AKIA), ("generic_secret", "/" + R80)]),
    # ... before it (the value's own start), and between two hits.
    (f"password={R24}/{AKIA}", [("password", R24 + "/"), ("aws_access_key", AKIA)]),
    (f"token={R24}&x={AKIA}&token={R80}",
     [("generic_secret", R24), ("aws_access_key", AKIA), ("generic_secret", R80)]),
    (f"token={AKIA}/{R24}.{GH}/{R80}",
     [("aws_access_key", AKIA), ("generic_secret", f"/{R24}."), ("github_token", GH),
      ("generic_secret", "/" + R80)]),
]  # fmt: skip


def _found(text: str, detectors: frozenset[str] = DETECTORS) -> list[tuple[str, str]]:
    return [(f.type, text[f.start : f.end]) for f in scan(text, detectors, SALT)]


@pytest.mark.parametrize(("text", "want"), CASES)
def test_secrets_inside_a_labelled_value_cut_by_a_specific_hit_are_found(
    text: str, want: list[tuple[str, str]]
) -> None:
    assert _found(text) == want
    redacted = redact(text, scan(text, DETECTORS, SALT))
    assert not any(p in redacted for p in PLANTED), redacted


@pytest.mark.parametrize(
    "text",
    [
        f"token={AKIA}",  # the hit is the whole value: nothing is left to report
        f'api_key = "{GH}"',
        f"password={MAIL}",
        f"Authorization: Bearer {JWT}",
        f"token={AKIA}&x=1",  # what is left is too short to be a secret
        # What follows is a parameter of its own, not the rest of the value.
        f"token={AKIA}&region=eu-central-1&ts=2025-03-04T07:24:52Z",
        f'{{"config.ini": "AWS_TOKEN={AKIA}\\nBACKUP_ENABLED=true"}}',
        # A URL's scheme and user name beside its password are not secrets.
        "rabbitmq token = 'amqps://user123:pass456@rabbitmq-host.internal:5672/vhost789'",
    ],
)
def test_what_the_specific_hit_leaves_that_is_no_secret_is_not_reported(text: str) -> None:
    assert len(_found(text)) == 1, _found(text)


def test_the_cut_value_is_what_the_labelled_value_alone_redacted() -> None:
    """With the secrets detector alone an email is no hit: the labelled value is reported whole,
    as it always was."""
    text = f"password={MAIL}:{R24}"
    assert _found(text, SECRETS) == [("password", f"{MAIL}:{R24}")]


def _cfg() -> object:
    return load_guardrails(
        "type: gateway-guardrails-config\nname: s\nrules:\n  - id: s\n"
        "    hooks: [request-output]\n    detectors: [secrets, pii]\n    mode: mutate\n"
    )


def _stream(cfg: object, chunks: list[str]) -> tuple[str, list[str]]:
    guard = StreamGuard(cfg, "request-output", {}, SALT)  # type: ignore[arg-type]
    out, types = [], []
    for c in chunks:
        v = guard.feed(c)
        out.append(v.text)
        types += [e.type for e in v.events]
    v = guard.finish()
    return "".join(out) + v.text, types + [e.type for e in v.events]


PREFIX = "Sure, here is the configuration you asked for. " * 4
SUFFIX = " Let me know if anything else is needed. " * 4


@pytest.mark.parametrize(("text", "want"), CASES)
def test_the_stream_guard_redacts_them_the_same(text: str, want: list[tuple[str, str]]) -> None:
    cfg = _cfg()
    full = PREFIX + text + SUFFIX
    expected = evaluate(cfg, "request-output", full, {}, SALT).text  # type: ignore[arg-type]
    assert not any(p in expected for p in PLANTED)
    for size in (1, 3, 7, 16, 50):
        out, types = _stream(cfg, [full[i : i + size] for i in range(0, len(full), size)])
        assert out == expected, size
        assert types == [t for t, _ in want], size


def test_the_stream_guard_redacts_them_split_at_every_position() -> None:
    cfg = _cfg()
    text = PREFIX + f"token={AKIA}&token={R80}" + SUFFIX
    expected = evaluate(cfg, "request-output", text, {}, SALT).text  # type: ignore[arg-type]
    assert expected == (
        PREFIX + "token=[REDACTED:aws_access_key]&token=[REDACTED:generic_secret]" + SUFFIX
    )
    for split in range(len(PREFIX), len(text) - len(SUFFIX) + 1):
        out, types = _stream(cfg, [text[:split], text[split:]])
        assert out == expected, split
        assert types == ["aws_access_key", "generic_secret"], split


_LABELS = ("token=", "api_key=", "password=", "secret: ", '"token": "', "Authorization: Bearer ",
           "<apiToken>\n  ", "x=", "url: ", "")  # fmt: skip
_PIECES = (AKIA, GH, STRIPE, JWT, MAIL, "8.8.8.8", "changeme", "eu-central-1", "<your-key>",
           "amqps://u:Pw9x7Qz2@mq.internal:5672", "Hunter2024", "AKIAIOSFODNN7EXAMPLE")  # fmt: skip
_SEPS = ("&", ";", "\n", "/", ".", ":", " ", "&token=", "&api_key=", "\\n", ",", '"', "=")


def _random_text(rnd: random.Random) -> str:
    out = []
    for _ in range(rnd.randint(1, 4)):
        out.append(rnd.choice(_LABELS))
        for _ in range(rnd.randint(1, 5)):
            piece = (
                rnd.choice(_PIECES)
                if rnd.random() < 0.7
                else "".join(
                    rnd.choices(string.ascii_letters + string.digits, k=rnd.choice((6, 12, 24)))
                )
            )
            out.append(piece + rnd.choice(_SEPS))
        out.append(rnd.choice((" ", "\n", "; ")))
    return "".join(out)


@pytest.mark.parametrize("seed", [1, 2])
def test_findings_are_as_before_unless_a_labelled_value_lost_to_a_specific_hit(seed: int) -> None:
    """Without a labelled value cut by a more specific hit, the findings are those of the scan
    that dropped such values whole; with one, they are those and what the cut value still holds."""
    rnd = random.Random(seed)
    real = engine.rest_of_values
    cut = 0
    for _ in range(1500):
        text = _random_text(rnd)
        calls: list[int] = []

        def spy(text: str, low: str, values: list, calls: list = calls) -> list:  # type: ignore[type-arg]
            calls.append(len(values))
            return real(text, low, values)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(engine, "_cut_labelled_values", lambda text, low, spans, kept: kept)
            before = find_spans(text, DETECTORS)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(engine, "rest_of_values", spy)
            # (The C `cut_rest` does the same in one call, spied on only here: it is tested
            # equal to this in tests/policies/test_guardrails_checks_c.py.)
            mp.setattr(secrets, "_CUT_REST_C", False)
            after = find_spans(text, DETECTORS)
        if calls:
            cut += 1
            assert set(before) <= set(after), text
        else:
            assert after == before, text
    assert cut > 300


def _token(i: int, n: int) -> str:
    return "".join(random.Random(i).choices(string.ascii_letters + string.digits, k=n))


@pytest.mark.parametrize(
    "make",
    [
        lambda i: f"token=AKIA{_token(i, 16).upper()}&token={_token(i + 1, 24)} ",
        lambda i: f"password=u{i}@mail.co:{_token(i, 12)} ",
        lambda i: f'api_key: "{AKIA}/{_token(i, 20)}&secret={_token(i + 1, 9)}&x=1" ',
    ],
)
def test_past_the_dense_bound_what_cut_values_hold_is_still_covered(make) -> None:  # type: ignore[no-untyped-def]
    """Past DENSE_FINDINGS findings in cut values, their labels' values and rests are reported
    without their checks (as the label pass does): every character the checks report is still
    covered, as the same type."""
    text = "".join(make(i) for i in range(900))

    def covered(spans: list) -> set[tuple[str, int]]:  # type: ignore[type-arg]
        return {(s.type, i) for s in spans for i in range(s.start, s.end)}

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(secrets, "DENSE_FINDINGS", 10**9)
        checked = find_spans(text, DETECTORS)
    dense = find_spans(text, DETECTORS)
    assert len(checked) > 1500
    assert covered(checked) <= covered(dense)


@pytest.mark.parametrize("c_checks", [True, False], ids=["c", "python"])
@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("token=admin:Xq7Lp2Rz9Wm4Tk8B|a@b.com", "admin:Xq7Lp2Rz9Wm4Tk8B|"),
        ("password=root:Xq7Lp2Rz9Wm4Tk8B|a@b.com", "root:Xq7Lp2Rz9Wm4Tk8B|"),
    ],
)
def test_an_id_and_secret_beside_a_more_specific_hit_is_found_with_or_without_the_c_checks(
    monkeypatch: pytest.MonkeyPatch, c_checks: bool, text: str, secret: str
) -> None:
    """The rest of a cut labelled value that is an unquoted `id:secret` is judged as its secret
    whether the value checks run in C or in Python (the C took it for a code reference)."""
    from policies.guardrails import checks

    if c_checks and checks._C is None:
        pytest.skip("the C value checks are not built")
    if not c_checks:
        monkeypatch.setattr(checks, "_C", None)
    found = {text[s.start : s.end] for s in find_spans(text, DETECTORS) if s.type != "email"}
    assert secret in found, found
