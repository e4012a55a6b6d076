"""A labelled value the checks refuse (a placeholder, a documentation example, a low-entropy run)
is no value: a label of its own kind inside it (`token=AKIAIOSFODNN7EXAMPLE&token=<secret>`,
`password=changeme&password=<secret>`, `{"token": "xxxxxxxx;token=<secret>"}`) still labels
what follows it, which is examined as a value of its own, by the whole-text scan and by the stream
guard alike. A value the checks accept is reported whole, labels inside it included, as before."""

from __future__ import annotations

import random
import string

import pytest

from policies.guardrails import DETECTORS, evaluate, redact, scan, secrets
from policies.guardrails.engine import find_spans
from tests.policies.test_guardrails_labelled_rest import PREFIX, SUFFIX, _cfg, _stream

SALT = b"salt"
R80 = "C3J27XDCG2LmlZGEONYlgCtjfIZ4SOcMz9CPVNPkNa1Hedcm4pMbXDuCL1mHoOsFaQfDPrAJ71fTquWo"
R32 = R80[:32]
R24 = "GsbeKXgzg2sye9b2Rann76dE"
AKIA = "AKIAIOSFODNN7ABCDEFG"
DOC = "AKIAIOSFODNN7EXAMPLE"  # AWS's documentation key id: refused by every check
PLANTED = (R80, R24)  # what no redacted text may still hold

# (text, findings in text order as (type, value)) with all detectors on.
CASES = [
    # The known miss: the documentation key id is refused, and with it the value holding the
    # second label.
    (f"token={DOC}&token={R80}", [("generic_secret", R80)]),
    # Every label family, refused by a placeholder, an example or a low-entropy run.
    (f"password=changeme&password={R24}", [("password", R24)]),
    (f"passwd=changeme/passwd={R24}", [("password", R24)]),
    (f"pwd=xxxxxxxx&pwd={R24}", [("password", R24)]),
    (f"client_secret=your_client_secret_here&client_secret={R80}", [("generic_secret", R80)]),
    (f"access_token={DOC}.access_token={R80}", [("generic_secret", R80)]),
    (f"credentials=changeme&credentials={R80}", [("generic_secret", R80)]),
    (f"api_key=your_api_key_here&api_key={R80}", [("generic_secret", R80)]),
    (f"api_key=xxxxxxxx&access_key={R32}", [("generic_secret", R32)]),
    # Quoted: `;`, `&` and an escaped newline are inside the value.
    (f'{{"token": "xxxxxxxx;token={R80}"}}', [("generic_secret", R80)]),
    (f'{{"api_key": "changeme&api_key={R80}"}}', [("generic_secret", R80)]),
    (f'{{"password": "changeme\\npassword={R24}"}}', [("password", R24)]),
    (f"secret: 'xxxxxxxx/secret={R80}'", [("generic_secret", R80)]),
    (f"<apiToken>\n  xxxxxxxx&token={R80}\n</apiToken>", [("generic_secret", R80)]),
    # Two refused values in a row; a refused one before a value cut by a specific hit.
    (f"token=changeme&token={DOC}&token={R80}", [("generic_secret", R80)]),
    (f"token=changeme&token={AKIA}&token={R80}",
     [("aws_access_key", AKIA), ("generic_secret", R80)]),
    # A refused value's head, up to the label inside it, is a value of its own.
    (f"password=changeme&password={R24}&password=changeme", [("password", R24)]),
    (f"token={R80}&token=changeme", [("generic_secret", R80)]),
    (f'{{"api_key": "{R80};api_key=xxxxxxxx"}}', [("generic_secret", R80)]),
    # A value found holds its labels, as before.
    (f"token={R24}&token={R80}", [("generic_secret", f"{R24}&token={R80}")]),
    # A label of another kind, or after a separator that ends an unquoted value: always found.
    (f"password=changeme&api_key={R32}", [("generic_secret", R32)]),
    (f"token=changeme;token={R80}", [("generic_secret", R80)]),
    (f"token=changeme\ntoken={R80}", [("generic_secret", R80)]),
    (f"Authorization: Bearer {'x' * 24}&token={R80}", [("generic_secret", R80)]),
]  # fmt: skip


def _found(text: str) -> list[tuple[str, str]]:
    return [(f.type, text[f.start : f.end]) for f in scan(text, DETECTORS, SALT)]


@pytest.mark.parametrize(("text", "want"), CASES)
def test_a_label_inside_a_refused_labelled_value_has_its_value_examined(
    text: str, want: list[tuple[str, str]]
) -> None:
    assert _found(text) == want
    redacted = redact(text, scan(text, DETECTORS, SALT))
    assert not any(p in redacted for p in PLANTED), redacted


