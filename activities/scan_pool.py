"""Large guardrail evaluations run in a worker process: the event loop never waits on them.

Every detector is linear-time, but a request near the body limit is still megabytes of regex
work, and CPython's `re` holds the GIL for a whole search call: a thread would stall the event
loop just the same (measured: up to 1.2 s for a 4 MB body of `01 01 …`). Texts of at least
`OFFLOAD_CHARS` are therefore evaluated (detectors, fingerprints, rule decisions: the pure
`policies.guardrails.evaluate`) in one spawned worker process, started on first use; smaller
texts, nearly every call, are evaluated inline where that costs microseconds.
Scans queue on the worker: many large bodies at once wait for each other, never the loop.

The queue is bounded: at most `MAX_QUEUED_SCANS` scans of request text (the `request-input`
and `tool-output` hooks: what callers send) are queued or running per process; past it the
call is refused 503 `guardrail_busy` (Retry-After 1 s, nothing sent upstream, nothing
charged) instead of holding its body in memory for as long as the queue takes (each queued
text is up to `max_body_bytes`, 4 MiB: at most 8 x 4 MiB wait). Scans of model answers
(`request-output`, `tool-input`) are never refused: their upstream call is made and paid, and
they are bounded by the calls admitted; they count towards the bound all the same.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from policies.guardrails import GuardrailsConfig, HookResult, evaluate
from policies.refusals import Refusal

OFFLOAD_CHARS = 64 * 1024
MAX_QUEUED_SCANS = 8  # scans queued or running in the worker, per process (see above)
_REFUSABLE_HOOKS = frozenset({"request-input", "tool-output"})  # the caller's own text

T = TypeVar("T")

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_queued = 0  # scans queued or running (under _lock: Temporal activities may run on threads)


def _worker_start() -> None:
    """In the worker: Ctrl-C reaches the whole process group, and the worker is the parent's
    to stop (`shutdown`); a KeyboardInterrupt there printed a traceback on every stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _executor() -> ProcessPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_start
            )
        return _pool


async def run_off_loop(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in the worker process (`fn` a module-level function of pure code)."""
    global _pool
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(_executor(), fn, *args)
    except BrokenProcessPool:
        with _lock:  # the worker died (killed, out of memory): the next call starts a new one
            _pool = None
        return await loop.run_in_executor(_executor(), fn, *args)


def queued() -> int:
    """Scans queued or running in the worker now."""
    return _queued


async def evaluate_off_loop(
    config: GuardrailsConfig, hook: str, text: str, metadata: dict[str, str], salt: bytes
) -> HookResult:
    """`evaluate(...)` in the worker process (for texts of at least `OFFLOAD_CHARS`); a caller's
    text past `MAX_QUEUED_SCANS` is refused 503 `guardrail_busy`."""
    global _queued
    with _lock:
        if _queued >= MAX_QUEUED_SCANS and hook in _REFUSABLE_HOOKS:
            raise Refusal(
                503,
                "guardrail_busy",
                f"{_queued} large texts are already waiting for the guardrail scan; the call "
                "was not sent upstream and nothing was charged; retry shortly",
                retry_after=1,
            )
        _queued += 1
    try:
        return await run_off_loop(evaluate, config, hook, text, metadata, salt)
    finally:
        with _lock:
            _queued -= 1


def shutdown() -> None:
    """Stop the worker, if one was started (the proxy's shutdown; a later scan starts anew)."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)
