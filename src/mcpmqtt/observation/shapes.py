"""Payload shapes from observation: a JSON Schema per topic inferred from the JSON payloads seen.

A `Sink` on the live state's followed patterns. On the per-message path it only counts and, at most
once per `sample_interval` per topic, keeps a reference to the payload as the topic's next sample;
the JSON parsing and schema inference (genson, imported on first use) happen in `flush`, which the
observer schedules on the event loop every `sample_interval` and which handles at most
`max_samples_per_flush` topics per run. So a firehose costs a few dict operations per message, and
the inference work is bounded by topics and time, not by the message rate.

When a topic's inferred schema changes (a new field, a wider type), the listener is told: the server
notifies subscribers of that topic's resource.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypedDict

from mcpmqtt.mqtt.received import Received
from mcpmqtt.rules.payloads import iso_utc

_EXAMPLE_BYTES = 1024
"""Longer payloads still shape the schema, but are not kept as examples."""


@dataclass(slots=True)
class TopicShape:
    first_seen: float
    last_seen: float
    messages: int = 0
    next_sample_at: float = 0.0
    pending: bytes | bytearray | None = None
    json_samples: int = 0
    other_samples: int = 0
    builder: Any = None
    schema: dict[str, Any] | None = None
    schema_changes: int = 0
    capped: bool = False
    examples: list[Any] = field(default_factory=list)


class ShapeRecord(TypedDict):
    """What observation says about one topic, for mqtt_describe and the topic resource."""

    topic: str
    schema: dict[str, Any] | None
    """JSON Schema of the JSON payloads sampled; None when none was JSON."""
    examples: list[Any]
    first_seen: str
    last_seen: str
    messages: int
    rate_per_second: float | None
    """Messages per second between the first and the last one seen; None after one message."""
    samples: int
    non_json_samples: int
    schema_changes: int
    schema_capped: bool
    """True when the schema grew past shapes.max_schema_bytes and stopped being updated."""


ShapeListener = Callable[[str], None]
"""Called with the topic whose inferred schema changed."""


class ShapeObserver:
    """Inferred payload shapes per topic, bounded in topics, sample size, schema size and work per flush."""

    def __init__(
        self,
        *,
        max_topics: int,
        sample_interval: float,
        max_sample_bytes: int,
        max_schema_bytes: int,
        max_examples: int,
        max_samples_per_flush: int = 200,
        listener: ShapeListener | None = None,
    ) -> None:
        self.max_topics = max_topics
        self.sample_interval = sample_interval
        self.max_sample_bytes = max_sample_bytes
        self.max_schema_bytes = max_schema_bytes
        self.max_examples = max_examples
        self.max_samples_per_flush = max_samples_per_flush
        self.listener = listener
        self._topics: OrderedDict[str, TopicShape] = OrderedDict()
        self._due: OrderedDict[str, None] = OrderedDict()
        self._flush_scheduled = False
        self._builder_class: Any = None

    def __len__(self) -> int:
        return len(self._topics)

    def offer(self, message: Received) -> None:
        """Count the message and maybe keep its payload as the topic's next sample; a few dict operations."""
        entry = self._topics.get(message.topic)
        if entry is None:
            entry = self._new_topic(message.topic, message.received_at)
        entry.messages += 1
        at = entry.last_seen = message.received_at
        if at >= entry.next_sample_at:  # at most once per sample_interval per topic
            self._sample_later(message, entry, at)

    def _new_topic(self, topic: str, at: float) -> TopicShape:
        if len(self._topics) >= self.max_topics:
            forgotten, _ = self._topics.popitem(last=False)
            self._due.pop(forgotten, None)
        entry = self._topics[topic] = TopicShape(first_seen=at, last_seen=at)
        return entry

    def _sample_later(self, message: Received, entry: TopicShape, at: float) -> None:
        entry.next_sample_at = at + self.sample_interval
        # Moved here rather than on every message: the order of forgetting is by last sample, which
        # is the order of last message to within one sample_interval, at no cost per message.
        self._topics.move_to_end(message.topic)
        if entry.pending is not None or entry.capped or len(message.payload) > self.max_sample_bytes:
            return
        entry.pending = message.payload
        self._due[message.topic] = None
        if not self._flush_scheduled:
            self._schedule()

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (unit tests): the caller flushes
        self._flush_scheduled = True
        loop.call_later(min(self.sample_interval, 1.0), self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self.flush()
        if self._due:
            self._schedule()

    def flush(self) -> list[str]:
        """Infer from the pending samples (at most max_samples_per_flush); the topics whose shape changed."""
        changed = []
        for _ in range(min(len(self._due), self.max_samples_per_flush)):
            topic, _ = self._due.popitem(last=False)
            entry = self._topics.get(topic)
            if entry is None or entry.pending is None:
                continue
            payload, entry.pending = entry.pending, None
            if self._sample(entry, payload):
                changed.append(topic)
                if self.listener is not None:
                    self.listener(topic)
        return changed

    def _sample(self, entry: TopicShape, payload: bytes | bytearray) -> bool:
        try:
            value = json.loads(payload)
        except ValueError:  # not UTF-8 or not JSON
            entry.other_samples += 1
            return False
        entry.json_samples += 1
        self._keep_example(entry, value, len(payload))
        if entry.builder is None:
            entry.builder = self._builder()
        entry.builder.add_object(value)
        schema: dict[str, Any] = entry.builder.to_schema()
        if schema == entry.schema:
            return False
        if len(json.dumps(schema)) > self.max_schema_bytes:
            entry.capped, entry.builder = True, None  # keep the last schema that fitted; stop growing
            return False
        entry.schema = schema
        entry.schema_changes += 1
        return True

    def _keep_example(self, entry: TopicShape, value: Any, size: int) -> None:
        if self.max_examples == 0 or size > _EXAMPLE_BYTES or value in entry.examples:
            return
        entry.examples.append(value)
        if len(entry.examples) > self.max_examples:
            del entry.examples[0]

    def _builder(self) -> Any:
        if self._builder_class is None:  # genson loads only once a JSON payload is sampled
            from genson import SchemaBuilder  # type: ignore[import-untyped]

            self._builder_class = SchemaBuilder
        return self._builder_class()

    def shape_of(self, topic: str) -> ShapeRecord | None:
        """What observation says about `topic`, or None if no message was seen on it."""
        entry = self._topics.get(topic)
        if entry is None:
            return None
        span = entry.last_seen - entry.first_seen
        return ShapeRecord(
            topic=topic,
            schema=entry.schema,
            examples=list(entry.examples),
            first_seen=iso_utc(entry.first_seen),
            last_seen=iso_utc(entry.last_seen),
            messages=entry.messages,
            rate_per_second=round((entry.messages - 1) / span, 3) if span > 0 else None,
            samples=entry.json_samples + entry.other_samples,
            non_json_samples=entry.other_samples,
            schema_changes=entry.schema_changes,
            schema_capped=entry.capped,
        )
