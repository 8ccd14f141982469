"""The broker fixture does what later tests rely on: listeners, users, ACL refusals, log parsing, restarts.

Where these tests pin a broker behaviour (reason codes, what is logged) they also pin the notes in
`tests/mosquitto.py`; update both together if a Mosquitto upgrade changes one.
"""

import pathlib
import secrets
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import aiomqtt
import anyio
import paho.mqtt.client as mqtt
import pytest
from mosquitto import Mosquitto
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

pytestmark = pytest.mark.anyio

V5 = aiomqtt.ProtocolVersion.V5
V311 = aiomqtt.ProtocolVersion.V311
WAIT = 5.0
"""Seconds to wait for anything the broker should do at once."""

SUCCESS = 0x00
GRANTED_QOS_1 = 0x01
NOT_AUTHORIZED = 0x87
SUBACK_FAILURE_V311 = 0x80


class PahoClient:
    """A blocking paho client that reports PUBACK and SUBACK reason codes, which aiomqtt 2.x drops."""

    def __init__(self, client: mqtt.Client) -> None:
        self.client = client
        self.received: list[str] = []
        self._acks: dict[int, list[ReasonCode]] = {}
        self._changed = threading.Condition()
        client.on_publish = self._on_ack
        client.on_subscribe = self._on_ack
        client.on_message = self._on_message

    def publish(self, topic: str, qos: int, payload: bytes = b"probe") -> int | None:
        """The PUBACK reason code of a QoS 1 publish; None at QoS 0, which has no acknowledgement."""
        info = self.client.publish(topic, payload, qos=qos)
        if qos == 0:
            info.wait_for_publish(WAIT)
            return None
        return self._wait_for_ack(info.mid)[0].value

    def subscribe(self, topic_filter: str, qos: int = 1) -> int:
        """The SUBACK reason code: the granted QoS, or a failure code of 0x80 and above."""
        _, mid = self.client.subscribe(topic_filter, qos=qos)
        assert mid is not None
        return self._wait_for_ack(mid)[0].value

    def wait_for_message(self, accept: Callable[[str], bool]) -> str:
        """The topic of the first message received whose topic `accept`s."""
        self.wait_until(lambda: any(accept(topic) for topic in self.received))
        return next(topic for topic in self.received if accept(topic))

    def wait_until(self, condition: Callable[[], bool]) -> None:
        """Block until `condition` holds; it is checked whenever an acknowledgement or a message comes in."""
        with self._changed:
            assert self._changed.wait_for(condition, WAIT), "timed out"

    def _on_ack(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        codes: ReasonCode | list[ReasonCode],
        props: object,
    ) -> None:
        with self._changed:
            self._acks[mid] = codes if isinstance(codes, list) else [codes]
            self._changed.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._changed:
            self.received.append(message.topic)
            self._changed.notify_all()

    def _wait_for_ack(self, mid: int) -> list[ReasonCode]:
        with self._changed:
            assert self._changed.wait_for(lambda: mid in self._acks, WAIT), f"no acknowledgement for {mid}"
            return self._acks.pop(mid)


@contextmanager
def paho_client(
    broker: Mosquitto,
    port: int,
    protocol: aiomqtt.ProtocolVersion = V5,
    username: str | None = None,
    client_id: str = "",
    max_inflight: int = 20,
) -> Iterator[PahoClient]:
    """A connected PahoClient; the password is filled in from the broker's users. 0 in flight: no limit."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion(protocol)
    )
    client.max_inflight_messages_set(max_inflight)
    if username is not None:
        client.username_pw_set(username, broker.users[username])
    wrapped = PahoClient(client)
    connected = threading.Event()
    client.on_connect = lambda *args: connected.set()
    client.connect(broker.host, port)
    client.loop_start()
    try:
        assert connected.wait(WAIT) and client.is_connected(), "CONNACK refused or missing"
        yield wrapped
    finally:
        client.disconnect()
        client.loop_stop()


def token() -> str:
    """A unique topic level, so that tests sharing the session broker do not see each other's messages."""
    return secrets.token_hex(4)


async def round_trip(broker: Mosquitto, client_id: str, payload: bytes) -> aiomqtt.Message:
    """Publish to ourselves on the anonymous listener at MQTT 5 and QoS 1, and return what came back."""
    topic = f"roundtrip/{token()}"
    async with aiomqtt.Client(broker.host, broker.port, identifier=client_id, protocol=V5) as client:
        await client.subscribe(topic, qos=1)
        await client.publish(topic, payload, qos=1)
        with anyio.fail_after(WAIT):
            return await anext(client.messages)


