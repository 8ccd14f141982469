"""The history in memory: every message on the followed read patterns, per topic, within three bounds.

A `Sink` for the broker adapter, like the live state: `offer` runs on the event loop for every message,
so it is a few deque operations and integer sums, no I/O and no parsing. The bounds (messages per
topic, age, total bytes) drop the oldest messages first and count them:

- per topic, the oldest message of that topic goes when a new one would exceed the count;
- over all topics, a FIFO of the topics in arrival order says whose message is the oldest, so the
  byte bound and the age bound drop the oldest message of the whole history in O(1). A message that
  the per-topic bound dropped first leaves a stale mark in that FIFO, skipped when reached.

`max_bytes` bounds memory, not only payloads: every message counts its payload plus the measured
cost of its record, so that many small messages cannot take many times the configured bytes.

With a file (server/history_file.py) the same object is the source of what is written: each topic
numbers its messages (`seq`), and `take_changes` hands over what arrived and what was dropped since
the last flush, so the file mirrors the memory without anything on the per-message path.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import islice

from mcpmqtt.mqtt import PublishProperties, Received
from mcpmqtt.rules.series import number_in

Entry = tuple[float, bytes, int, bool, PublishProperties | None]
"""One kept message of a topic: received_at, payload, qos, retain, properties."""

ENTRY_COST = 160
"""Bytes a kept message takes besides its payload: the tuple, the float, the bytes object's header and
two deque slots (measured with tracemalloc on CPython 3.11: about 150)."""
TOPIC_COST = 800
"""Bytes a kept topic takes besides its name: its record, its deque's first block, the dict slot."""
_EXPIRE_EVERY = 1024
"""Offers between two checks of the age bound (each check is O(1) when nothing has expired)."""


class TopicHistory:
    """The kept messages of one topic, oldest first; message number `first_seq + i` is `entries[i]`."""

    __slots__ = ("dirty", "dropped", "entries", "first_seq", "ordered", "serial", "stale", "topic", "written")

    def __init__(self, topic: str, first_seq: int = 0, serial: int = 0) -> None:
        self.topic = topic
        self.serial = serial
        """Unique in the process: tells a topic forgotten and seen again from its earlier self."""
        self.entries: deque[Entry] = deque()
        self.first_seq = first_seq
        self.dropped = 0
        self.stale = 0
        """Marks of this topic in the arrival FIFO whose message the per-topic bound already dropped."""
        self.ordered = True
        """False once a message arrived with an earlier time than the one before (a clock step)."""
        self.written = first_seq
        """Messages before this number are in the file (with a file)."""
        self.dirty = False

    @property
    def end_seq(self) -> int:
        return self.first_seq + len(self.entries)


@dataclass(frozen=True, slots=True)
class TopicSnapshot:
    """A copy of one topic's kept messages, safe to read in another thread while the loop adds more."""

    topic: str
    entries: list[Entry]
    ordered: bool
    dropped: int
    serial: int
    first_seq: int


@dataclass(slots=True)
class Changes:
    """What the file must do to mirror memory since the last flush."""

    trims: dict[str, int] = field(default_factory=dict)
    """Per topic: delete the rows numbered below this."""
    rows: list[tuple[str, int, list[Entry]]] = field(default_factory=list)
    """Per topic: its new messages, numbered from the given seq."""

    def __bool__(self) -> bool:
        return bool(self.trims or self.rows)


