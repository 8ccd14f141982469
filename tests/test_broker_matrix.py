"""The core scenarios against every broker the project supports, through the real MCP client over stdio.

Brokers: Mosquitto with the server on MQTT 5 and on 3.1.1, amqtt, RabbitMQ's MQTT plugin and the NATS
server's MQTT listener. Each is a private instance on free ports (see `tests/brokers.py`), started once
per session; a broker that is not installed skips its tests, naming the package to install.

Where brokers differ, `EXPECT` says what each does, and the test asserts exactly that: a broker that
lacks a feature must show the degraded behaviour `docs/brokers.md` documents (a clear error, a note, a
timed-out read), so that the table there stays true. Nothing here skips a feature silently.
"""

import base64
import json
import pathlib
import secrets
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

import aiomqtt
import anyio
import pytest
from brokers import BrokerProcess, NatsServer, RabbitMQ
from devices import raw_client, responder
from mcp.client import Client
from mcp_client import connect, error_text, structured, write_config
from mcp_types import CallToolResult
from mosquitto import Mosquitto
from processes import amqtt

pytestmark = pytest.mark.anyio

TOPICS: list[dict[str, Any]] = [
    {"pattern": "#", "permissions": ["read", "write"], "description": "everything but $-topics"},
    # Overlaps "#" on purpose, as real allowlists do: the live state must still count each message once.
    {"pattern": "lab/#", "permissions": ["read", "write"], "description": "the matrix's own topics"},
]

Started = TypeVar("Started", bound=BrokerProcess)

TABOO = "amqtt.plugins.topic_checking.TopicTabooPlugin"
"""amqtt's plugin that refuses SUBSCRIBEs to `prohibited` (and drops PUBLISHes to it, acknowledged)."""


@dataclass(frozen=True)
class Expect:
    """What a broker does where brokers differ, as these tests found (docs/brokers.md has the table)."""

    speaks_5: bool
    delivery_qos: Literal["minimum", "subscription's"]
    """A message goes to a subscriber at the lower of its publish QoS and the subscription's (as MQTT
    says), or at the subscription's QoS even when it was published at a lower one."""
    qos2: Literal["delivered", "downgraded to 1", "connection dropped"]
    """A QoS 2 publish: delivered at QoS 2; acknowledged but delivered at QoS 1; or the broker drops the
    connection (the call gets `broker unavailable:` and the server reconnects)."""
    retained_on_wildcards: bool
    """Whether a SUBSCRIBE with a wildcard gets the retained messages it matches."""
    refused_subscribe: Literal["suback", "connection dropped"]
    """A SUBSCRIBE the broker's rules forbid: a failure SUBACK, or the whole connection dropped."""
    refused_publish: Literal["puback", "silently dropped", "connection dropped"]
    """A QoS 1 PUBLISH the broker's rules forbid: PUBACK 0x87, a success PUBACK for a dropped message,
    or the whole connection dropped."""
    dotted_topics: Literal["kept", "renamed", "refused"]
    """A topic with a `.`: kept as is; delivered with `/` for `.`; refused (SUBACK failure, and the
    connection dropped for a PUBLISH)."""
    dollar_topics_on_hash: bool
    """Whether a `#` subscription receives the broker's own `$`-topics (MQTT says it must not)."""


SPEC = Expect(
    speaks_5=True,
    delivery_qos="minimum",
    qos2="delivered",
    retained_on_wildcards=True,
    refused_subscribe="suback",
    refused_publish="puback",
    dotted_topics="kept",
    dollar_topics_on_hash=False,
)
"""What MQTT 5 says, and what Mosquitto does; each broker below differs from it where it says."""

EXPECT = {
    "mosquitto-5": SPEC,
    # A 3.1.1 PUBACK carries no reason code: a refused publish looks like a delivered one.
    "mosquitto-3.1.1": replace(SPEC, refused_publish="silently dropped"),
    "amqtt": replace(SPEC, speaks_5=False, delivery_qos="subscription's", refused_publish="silently dropped"),
    "rabbitmq": replace(
        SPEC,
        speaks_5=False,
        qos2="downgraded to 1",
        retained_on_wildcards=False,
        refused_subscribe="connection dropped",
        refused_publish="connection dropped",
        dotted_topics="renamed",
    ),
    "nats": replace(
        SPEC,
        speaks_5=False,
        qos2="connection dropped",
        refused_publish="silently dropped",
        dotted_topics="refused",
        dollar_topics_on_hash=True,
    ),
}


