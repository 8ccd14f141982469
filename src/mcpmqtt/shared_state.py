"""Where the guardrails' rate-limit windows are counted: in this process, or in a Redis all replicas share.

A rate limit protects the devices behind a topic, so N replicas of the server must count against one
window, or three replicas allow three times "10/minute". The rule itself (which limits apply to a topic,
what a refusal says) stays in rules/guardrails.py; this module only keeps the windows.

With Redis, each guardrail pattern has a sorted set of recent publishes (score: the time in
microseconds by Redis's own clock, so that replicas on machines whose clocks differ still agree). One
Lua script trims every applying window, checks them all, and adds the publish to all of them or to
none: Redis runs a script atomically, so a publish is counted once however many replicas race.

Redis unreachable: the publish is refused (``broker unavailable:``, naming Redis), since nothing
may go out that a limit would have stopped; redis-py reconnects on the next call, so the server
recovers by itself when Redis is back.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from mcpmqtt.config.models import StateSettings
from mcpmqtt.errors import BrokerUnavailable, PermissionDenied
from mcpmqtt.rules.guardrails import Guardrails, rate_refusal

if TYPE_CHECKING:  # redis is imported only when the redis backend is configured
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

# KEYS: one window per applying pattern. ARGV[1]: a unique member, or "" to look without counting;
# then per key its count and its window in microseconds. Returns {0, 0} when it may go (and, given a
# member, is counted), else {index of the key that refuses, wait in µs}.
_TAKE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local refusing, longest = 0, 0
for i, key in ipairs(KEYS) do
  local count = tonumber(ARGV[2 * i])
  local window = tonumber(ARGV[2 * i + 1])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZCARD', key) >= count then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    local wait = tonumber(oldest[2]) + window - now
    if wait > longest then refusing, longest = i, wait end
  end
end
if refusing > 0 or ARGV[1] == '' then return {refusing, longest} end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[1])
  redis.call('PEXPIRE', key, math.ceil(tonumber(ARGV[2 * i + 1]) / 1000) + 1000)
end
return {0, 0}
"""


class RateWindows(Protocol):
    """Counts one publish against every rate limit that applies to its topic, or says why not."""

    async def take(self, topic: str) -> PermissionDenied | None:
        """None when the publish may go out (and is now counted); the refusal otherwise."""
        ...

    async def look(self, topic: str) -> PermissionDenied | None:
        """The refusal ``take`` would give now, without counting anything (for dry runs)."""
        ...

    async def aclose(self) -> None:
        """Release connections; called once when the server stops."""
        ...


class MemoryWindows:
    """The windows of this process (the guardrails' own); each replica counts its publishes alone."""

    def __init__(self, guardrails: Guardrails) -> None:
        self._guardrails = guardrails

    async def take(self, topic: str) -> PermissionDenied | None:
        return self._guardrails.take(topic)

    async def look(self, topic: str) -> PermissionDenied | None:
        return None  # Guardrails.check, which every publish passes first, looked at these windows

    async def aclose(self) -> None:
        return None


class RedisWindows:
    """The windows in one Redis, shared by every server configured with the same url and key_prefix."""

    def __init__(self, guardrails: Guardrails, settings: StateSettings) -> None:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        assert settings.url is not None  # the config's validator insists
        self._guardrails = guardrails
        self._prefix = f"{settings.key_prefix}:rate:"
        self.where = redis_address(settings.url)
        options: dict[str, Any] = {
            "socket_connect_timeout": settings.timeout,
            "socket_timeout": settings.timeout,
            # One quick retry covers a connection Redis closed while idle; more would only hold the call.
            "retry": Retry(NoBackoff(), 1),
        }
        if (password := settings.resolved_password()) is not None:
            options["password"] = password
        self._redis: Redis = Redis.from_url(settings.url, **options)
        self._script: AsyncScript = self._redis.register_script(_TAKE)

    async def take(self, topic: str) -> PermissionDenied | None:
        return await self._run(topic, uuid.uuid4().hex)

    async def look(self, topic: str) -> PermissionDenied | None:
        return await self._run(topic, "")

    async def _run(self, topic: str, member: str) -> PermissionDenied | None:
        from redis.exceptions import RedisError

        limits = self._guardrails.rate_limits(topic)
        if not limits:
            return None
        keys = [f"{self._prefix}{pattern}" for pattern, _ in limits]
        args: list[str | int] = [member]
        for _, rate in limits:
            args += [rate.count, rate.seconds * 1_000_000]
        try:
            refusing, wait = await self._script(keys=keys, args=args)
        except RedisError as exc:
            raise BrokerUnavailable(
                f"shared state unavailable: Redis at {self.where} failed ({exc}), so the rate "
                "limit could not be counted and nothing was published; try again in a few seconds, "
                "or tell the operator if it persists"
            ) from None
        if int(refusing) == 0:
            return None
        pattern, rate = limits[int(refusing) - 1]
        return rate_refusal(pattern, rate, int(wait) / 1_000_000)

    async def aclose(self) -> None:
        await self._redis.aclose()


def redis_address(url: str) -> str:
    """host:port of a Redis URL, for messages: never its password."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"


def rate_windows(guardrails: Guardrails, settings: StateSettings) -> RateWindows:
    """The windows the config's ``state.backend`` asks for."""
    if settings.backend == "redis":
        return RedisWindows(guardrails, settings)
    return MemoryWindows(guardrails)
