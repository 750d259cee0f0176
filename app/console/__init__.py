"""The web console: static HTML, CSS and dependency-free ES modules served by the API itself
at ``/console`` (no separate server, no build step), talking to the same endpoints and tokens
as any script."""

from app.console.routes import install

__all__ = ["install"]
