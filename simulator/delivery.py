"""Getting a response onto the wire with the fault's timing: delays, hangs and cut streams.

All waits are plain asyncio sleeps inside the handler task; the server runs with
`handler_cancellation=True`, so a client that disconnects cancels them.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from simulator.faults import Fault
from simulator.state import STATE_KEY

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
}


async def wait_before_headers(request: web.Request, fault: Fault) -> None:
    """Latency before anything is sent; `hang` waits until the client gives up. A client that
    closes the request meanwhile is recorded as a cancel with nothing sent (stream or not)."""
    try:
        if fault.hang:
            await asyncio.Event().wait()
        if fault.latency_ms:
            await asyncio.sleep(fault.latency_ms / 1000)
    except asyncio.CancelledError:
        request.app[STATE_KEY].record_cancel(request.path, 0, 0, time.time())
        raise


async def send_json(body: bytes, fault: Fault) -> web.Response:
    if fault.first_byte_ms:
        await asyncio.sleep(fault.first_byte_ms / 1000)
    return web.Response(body=body, content_type="application/json")


async def send_events(
    request: web.Request, events: list[bytes], fault: Fault
) -> web.StreamResponse:
    """Server-sent events; one write when no fault shapes the timing (the benchmark path)."""
    cut = fault.cut_after_chunks
    stall = fault.stall_after_chunks if fault.stall_ms else None
    if not fault.first_byte_ms and not fault.chunk_delay_ms and cut is None and stall is None:
        return web.Response(body=b"".join(events), headers=SSE_HEADERS)
    resp = web.StreamResponse(headers=SSE_HEADERS)
    await resp.prepare(request)
    if fault.first_byte_ms:
        await asyncio.sleep(fault.first_byte_ms / 1000)
    delay = fault.chunk_delay_ms / 1000
    sent = 0
    try:
        for i, event in enumerate(events):
            if cut is not None and i >= cut:
                break
            if i and delay:
                await asyncio.sleep(delay)
            if i == stall:
                await asyncio.sleep(fault.stall_ms / 1000)
            await resp.write(event)
            sent += 1
    except (asyncio.CancelledError, ConnectionResetError):
        # The client (the gateway) closed the request mid-stream: note it, as a real
        # provider's logs would show a cancelled generation.
        request.app[STATE_KEY].record_cancel(request.path, sent, len(events), time.time())
        raise
    if cut is not None and cut < len(events):
        # Drop the connection with no terminating event and no final chunk: the client sees
        # an incomplete body, exactly like a provider connection reset mid-stream.
        transport = request.transport
        if transport is not None:
            transport.close()
        return resp
    await resp.write_eof()
    return resp