@pytest.mark.parametrize("payload", [b"hello", secrets.token_bytes(1_000_000)], ids=["short", "1MB"])
async def test_anonymous_listener_round_trips_at_mqtt5(broker: Mosquitto, payload: bytes) -> None:
    client_id = f"fixture-roundtrip-{token()}"
    message = await round_trip(broker, client_id, payload)
    assert message.payload == payload
    assert message.qos == 1
    assert f"as {client_id} (p5, c1," in broker.log_text()


@pytest.mark.parametrize("listener", ["auth_port", "dynsec_port"])
async def test_authenticated_listener_refuses_a_wrong_password(broker: Mosquitto, listener: str) -> None:
    port = getattr(broker, listener)
    with pytest.raises(aiomqtt.MqttCodeError) as refused:
        async with aiomqtt.Client(broker.host, port, username="agent", password="wrong", protocol=V5):
            pass
    assert refused.value.rc == NOT_AUTHORIZED
    async with aiomqtt.Client(broker.host, port, username="agent", password="agent-pass", protocol=V5):
        pass


@pytest.mark.parametrize(
    ("listener", "protocol", "qos", "level", "puback", "delivered"),
    [
        ("auth_port", V5, 1, "readonly", NOT_AUTHORIZED, False),
        ("auth_port", V5, 1, "forbidden", NOT_AUTHORIZED, False),
        ("auth_port", V5, 1, "writeonly", SUCCESS, True),
        ("auth_port", V5, 0, "readonly", None, False),
        ("auth_port", V311, 1, "readonly", SUCCESS, False),
        ("auth_port", V311, 0, "readonly", None, False),
        ("dynsec_port", V5, 1, "readonly", NOT_AUTHORIZED, False),
        ("dynsec_port", V5, 1, "writeonly", SUCCESS, True),
        ("dynsec_port", V5, 0, "readonly", None, False),
        ("dynsec_port", V311, 1, "readonly", SUCCESS, False),
    ],
)
def test_agent_publish_is_acknowledged_and_delivered_per_acl(
    broker: Mosquitto,
    listener: str,
    protocol: aiomqtt.ProtocolVersion,
    qos: int,
    level: str,
    puback: int | None,
    delivered: bool,
) -> None:
    unique = token()
    with (
        paho_client(broker, broker.port) as observer,
        paho_client(broker, getattr(broker, listener), protocol, username="agent") as agent,
    ):
        observer.subscribe(f"+/{unique}")
        assert agent.publish(f"{level}/{unique}", qos) == puback
        # Messages from one connection arrive in order: once this one is in, a refused probe never will be.
        assert agent.publish(f"allowed/{unique}", qos=1) == SUCCESS
        first = observer.wait_for_message(lambda topic: topic.endswith(unique))
    assert first == (f"{level}/{unique}" if delivered else f"allowed/{unique}")


@pytest.mark.parametrize("protocol", [V5, V311], ids=["mqtt5", "mqtt311"])
def test_acl_file_grants_any_subscribe_and_filters_delivery(
    broker: Mosquitto, protocol: aiomqtt.ProtocolVersion
) -> None:
    unique = token()
    client_id = f"fixture-aclfile-{unique}"
    with (
        paho_client(broker, broker.port) as publisher,
        paho_client(broker, broker.auth_port, protocol, username="agent", client_id=client_id) as agent,
    ):
        assert agent.subscribe("forbidden/#") == GRANTED_QOS_1
        assert agent.subscribe(f"allowed/{unique}") == GRANTED_QOS_1
        publisher.publish(f"forbidden/{unique}", qos=1)
        publisher.publish(f"allowed/{unique}", qos=1)
        assert agent.wait_for_message(lambda topic: topic.endswith(unique)) == f"allowed/{unique}"
    assert broker.subscribe_events(client_id) == [
        ("subscribe", "forbidden/#"),
        ("subscribe", f"allowed/{unique}"),
    ]


@pytest.mark.parametrize(
    ("protocol", "suback"), [(V5, NOT_AUTHORIZED), (V311, SUBACK_FAILURE_V311)], ids=["mqtt5", "mqtt311"]
)
def test_dynsec_refuses_a_subscribe_outside_the_rules(
    broker: Mosquitto, protocol: aiomqtt.ProtocolVersion, suback: int
) -> None:
    client_id = f"fixture-dynsec-{token()}"
    with paho_client(broker, broker.dynsec_port, protocol, username="agent", client_id=client_id) as agent:
        assert agent.subscribe("forbidden/#") == suback
        assert agent.subscribe("readonly/#") == GRANTED_QOS_1
    assert broker.subscribe_events(client_id) == [("subscribe", "readonly/#")]