@dataclass(frozen=True)
class Target:
    """One column of the matrix: a broker's anonymous MQTT listener and how the server is set up for it."""

    name: str
    host: str
    port: int
    expect: Expect
    mqtt: dict[str, Any] = field(default_factory=dict)
    """The server's mqtt settings beyond host and port (the protocol it asks for)."""
    refused_filter: str = "denied/#"
    """A filter the broker's rules refuse to the server."""
    refused_topic: str = "denied/{token}"
    """A topic the broker's rules forbid the server to publish to ({token}: a level of the test's own)."""
    allowed_topic: str = "lab/{token}"
    """A topic they allow it, on the same listener."""
    refusing_mqtt: dict[str, Any] | None = None
    """The server's mqtt settings where the broker's rules apply to it, if not its main listener."""
    observer: dict[str, Any] = field(default_factory=dict)
    """Options for a raw client that may see every topic (credentials where anonymous ones cannot)."""

    @property
    def protocol(self) -> str:
        """The protocol the server ends up speaking with this broker."""
        return "5" if self.expect.speaks_5 and self.mqtt.get("protocol") != "3.1.1" else "3.1.1"

    def raw(self, **options: Any) -> aiomqtt.Client:
        """A raw client of the test's own (a device or an observer), at the broker's best protocol."""
        return raw_client(self, v5=self.expect.speaks_5, **options)  # type: ignore[arg-type]


# ---- brokers: one of each per session -----------------------------------------------------------


@pytest.fixture(scope="session")
def amqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """An amqtt broker whose taboo plugin refuses `prohibited`; yields its port."""
    with amqtt(tmp_path_factory.mktemp("amqtt-matrix"), plugins=[TABOO]) as port:
        yield port


@pytest.fixture(scope="session")
def rabbitmq_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQ]:
    yield from _started(RabbitMQ, tmp_path_factory)


@pytest.fixture(scope="session")
def nats_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    yield from _started(NatsServer, tmp_path_factory)


def _started(kind: type[Started], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Started]:
    if kind.executable() is None:
        pytest.skip(
            f"{kind.name} is not installed: install Debian's {kind.package} package "
            f"(apt-get install {kind.package}) to run the broker matrix against it"
        )
    with kind(tmp_path_factory.mktemp(kind.package)) as started:
        yield started


@pytest.fixture(scope="module", params=list(EXPECT))
def target(request: pytest.FixtureRequest) -> Target:
    name, expect = request.param, EXPECT[request.param]
    if name.startswith("mosquitto"):
        mosquitto: Mosquitto = request.getfixturevalue("broker")
        protocol = name.removeprefix("mosquitto-")
        # The dynamic-security listener refuses what user `agent` may not do: everything outside
        # allowed/#, readonly/# and writeonly/# (tests/mosquitto.py).
        refusing = {"port": mosquitto.dynsec_port, "username": "agent", "password": "agent-pass"}
        return Target(
            name,
            mosquitto.host,
            mosquitto.port,
            expect,
            {"protocol": protocol},
            refused_filter="forbidden/#",
            refused_topic="forbidden/{token}",
            allowed_topic="allowed/{token}",
            refusing_mqtt={**refusing, "protocol": protocol},
        )
    if name == "amqtt":
        port = request.getfixturevalue("amqtt_broker")
        # The taboo plugin lets user "admin" (any password: anonymous login) do everything.
        admin = {"username": "admin"}
        return Target(
            name,
            "127.0.0.1",
            port,
            expect,
            refused_filter="prohibited",
            refused_topic="prohibited",
            observer=admin,
        )
    if name == "nats":
        nats: NatsServer = request.getfixturevalue("nats_broker")
        admin = {"username": "admin", "password": nats.users["admin"]}
        return Target(name, nats.host, nats.port, expect, observer=admin)
    rabbitmq: RabbitMQ = request.getfixturevalue("rabbitmq_broker")
    # RabbitMQ 3.10 closes the connection on an MQTT 5 CONNECT instead of refusing it, which the
    # server's fallback does not catch yet (test_fallback_to_311_when_the_broker_lacks_mqtt_5); users
    # set the protocol, as here.
    return Target(name, rabbitmq.host, rabbitmq.port, expect, {"protocol": "3.1.1"})