class History:
    """Per-topic message history, bounded in messages per topic, age and bytes; a `Sink`."""

    def __init__(
        self, max_messages_per_topic: int, max_age: float, max_bytes: int, *, track_changes: bool = False
    ) -> None:
        self.max_messages_per_topic = max_messages_per_topic
        self.max_age = max_age
        self.max_bytes = max_bytes
        self.bytes = 0
        self.messages = 0
        self.dropped = 0
        """Messages dropped by any bound since the server started."""
        self._topics: dict[str, TopicHistory] = {}
        self._order: deque[TopicHistory] = deque()
        self._track = track_changes
        self._dirty: list[TopicHistory] = []
        self._ended: dict[str, int] = {}
        self._until_expiry = _EXPIRE_EVERY
        self._serials = itertools.count()

    def __len__(self) -> int:
        return len(self._topics)

    def offer(self, message: Received) -> None:
        """Keep a message; O(1) amortized, on the per-message path."""
        topic, payload, received_at = message.topic, message.payload, message.received_at
        kept = self._topics.get(topic)
        if kept is None:
            kept = self._topics[topic] = TopicHistory(topic, self._ended.get(topic, 0), next(self._serials))
            self.bytes += TOPIC_COST + len(topic)
        entries = kept.entries
        if entries:
            last = entries[-1]
            if message.retain and last[1] == payload:
                return  # the same retained value replayed by a re-subscription: nothing happened
            if received_at < last[0]:
                kept.ordered = False
        entries.append((received_at, bytes(payload), message.qos, message.retain, message.properties))
        self._order.append(kept)
        self.bytes += ENTRY_COST + len(payload)
        self.messages += 1
        if self._track and not kept.dirty:
            kept.dirty = True
            self._dirty.append(kept)
        if len(entries) > self.max_messages_per_topic:
            self._drop_first(kept)
            kept.stale += 1
        if self.bytes > self.max_bytes:
            self._drop_oldest(lambda _: self.bytes > self.max_bytes)
        self._until_expiry -= 1
        if self._until_expiry <= 0:
            self._until_expiry = _EXPIRE_EVERY
            self.expire(received_at)

    def expire(self, now: float) -> None:
        """Drop the messages older than the age bound."""
        cutoff = now - self.max_age
        self._drop_oldest(lambda kept: kept.entries[0][0] < cutoff)

    def _drop_oldest(self, more: Callable[[TopicHistory], bool]) -> None:
        order = self._order
        while order:
            kept = order[0]
            if kept.stale:
                kept.stale -= 1
                order.popleft()
                continue
            if not more(kept):
                return
            order.popleft()
            self._drop_first(kept)

    def _drop_first(self, kept: TopicHistory) -> None:
        entry = kept.entries.popleft()
        kept.first_seq += 1
        kept.dropped += 1
        self.dropped += 1
        self.messages -= 1
        self.bytes -= ENTRY_COST + len(entry[1])
        if self._track and not kept.dirty:
            kept.dirty = True
            self._dirty.append(kept)
        if not kept.entries:  # no mark of it is left in the FIFO: forget the topic
            del self._topics[kept.topic]
            self.bytes -= TOPIC_COST + len(kept.topic)
            if self._track:
                self._ended[kept.topic] = kept.first_seq

    def snapshot(self, accept: Callable[[str], bool]) -> list[TopicSnapshot]:
        """Copies of the kept messages of the topics `accept` takes (C-speed list copies, on the loop)."""
        return [
            TopicSnapshot(topic, list(kept.entries), kept.ordered, kept.dropped, kept.serial, kept.first_seq)
            for topic, kept in self._topics.items()
            if accept(topic)
        ]

    def recent_numbers(self, topic: str, count: int = 60) -> list[float]:
        """The numbers of the last `count` messages of `topic` whose payload is a plain number, oldest
        first: the console's sparkline (a JSON payload has no single number to draw)."""
        kept = self._topics.get(topic)
        if kept is None:
            return []
        start = max(len(kept.entries) - count, 0)
        numbers = (number_in(entry[1], ()) for entry in islice(kept.entries, start, None))
        return [number for number in numbers if number is not None]

    def take_changes(self) -> Changes:
        """What arrived and what was dropped since the last call, for the file; on the loop."""
        changes = Changes(trims=dict(self._ended))
        self._ended.clear()
        for kept in self._dirty:
            kept.dirty = False
            if self._topics.get(kept.topic) is not kept:
                continue  # forgotten: its end is among the trims
            changes.trims[kept.topic] = max(kept.first_seq, changes.trims.get(kept.topic, 0))
            start = max(kept.written, kept.first_seq)
            if count := kept.end_seq - start:
                new = list(islice(reversed(kept.entries), count))
                new.reverse()
                changes.rows.append((kept.topic, start, new))
            kept.written = kept.end_seq
        self._dirty.clear()
        return changes

    def restore(self, rows: Iterable[tuple[str, int, Entry]]) -> None:
        """Refill from the file at start-up: (topic, seq, entry) in arrival order, the bounds applied."""
        for topic, seq, entry in rows:
            kept = self._topics.get(topic)
            if kept is None:
                kept = self._topics[topic] = TopicHistory(topic, seq, next(self._serials))
                self.bytes += TOPIC_COST + len(topic)
            elif kept.end_seq != seq:
                continue  # a gap cannot happen in a file we wrote (deletes only cut a topic's oldest)
            kept.entries.append(entry)
            self._order.append(kept)
            self.bytes += ENTRY_COST + len(entry[1])
            self.messages += 1
            if len(kept.entries) > self.max_messages_per_topic:
                self._drop_first(kept)
                kept.stale += 1
            if self.bytes > self.max_bytes:
                self._drop_oldest(lambda _: self.bytes > self.max_bytes)
            kept.written = kept.end_seq
        self.dropped = 0  # what the bounds cut at start-up was dropped in an earlier run
        for kept in self._topics.values():
            kept.dropped = 0
