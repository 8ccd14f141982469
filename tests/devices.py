"""Raw MQTT clients that play devices and services in tests: publishers and request/response peers.

They use aiomqtt directly, never mcpmqtt code, so that a bug in the adapter cannot hide itself.
"""

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable

import aiomqtt
import anyio
from anyio.abc import TaskGroup
from mosquitto import Mosquitto
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def raw_client(broker: Mosquitto, *, v5: bool = True, **options: object) -> aiomqtt.Client:
    """An independent MQTT client on the broker's anonymous listener."""
    return aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=f"device-{uuid.uuid4().hex[:8]}",
        protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
        **options,  # type: ignore[arg-type]
    )


def reply_properties(correlation: bytes | None) -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if correlation is not None:
        props.CorrelationData = correlation
    return props


Answer = Callable[[aiomqtt.Message], list[tuple[bytes | None, bytes]]]
"""Given a request, the replies to send: (correlation data or None, payload) each."""


def echo(message: aiomqtt.Message) -> list[tuple[bytes | None, bytes]]:
    """Reply once, echoing the correlation data, with b"re:" + the request payload."""
    payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
    return [(message.properties.CorrelationData if message.properties else None, b"re:" + payload)]


@contextlib.asynccontextmanager
async def responder(
    broker: Mosquitto,
    request_filter: str,
    answer: Answer = echo,
    reply_topic: str | None = None,
    *,
    v5: bool = True,
) -> AsyncIterator[list[aiomqtt.Message]]:
    """A service that answers every request on `request_filter` on its Response Topic (or `reply_topic`).

    Yields the list of requests it has seen; replies are sent the moment a request arrives, so a
    client that subscribes to the reply topic after publishing would miss them. With `v5=False` it
    speaks MQTT 3.1.1, where requests carry no Response Topic: give `reply_topic`.
    """
    seen: list[aiomqtt.Message] = []
    async with raw_client(broker, v5=v5) as client, anyio.create_task_group() as tg:
        await client.subscribe(request_filter, qos=1)

        async def serve() -> None:
            async for message in client.messages:
                seen.append(message)
                target = reply_topic or (message.properties.ResponseTopic if message.properties else None)
                if target is None:
                    continue
                for correlation, payload in answer(message):
                    await client.publish(target, payload, qos=1, properties=reply_properties(correlation))

        tg.start_soon(serve)
        yield seen
        tg.cancel_scope.cancel()


async def start_collector(
    tg: TaskGroup, client: aiomqtt.Client, topic_filter: str, into: list[aiomqtt.Message]
) -> None:
    """Subscribe `client` and append everything it receives to `into` (for observing what was sent)."""
    await client.subscribe(topic_filter, qos=1)

    async def collect() -> None:
        async for message in client.messages:
            into.append(message)

    tg.start_soon(collect)