@dataclass
class ServedOn:
    """The server under test, connected to one broker, and an MCP client talking to it over stdio."""

    target: Target
    client: Client

    async def call(self, tool: str, **arguments: Any) -> CallToolResult:
        return await self.client.call_tool(tool, arguments)


@asynccontextmanager
async def serve(target: Target, directory: pathlib.Path, **mqtt: Any) -> AsyncIterator[Client]:
    """A server for `target` (mqtt settings in `mqtt` override the target's), and a client of it."""
    settings = {**target.mqtt, **mqtt}
    config, _ = write_config(directory, target, topics=TOPICS, **settings)  # type: ignore[arg-type]
    async with connect(config, "auto") as client:
        yield client


@pytest.fixture(scope="module")
async def served(target: Target, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ServedOn]:
    async with serve(target, tmp_path_factory.mktemp(f"server-{target.name}")) as client:
        # Connected, and fallen back to 3.1.1 where that applies, before any test looks at the protocol.
        facts = await broker_facts(client, timeout=15)
        assert facts["connected"], f"the server did not connect to {target.name}: {facts}"
        yield ServedOn(target, client)


def unique() -> str:
    """A topic level of the test's own: brokers are shared by the whole session."""
    return secrets.token_hex(4)


async def next_message(client: aiomqtt.Client, timeout: float = 10) -> aiomqtt.Message:
    with anyio.fail_after(timeout):
        return await anext(aiter(client.messages))


async def recovered(served: ServedOn) -> None:
    """Wait until the server publishes again after the broker dropped its connection."""
    with anyio.fail_after(30):
        while True:
            result = await served.call("mqtt_publish", topic=f"lab/{unique()}/probe", payload="x", qos=1)
            if not result.is_error:
                return
            assert error_text(result).startswith("broker unavailable:")
            await anyio.sleep(0.1)


async def publish_in_rounds(client: aiomqtt.Client, topics: Sequence[str], until: anyio.Event) -> None:
    """Publish to each of `topics` in turn, round after round, until `until` is set.

    For calls whose subscription the test cannot see being made: whichever round the call's
    subscription starts in, the following rounds deliver every topic it matches, in order.
    """
    round_number = 0
    while not until.is_set():
        for topic in topics:
            await client.publish(topic, f"round {round_number}".encode(), qos=1)
        round_number += 1
        await anyio.sleep(0.02)  # pacing, so that the broker is not flooded while the call subscribes


async def collect_while_publishing(
    served: ServedOn, topic_filter: str, topics: Sequence[str], count: int
) -> Any:
    """mqtt_subscribe(`topic_filter`, max_messages=`count`) while a device publishes to `topics`."""
    done = anyio.Event()
    async with served.target.raw() as device, anyio.create_task_group() as tg:
        tg.start_soon(publish_in_rounds, device, topics, done)
        try:
            result = await served.call("mqtt_subscribe", topic=topic_filter, max_messages=count, timeout=20)
        finally:
            done.set()
    return structured(result)


# ---- the protocol -------------------------------------------------------------------------------


async def broker_facts(client: Client, timeout: float) -> dict[str, Any]:
    """The broker facts of `mcpmqtt://topics/allowed` once the server is connected, or after `timeout`.

    The protocol shows "5" until a fallback to 3.1.1 has happened, so a test must wait for the
    connection before it looks.
    """
    facts: dict[str, Any] = {}
    with anyio.move_on_after(timeout):
        while not facts.get("connected"):
            resource = await client.read_resource("mcpmqtt://topics/allowed")
            facts = json.loads(resource.contents[0].text)["broker"]  # type: ignore[union-attr]
            if not facts["connected"]:
                await anyio.sleep(0.05)
    return facts


async def test_server_speaks_the_protocol_expected(served: ServedOn) -> None:
    facts = await broker_facts(served.client, timeout=15)
    assert facts["connected"] and facts["protocol"] == served.target.protocol