async def test_log_shows_subscribes_unsubscribes_and_what_is_still_held(broker: Mosquitto) -> None:
    unique = token()
    prefix = f"fixture-events-{unique}"
    wildcard, spaced = f"events/{unique}/+", f"events/{unique}/with space"
    async with (
        aiomqtt.Client(broker.host, broker.port, identifier=f"{prefix}-a", protocol=V5) as client,
        aiomqtt.Client(broker.host, broker.port, identifier=f"other-{unique}", protocol=V5) as other,
    ):
        await other.subscribe(wildcard)
        await client.subscribe(wildcard)
        await client.subscribe(spaced, qos=2)
        assert broker.active_filters(prefix) == Counter({wildcard: 1, spaced: 1})
        await client.unsubscribe(wildcard)
        assert broker.active_filters(prefix) == Counter({spaced: 1})
        assert broker.active_filters(f"other-{unique}") == Counter({wildcard: 1})
    events = [("subscribe", wildcard), ("subscribe", spaced), ("unsubscribe", wildcard)]
    assert broker.subscribe_events(prefix) == events
    # Disconnecting drops the client's subscriptions without an UNSUBSCRIBE line.
    await anyio.to_thread.run_sync(broker.wait_for_log, f"Client {prefix}-a disconnected.")
    assert broker.active_filters(prefix) == Counter()
    assert broker.subscribe_events(prefix) == events


async def test_restart_keeps_the_ports_and_drops_subscriptions(fresh_broker: Mosquitto) -> None:
    ports = (fresh_broker.port, fresh_broker.auth_port, fresh_broker.dynsec_port)
    async with aiomqtt.Client(
        fresh_broker.host, fresh_broker.port, identifier="fixture-restart", protocol=V5
    ) as client:
        await client.subscribe("restart/#")
        assert fresh_broker.active_filters("fixture-restart") == Counter({"restart/#": 1})
        await anyio.to_thread.run_sync(fresh_broker.restart, 0.1)
        assert fresh_broker.active_filters("fixture-restart") == Counter()
    assert (fresh_broker.port, fresh_broker.auth_port, fresh_broker.dynsec_port) == ports
    assert (await round_trip(fresh_broker, "fixture-after-restart", b"back")).payload == b"back"
    for port in ports[1:]:
        with paho_client(fresh_broker, port, username="agent"):
            pass
    assert fresh_broker.log_text().count("mosquitto version 2.0.11 starting") == 2


async def test_kill_stops_the_broker_until_started_again(fresh_broker: Mosquitto) -> None:
    fresh_broker.kill()
    assert not fresh_broker.running
    with pytest.raises(aiomqtt.MqttError):
        await round_trip(fresh_broker, "fixture-killed", b"nobody home")
    fresh_broker.start()
    assert (await round_trip(fresh_broker, "fixture-revived", b"back")).payload == b"back"


@pytest.mark.parametrize("persistent", [True, False], ids=["persistent", "in-memory"])
async def test_persistent_broker_keeps_retained_and_queued_messages_across_a_restart(
    tmp_path: pathlib.Path, persistent: bool
) -> None:
    """bench/soak.py counts on this: what the broker acknowledged survives its restart."""
    with Mosquitto(tmp_path, persistent=persistent) as broker:
        session = {"identifier": "fixture-durable", "protocol": V311, "clean_session": False}
        async with aiomqtt.Client(broker.host, broker.port, **session) as observer:
            await observer.subscribe("durable/#", qos=1)
        async with aiomqtt.Client(broker.host, broker.port, protocol=V5) as publisher:
            await publisher.publish("durable/queued", b"while away", qos=1)
            await publisher.publish("durable/retained", b"kept", qos=1, retain=True)
        await anyio.to_thread.run_sync(broker.restart, 0.1)
        async with aiomqtt.Client(broker.host, broker.port, **session) as observer:
            seen = []
            with anyio.move_on_after(2):
                async for message in observer.messages:
                    seen.append((str(message.topic), message.payload))
    expected = [("durable/queued", b"while away"), ("durable/retained", b"kept")]
    assert sorted(seen) == (expected if persistent else [])


def test_slow_subscriber_gets_a_whole_10000_message_burst(broker: Mosquitto) -> None:
    topic = f"burst/{token()}"
    count = 10_000
    with (
        paho_client(broker, broker.port) as subscriber,
        paho_client(broker, broker.port, max_inflight=0) as publisher,
    ):
        subscriber.subscribe(topic)
        subscriber.client.loop_stop()  # stop reading: the broker has to hold the burst for us
        infos = [publisher.client.publish(topic, b"x", qos=1) for _ in range(count)]
        for info in infos:
            info.wait_for_publish(WAIT)
        subscriber.client.loop_start()
        subscriber.wait_until(lambda: len(subscriber.received) == count)
