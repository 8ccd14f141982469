"""Whether the broker delivers anything through a `$share/...` subscription, for brokers that cannot say.

MQTT 5 brokers announce it in the CONNACK ("Shared Subscription Available"); MQTT 3.1.1 has no such
field, and some 3.1.1 brokers (the NATS server's MQTT listener) grant a shared SUBSCRIBE and then never
deliver through it: a read would wait out its whole timeout for messages that were published. So on
3.1.1 a probe asks the broker itself: subscribe `$share/<group>/<topic>`, publish one message to the
topic, and see whether it comes back within a short bound.

The probe uses a short-lived connection of its own (client id `<client_id>-probe-<random>`): on 3.1.1
nothing tells which subscription a message came through, so on the main connection any call
subscribed to an overlapping filter (`#`) would make a broken `$share` look like a working one.
Its topic lies under `mqtt.reply_topic_prefix`, the server's own, which agents cannot read.
"""

from __future__ import annotations

import logging
import secrets
import socket

import aiomqtt
import anyio

from mcpmqtt.mqtt.settings import BrokerSettings

log = logging.getLogger(__name__)

PROBE_WAIT = 1.0
"""Seconds the probe message gets to come back through the shared subscription (on loopback it takes
about a millisecond; a broker that delivers through `$share` at all does so promptly)."""

_REFUSED = 0x80


async def shared_delivery(settings: BrokerSettings) -> bool | None:
    """True if a message comes back through a shared subscription, False if none does within
    PROBE_WAIT, None if the probe could not tell (no connection, or the broker refused the SUBSCRIBE
    or the publish: then a call's own SUBSCRIBE meets that refusal itself)."""
    token = secrets.token_hex(6)
    topic = f"{settings.reply_topic_prefix}/{token}/probe"
    client = aiomqtt.Client(
        settings.host,
        settings.port,
        username=settings.username,
        password=settings.password,
        identifier=f"{settings.client_id}-probe-{token}",
        keepalive=settings.keepalive,
        protocol=aiomqtt.ProtocolVersion.V311,
        timeout=settings.ack_timeout,
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        tls_context=settings.tls,
        transport=settings.transport,
        websocket_path=settings.websocket_path if settings.transport == "websockets" else None,
    )
    try:
        async with client:
            granted = await client.subscribe(f"$share/mcpmqtt-probe-{token}/{topic}", qos=1)
            if any(_code(g) >= _REFUSED for g in granted):
                return None
            await client.publish(topic, b"probe", qos=1)
            with anyio.move_on_after(PROBE_WAIT):
                async for message in client.messages:
                    if message.topic.value == topic:
                        return True
            return False
    except aiomqtt.MqttError as exc:
        log.info("could not probe shared subscriptions on %s:%s: %s", settings.host, settings.port, exc)
        return None


def _code(granted: object) -> int:
    """A SUBACK entry as a number: paho gives ints on 3.1.1 and reason codes on 5."""
    value = getattr(granted, "value", granted)
    return value if isinstance(value, int) else _REFUSED
