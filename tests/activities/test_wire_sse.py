"""SSE parsing as a relay sees it: arbitrary TCP slices must yield the same events."""

from __future__ import annotations

import pytest

from activities.wire.sse import SSEEvent, SSEParser, encode_sse

ANTHROPIC_STREAM = (
    b"event: message_start\n"
    b'data: {"type":"message_start","message":{"id":"msg_1"}}\n\n'
    b": keep-alive comment\n\n"
    b"event: ping\n"
    b'data: {"type": "ping"}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","delta":{"text":"h\xc3\xa9llo"}}\n\n'
    b"event: message_stop\n"
    b'data: {"type":"message_stop"}\n\n'
)

OPENAI_STREAM = (
    b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'
    b'data: {"choices":[{"delta":{"content":"b"}}]}\n\n'
    b"data: [DONE]\n\n"
)


def _whole(stream: bytes) -> list[SSEEvent]:
    return SSEParser().feed(stream)


def _bytewise(stream: bytes) -> list[SSEEvent]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    for i in range(len(stream)):
        events.extend(parser.feed(stream[i : i + 1]))
    return events


def test_anthropic_stream_yields_named_events_and_skips_comments() -> None:
    events = _whole(ANTHROPIC_STREAM)
    assert [e.event for e in events] == [
        "message_start",
        "ping",
        "content_block_delta",
        "message_stop",
    ]
    assert events[1].data == b'{"type": "ping"}'
    assert "héllo" in events[2].data.decode()


def test_openai_stream_yields_unnamed_events_including_done() -> None:
    events = _whole(OPENAI_STREAM)
    assert [e.event for e in events] == [None, None, None]
    assert events[-1].data == b"[DONE]"


@pytest.mark.parametrize("stream", [ANTHROPIC_STREAM, OPENAI_STREAM])
def test_feeding_byte_by_byte_equals_feeding_whole(stream: bytes) -> None:
    assert _bytewise(stream) == _whole(stream)


@pytest.mark.parametrize("stream", [ANTHROPIC_STREAM, OPENAI_STREAM])
def test_crlf_framing_split_anywhere_gives_same_events(stream: bytes) -> None:
    crlf = stream.replace(b"\n", b"\r\n")
    expected = _whole(stream)
    assert _bytewise(crlf) == expected
    for cut in range(len(crlf)):
        parser = SSEParser()
        assert parser.feed(crlf[:cut]) + parser.feed(crlf[cut:]) == expected


def test_bare_cr_line_endings_are_accepted() -> None:
    stream = b"event: a\rdata: 1\r\rdata: 2\r\r"
    # The final CR may be half of a CRLF, so its event completes on the next bytes or at flush.
    parser = SSEParser()
    events = parser.feed(stream) + parser.flush()
    assert events == [SSEEvent("a", b"1"), SSEEvent(None, b"2")]


def test_multi_line_data_is_joined_with_newlines() -> None:
    events = SSEParser().feed(b"data: first\ndata: second\ndata:third\n\n")
    assert events == [SSEEvent(None, b"first\nsecond\nthird")]


def test_incomplete_event_waits_for_its_blank_line() -> None:
    parser = SSEParser()
    assert parser.feed(b"event: x\ndata: 1\n") == []
    assert parser.feed(b"\n") == [SSEEvent("x", b"1")]


def test_flush_delivers_an_event_missing_its_final_blank_line() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: [DONE]") == []
    assert parser.flush() == [SSEEvent(None, b"[DONE]")]


def test_event_name_does_not_leak_into_the_next_event() -> None:
    events = SSEParser().feed(b"event: error\ndata: 1\n\ndata: 2\n\n")
    assert events == [SSEEvent("error", b"1"), SSEEvent(None, b"2")]


def test_encode_sse_round_trips_through_the_parser() -> None:
    payloads = [(b'{"a":1}', None), (b'{"b":2}', "message_delta"), (b"line1\nline2", "x")]
    wire = b"".join(encode_sse(data, event) for data, event in payloads)
    assert SSEParser().feed(wire) == [SSEEvent(e, d) for d, e in payloads]


def test_encode_sse_matches_provider_framing() -> None:
    assert encode_sse(b"[DONE]") == b"data: [DONE]\n\n"
    assert encode_sse(b"{}", "ping") == b"event: ping\ndata: {}\n\n"
