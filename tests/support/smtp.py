"""A real SMTP server on loopback (plain SMTP, RFC 5321's minimal command set): keeps every
message it accepts, so notification tests can read what an email target received."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message


@dataclass
class SmtpSink:
    messages: list[Message] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    async def _session(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        def say(line: str) -> None:
            w.write(line.encode() + b"\r\n")

        say("220 governor-test ESMTP")
        sender, rcpts = "", []
        try:
            while line := await r.readline():
                cmd = line.decode(errors="replace").strip()
                verb = cmd.split(" ", 1)[0].upper()
                if verb in ("EHLO", "HELO"):
                    say("250-governor-test")
                    say("250 8BITMIME")
                elif verb == "MAIL":
                    sender, rcpts = cmd.split(":", 1)[1].strip(), []
                    say("250 OK")
                elif verb == "RCPT":
                    rcpts.append(cmd.split(":", 1)[1].strip())
                    say("250 OK")
                elif verb == "DATA":
                    say("354 end with <CRLF>.<CRLF>")
                    data = await r.readuntil(b"\r\n.\r\n")
                    body = data[: -len(b"\r\n.\r\n")].replace(b"\r\n..", b"\r\n.")
                    self.messages.append(message_from_bytes(body))
                    self.envelopes.append((sender, rcpts))
                    say("250 OK queued")
                elif verb in ("RSET", "NOOP"):
                    say("250 OK")
                elif verb == "QUIT":
                    say("221 bye")
                    await w.drain()
                    break
                else:
                    say("502 command not implemented")
                await w.drain()
        finally:
            w.close()

    async def start(self) -> SmtpSink:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
