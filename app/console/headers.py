"""Security headers for the console's pages and files.

The console renders data that users typed (facts, prompts, model output), so its responses
carry a strict Content-Security-Policy: scripts and styles only from this origin, no inline
scripts, no eval, no framing. API responses keep their own headers: the interactive ``/docs``
page loads its assets from a CDN and would break under this policy.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONSOLE_PREFIX = "/console"

CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])

HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),
]


def is_console_path(path: str) -> bool:
    """The console's own URLs (``/`` only redirects there)."""
    return path == "/" or path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/")


class ConsoleHeaders:
    """Add :data:`HEADERS` to every response under ``/console`` (and the ``/`` redirect)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_console_path(scope.get("path", "")):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in HEADERS}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": kept + HEADERS}
            await send(message)

        await self.app(scope, receive, with_headers)