@pytest.mark.parametrize(
    "text",
    [
        "token=changeme&token=changeme2",  # the inner value is refused too
        "token=token=token=token=token=token=token=",
        "password=<your-password>&password=changeme",
        f"api_key=your_api_key_here&api_key_id={R24}",  # `api_key_id` names no secret
        "token=xxxxxxxx&tokenizer=bert-base-uncased-v2",
        f"token={DOC}&x=1",
        # A value that is a label's name: a list of names, not a value holding a label.
        "__all__ = ['token_bytes', 'token_hex', 'token_urlsafe',\n 'compare_digest']",
    ],
)
def test_a_refused_value_without_a_secret_label_inside_finds_nothing(text: str) -> None:
    assert _found(text) == []


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


@pytest.mark.parametrize(
    "text", [f"token={DOC}&token={R80}", f'{{"password": "changeme;password={R24}"}}']
)
def test_the_stream_guard_redacts_them_split_at_every_position(text: str) -> None:
    cfg = _cfg()
    full = PREFIX + text + SUFFIX
    expected = evaluate(cfg, "request-output", full, {}, SALT).text  # type: ignore[arg-type]
    assert "[REDACTED:" in expected and not any(p in expected for p in PLANTED)
    for split in range(len(PREFIX), len(full) - len(SUFFIX) + 1):
        out, _ = _stream(cfg, [full[:split], full[split:]])
        assert out == expected, split


_LABELS = ("token=", "api_key=", "password=", "pwd=", "secret: ", '"token": "', "access_key=",
           "Authorization: Bearer ", "<apiToken>\n  ", "x=", "")  # fmt: skip
_PIECES = (AKIA, DOC, "changeme", "xxxxxxxx", "your_token_here", "<your-key>", "aaaaaaaaaaaa",
           "8.8.8.8", "eu-central-1", "Hunter2024", "jane.doe@fastmail.com", "token",
           "tokenizer")  # fmt: skip
_SEPS = ("&", ";", "\n", "/", ".", ":", " ", "&token=", "&api_key=", ";password=", "/pwd=",
         "\\ntoken=", ".secret=", "&access_key=", "\\n", ",", '"', "=", "'")  # fmt: skip


def _random_text(rnd: random.Random) -> str:
    out = []
    for _ in range(rnd.randint(1, 4)):
        out.append(rnd.choice(_LABELS))
        for _ in range(rnd.randint(1, 5)):
            piece = (
                rnd.choice(_PIECES)
                if rnd.random() < 0.6
                else "".join(
                    rnd.choices(string.ascii_letters + string.digits, k=rnd.choice((4, 12, 24)))
                )
            )
            out.append(piece + rnd.choice(_SEPS))
        out.append(rnd.choice((" ", "\n", "; ")))
    return "".join(out)


def _covered(spans: list) -> set[int]:  # type: ignore[type-arg]
    return {i for s in spans for i in range(s.start, s.end)}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_findings_are_as_before_unless_a_refused_value_held_a_secret_label(seed: int) -> None:
    """Where no refused labelled value holds a label of its kind whose value is a finding, the
    findings are those of the scan that skipped every refused value whole; where one does, every
    character that scan redacted is still redacted."""
    rnd = random.Random(seed)
    real = secrets._labels_in_refused
    changed = 0
    for _ in range(1500):
        text = _random_text(rnd)
        held: list[object] = []

        def spy(*args: object, held: list[object] = held) -> tuple[object, int]:
            got = real(*args)  # type: ignore[arg-type]
            if got[0]:
                held.append(got)
            return got

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(secrets, "_labels_in_refused", lambda *a: ((), a[5][2]))
            before = find_spans(text, DETECTORS)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(secrets, "_labels_in_refused", spy)
            after = find_spans(text, DETECTORS)
        if held:
            changed += 1
            assert _covered(before) <= _covered(after), text
        else:
            assert after == before, text
    assert changed > 50


@pytest.mark.parametrize("sep", [" ", "", "\n"])
def test_past_the_refused_labels_bound_what_refused_values_hold_stays_redacted(sep: str) -> None:
    """More than REFUSED_LABELS labels inside refused values (a dump of placeholder chains with
    secrets in it): past the bound a refused value holding labels of its kind is reported
    without its checks up to its last label, where the scan resumes, so every secret the full
    examination finds is still redacted; before it, nothing changes."""
    parts, planted = [], []
    for j in range(4000):
        parts.append(f"token=xxxxxxx{j}&")
        if j % 97 == 0:
            planted.append(f"{R24[j % 7 :]}{j}")
            parts.append(f"token={planted[-1]}&")
        if j % 20 == 19:
            parts.append(sep)
    text = "".join(parts)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(secrets, "REFUSED_LABELS", 10**9)
        full = find_spans(text, DETECTORS)
    bounded = find_spans(text, DETECTORS)
    for spans in (full, bounded):
        covered = _covered(spans)
        for p in planted:
            at = text.index(f"={p}&") + 1
            assert set(range(at, at + len(p))) <= covered, p
    head = text.index("token=xxxxxxx1000&")  # within the first 1,024 labels
    assert [s for s in bounded if s.end <= head] == [s for s in full if s.end <= head]
    assert len(bounded) > len(full)  # the bound was reached