async def test_fallback_to_311_when_the_broker_lacks_mqtt_5(target: Target, tmp_path: pathlib.Path) -> None:
    """The server asks for MQTT 5 by default and must end up connected whatever the broker speaks.

    amqtt and NATS refuse an MQTT 5 CONNECT with a CONNACK; RabbitMQ 3.10 closes the connection
    without one, which the server does not take for a refusal yet (it retries MQTT 5 for ever).
    """
    topic = f"lab/{unique()}/fallback"
    published: CallToolResult | None = None
    async with serve(target, tmp_path, protocol="5") as client, target.raw() as observer:
        await observer.subscribe(topic, qos=1)
        # A broker that never answers costs one connect timeout (10 s) before anything else is tried.
        facts = await broker_facts(client, timeout=15)
        if facts["connected"]:
            published = await client.call_tool("mqtt_publish", {"topic": topic, "payload": "hi", "qos": 1})
            delivered = await next_message(observer)
    assert facts["connected"], f"the server asking for MQTT 5 never connected to {target.name}: {facts}"
    assert facts["protocol"] == ("5" if target.expect.speaks_5 else "3.1.1")
    assert published is not None and structured(published)["topic"] == topic
    assert delivered.payload == b"hi"


# ---- mqtt_publish -------------------------------------------------------------------------------


async def test_publish_at_qos_0_and_1_reaches_a_raw_subscriber(served: ServedOn) -> None:
    topic = f"lab/{unique()}/publish"
    async with served.target.raw() as observer:
        await observer.subscribe(topic, qos=2)
        for qos in (0, 1):
            result = structured(await served.call("mqtt_publish", topic=topic, payload=f"q{qos}", qos=qos))
            assert result == {"topic": topic, "qos": qos, "retain": False, "bytes": 2}
            message = await next_message(observer)
            expected_qos = qos if served.target.expect.delivery_qos == "minimum" else 2
            assert (message.payload, message.qos) == (f"q{qos}".encode(), expected_qos)


async def test_publish_at_qos_2(served: ServedOn) -> None:
    topic = f"lab/{unique()}/exactly-once"
    async with served.target.raw() as observer:
        await observer.subscribe(topic, qos=2)
        result = await served.call("mqtt_publish", topic=topic, payload="q2", qos=2)
        match served.target.expect.qos2:
            case "delivered" | "downgraded to 1" as outcome:
                assert structured(result)["qos"] == 2
                message = await next_message(observer)
                assert message.payload == b"q2"
                assert message.qos == (2 if outcome == "delivered" else 1)
            case "connection dropped":
                text = error_text(result)
                assert text.startswith("broker unavailable:") and "lost before it acknowledged" in text
                await recovered(served)


async def test_max_qos_keeps_a_qos_2_publish_from_the_broker(target: Target, tmp_path: pathlib.Path) -> None:
    """`mqtt.max_qos: 1` refuses QoS 2 before it is sent: on NATS, where QoS 2 costs the connection and
    every call on it, the connection stays; a QoS 1 publish right after goes through on every broker."""
    topic = f"lab/{unique()}/capped"
    async with serve(target, tmp_path, max_qos=1) as client, target.raw() as observer:
        await broker_facts(client, timeout=15)
        await observer.subscribe(topic, qos=1)
        refused = await client.call_tool("mqtt_publish", {"topic": topic, "payload": "q2", "qos": 2})
        assert error_text(refused).startswith(
            "invalid argument: qos 2 is above the configured (mqtt.max_qos) maximum QoS of 1"
        )
        sent = await client.call_tool("mqtt_publish", {"topic": topic, "payload": "q1", "qos": 1})
        assert structured(sent)["qos"] == 1
        assert (await next_message(observer)).payload == b"q1"  # the first to arrive: q2 never went out


