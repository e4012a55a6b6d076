"""A loopback TCP relay in front of a real server, for network faults in tests: `hold()` stops
forwarding on the open connections (bytes wait in the sockets, as on a stalled link), `cut()`
closes them (the client sees its connection drop mid-request), `refuse()` stops listening (a
reconnect is refused, as while the server is down) until `reopen()`."""

from __future__ import annotations

import asyncio
import contextlib


class TcpRelay:
    """Relays 127.0.0.1:`port` (0: a free one, known after `start`) to the target."""

    def __init__(self, target_host: str, target_port: int, port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.port = port
        self._server: asyncio.Server | None = None
        self._conns: list[tuple[asyncio.Event, list[asyncio.StreamWriter]]] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> TcpRelay:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def refuse(self) -> None:
        """Stop listening: new connections are refused (open ones are left as they are)."""
        if self._server is not None:
            self._server.close()  # the listening socket only (wait_closed would wait for the
            self._server = None  # open connections too, on Python 3.12)

    async def reopen(self) -> None:
        """Listen again on the same port."""
        if self._server is None:
            await self.start()

    async def _accept(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection(*self.target)
        except OSError:
            w.close()
            return
        flowing = asyncio.Event()
        flowing.set()
        self._conns.append((flowing, [w, uw]))
        await asyncio.gather(self._pipe(r, uw, flowing), self._pipe(ur, w, flowing))

    @staticmethod
    async def _pipe(
        r: asyncio.StreamReader, w: asyncio.StreamWriter, flowing: asyncio.Event
    ) -> None:
        try:
            while data := await r.read(65536):
                await flowing.wait()
                w.write(data)
                await w.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            w.close()

    def hold(self) -> None:
        """Stop forwarding on every open connection (their bytes wait until `cut`)."""
        for flowing, _ in self._conns:
            flowing.clear()

    def cut(self) -> None:
        """Drop every open connection (an RST where the platform sends one)."""
        for flowing, writers in self._conns:
            for w in writers:
                with contextlib.suppress(OSError):
                    w.transport.abort()
            flowing.set()
        self._conns.clear()

    async def stop(self) -> None:
        self.cut()
        await self.refuse()
