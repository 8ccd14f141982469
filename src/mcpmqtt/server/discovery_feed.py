"""The discovery sink: discovery messages taken off the per-message path and read a little later.

`offer` runs on the event loop for every message the live state follows; it asks the ingest's cheap
shape test and, for the rare discovery message, queues it (bounded) and schedules a drain. Parsing
(JSON documents of up to discovery.max_config_bytes) happens in that drain, in batches, so a burst
of retained configs at start-up never holds up a firehose for long.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from mcpmqtt.discovery import DiscoveryIngest
from mcpmqtt.mqtt import Received

log = logging.getLogger(__name__)

_BATCH = 20
"""Messages read per turn of the event loop."""


class DiscoveryFeed:
    """A `Sink` for the broker adapter that feeds a `DiscoveryIngest` off the per-message path."""

    def __init__(self, ingest: DiscoveryIngest, max_pending: int) -> None:
        self.ingest = ingest
        self.max_pending = max_pending
        self.dropped = 0
        self._pending: deque[tuple[str, bytes | bytearray]] = deque()
        self._scheduled = False
        self._prefixes = ingest.prefixes
        self._watched = ingest.registry.availability_topics

    def offer(self, message: Received) -> None:
        """Queue a discovery message; anything else costs one `startswith` and one dict lookup."""
        topic = message.topic
        if not topic.startswith(self._prefixes) and topic not in self._watched:
            return
        if not self.ingest.wants(topic):
            return
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning(
                    "discovery: %d messages dropped, more than discovery.max_pending waiting", self.dropped
                )
            return
        self._pending.append((message.topic, message.payload))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._drain)

    def _drain(self) -> None:
        for _ in range(min(_BATCH, len(self._pending))):
            topic, payload = self._pending.popleft()
            try:
                self.ingest.ingest(topic, bytes(payload))
            except Exception:  # a parser bug must not stop discovery, nor the loop
                log.exception("discovery: reading the message on %r failed", topic)
        if self._pending:
            asyncio.get_running_loop().call_soon(self._drain)
        else:
            self._scheduled = False

    async def idle(self) -> None:
        """Wait until every queued message has been read (for tests and benchmarks)."""
        while self._pending or self._scheduled:  # noqa: ASYNC110 - drained by loop callbacks
            await asyncio.sleep(0.005)
