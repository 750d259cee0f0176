"""A :class:`~app.api.openai.backend.Stream` as server-sent events, through ``sse-starlette``.

The library sends keep-alive comments (``: ping``) every ``ping_s`` while a stream waits, so
proxies do not close a quiet connection, and notices a client that leaves: the stream's
generator is then cancelled and its ``close`` (cancel the generation, release vLLM's lock)
runs. On shutdown it gives a stream the drain grace to finish before cutting it. Each chunk
is one ``data:`` line of JSON (the fields set, as OpenAI sends them), then ``data: [DONE]``;
an error after the start is one ``data: {"error": ...}`` event and no ``[DONE]``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

from sse_starlette import EventSourceResponse
from starlette.background import BackgroundTask

from app.api.openai.backend import Stream, StreamError

DONE = "[DONE]"


def _error(error: StreamError, scrub: Callable[[str], str]) -> str:
    return json.dumps({"error": {"message": scrub(error.message), "type": "server_error",
                                 "param": None, "code": error.code}})


async def _events(stream: Stream, scrub: Callable[[str], str]) -> AsyncIterator[str]:
    """Each event's data (the library writes ``data: ...`` and the blank line)."""
    try:
        async for chunk in stream.chunks:
            if isinstance(chunk, StreamError):
                yield _error(chunk, scrub)
                return
            yield chunk.model_dump_json(exclude_unset=True)
        yield DONE
    finally:
        await stream.close()


def event_stream(stream: Stream, headers: dict[str, str], ping_s: float, grace_s: float,
                 scrub: Callable[[str], str]) -> EventSourceResponse:
    """The response that sends ``stream``; ``close`` also runs after a stream never read.
    ``scrub`` takes the server's locations out of an error event's message (as whole
    answers' errors are scrubbed)."""
    return EventSourceResponse(_events(stream, scrub), headers=headers, ping=ping_s, sep="\n",
                               background=BackgroundTask(stream.close),
                               shutdown_grace_period=grace_s)