async def test_mqtt5_properties_are_sent_or_noted(served: ServedOn) -> None:
    """MQTT 3.1.1 has no properties: the message still goes out, without them, and `notes` says so."""
    topic = f"lab/{unique()}/properties"
    async with served.target.raw() as observer:
        await observer.subscribe(topic, qos=1)
        result = structured(
            await served.call(
                "mqtt_publish",
                topic=topic,
                payload="21.5",
                qos=1,
                content_type="text/plain",
                user_properties=[["unit", "°C"]],
            )
        )
        message = await next_message(observer)
    assert message.payload == b"21.5"
    if served.target.protocol == "5":
        assert "notes" not in result
        assert getattr(message.properties, "ContentType", None) == "text/plain"
        assert getattr(message.properties, "UserProperty", None) == [("unit", "°C")]
    else:
        assert result["notes"] == [
            "the broker speaks MQTT 3.1.1, so content_type and user_properties were not sent"
        ]
        assert not getattr(message.properties, "UserProperty", None)


async def test_binary_payload_goes_out_exact_and_comes_back_as_base64(served: ServedOn) -> None:
    raw = bytes([0xFF, 0x00, 0xFE, 0x80]) + bytes(range(256))
    topic = f"lab/{unique()}/binary"
    async with served.target.raw() as device:
        await device.subscribe(topic, qos=1)
        encoded = base64.b64encode(raw).decode()
        published = await served.call(
            "mqtt_publish", topic=topic, payload=encoded, payload_encoding="base64", qos=1, retain=True
        )
        assert structured(published)["bytes"] == len(raw)
        assert (await next_message(device)).payload == raw
        read = structured(await served.call("mqtt_read", topic=topic, timeout=10))
        message = read["message"]
        assert message["payload_encoding"] == "base64" and base64.b64decode(message["payload"]) == raw
        await device.publish(topic, b"", qos=1, retain=True)  # clears the retained message


# ---- mqtt_subscribe and mqtt_read -------------------------------------------------------------------


async def test_subscribe_with_plus_delivers_the_concrete_topics(served: ServedOn) -> None:
    base = f"lab/{unique()}"
    matching = [f"{base}/kitchen/temperature", f"{base}/hall/temperature"]
    other = [f"{base}/kitchen/humidity", f"{base}/kitchen/oven/temperature"]
    result = await collect_while_publishing(served, f"{base}/+/temperature", [*matching, *other], 4)
    topics = [message["topic"] for message in result["messages"]]
    assert set(topics) == set(matching) and len(topics) == 4 and not result["timed_out"]


async def test_subscribe_with_hash_delivers_the_parent_and_every_level_below(served: ServedOn) -> None:
    base = f"lab/{unique()}"
    matching = [f"{base}/house", f"{base}/house/floor1/room2"]
    result = await collect_while_publishing(served, f"{base}/house/#", [*matching, f"{base}/houseboat"], 4)
    topics = [message["topic"] for message in result["messages"]]
    assert set(topics) == set(matching) and len(topics) == 4


async def test_a_burst_of_200_messages_is_not_lost(served: ServedOn) -> None:
    """A retained marker tells the test (through progress) that the subscription is in place; then a
    device fires 200 QoS 1 messages at once, and every one comes back, in order."""
    topic = f"lab/{unique()}/burst"
    subscribed = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        if progress >= 1:
            subscribed.set()

    results: list[CallToolResult] = []

    async def collect() -> None:
        arguments = {"topic": topic, "max_messages": 201, "timeout": 60}
        results.append(
            await served.client.call_tool("mqtt_subscribe", arguments, progress_callback=on_progress)
        )

    async with served.target.raw() as device:
        await device.publish(topic, b"marker", qos=1, retain=True)
        async with anyio.create_task_group() as tg:
            tg.start_soon(collect)
            with anyio.fail_after(30):
                await subscribed.wait()
            async with anyio.create_task_group() as burst:
                for number in range(200):
                    burst.start_soon(device.publish, topic, str(number).encode(), 1)
        await device.publish(topic, b"", qos=1, retain=True)
    result = structured(results[0])
    messages = result["messages"]
    assert not result["timed_out"] and messages[0]["payload"] == "marker" and messages[0]["retain"]
    assert [message["payload"] for message in messages[1:]] == [str(number) for number in range(200)]


