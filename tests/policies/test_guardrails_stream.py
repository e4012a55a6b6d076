"""StreamGuard: a secret split across deltas at any point is still redacted or blocked."""

from __future__ import annotations

from policies.guardrails import StreamGuard, evaluate, load_guardrails

SALT = b"salt"
SECRET = "sk-ant-api03-" + "Zx8vQ2mN7pL4kR9tW3yB6cF1hJ5dG0sA" * 2 + "AA"
PREFIX = "Sure, here is the configuration you asked for. " * 8
SUFFIX = " Let me know if anything else is needed. " * 8


def _cfg(mode: str) -> object:
    extra = "mode: mutate" if mode == "mutate" else "mode: validate\n    on_match: block"
    return load_guardrails(
        "type: gateway-guardrails-config\nname: s\nrules:\n  - id: s\n"
        f"    hooks: [request-output]\n    detectors: [secrets, pii]\n    {extra}\n"
    )


def _run(cfg: object, chunks: list[str]) -> tuple[str, list, bool]:
    guard = StreamGuard(cfg, "request-output", {}, SALT)  # type: ignore[arg-type]
    out, events, blocked = [], [], False
    for c in chunks:
        v = guard.feed(c)
        out.append(v.text)
        events += v.events
        if v.action == "blocked":
            return "".join(out), events, True
    v = guard.finish()
    out.append(v.text)
    events += v.events
    return "".join(out), events, blocked or v.action == "blocked"


def test_mutate_redacts_a_secret_split_at_every_position() -> None:
    cfg = _cfg("mutate")
    text = PREFIX + SECRET + SUFFIX
    expected = evaluate(cfg, "request-output", text, {}, SALT).text  # type: ignore[arg-type]
    assert "[REDACTED:anthropic_api_key]" in expected
    start = len(PREFIX)
    for split in range(start, start + len(SECRET) + 1):
        out, events, blocked = _run(cfg, [text[:split], text[split:]])
        assert out == expected, split
        assert SECRET not in out and not blocked
        assert [e.type for e in events] == ["anthropic_api_key"]


def test_validate_blocks_a_secret_split_at_every_position_before_it_is_emitted() -> None:
    cfg = _cfg("validate")
    text = PREFIX + SECRET + SUFFIX
    start = len(PREFIX)
    for split in range(start, start + len(SECRET) + 1):
        out, events, blocked = _run(cfg, [text[:split], text[split:]])
        assert blocked, split
        assert SECRET[:8] not in out
        assert [e.action for e in events] == ["blocked"]


def test_small_deltas_stream_through_with_redaction_and_nothing_lost() -> None:
    cfg = _cfg("mutate")
    text = PREFIX + "call +44 20 7946 0958 or use " + SECRET + SUFFIX
    chunks = [text[i : i + 3] for i in range(0, len(text), 3)]
    out, events, _ = _run(cfg, chunks)
    assert out == evaluate(cfg, "request-output", text, {}, SALT).text  # type: ignore[arg-type]
    assert [e.type for e in events] == ["phone", "anthropic_api_key"]


def test_text_is_emitted_before_the_stream_ends() -> None:
    cfg = _cfg("mutate")
    guard = StreamGuard(cfg, "request-output", {}, SALT)  # type: ignore[arg-type]
    emitted = "".join(guard.feed(w + " ").text for w in ("word",) * 400)
    assert len(emitted) > 1000
    assert emitted + guard.finish().text == "word " * 400


def test_a_private_key_block_is_held_until_its_end_line_then_redacted_whole() -> None:
    cfg = _cfg("mutate")
    body = "\n".join(
        "MIIEowIBAAKCAQEA7x9Qk2Lm4Np6Rs8Tu0Vw2Xy4Za6Bc8De0Fg2Hi4Jk6Lm8No0Pq" for _ in range(40)
    )
    key = f"-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----"
    text = PREFIX + key + SUFFIX
    chunks = [text[i : i + 7] for i in range(0, len(text), 7)]
    out, events, _ = _run(cfg, chunks)
    assert "MIIEowIBAAKCAQEA" not in out
    assert out == PREFIX + "[REDACTED:private_key]" + SUFFIX
    assert [e.type for e in events] == ["private_key"]


def test_without_matching_rules_deltas_pass_straight_through() -> None:
    cfg = _cfg("mutate")
    guard = StreamGuard(cfg, "tool-input", {}, SALT)  # type: ignore[arg-type]
    assert guard.feed(SECRET).text == SECRET


def test_a_stream_that_is_one_long_token_is_scanned_a_bounded_number_of_times(
    monkeypatch: object,
) -> None:
    import policies.guardrails.stream as stream

    calls = []
    real = stream.scan

    def counting(text, detectors, salt, spans=None):  # type: ignore[no-untyped-def]
        calls.append(len(text))
        return real(text, detectors, salt, spans)

    monkeypatch.setattr(stream, "scan", counting)  # type: ignore[attr-defined]
    text = "sk-" * 22_000  # 66,000 characters, no whitespace: nothing can be emitted early
    out, _, blocked = _run(_cfg("mutate"), [text[i : i + 16] for i in range(0, len(text), 16)])
    assert out == text and not blocked
    # One scan per 32 characters (~2,000 scans of up to 16 KiB) before; doubling: a few dozen.
    assert len(calls) < 100 and sum(calls) < 8 * len(text), (len(calls), sum(calls))
