"""What a query handler watches while it awaits the engine: its deadline and its client.

A client that disconnects is noticed the moment the server reads its ``http.disconnect``
message (not at the next token), so its rows leave the engine at the next step.
"""

from __future__ import annotations

from fastapi import Request

from app.serving.queries import Watch


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
