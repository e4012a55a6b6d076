"""The upstream HTTP/1.1 client of the governed call path: pooled keep-alive connections to the
providers, one request at a time per connection, parsed by httptools (the parser uvicorn uses).

Why not aiohttp's ClientSession here: it is a general client (cookies, redirects, proxies,
tracing hooks, multipart, auth helpers), and a governed call paid ~200 µs of its Python per
upstream request on the proxy's core, a quarter of the whole call
(`benchmarks/upstream_client.py` measures both side by side). The provider calls need none of
that: a POST of a JSON body to a configured URL, the status, a few headers, and the body either
whole or as it arrives (SSE). This module does exactly that.

    pool = UpstreamPool()
    resp = await pool.post("https://api.openai.com/v1/chat/completions", body, headers)
    resp.status, resp.headers.get("retry-after")       # headers: case-insensitive, last wins
    raw = await resp.read()                             # the whole body, or
    chunk = await resp.content.readany()                # the next piece; b"" at the end
    resp.release()                                      # back to the pool, or closed

Errors: `UpstreamConnectionError` (refused, reset, TLS, DNS, closed mid-response, bad HTTP,
an unsupported content encoding). Timeouts are the caller's (`asyncio.timeout` around the
calls); a response abandoned by a cancellation or before its end closes its connection, so the
provider sees the caller leave and a half-read connection is never reused.

Connections: http and https (the system's CA store), `TCP_NODELAY`, kept idle for
`keepalive_timeout` seconds (60), no limit on how many are open at once (the proxy's own limits
bound concurrency). A request that finds its reused connection closed by the server before any
byte of the answer and within `_RETRY_WITHIN` of being sent (an idle keep-alive the server
dropped as the request crossed it) is sent once more on a new connection; a later close is an
error (the provider may have read the request and be running, and billing, the call). Bodies
are decoded from gzip (the only encoding asked for), within a bound on how far they expand.
While a streamed body is not being read, at most ~1 MiB of it is buffered (the socket is
paused beyond that); a body read whole (`read`) is refused past `max_body` (64 MiB).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
import zlib
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

KEEPALIVE_TIMEOUT = 60.0
_PAUSE_AT = 1 << 20  # buffered body bytes at which the socket is paused
_RESUME_AT = 1 << 18
_MAX_HEAD = 64 * 1024  # response head bytes (status line + headers) accepted
# A reused connection lost before any byte of the answer is retried only this soon after the
# request went out: the close crossed the request (the server dropped its idle connection),
# rather than the provider having read the request and worked on it (it may still be running
# and billing that call; a second copy would be billed again).
_RETRY_WITHIN = 0.5
# A gzip body may decode to this much, and beyond it to this many times its encoded size: text
# and JSON stay far below (a model repeating one phrase: ~400x over a few MB); a gzip bomb
# (zeros: ~1000x) is refused before it is inflated in memory.
_INFLATE_FLOOR = 32 << 20
_INFLATE_RATIO = 200
MAX_BODY = 64 << 20  # a non-streamed answer read whole (`read`): far above any LLM answer
_MAX_URLS = 1024  # parsed URL cache entries (URLs come from config: a few per target)
_BAD_HEADER_CHARS = ("\r", "\n", "\0")


class UpstreamConnectionError(Exception):
    """The upstream could not be reached or broke the exchange (see the module docstring)."""


class _AfterAnswer(Exception):
    """Bytes after a complete answer, in the same read (raised from the parser's callback)."""


class Headers(Mapping[str, str]):
    """A response's headers, looked up case-insensitively (a repeated header: the last).
    Decoded on first use: a successful call never looks at them."""

    __slots__ = ("_d", "_pairs")

    def __init__(self, pairs: list[tuple[bytes, bytes]]) -> None:
        self._pairs = pairs
        self._d: dict[str, str] | None = None

    def _map(self) -> dict[str, str]:
        d = self._d
        if d is None:
            d = self._d = {
                n.decode("latin-1").lower(): v.decode("latin-1") for n, v in self._pairs
            }
        return d

    def get(self, name: str, default: Any = None) -> Any:
        return self._map().get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return self._map()[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._map()

    def __len__(self) -> int:
        return len(self._map())

    def __iter__(self) -> Iterator[str]:
        return iter(self._map())


class _Target:
    """A parsed upstream URL: where to connect and what to put in the request line."""

    __slots__ = ("host", "host_header", "key", "path", "port", "tls")

    def __init__(self, url: str) -> None:
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise UpstreamConnectionError(f"unsupported upstream URL scheme {u.scheme!r}")
        self.tls = u.scheme == "https"
        self.host = u.hostname
        try:
            port = u.port
        except ValueError:
            raise UpstreamConnectionError("upstream URL has a bad port") from None
        self.port = port or (443 if self.tls else 80)
        self.path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls else 80
        self.host_header = host if self.port == default else f"{host}:{self.port}"
        self.key = (self.tls, self.host, self.port)


class _Connection(asyncio.Protocol):
    """One connection and the response being read on it (httptools callbacks)."""

    def __init__(self, pool: UpstreamPool, key: tuple[bool, str, int]) -> None:
        self.pool, self.key = pool, key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.reused = False
        self.sent_at = 0.0
        self._parser = httptools.HttpResponseParser(self)
        # As leniently as aiohttp's client read responses (it set the same three): a bare LF
        # ending a head line, any byte in a header value, spaces after a chunk size. Only
        # retry-after is read from the headers; nothing in them is passed on.
        self._parser.set_dangerous_leniencies(
            lenient_headers=True, lenient_optional_cr_before_lf=True,
            lenient_spaces_after_chunk_size=True,
        )
        self._reset()

    def _reset(self) -> None:
        self.head: asyncio.Future[None] | None = None
        self.status = 0
        self._hdrs: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._raw_head = 0  # bytes read while the head is incomplete (the parser buffers them)
        self.headers_done = False
        self.complete = False
        self.received = False  # any byte of this exchange's answer
        self.error: Exception | None = None
        self.body: deque[bytes] = deque()
        self.buffered = 0
        self.waiter: asyncio.Future[None] | None = None
        self.keep_alive = False
        self._gunzip: Any = None
        self._zin = self._zout = 0  # gzip bytes fed, bytes they decoded to
        self._paused = False
        self._interim = False

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no asyncio subclass
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def data_received(self, data: bytes) -> None:
        self.received = True
        if self.error is not None:
            return
        if self.complete:  # bytes after the answer (or on an idle connection): not HTTP we
            self.close()  # can trust; what was already read stays readable
            return
        if not self.headers_done:
            self._raw_head += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamConnectionError("the upstream switched protocols"))
        except httptools.HttpParserError as exc:
            inner = exc.__context__  # a callback's own error comes wrapped
            if isinstance(inner, _AfterAnswer):  # what was read stays readable; the
                self.close()  # connection is not trusted again
                return
            self._fail(inner if isinstance(inner, UpstreamConnectionError)
                       else UpstreamConnectionError(f"bad HTTP from the upstream: {exc}"))
            return
        if not self.headers_done and self._raw_head > _MAX_HEAD and self.error is None:
            self._fail(UpstreamConnectionError("the upstream's response head is too large"))

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._forget(self)
        if self.complete or self.error is not None:
            return
        if (self.headers_done and not self._has_length() and exc is None
                and (self._gunzip is None or self._gunzip.eof)):
            self._finish()  # a body delimited by the close (no length, not chunked), whole:
            return  # not cut by a reset, nor before its gzip stream's end
        what = "closed the connection before answering" if not self.headers_done else (
            "closed the connection in the middle of the body"
        )
        self._fail(UpstreamConnectionError(f"the upstream {what}"))

    # -- httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:  # a second answer glued to this one: never part of it
            raise _AfterAnswer

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value)
        if self._head_bytes > _MAX_HEAD:
            raise UpstreamConnectionError("the upstream's response head is too large")
        if not self.headers_done:  # a chunked body's trailers are not the response's headers
            self._hdrs.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue, 103 Early Hints): skip it
            self._hdrs = []
            self._head_bytes = self._raw_head = 0
            self._interim = True
            return
        self.status = status
        enc = ""
        for n, v in self._hdrs:
            if n.lower() == b"content-encoding":
                enc = v.decode("latin-1").strip().lower()
        if enc == "gzip":
            self._gunzip = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif enc not in ("", "identity"):
            raise UpstreamConnectionError(
                f"the upstream sent an unsupported encoding {enc[:40]!r}"
            )
        self.headers_done = True
        if self.head is not None and not self.head.done():
            self.head.set_result(None)

    def on_body(self, data: bytes) -> None:
        if self._gunzip is not None:
            self._zin += len(data)
            try:
                data = self._inflate(data)
                while self._gunzip.eof and self._gunzip.unused_data:  # the next gzip member
                    rest = self._gunzip.unused_data
                    self._gunzip = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    data += self._inflate(rest)
            except zlib.error:
                raise UpstreamConnectionError("the upstream's gzip body is corrupt") from None
            if not data:
                return
        self.body.append(data)
        self.buffered += len(data)
        if self.buffered >= _PAUSE_AT and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self._gunzip is not None:
            try:
                tail = self._gunzip.flush()
            except zlib.error:
                raise UpstreamConnectionError("the upstream's gzip body is corrupt") from None
            if tail:
                self.body.append(tail)
                self.buffered += len(tail)
        self.keep_alive = self._parser.should_keep_alive()
        self._finish()

    # -- helpers -------------------------------------------------------------------------------

    def _inflate(self, data: bytes) -> bytes:
        allowed = max(_INFLATE_FLOOR, _INFLATE_RATIO * self._zin) - self._zout
        out = self._gunzip.decompress(data, allowed + 1)  # never more than one past the bound
        self._zout += len(out)
        if len(out) > allowed:
            raise UpstreamConnectionError("the upstream's gzip body expands beyond any JSON")
        return cast(bytes, out)

    def _has_length(self) -> bool:
        for n, v in self._hdrs:
            ln = n.lower()
            if ln == b"content-length" or (ln == b"transfer-encoding" and b"chunked" in v.lower()):
                return True
        return False

    def _finish(self) -> None:
        self.complete = True
        if self.head is not None and not self.head.done():
            self.head.set_result(None)
        self._wake()

    def _fail(self, exc: Exception) -> None:
        if self.error is None:
            self.error = exc
        if self.head is not None and not self.head.done():
            self.head.set_exception(exc)
            self.head.exception()  # retrieved: a request abandoned meanwhile logs nothing
        self._wake()
        self.close()

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True
        self.pool._forget(self)

    def send(self, head: bytes, body: bytes) -> asyncio.Future[None]:
        self._reset()
        assert self.transport is not None
        self.head = asyncio.get_running_loop().create_future()
        self.sent_at = time.monotonic()
        if self.closed or self.transport.is_closing():  # lost before the write (uvloop's
            self._fail(UpstreamConnectionError(  # write would raise, asyncio's drop it)
                "the upstream closed the connection before answering"))
            return self.head
        self.transport.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self.transport.write(body)
        return self.head

    async def next_chunk(self) -> bytes:
        while not self.body:
            if self.complete:
                return b""
            if self.error is not None:
                raise self.error
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        chunk = self.body.popleft()
        self.buffered -= len(chunk)
        if self._paused and self.buffered <= _RESUME_AT and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return chunk