async def test_a_retained_message_is_read_at_once(served: ServedOn) -> None:
    base = f"lab/{unique()}"
    async with served.target.raw() as device:
        await device.publish(f"{base}/state", b"on", qos=1, retain=True)
        try:
            started = time.monotonic()
            exact = structured(await served.call("mqtt_read", topic=f"{base}/state", timeout=10))
            assert time.monotonic() - started < 5
            assert exact["message"]["payload"] == "on" and exact["message"]["retain"] is True
            wildcard = structured(await served.call("mqtt_read", topic=f"{base}/+", timeout=2))
            if served.target.expect.retained_on_wildcards:
                assert wildcard["message"]["topic"] == f"{base}/state" and wildcard["message"]["retain"]
            else:  # the broker keeps the value but sends it only to a subscription of the exact topic
                assert wildcard["message"] is None and wildcard["timed_out"] is True
        finally:
            await device.publish(f"{base}/state", b"", qos=1, retain=True)


# ---- mqtt_query ---------------------------------------------------------------------------------


async def test_query_gets_the_reply_from_a_responder(served: ServedOn) -> None:
    base = f"lab/{unique()}"
    v5 = served.target.protocol == "5"
    reply_topic = f"{base}/reply"
    async with responder(served.target, f"{base}/request", v5=v5, reply_topic=None if v5 else reply_topic):  # type: ignore[arg-type]
        private = await served.call("mqtt_query", request_topic=f"{base}/request", payload="ping", timeout=10)
        if v5:  # the server's private reply topic, MQTT 5 Response Topic and Correlation Data
            result = structured(private)
            assert result["response"]["payload"] == "re:ping"
            assert result["response"]["properties"]["correlation_data"] == result["correlation_id"]
        else:  # MQTT 3.1.1 cannot carry a response topic: the agent must name the one the device uses
            text = error_text(private)
            assert text.startswith("invalid argument:") and "3.1.1" in text and "response_topic" in text
        named = structured(
            await served.call(
                "mqtt_query",
                request_topic=f"{base}/request",
                response_topic=reply_topic,
                payload="ping",
                timeout=10,
            )
        )
    assert named["response"]["payload"] == "re:ping" and named["response"]["topic"] == reply_topic
    # Without MQTT 5 there is no correlation data: the first reply on the topic is taken as the answer.
    assert ("properties" in named["response"]) is v5


# ---- live state: mqtt_last and mqtt_list_topics ------------------------------------------------------


async def test_live_state_knows_what_arrived(served: ServedOn) -> None:
    """On MQTT 5 the server follows its read patterns, so it knows a topic no call has read; on 3.1.1
    it knows only what calls delivered, and mqtt_last says so in its note."""
    base = f"lab/{unique()}"
    async with served.target.raw() as device:
        await device.publish(f"{base}/unread", b"1", qos=1)
        # The same device, after: on MQTT 5 the follower has the first message once this one is read.
        await device.publish(f"{base}/read", b"2", qos=1, retain=True)
        read = structured(await served.call("mqtt_read", topic=f"{base}/read", timeout=10))
        assert read["message"]["payload"] == "2"
        unread = structured(await served.call("mqtt_last", topic=f"{base}/unread"))
        last = structured(await served.call("mqtt_last", topic=f"{base}/read"))
        listed = structured(await served.call("mqtt_list_topics", filter=f"{base}/#"))
        await device.publish(f"{base}/read", b"", qos=1, retain=True)
    assert last["message"]["payload"] == "2" and last["messages_seen"] == 1
    if served.target.protocol == "5":
        assert unread["message"]["payload"] == "1" and unread["messages_seen"] == 1
        assert [entry["topic"] for entry in listed["topics"]] == [f"{base}/read", f"{base}/unread"]
        assert "note" not in unread
    else:
        assert unread["message"] is None and "3.1.1" in unread["note"]
        assert [entry["topic"] for entry in listed["topics"]] == [f"{base}/read"]


# ---- what the broker refuses -------------------------------------------------------------------------


@asynccontextmanager
async def refusing_server(served: ServedOn, directory: pathlib.Path) -> AsyncIterator[ServedOn]:
    """The server where the broker's rules apply to it: the main one, or one of its own (Mosquitto)."""
    if served.target.refusing_mqtt is None:
        yield served
        return
    async with serve(served.target, directory, **served.target.refusing_mqtt) as client:
        yield ServedOn(served.target, client)


