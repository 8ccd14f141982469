"""Request/response: replies on the private reply topics, and which reply belongs to which request."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from mcpmqtt.mqtt.inbox import Inbox
from mcpmqtt.mqtt.received import Received


class ReplyRouter:
    """Routes replies on the private reply topics <base>/<correlation id> to the waiting query."""

    def __init__(self) -> None:
        self.waiters: dict[str, Inbox] = {}

    def offer(self, message: Received) -> None:
        waiter = self.waiters.get(message.topic.rpartition("/")[2])
        if waiter is not None:
            waiter.offer(message)


@dataclass(frozen=True)
class Reply:
    response_topic: str
    correlation_id: str
    message: Received | None


def correlates(correlation: bytes) -> Callable[[Received], bool]:
    """A reply is ours unless it carries different correlation data (devices that echo none still work)."""

    def accept(message: Received) -> bool:
        data = message.properties.correlation_data if message.properties else None
        return data is None or data == correlation

    return accept


async def wait_until(inbox: Inbox, deadline: float) -> bool:
    """Wait quietly for the reply until `deadline` (monotonic); whether it came."""
    return await inbox.wait_full(deadline - time.monotonic())