class UpstreamResponse:
    """A response's status and headers, its body read whole (`read`) or as it arrives
    (`content.readany`, aiohttp's name), then `release()`d (or `close()`d)."""

    __slots__ = ("_conn", "_done", "headers", "status")

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self.status = conn.status
        self.headers = Headers(conn._hdrs)
        self._done = False

    @property
    def content(self) -> UpstreamResponse:
        return self

    async def readany(self) -> bytes:
        """The next piece of the body (decoded), or b"" once it has all been read."""
        return await self._conn.next_chunk()

    def at_eof(self) -> bool:
        c = self._conn
        return c.complete and not c.body

    async def read(self) -> bytes:
        """The rest of the body (decoded); UpstreamConnectionError past the pool's `max_body`
        (the connection is closed: a streamed body is relayed piece by piece instead)."""
        parts, size, limit = [], 0, self._conn.pool.max_body
        while chunk := await self._conn.next_chunk():
            size += len(chunk)
            if size > limit:
                self.close()
                raise UpstreamConnectionError(f"the upstream's answer is over {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    def release(self) -> None:
        """Give the connection back for the next request if this answer was read to its end
        and the exchange allows it; otherwise close it."""
        if self._done:
            return
        self._done = True
        c = self._conn
        if c.complete and not c.body and c.keep_alive and not c.closed and c.error is None:
            self._conn.pool._put(c)
        else:
            c.close()

    def close(self) -> None:
        """Close the connection (the provider sees the request abandoned); once released, the
        connection is no longer this response's (the pool may have given it to another)."""
        if self._done:
            return
        self._done = True
        self._conn.close()


class UpstreamPool:
    """Keep-alive connections per (scheme, host, port); see the module docstring."""

    def __init__(self, *, keepalive_timeout: float = KEEPALIVE_TIMEOUT,
                 ssl_context: ssl.SSLContext | None = None, max_body: int = MAX_BODY) -> None:
        self.keepalive_timeout = keepalive_timeout
        self.max_body = max_body
        self._ssl = ssl_context
        self._idle: dict[tuple[bool, str, int], list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._targets: dict[str, _Target] = {}
        # (url, id(headers)) -> (headers, head prefix): the router passes the same provider
        # headers mapping on every call, so the request head is built once per target
        self._heads: dict[tuple[str, int], tuple[Mapping[str, str], bytes]] = {}

    def _target(self, url: str) -> _Target:
        t = self._targets.get(url)
        if t is None:
            t = _Target(url)
            if len(self._targets) >= _MAX_URLS:
                self._targets.clear()
            self._targets[url] = t
        return t

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    async def _connect(self, t: _Target) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            if t.tls:
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, t.key), t.host, t.port,
                    ssl=self._ssl_context(), server_hostname=t.host,
                )
            else:
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, t.key), t.host, t.port
                )
        except (OSError, ssl.SSLError) as exc:
            # The reason only: a caller sees this, and the host is the deployment's business.
            raise UpstreamConnectionError(f"cannot connect: {type(exc).__name__}") from None
        self._open.add(conn)
        return conn

    def _take(self, t: _Target) -> _Connection | None:
        idle = self._idle.get(t.key)
        now = time.monotonic()
        while idle:
            c = idle.pop()
            if c.closed or c.transport is None or c.transport.is_closing():
                c.close()
                continue
            if now - c.idle_since > self.keepalive_timeout:
                c.close()
                continue
            return c
        return None

    def _put(self, c: _Connection) -> None:
        now = c.idle_since = time.monotonic()
        c.reused = True
        idle = self._idle.setdefault(c.key, [])
        # The newest is reused first: the oldest, at the bottom, are closed here once past the
        # timeout (else a burst's connections stay open for as long as the provider allows).
        while idle and now - idle[0].idle_since > self.keepalive_timeout:
            idle.pop(0).close()
        idle.append(c)

    def _forget(self, c: _Connection) -> None:
        self._open.discard(c)
        idle = self._idle.get(c.key)
        if idle and c in idle:
            idle.remove(c)

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> UpstreamResponse:
        """POST `body` to `url` with `headers` (plus Host, Content-Length, Accept-Encoding);
        returns once the response's status line and headers have arrived."""
        t = self._target(url)
        hk = (url, id(headers))
        got = self._heads.get(hk)
        if got is None or got[0] is not headers:
            if len(self._heads) >= _MAX_URLS:
                self._heads.clear()
            got = self._heads[hk] = (headers, _request_prefix(t, headers))
        head = got[1] + b"%d\r\n\r\n" % len(body)
        for attempt in (0, 1):
            conn = self._take(t)
            fresh = conn is None
            if conn is None:
                conn = await self._connect(t)
            waiting = conn.send(head, body)
            try:
                await waiting
            except UpstreamConnectionError:
                if (not fresh and not conn.received and attempt == 0
                        and time.monotonic() - conn.sent_at < _RETRY_WITHIN):
                    continue  # a kept-alive connection the server had just dropped
                raise
            except BaseException:  # a timeout or a cancellation mid-request
                conn.close()
                raise
            return UpstreamResponse(conn)
        raise AssertionError("unreachable")

    async def close(self) -> None:
        """Close every connection, idle or in use."""
        for c in list(self._open):
            c.close()
        self._idle.clear()


def _request_prefix(t: _Target, headers: Mapping[str, str]) -> bytes:
    """The request head up to the Content-Length value."""
    lines = [f"POST {t.path} HTTP/1.1\r\nhost: {t.host_header}\r\n"]
    for name, value in headers.items():
        if any(ch in name or ch in value for ch in _BAD_HEADER_CHARS) or ":" in name:
            raise UpstreamConnectionError(f"header {name[:40]!r} cannot be sent")
        lines.append(f"{name}: {value}\r\n")
    lines.append("accept-encoding: gzip\r\ncontent-length: ")
    return "".join(lines).encode("utf-8")
