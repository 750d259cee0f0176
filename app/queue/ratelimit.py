"""Per-identity request limits shared by every API process through Redis."""

from __future__ import annotations

import hashlib
import uuid

import redis

__all__ = ["RateLimiter"]

# Sliding-window log in a sorted set, atomic in Lua, timed by the Redis clock so that every
# API process agrees. Denied hits are not recorded (a client that keeps retrying is let in as
# soon as its window frees a slot). Returns {allowed, retry_after_ms}.
_RATE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count < limit then
    redis.call('ZADD', KEYS[1], now, ARGV[3])
    redis.call('PEXPIRE', KEYS[1], window)
    return {1, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = window
if oldest[2] then wait = tonumber(oldest[2]) + window - now end
return {0, wait}
"""


class RateLimiter:
    """Per-identity request limits shared by all API processes through Redis.

    Identities (bearer tokens, client addresses) are hashed before they become key names, so
    a token never appears in Redis, its keyspace notifications or a ``KEYS`` listing.
    """

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._script = client.register_script(_RATE_SCRIPT)

    def key(self, identity: str) -> str:
        digest = hashlib.sha256(f"{self.prefix}\0{identity}".encode()).hexdigest()[:32]
        return f"{self.prefix}:rate:{digest}"

    def hit(self, identity: str, limit: int, window_s: int) -> tuple[bool, int]:
        """Count one request; ``(allowed, retry_after_s)`` (``retry_after_s`` 0 if allowed,
        else the whole seconds until a slot frees, at least 1). ``limit <= 0``: no limit."""
        if limit <= 0:
            return True, 0
        window_ms = max(1, int(window_s * 1000))
        allowed, wait_ms = self._script(
            keys=[self.key(identity)], args=[int(limit), window_ms, uuid.uuid4().hex]
        )
        if int(allowed):
            return True, 0
        return False, max(1, -(-int(wait_ms) // 1000))
