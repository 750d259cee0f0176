"""Small helpers every Redis-facing module of the queue shares."""

from __future__ import annotations

from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["REDIS_DOWN", "decode", "entry_field"]

REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
"""What a client raises when Redis is unreachable (as opposed to a command error)."""


def decode(value: Any) -> str:
    """Decode what a client returns whether or not it was made with decode_responses."""
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


def entry_field(fields: dict[Any, Any] | None, name: str) -> str | None:
    """One field of a stream entry, decoded; ``None`` if absent."""
    if not fields:
        return None
    value = fields.get(name, fields.get(name.encode()))
    return None if value is None else decode(value)
