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


def reply_check(correlation: bytes, *, v5: bool) -> Callable[[Received], bool]:
    """Whether a message on the reply topic answers the request that sent `correlation`.

    A retained message never does: the broker replays it on SUBSCRIBE, before the request went out.
    On MQTT 5 a reply carries the request's correlation data (the spec asks a responder to echo it);
    a message without it, or with another, could come from anyone who may publish on the reply
    topic, and would answer every query waiting there. MQTT 3.1.1 has no correlation data: there
    the first non-retained message on the response topic is the reply (docs/tools.md says so).
    """

    def accept(message: Received) -> bool:
        if message.retain:
            return False
        if not v5:
            return True
        data = message.properties.correlation_data if message.properties else None
        return data is not None and data == correlation

    return accept


async def wait_until(inbox: Inbox, deadline: float) -> bool:
    """Wait quietly for the reply until `deadline` (monotonic); whether it came."""
    return await inbox.wait_full(deadline - time.monotonic())