async def test_a_subscription_the_broker_refuses(served: ServedOn, tmp_path: pathlib.Path) -> None:
    target = served.target
    async with refusing_server(served, tmp_path) as server:
        text = error_text(await server.call("mqtt_subscribe", topic=target.refused_filter, timeout=5))
        if target.expect.refused_subscribe == "suback":
            assert text.startswith("broker refused:") and repr(target.refused_filter) in text
        else:
            assert text.startswith("broker unavailable:") and "lost before it acknowledged" in text
            await recovered(server)


async def test_a_publish_the_broker_refuses(served: ServedOn, tmp_path: pathlib.Path) -> None:
    """At QoS 1. Where the broker acknowledges it, an allowed message sent after it (on the same
    connection, so delivered after it) proves that the broker dropped it."""
    target = served.target
    token = unique()
    refused, allowed = target.refused_topic.format(token=token), target.allowed_topic.format(token=token)
    async with refusing_server(served, tmp_path) as server, target.raw(**target.observer) as observer:
        await observer.subscribe(allowed, qos=1)
        if target.expect.refused_publish != "connection dropped":  # RabbitMQ would drop this client too
            await observer.subscribe(refused, qos=1)
        result = await server.call("mqtt_publish", topic=refused, payload="no", qos=1)
        match target.expect.refused_publish:
            case "puback":
                text = error_text(result)
                assert text.startswith("broker refused:") and "Not authorized" in text
            case "silently dropped":
                assert structured(result)["topic"] == refused  # indistinguishable from success
            case "connection dropped":
                assert error_text(result).startswith("broker unavailable:")
                await recovered(server)
        structured(await server.call("mqtt_publish", topic=allowed, payload="yes", qos=1))
        seen: list[str] = []
        with anyio.fail_after(10):
            async for message in observer.messages:
                seen.append(str(message.topic))
                if seen[-1] == allowed:
                    break
        assert refused not in seen


async def test_a_topic_with_a_dot(served: ServedOn) -> None:
    base = f"lab/{unique()}"
    dotted = f"{base}/firmware/v1.2"
    outcome = served.target.expect.dotted_topics
    async with served.target.raw() as observer:
        await observer.subscribe(f"{base}/#", qos=1)
        published = await served.call("mqtt_publish", topic=dotted, payload="x", qos=1, retain=True)
        if outcome == "refused":  # NATS subjects use "." as their separator
            assert error_text(published).startswith("broker unavailable:")
            await recovered(served)
            for name in (dotted, f"{base}/living room"):  # NATS refuses a space as well
                refused = error_text(await served.call("mqtt_read", topic=name, timeout=5))
                assert refused.startswith("broker refused:")
            return
        structured(published)
        try:
            delivered = str((await next_message(observer)).topic)
            read = structured(await served.call("mqtt_read", topic=dotted, timeout=2))
        finally:
            await observer.publish(dotted, b"", qos=1, retain=True)
    if outcome == "kept":
        assert delivered == dotted and read["message"]["topic"] == dotted
    else:  # RabbitMQ maps MQTT's "/" to AMQP's "." and back, so a "." comes back as a "/"
        assert delivered == f"{base}/firmware/v1/2"
        assert read["message"] is None and read["timed_out"]


async def test_hash_never_shows_the_brokers_own_dollar_topics(served: ServedOn) -> None:
    """MQTT keeps `$`-topics out of `#`; NATS does not (its JetStream API traffic shows), so the
    server's own check on every delivered message is what keeps them from the agent."""
    base = f"lab/{unique()}"
    async with served.target.raw() as spy:
        await spy.subscribe("#", qos=0)
        result = await collect_while_publishing(served, "#", [f"{base}/a"], 3)
        seen: list[str] = []
        with anyio.move_on_after(0.5):  # what the spy got meanwhile, to prove the broker's behaviour
            async for message in spy.messages:
                seen.append(str(message.topic))
                if seen[-1].startswith("$"):
                    break
    assert all(not message["topic"].startswith("$") for message in result["messages"])
    assert any(topic.startswith("$") for topic in seen) is served.target.expect.dollar_topics_on_hash
