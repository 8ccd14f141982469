"""The live state: the last message of every readable topic seen, so an agent can look without waiting.

Fed by long-lived subscriptions to the readable patterns (the broker adapter's `follow`); bounded in
topics (the least recently updated topic is forgotten first) and in payload bytes kept per topic.
No I/O: a listener is told about every change, and decides what to do with it (notifications).
"""

from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from mcpmqtt.mqtt import Received
from mcpmqtt.rules.topics import matches

RATE_MINUTES = 5
"""`rate_per_min` is the mean over this many minutes."""


@dataclass(slots=True)
class TopicState:
    """What is known of one topic: its last message (payload possibly cut) and how many were seen."""

    last: Received
    messages: int
    truncated: bool
    """True when the last payload was longer than the cache keeps; `last.payload` is its start."""
    minute: int = -1
    """The minute (since the epoch) of the newest slot of `per_minute`."""
    per_minute: list[int] = field(default_factory=lambda: [0] * (RATE_MINUTES + 1))
    """Messages per minute, a ring indexed by minute modulo its length: the current minute and the
    RATE_MINUTES before it."""

    def count(self, at: float) -> None:
        """Count a message of time `at` in its minute's slot; O(1) (a whole ring at most is cleared)."""
        minute = int(at // 60)
        slots = self.per_minute
        if minute != self.minute:
            if minute < self.minute:  # the clock stepped back: count it in the newest slot
                minute = self.minute
            else:
                for skipped in range(max(self.minute + 1, minute - len(slots) + 1), minute + 1):
                    slots[skipped % len(slots)] = 0
                self.minute = minute
        slots[minute % len(slots)] += 1

    def rate_per_min(self, now: float) -> float:
        """Messages per minute over the last RATE_MINUTES minutes before `now`.

        The usual sliding-window estimate from minute counters: the current minute's messages so far,
        the minutes between, and the share of the oldest minute that is still inside the window.
        """
        current = int(now // 60)
        slots = self.per_minute

        def counted(minute: int) -> int:
            if minute > self.minute or minute <= self.minute - len(slots):
                return 0
            return slots[minute % len(slots)]

        inside: float = sum(counted(current - back) for back in range(RATE_MINUTES))
        elapsed = now / 60 - current
        inside += counted(current - RATE_MINUTES) * (1 - elapsed)
        return round(inside / RATE_MINUTES, 3)


Listener = Callable[[str, bool], None]
"""Called with (topic, is_new_topic) after every change."""


class LiveState:
    """Last value per topic, bounded; a `Sink` for the broker adapter."""

    def __init__(
        self,
        max_topics: int,
        max_payload_bytes: int,
        listener: Listener | None = None,
        private_prefix: str | None = None,
    ) -> None:
        """``private_prefix``: topics below it are never kept (the server's private reply topics, which
        a followed ``#`` delivers too; no agent may see them, so they have no place here)."""
        self.max_topics = max_topics
        self.max_payload_bytes = max_payload_bytes
        self.listener = listener
        self._private = f"{private_prefix}/" if private_prefix is not None else None
        self._topics: OrderedDict[str, TopicState] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._topics)

    def offer(self, message: Received) -> None:
        """Record a message; runs on the per-message path, so it stays a few dict operations."""
        topic = message.topic
        if self._private is not None and topic.startswith(self._private):
            return
        truncated = len(message.payload) > self.max_payload_bytes
        if truncated:  # a copy: the same record may be in a call's inbox, which wants it whole
            cut = message.payload[: self.max_payload_bytes]
            message = Received(
                topic, cut, message.qos, message.retain, message.received_at, message.properties
            )
        entry = self._topics.get(topic)
        if entry is None:
            if len(self._topics) >= self.max_topics:
                self._topics.popitem(last=False)
                self.evicted += 1
            entry = self._topics[topic] = TopicState(message, 1, truncated)
            entry.count(message.received_at)
            if self.listener is not None:
                self.listener(topic, True)
            return
        elif message.retain and entry.last.payload == message.payload:
            return  # the same retained value replayed by a re-subscription: nothing happened
        else:
            entry.last, entry.truncated = message, truncated
            entry.messages += 1
            minute = int(message.received_at // 60)
            if minute == entry.minute:  # the common case, inline: this runs for every message
                entry.per_minute[minute % (RATE_MINUTES + 1)] += 1
            else:
                entry.count(message.received_at)
            self._topics.move_to_end(topic)
        if self.listener is not None:
            self.listener(topic, False)

    def get(self, topic: str) -> TopicState | None:
        return self._topics.get(topic)

    def matching(self, topic_filter: str) -> Iterator[tuple[str, TopicState]]:
        """Topics that `topic_filter` matches, in topic order."""
        for topic in sorted(self._topics):
            if matches(topic_filter, topic):
                yield topic, self._topics[topic]
