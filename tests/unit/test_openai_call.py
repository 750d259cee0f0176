"""One /v1 call's engine requests: waiting for all of them to finish."""

from __future__ import annotations

import asyncio

from app.api.openai.serving import Call
from models.generate import Request, SamplingParams


def _finish(call: Call, i: int, reason: str) -> None:
    """What the engine does: the reason first, then the final update."""
    call.requests[i].finish_reason = reason
    call.updates.put_nowait((i, "", reason))


def test_a_request_finished_before_the_wait_is_not_counted_twice() -> None:
    """A request that ends at prefill (``max_tokens: 0`` scoring) leaves its final update
    queued; the wait must still hold until every other request has finished."""

    async def scenario() -> None:
        requests = [Request([1, 2], SamplingParams(max_tokens=0)),
                    Request([1, 2], SamplingParams(max_tokens=4))]
        call = Call("v1", requests, [0, 1], asyncio.Queue())
        _finish(call, 0, "length")
        waiting = asyncio.ensure_future(call.finished())
        for _ in range(5):  # let it consume every queued update
            await asyncio.sleep(0)
        assert call.updates.empty() and not waiting.done()
        _finish(call, 1, "stop")
        await asyncio.wait_for(waiting, 5)

    asyncio.run(scenario())
