"""Watches without the protocol: each one a `Sink` that keeps the matches of its condition until polled,
and the book of every watch with its owner, its broker subscription and its expiry.

A watch holds a broker subscription for its whole life (restored after reconnects by the adapter). The
retained messages the broker replays when the watch subscribes are the topics' current values, not
news: they set the baseline of `changed` and are never matches. Matches wait in a bounded buffer
(oldest dropped first, counted) numbered in arrival order; a poll's cursor is the number of the last
match it returned, and presenting it frees everything up to it, so polling again with the same cursor
returns the same matches (a lost result costs nothing) and memory holds only what is unread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import anyio

from mcpmqtt.config import WatchSettings
from mcpmqtt.errors import InvalidArgument
from mcpmqtt.mqtt import Broker, Received
from mcpmqtt.rules.conditions import Condition, Evaluator
from mcpmqtt.rules.policy import Allowlist

log = logging.getLogger(__name__)

WATCH_PREFIX = "mcpmqtt://watch/"
WATCH_TEMPLATE = WATCH_PREFIX + "{watch_id}"
KEPT_AFTER_EXPIRY = 600.0
"""Seconds an expired watch stays, so that a poll can still collect its last matches and learn it expired."""


def watch_uri(watch_id: str) -> str:
    return WATCH_PREFIX + watch_id


@dataclass(frozen=True, slots=True)
class Batch:
    """What a poll finds: the matches after its cursor, and how many were dropped before them."""

    matches: list[tuple[int, Received]]
    dropped: int
    cursor: int
    """The cursor to return when `matches` is empty: everything up to it is read or gone."""


class Watch:
    """One watch; the broker adapter offers it every message on its filter (runs on the event loop)."""

    def __init__(
        self,
        watch_id: str,
        owner: str,
        topic: str,
        condition: Condition | None,
        allowlist: Allowlist,
        ttl: float,
        settings: WatchSettings,
        on_match: Callable[[str], None],
    ) -> None:
        self.watch_id = watch_id
        self.uri = watch_uri(watch_id)
        self.owner = owner
        self.topic = topic
        self.condition = condition
        self.expires_at = time.time() + ttl
        self.deadline = time.monotonic() + ttl
        self._finished = False
        self.ended = asyncio.Event()
        """Set by unwatch: the holding task lets go of the subscription."""
        self._allowlist = allowlist
        self._evaluator = Evaluator(condition)
        self._max_matches = settings.buffer_size
        self._max_bytes = settings.max_buffer_bytes
        self._on_match = on_match
        self._buffer: deque[tuple[int, Received]] = deque()
        self._bytes = 0
        self._last = 0  # number of the last match
        self._acked = 0  # highest cursor presented: matches up to it were read
        self._wake = asyncio.Event()

    @property
    def expired(self) -> bool:
        """Whether the watch takes no more messages: its ttl passed (or it was ended)."""
        return self._finished or time.monotonic() >= self.deadline

    def offer(self, message: Received) -> None:
        if self.expired or not self._allowlist.readable(message.topic):
            return
        try:
            if message.retain:  # replayed at subscribe: the current value, not news
                self._evaluator.baseline(message.topic, message.payload)
                return
            if not self._evaluator.matches(message.topic, message.payload):
                return
        except Exception:  # a payload no test foresaw must not cost every agent the connection
            log.exception("watch %s could not judge a message on %r; skipped", self.watch_id, message.topic)
            return
        self._last += 1
        self._buffer.append((self._last, message))
        self._bytes += len(message.payload)
        while len(self._buffer) > self._max_matches or (
            self._bytes > self._max_bytes and len(self._buffer) > 1
        ):
            self._bytes -= len(self._buffer.popleft()[1].payload)
        self._wake.set()
        self._wake = asyncio.Event()
        self._on_match(self.uri)

    def cursor(self, text: str | None) -> int:
        """A cursor this watch gave, as its number; InvalidArgument for anything else."""
        if text is None:
            return 0
        if not (text.isascii() and text.isdigit()) or int(text) > self._last:
            raise InvalidArgument(
                f"cursor {text!r} is not one this watch gave; pass the cursor of the last mqtt_poll "
                "result, or leave it out to get every buffered match"
            )
        return int(text)

    def after(self, cursor: int) -> Batch:
        """The matches after `cursor`; those at or before it are freed (the caller has them)."""
        while self._buffer and self._buffer[0][0] <= cursor:
            self._bytes -= len(self._buffer.popleft()[1].payload)
        self._acked = max(self._acked, cursor)
        first = self._buffer[0][0] if self._buffer else self._last + 1
        return Batch(list(self._buffer), max(0, first - max(cursor, self._acked) - 1), self._last)

    def peek(self) -> list[Received]:
        """The buffered matches, freeing nothing (for reading the resource)."""
        return [message for _, message in self._buffer]

    async def wait(self, cursor: int, timeout: float) -> None:
        """Until a match after `cursor` is buffered, the watch ends, or `timeout` seconds pass."""
        wake = self._wake
        if self._last > cursor or self.expired or self.ended.is_set():
            return
        with anyio.move_on_after(max(0.0, min(timeout, self.deadline - time.monotonic()))):
            await wake.wait()

    def finish(self) -> None:
        """The watch stopped taking messages (ttl passed or unwatched): wake its pollers."""
        self._finished = True
        self._wake.set()


class WatchBook:
    """Every watch of the server, by id, each with the task that holds its broker subscription."""

    def __init__(
        self,
        broker: Broker,
        settings: WatchSettings,
        on_match: Callable[[str], None],
        on_end: Callable[[str], None],
    ) -> None:
        self.broker = broker
        self.settings = settings
        self._on_match = on_match
        self._on_end = on_end
        self._watches: dict[str, Watch] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._watches)

    def held_by(self, owner: str) -> int:
        return sum(1 for w in self._watches.values() if w.owner == owner and not w.expired)

    async def start(
        self, owner: str, topic: str, condition: Condition | None, allowlist: Allowlist, ttl: float
    ) -> Watch:
        """A new watch, once the broker granted its subscription (so no later message is missed)."""
        if (held := self.held_by(owner)) >= self.settings.max_watches:
            raise InvalidArgument(
                f"you hold {held} watches, the most watches.max_watches allows; end one with "
                "mqtt_unwatch (or let one expire) first"
            )
        self._drop_expired(owner)
        watch = Watch(
            secrets.token_urlsafe(12), owner, topic, condition, allowlist, ttl, self.settings, self._on_match
        )
        subscribed = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(self._hold(watch, subscribed), name=f"watch-{watch.watch_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            await asyncio.shield(subscribed)
        except BaseException:
            task.cancel()
            raise
        self._watches[watch.watch_id] = watch
        return watch

    async def _hold(self, watch: Watch, subscribed: asyncio.Future[None]) -> None:
        try:
            async with self.broker.subscription(watch.topic, watch):
                subscribed.set_result(None)
                with anyio.move_on_after(watch.deadline - time.monotonic()):
                    await watch.ended.wait()
        except Exception as exc:
            if subscribed.done():
                raise
            subscribed.set_exception(exc)  # the watch never started: mqtt_watch reports why
            return
        finally:
            watch.finish()
            self._on_end(watch.uri)
            if not subscribed.done():
                subscribed.cancel()
        if not watch.ended.is_set():  # expired: kept a while for a last poll
            self._drop_expired(watch.owner)
            asyncio.get_running_loop().call_later(KEPT_AFTER_EXPIRY, self._forget, watch)

    def _drop_expired(self, owner: str) -> None:
        """Keep at most max_watches expired watches per owner (the oldest go first), so that making
        short-lived watches in a loop cannot pile up the ones waiting for a last poll."""
        expired = [w for w in self._watches.values() if w.owner == owner and w.expired]
        for watch in expired[: max(0, len(expired) - self.settings.max_watches)]:
            del self._watches[watch.watch_id]

    def _forget(self, watch: Watch) -> None:
        if self._watches.get(watch.watch_id) is watch:
            del self._watches[watch.watch_id]

    def get(self, owner: str, watch_id: str) -> Watch:
        """The caller's watch; one that is not the caller's reads exactly like one that never existed."""
        watch = self._watches.get(watch_id)
        if watch is None or watch.owner != owner:
            raise InvalidArgument(
                f"unknown watch {watch_id!r}: you have no watch with this id (a watch ends with "
                "mqtt_unwatch or some minutes after its ttl); make one with mqtt_watch"
            )
        return watch

    def remove(self, owner: str, watch_id: str) -> Watch:
        """End the caller's watch now and forget it."""
        watch = self.get(owner, watch_id)
        del self._watches[watch_id]
        watch.ended.set()
        watch.finish()
        return watch

    async def close(self) -> None:
        """Stop every watch (server shutdown)."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
