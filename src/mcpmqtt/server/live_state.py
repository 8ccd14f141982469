"""The live state: the last message of every readable topic seen, so an agent can look without waiting.

Fed by long-lived subscriptions to the readable patterns (the broker adapter's `follow`); bounded in
topics (the least recently updated topic is forgotten first) and in payload bytes kept per topic.
No I/O: a listener is told about every change, and decides what to do with it (notifications).
"""

from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from mcpmqtt.mqtt import Received
from mcpmqtt.rules.topics import matches


@dataclass(slots=True)
class TopicState:
    """What is known of one topic: its last message (payload possibly cut) and how many were seen."""

    last: Received
    messages: int
    truncated: bool
    """True when the last payload was longer than the cache keeps; `last.payload` is its start."""


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
            self._topics[topic] = TopicState(message, 1, truncated)
        elif message.retain and entry.last.payload == message.payload:
            return  # the same retained value replayed by a re-subscription: nothing happened
        else:
            entry.last, entry.truncated = message, truncated
            entry.messages += 1
            self._topics.move_to_end(topic)
        if self.listener is not None:
            self.listener(topic, entry is None)

    def get(self, topic: str) -> TopicState | None:
        return self._topics.get(topic)

    def matching(self, topic_filter: str) -> Iterator[tuple[str, TopicState]]:
        """Topics that `topic_filter` matches, in topic order."""
        for topic in sorted(self._topics):
            if matches(topic_filter, topic):
                yield topic, self._topics[topic]
