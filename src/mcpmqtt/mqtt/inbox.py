"""Where the adapter delivers messages: the `Sink` protocol, and the bounded `Inbox` of one call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

import anyio

from mcpmqtt.mqtt.received import Received


class Sink(Protocol):
    """Anything that takes delivered messages: a call's inbox, the live state, the reply router."""

    def offer(self, message: Received) -> None: ...


class Inbox:
    """A bounded buffer for one call: it keeps at most `limit` accepted messages, then reports full.

    A call never needs more than it asked for, so the bound costs nothing and a flood cannot grow
    memory; what arrives past the bound is counted in `overflow`.
    """

    __slots__ = ("_accept", "_full", "limit", "messages", "overflow", "rejected")

    def __init__(self, limit: int, accept: Callable[[Received], bool] | None = None) -> None:
        self.limit = limit
        self.messages: list[Received] = []
        self.overflow = 0
        self.rejected = 0
        self._accept = accept
        self._full = asyncio.Event()

    def offer(self, message: Received) -> None:
        if self._accept is not None and not self._accept(message):
            self.rejected += 1
        elif len(self.messages) < self.limit:
            self.messages.append(message)
            if len(self.messages) == self.limit:
                self._full.set()
        else:
            self.overflow += 1

    async def wait_full(self, timeout: float) -> bool:
        """Wait until full or `timeout` seconds pass; True if full."""
        with anyio.move_on_after(max(timeout, 0)):
            await self._full.wait()
        return self._full.is_set()
