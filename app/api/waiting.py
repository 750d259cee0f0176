"""What a query handler watches while it awaits the engine: its deadline and its client.

A client that disconnects is noticed the moment the server reads its ``http.disconnect``
message (not at the next token), so its rows leave the engine at the next step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request

from app.serving.queries import ClientGone, DeadlineExceeded, Watch

T = TypeVar("T")


async def disconnected(http: Request) -> None:
    """Return once the client has gone (the request body has already been read)."""
    while True:
        message = await http.receive()
        if message["type"] == "http.disconnect":
            return


def watch(http: Request) -> Watch:
    """The deadline (``MODELEDIT_QUERY_TIMEOUT_S``) and disconnect watch of one request."""
    timeout = http.app.state.services.settings.query_timeout_s
    return Watch(timeout, lambda: disconnected(http))


async def unless_gone(http: Request, work: Awaitable[T], timeout_s: float) -> T:
    """``work``'s result; when the client disconnects first or ``timeout_s`` passes,
    ``work`` is cancelled (a request proxied to vLLM: the upstream connection closes, and
    vLLM aborts it) and :class:`ClientGone` or :class:`DeadlineExceeded` is raised."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(disconnected(http))
    try:
        finished, _ = await asyncio.wait({task, watcher}, timeout=timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    if task in finished:
        return task.result()
    if watcher in finished:
        raise ClientGone
    raise DeadlineExceeded(f"no answer within {timeout_s:g} s (the server's deadline for one "
                           "query); retry later or ask for fewer tokens")
