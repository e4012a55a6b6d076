"""The upstream HTTP client (`activities.upstream_http`) against a real loopback server whose
every byte the test chooses: keep-alive, chunked, close-delimited and gzip bodies, interim
answers, stale kept-alive connections, bodies cut short, abandoned responses, back-pressure."""

from __future__ import annotations

import asyncio
import functools
import gzip
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop

from activities.upstream_http import UpstreamConnectionError, UpstreamPool

LOOPS: dict[str, Callable[[Coroutine[Any, Any, None]], None]] = {
    "asyncio": asyncio.run, "uvloop": uvloop.run,  # the proxy runs on uvloop
}


def on_both_loops(fn: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[str], None]:
    """Run a scenario on asyncio's loop and on uvloop's (their transports differ)."""

    @pytest.mark.parametrize("loop", sorted(LOOPS))
    def test(loop: str) -> None:
        LOOPS[loop](fn())

    test.__name__ = fn.__name__
    return test


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]


class Server:
    """A loopback server: `handler` is run per connection; it counts connections and the
    requests it has read (head + body)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed_by_peer = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1/chat/completions"

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(r, w, self)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            w.close()

    async def read_request(self, r: asyncio.StreamReader) -> bytes | None:
        """One request (head and Content-Length body), or None at EOF."""
        try:
            head = await r.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await r.readexactly(length)
        self.requests.append(head + body)
        return head + body


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def keep_alive(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
    while await s.read_request(r) is not None:
        w.write(ok(b'{"n": %d}' % len(s.requests)))
        await w.drain()


H = {"content-type": "application/json", "authorization": "Bearer sk-test"}


@on_both_loops
async def test_a_kept_alive_connection_serves_the_next_request() -> None:
    pool = UpstreamPool()
    async with Server(keep_alive) as s:
        for n in (1, 2, 3):
            resp = await pool.post(s.url, b'{"a": 1}', H)
            assert resp.status == 200
            assert await resp.read() == b'{"n": %d}' % n
            resp.release()
        assert s.connections == 1
        head = s.requests[0]
        assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
        assert b"\r\nauthorization: Bearer sk-test\r\n" in head
        assert b"\r\ncontent-length: 8\r\n" in head and head.endswith(b'{"a": 1}')
    await pool.close()


@on_both_loops
async def test_a_chunked_body_arrives_piece_by_piece_before_its_end() -> None:
    go_on = asyncio.Event()

    async def chunked(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n"
                b"content-type: text/event-stream\r\n\r\n6\r\ndata: \r\n")
        await w.drain()
        await go_on.wait()
        w.write(b"3\r\nend\r\n0\r\n\r\n")
        await w.drain()
        await s.read_request(r)

    pool = UpstreamPool()
    async with Server(chunked) as s:
        resp = await pool.post(s.url, b"{}", H)
        assert resp.headers.get("Content-Type") == "text/event-stream"
        assert await asyncio.wait_for(resp.content.readany(), 5) == b"data: "
        assert not resp.content.at_eof()
        go_on.set()
        assert await resp.content.readany() == b"end"
        assert await resp.content.readany() == b""
        assert resp.content.at_eof()
        resp.release()
        assert len(pool._idle[next(iter(pool._idle))]) == 1  # read to its end: reusable
    await pool.close()


@on_both_loops
async def test_a_body_delimited_by_the_close_is_read_whole_and_the_connection_not_kept() -> None:
    async def close_delimited(r: asyncio.StreamReader, w: asyncio.StreamWriter,
                              s: Server) -> None:
        await s.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it")
        await w.drain()

    pool = UpstreamPool()
    async with Server(close_delimited) as s:
        for _ in range(2):
            resp = await pool.post(s.url, b"{}", H)
            assert await resp.read() == b"all of it"
            resp.release()
        assert s.connections == 2
    await pool.close()


@on_both_loops
async def test_a_gzip_body_is_decoded_whole_and_as_it_streams() -> None:
    doc = b'{"text": "' + b"hello " * 2000 + b'"}'
    packed = gzip.compress(doc)

    async def gz(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        while (req := await s.read_request(r)) is not None:
            assert b"\r\naccept-encoding: gzip\r\n" in req
            if len(s.requests) == 1:
                w.write(ok(packed, b"content-encoding: gzip\r\n"))
            else:  # chunked, in small pieces
                w.write(b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\n"
                        b"transfer-encoding: chunked\r\n\r\n")
                for i in range(0, len(packed), 7):
                    part = packed[i : i + 7]
                    w.write(b"%x\r\n%s\r\n" % (len(part), part))
                w.write(b"0\r\n\r\n")
            await w.drain()

    pool = UpstreamPool()
    async with Server(gz) as s:
        resp = await pool.post(s.url, b"{}", H)
        assert await resp.read() == doc
        resp.release()
        resp = await pool.post(s.url, b"{}", H)
        got = b""
        while chunk := await resp.content.readany():
            got += chunk
        assert got == doc
        resp.release()
    await pool.close()


@on_both_loops
async def test_an_unsupported_or_corrupt_encoding_is_a_connection_error() -> None:
    async def br(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        while await s.read_request(r) is not None:
            enc = b"br" if len(s.requests) == 1 else b"gzip"
            w.write(ok(b"not really compressed", b"content-encoding: " + enc + b"\r\n"))
            await w.drain()

    pool = UpstreamPool()
    async with Server(br) as s:
        with pytest.raises(UpstreamConnectionError, match="unsupported encoding"):
            await pool.post(s.url, b"{}", H)
        resp = await pool.post(s.url, b"{}", H)
        with pytest.raises(UpstreamConnectionError, match="gzip body is corrupt"):
            await resp.read()
        resp.release()
    await pool.close()


@on_both_loops
async def test_interim_answers_are_skipped() -> None:
    async def interim(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        while await s.read_request(r) is not None:
            w.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n"
                    + ok(b"{}", b"x-request-id: r1\r\n"))
            await w.drain()

    pool = UpstreamPool()
    async with Server(interim) as s:
        for _ in range(2):
            resp = await pool.post(s.url, b"{}", H)
            assert resp.status == 200 and resp.headers.get("X-Request-Id") == "r1"
            assert "link" not in resp.headers
            assert await resp.read() == b"{}"
            resp.release()
        assert s.connections == 1
    await pool.close()


@on_both_loops
async def test_a_kept_alive_connection_the_server_dropped_is_retried_once_on_a_new_one() -> None:
    async def one_then_close(r: asyncio.StreamReader, w: asyncio.StreamWriter,
                             s: Server) -> None:
        await s.read_request(r)
        w.write(ok(b"first"))  # says keep-alive (HTTP/1.1) but closes once idle
        await w.drain()
        await asyncio.sleep(0.05)

    pool = UpstreamPool()
    async with Server(one_then_close) as s:
        resp = await pool.post(s.url, b"{}", H)
        assert await resp.read() == b"first"
        resp.release()
        await asyncio.sleep(0.3)  # the server has closed the idle connection by now
        resp = await pool.post(s.url, b"{}", H)
        assert await resp.read() == b"first"
        resp.release()
        assert s.connections == 2 and len(s.requests) == 2
    await pool.close()


@on_both_loops
async def test_a_fresh_connection_closed_before_answering_is_an_error_not_a_retry() -> None:
    async def hang_up(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.read_request(r)

    pool = UpstreamPool()
    async with Server(hang_up) as s:
        with pytest.raises(UpstreamConnectionError, match="before answering"):
            await pool.post(s.url, b"{}", H)
        assert len(s.requests) == 1  # sent once: a call the provider may have run
    await pool.close()


@on_both_loops
async def test_a_body_cut_short_is_an_error_and_its_connection_is_not_kept() -> None:
    async def short(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this")
        await w.drain()

    pool = UpstreamPool()
    async with Server(short) as s:
        resp = await pool.post(s.url, b"{}", H)
        assert await resp.content.readany() == b"only this"
        with pytest.raises(UpstreamConnectionError, match="middle of the body"):
            await resp.content.readany()
        resp.release()
        assert not any(pool._idle.values())
    await pool.close()


@on_both_loops
async def test_bad_http_from_the_upstream_is_a_connection_error() -> None:
    async def garbage(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.read_request(r)
        w.write(b"NOT HTTP AT ALL\r\n\r\n")
        await w.drain()
        await asyncio.sleep(1)

    pool = UpstreamPool()
    async with Server(garbage) as s:
        with pytest.raises(UpstreamConnectionError, match="bad HTTP"):
            await pool.post(s.url, b"{}", H)
    await pool.close()


@on_both_loops
async def test_an_abandoned_response_closes_its_connection_so_the_provider_sees_it() -> None:
    peer_gone = asyncio.Event()

    async def slow(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await w.drain()
        await r.read()  # returns b"" once the client closes
        peer_gone.set()

    pool = UpstreamPool()
    async with Server(slow) as s:
        resp = await pool.post(s.url, b"{}", H)
        assert await resp.content.readany() == b"first"
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await resp.content.readany()
        resp.release()  # not read to its end: closed, not pooled
        await asyncio.wait_for(peer_gone.wait(), 5)
        assert not any(pool._idle.values())
    await pool.close()


@on_both_loops
async def test_a_request_cancelled_before_its_answer_closes_its_connection() -> None:
    peer_gone = asyncio.Event()

    async def never(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.read_request(r)
        await r.read()
        peer_gone.set()

    pool = UpstreamPool()
    async with Server(never) as s:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await pool.post(s.url, b"{}", H)
        await asyncio.wait_for(peer_gone.wait(), 5)
    await pool.close()


@on_both_loops
async def test_an_unreachable_upstream_is_a_connection_error_naming_no_host() -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    pool = UpstreamPool()
    with pytest.raises(UpstreamConnectionError) as err:
        await pool.post(f"http://127.0.0.1:{port}/v1/messages", b"{}", H)
    assert "127.0.0.1" not in str(err.value) and "ConnectionRefusedError" in str(err.value)
    with pytest.raises(UpstreamConnectionError, match="scheme"):
        await pool.post("ftp://example.com/x", b"{}", H)
    await pool.close()


@on_both_loops
async def test_a_header_that_could_split_the_request_is_never_sent() -> None:
    pool = UpstreamPool()
    async with Server(keep_alive) as s:
        for bad in ({"anthropic-beta": "x\r\nx-injected: 1"}, {"a\nb": "v"}, {"a:b": "v"},
                    {"x": "nul\0"}):
            with pytest.raises(UpstreamConnectionError, match="cannot be sent"):
                await pool.post(s.url, b"{}", {**H, **bad})
        assert s.requests == []
    await pool.close()


@on_both_loops
async def test_idle_connections_past_the_keepalive_timeout_are_not_reused() -> None:
    pool = UpstreamPool(keepalive_timeout=0.1)
    async with Server(keep_alive) as s:
        for _ in range(2):
            resp = await pool.post(s.url, b"{}", H)
            await resp.read()
            resp.release()
            await asyncio.sleep(0.25)
        assert s.connections == 2
    await pool.close()


@on_both_loops
async def test_an_unread_streamed_body_is_buffered_only_up_to_a_bound() -> None:
    size = 8 << 20

    async def big(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
        block = b"x" * 65536
        for _ in range(size // len(block)):
            w.write(block)
            await w.drain()
        await s.read_request(r)

    pool = UpstreamPool()
    async with Server(big) as s:
        resp = await pool.post(s.url, b"{}", H)
        await asyncio.sleep(0.5)  # the server writes as fast as the client lets it
        conn = resp._conn
        assert conn.buffered < 2 << 20  # paused near 1 MiB (plus what one read brings)
        assert len(await resp.read()) == size
        resp.release()
    await pool.close()


@on_both_loops
async def test_an_answer_read_whole_past_max_body_is_refused_and_its_connection_closed() -> None:
    size = 3 << 20
    peer_gone = asyncio.Event()

    async def big(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
        try:
            for _ in range(size // 65536):
                w.write(b"x" * 65536)
                await w.drain()
            await r.read()  # b"" once the client closes, or a reset
        except ConnectionError:
            pass
        peer_gone.set()

    pool = UpstreamPool(max_body=1 << 20)
    async with Server(big) as s:
        resp = await pool.post(s.url, b"{}", H)
        with pytest.raises(UpstreamConnectionError, match="over 1048576 bytes"):
            await resp.read()
        resp.release()
        await asyncio.wait_for(peer_gone.wait(), 5)
        assert not any(pool._idle.values())
    await pool.close()


@on_both_loops
async def test_bytes_after_the_answer_in_the_same_read_are_no_part_of_it() -> None:
    """A second response glued to the first (pipelining garbage, a smuggled answer) must not
    be appended to the first's body, nor override its headers, nor leave the connection
    reusable."""

    async def glued(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        while await s.read_request(r) is not None:
            w.write(ok(b"ok", b"x-id: 1\r\n") + ok(b"smuggled", b"x-id: 2\r\n"))
            await w.drain()

    pool = UpstreamPool()
    async with Server(glued) as s:
        resp = await pool.post(s.url, b"{}", H)
        assert await resp.read() == b"ok"
        assert resp.headers.get("x-id") == "1"
        resp.release()
        resp = await pool.post(s.url, b"{}", H)
        assert await resp.read() == b"ok"
        resp.release()
        assert s.connections == 2  # the first connection was not trusted again
    await pool.close()


@on_both_loops
async def test_a_response_head_that_never_ends_is_refused_at_a_bound() -> None:
    """A header line without end is refused once the head passes its bound, not buffered
    without limit (the parser accumulates a header's pieces until its CRLF)."""
    sent = 0

    async def endless(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        nonlocal sent
        await s.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nx-endless: ")
        block = b"a" * 65536
        for _ in range(512):  # 32 MiB at most
            w.write(block)
            sent += len(block)
            await w.drain()

    pool = UpstreamPool()
    async with Server(endless) as s:
        with pytest.raises(UpstreamConnectionError, match="too large"):
            await asyncio.wait_for(pool.post(s.url, b"{}", H), 10)
        assert sent < 16 << 20
    await pool.close()


@on_both_loops
async def test_a_request_the_server_read_and_dropped_later_is_not_sent_again() -> None:
    """A reused connection closed without an answer well after the request went out: the
    provider may be running the call, so it is an error, not a second (billed) request."""

    async def read_then_drop(r: asyncio.StreamReader, w: asyncio.StreamWriter,
                             s: Server) -> None:
        await s.read_request(r)
        w.write(ok(b"first"))
        await w.drain()
        await s.read_request(r)
        await asyncio.sleep(1.0)  # the provider works on it, then its balancer drops it

    pool = UpstreamPool()
    async with Server(read_then_drop) as s:
        resp = await pool.post(s.url, b"{}", H)
        assert await resp.read() == b"first"
        resp.release()
        with pytest.raises(UpstreamConnectionError, match="before answering"):
            await pool.post(s.url, b"{}", H)
        assert len(s.requests) == 2  # not a third
    await pool.close()


@on_both_loops
async def test_a_kept_alive_connection_closed_as_the_request_arrives_is_retried() -> None:
    """The race the retry is for: the server closes its idle connection just as the request
    reaches it (the close crosses the request); the request goes once more, on a new one."""

    async def close_on_next(r: asyncio.StreamReader, w: asyncio.StreamWriter,
                            s: Server) -> None:
        if s.connections == 1:
            await s.read_request(r)
            w.write(ok(b"first"))
            await w.drain()
            await r.read(1)  # the next request's first byte: close at once, unanswered
            return
        while await s.read_request(r) is not None:
            w.write(ok(b"second"))
            await w.drain()

    pool = UpstreamPool()
    async with Server(close_on_next) as s:
        resp = await pool.post(s.url, b"{}", H)
        assert await resp.read() == b"first"
        resp.release()
        resp = await pool.post(s.url, b"{}", H)
        assert await resp.read() == b"second"
        resp.release()
        assert s.connections == 2
    await pool.close()


@on_both_loops
async def test_idle_connections_under_the_busy_one_are_closed_once_past_the_keepalive() -> None:
    """After a burst, the connections left idle under the one in use (the pool reuses the
    newest first) are closed once past the keepalive timeout, not held open for as long as
    the provider tolerates them."""
    pool = UpstreamPool(keepalive_timeout=0.2)
    async with Server(keep_alive) as s:
        burst = await asyncio.gather(*(pool.post(s.url, b"{}", H) for _ in range(3)))
        for resp in burst:
            await resp.read()
            resp.release()
        for _ in range(6):  # one call at a time, each within the timeout of the last
            resp = await pool.post(s.url, b"{}", H)
            await resp.read()
            resp.release()
            await asyncio.sleep(0.07)
        assert s.connections == 3
        assert len(pool._open) == 1
    await pool.close()


@on_both_loops
async def test_an_error_quotes_no_more_than_a_bounded_piece_of_what_the_upstream_sent() -> None:
    """Errors reach callers (the router's 502 and stream-error messages): an upstream's header
    value is quoted only as a short prefix, not up to the whole 64 KiB head."""

    async def long_encoding(r: asyncio.StreamReader, w: asyncio.StreamWriter,
                            s: Server) -> None:
        await s.read_request(r)
        w.write(ok(b"x", b"content-encoding: " + b"z" * 20000 + b"\r\n"))
        await w.drain()

    pool = UpstreamPool()
    async with Server(long_encoding) as s:
        with pytest.raises(UpstreamConnectionError, match="unsupported encoding") as err:
            await pool.post(s.url, b"{}", H)
        assert len(str(err.value)) < 200
    await pool.close()


@on_both_loops
async def test_a_slightly_malformed_head_is_read_as_aiohttp_read_it() -> None:
    """aiohttp's client (the one this replaced) read responses leniently: a bare LF ending a
    head line, a control character in a header value, spaces after a chunk size. Providers
    and their proxies that send these kept working; they still do."""
    answers = [
        b"HTTP/1.1 200 OK\ncontent-length: 2\n\nok",
        b"HTTP/1.1 200 OK\r\nx-debug: a\x01b\r\ncontent-length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2  \r\nok\r\n0\r\n\r\n",
    ]

    async def sloppy(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        while await s.read_request(r) is not None:
            w.write(answers[len(s.requests) - 1])
            await w.drain()

    pool = UpstreamPool()
    async with Server(sloppy) as s:
        for _ in answers:
            resp = await pool.post(s.url, b"{}", H)
            assert (resp.status, await resp.read()) == (200, b"ok")
            resp.release()
    await pool.close()


@on_both_loops
async def test_a_gzip_body_of_several_members_is_decoded_whole() -> None:
    """A gzip body may be several gzip members one after another (a compressing proxy that
    flushes per piece): each is decoded, not the first alone with the rest dropped silently."""
    members = gzip.compress(b'{"a": ') + gzip.compress(b'"b"}')

    async def multi(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        while await s.read_request(r) is not None:
            w.write(ok(members, b"content-encoding: gzip\r\n"))
            await w.drain()

    pool = UpstreamPool()
    async with Server(multi) as s:
        resp = await pool.post(s.url, b"{}", H)
        assert await resp.read() == b'{"a": "b"}'
        resp.release()
    await pool.close()


@on_both_loops
async def test_a_gzip_bomb_is_refused_before_it_is_inflated_in_memory() -> None:
    """A small gzip body that inflates some hundredfold (64 MiB of zeros) is refused
    once it expands past what JSON or SSE ever does, not decoded whole in memory; a body that
    compresses as text does is decoded."""
    bomb = gzip.compress(bytes(64 << 20))
    text = b'{"choices": [{"text": "' + b"the same words again and again, " * 200_000 + b'"}]}'
    bodies = [bomb, gzip.compress(text)]

    async def inflating(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        while await s.read_request(r) is not None:
            w.write(ok(bodies[len(s.requests) - 1], b"content-encoding: gzip\r\n"))
            await w.drain()

    pool = UpstreamPool()
    async with Server(inflating) as s:
        resp = await pool.post(s.url, b"{}", H)
        with pytest.raises(UpstreamConnectionError, match="expands"):
            await resp.read()
        resp.release()
        resp = await pool.post(s.url, b"{}", H)
        assert await resp.read() == text
        resp.release()
    await pool.close()


@on_both_loops
async def test_closing_a_released_response_leaves_the_next_request_on_its_connection() -> None:
    """Once released, a response's connection is the pool's (maybe another request's): a late
    `close()` on the old response (a cancellation after the release) does not cut it."""
    pool = UpstreamPool()
    async with Server(keep_alive) as s:
        first = await pool.post(s.url, b"{}", H)
        await first.read()
        first.release()
        second = await pool.post(s.url, b"{}", H)
        first.close()
        assert await second.read() == b'{"n": 2}'
        second.release()
        third = await pool.post(s.url, b"{}", H)
        assert await third.read() == b'{"n": 3}'
        third.release()
        assert s.connections == 1
    await pool.close()


@on_both_loops
async def test_a_server_closing_each_connection_at_once_fails_every_request_promptly() -> None:
    """A server that accepts and closes at once (overloaded, or not HTTP): each request fails
    as a connection error, none waits for an answer that cannot come (the close may be seen
    before the request is written)."""

    async def slam(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        return

    pool = UpstreamPool()
    async with Server(slam) as s:
        for _ in range(30):
            with pytest.raises(UpstreamConnectionError):
                await asyncio.wait_for(pool.post(s.url, b"{}", H), 2)
        assert not pool._open
    await pool.close()


@functools.cache
def _tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for localhost: a server context with it and a client context
    that trusts it (and verifies as the pool's default context does)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    tmp = Path(tempfile.mkdtemp())
    key, cert = tmp / "key.pem", tmp / "cert.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client


class TLSServer(Server):
    """The loopback server over TLS; `names` records the SNI each handshake asked for."""

    def __init__(self, handler: Handler) -> None:
        super().__init__(handler)
        self.names: list[str | None] = []

    async def __aenter__(self) -> TLSServer:
        ctx = _tls_contexts()[0]
        ctx.sni_callback = lambda _sock, name, _ctx: self.names.append(name)
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ctx)
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"https://localhost:{port}/v1/chat/completions"


@on_both_loops
async def test_https_verifies_the_certificate_and_names_the_host_in_sni() -> None:
    async with TLSServer(keep_alive) as s:
        untrusting = UpstreamPool()  # the system's CAs: a self-signed certificate is refused
        with pytest.raises(UpstreamConnectionError, match="cannot connect") as err:
            await untrusting.post(s.url, b"{}", H)
        assert "localhost" not in str(err.value)
        await untrusting.close()
        pool = UpstreamPool(ssl_context=_tls_contexts()[1])
        for n in (1, 2):
            resp = await pool.post(s.url, b"{}", H)
            assert await resp.read() == b'{"n": %d}' % n
            resp.release()
        # the refused handshake never became a connection; both asked for localhost by SNI
        assert s.connections == 1 and s.names == ["localhost", "localhost"]
        await pool.close()


@on_both_loops
async def test_a_tls_server_closing_each_connection_after_the_handshake_fails_promptly() -> None:
    """The close can arrive with the handshake's last bytes, before the request is written:
    the request fails as a connection error at once, it does not wait for an answer."""

    async def slam(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        return

    pool = UpstreamPool(ssl_context=_tls_contexts()[1])
    async with TLSServer(slam) as s:
        for _ in range(10):
            with pytest.raises(UpstreamConnectionError):
                await asyncio.wait_for(pool.post(s.url, b"{}", H), 2)
        assert not pool._open
    await pool.close()


@on_both_loops
async def test_a_body_delimited_by_the_close_cut_by_a_reset_is_an_error() -> None:
    """A body without length ends at the close; a reset (RST) is not that end but a break:
    what came is not the whole body. Likewise a gzip body cut before its end."""

    async def reset(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\npart of it")
        await w.drain()
        await asyncio.sleep(0.1)
        w.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        w.transport.abort()

    async def cut_gzip(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.read_request(r)
        packed = gzip.compress(b'{"text": "' + b"hello " * 2000 + b'"}')
        w.write(b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\nconnection: close\r\n\r\n"
                + packed[: len(packed) // 2])
        await w.drain()

    pool = UpstreamPool()
    for handler in (reset, cut_gzip):
        async with Server(handler) as s:
            resp = await pool.post(s.url, b"{}", H)
            with pytest.raises(UpstreamConnectionError):
                await resp.read()
            resp.release()
    await pool.close()


@on_both_loops
async def test_a_request_on_a_connection_already_lost_fails_at_once() -> None:
    """A connection can be lost between its connect and the request's write (the loop ran the
    close first): the request fails then, it does not wait for an answer that cannot come."""
    from activities.upstream_http import _Target

    pool = UpstreamPool()
    async with Server(keep_alive) as s:
        conn = await pool._connect(_Target(s.url))
        conn.close()
        await asyncio.sleep(0.05)  # connection_lost has run
        with pytest.raises(UpstreamConnectionError, match="before answering"):
            await asyncio.wait_for(conn.send(b"POST / HTTP/1.1\r\n\r\n", b""), 1)
    await pool.close()
