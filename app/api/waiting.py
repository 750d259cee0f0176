"""What a query handler watches while it awaits the engine: its deadline and its client.

A client that disconnects is noticed the moment the server reads its ``http.disconnect``
message (not at the next token), so its rows leave the engine at the next step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request

from app.serving.queries import ClientGone, Watch

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


async def unless_gone(http: Request, work: Awaitable[T]) -> T:
    """``work``'s result; when the client disconnects first, ``work`` is cancelled (a request
    proxied to vLLM: the upstream connection closes, and vLLM aborts it) and
    :class:`ClientGone` is raised."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(disconnected(http))
    try:
        finished, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    if task in finished:
        return task.result()
    raise ClientGone
