"""A call's wait on its `block` verdicts ends with its client: gone before the verdicts were
asked for, nothing is asked; gone while waiting, the wait is cancelled; both refuse the call
`client_closed` (499), a killed session `session_killed` (403)."""

from __future__ import annotations

import asyncio

import pytest

from activities.classifiers import _while_caller_waits
from activities.stream_stop import CLIENT_CLOSED, KILLED, StreamStop
from policies.guardrails.evaluate import GuardrailEvent
from policies.refusals import Refusal


def _event() -> GuardrailEvent:
    return GuardrailEvent("request-output", "http_classifier", "clean", "allowed", "c", "fp", "{}")


def test_a_client_gone_before_the_wait_asks_nothing_and_is_refused_499() -> None:
    started: list[str] = []

    async def verdict() -> GuardrailEvent:
        started.append("asked")
        return _event()

    async def main() -> None:
        stop = StreamStop()
        stop.stop(CLIENT_CLOSED)
        with pytest.raises(Refusal) as r:
            await _while_caller_waits(stop, [verdict(), verdict()])
        assert (r.value.status, r.value.code) == (499, CLIENT_CLOSED)

    asyncio.run(main())
    assert started == []


def test_a_client_leaving_during_the_wait_cancels_it() -> None:
    cancelled: list[bool] = []
    asked = asyncio.Event()

    async def slow() -> GuardrailEvent:
        asked.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return _event()

    async def main() -> None:
        stop = StreamStop()
        waiting = asyncio.ensure_future(_while_caller_waits(stop, [slow(), slow()]))
        await asked.wait()
        assert stop.reading
        stop.stop(KILLED, "by on-call")
        with pytest.raises(Refusal) as r:
            await waiting
        assert (r.value.status, r.value.code) == (403, KILLED) and "by on-call" in r.value.message

    asyncio.run(main())
    assert cancelled == [True, True]


def test_without_a_client_to_watch_the_verdicts_are_simply_awaited() -> None:
    async def quick() -> GuardrailEvent:
        return _event()

    assert asyncio.run(_while_caller_waits(None, [quick()])) == [_event()]
