"""The paho speed-ups change nothing but speed.

The property decoding gives the same bytes, values and errors: each side runs in its own interpreter,
one with paho as shipped and one patched, on the same inputs; their outputs must be identical. The
read path (FastReader) delivers every message whole, in order, acknowledged, with the properties paho
would give, whatever way the stream is cut into reads.
"""

import json
import pathlib
import random
import socket
import subprocess
import sys
import uuid
from contextlib import AbstractAsyncContextManager
from typing import Literal

import anyio
import pytest
import support
from devices import raw_client
from mosquitto import Mosquitto
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mcpmqtt.mqtt import Broker, BrokerSettings, Inbox

PROBE = r"""
import json, sys
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties, MQTTException
if sys.argv[1] == "patched":
    from mcpmqtt.mqtt import speedups as paho_speedups
    paho_speedups.install()

out = []
def record(label, fn):
    try:
        out.append([label, fn()])
    except MQTTException as exc:
        out.append([label, "MQTTException: " + str(exc).split(" dict_keys")[0]])

def publish_props():
    p = Properties(PacketTypes.PUBLISH)
    p.PayloadFormatIndicator = 1
    p.MessageExpiryInterval = 3600
    p.ContentType = "application/json"
    p.ResponseTopic = "replies/x"
    p.CorrelationData = b"\x00\xffid"
    p.UserProperty = ("k1", "v1")
    p.UserProperty = [("k2", "v2"), ("k3", "")]
    p.SubscriptionIdentifier = 7
    p.TopicAlias = 3
    return p

packed = publish_props().pack()
record("pack", lambda: packed.hex())
def roundtrip():
    q = Properties(PacketTypes.PUBLISH)
    q.unpack(packed)
    tables = ("packetType", "types", "names", "properties")
    return sorted((k, repr(v)) for k, v in vars(q).items() if k not in tables)
record("unpack", roundtrip)
record("str", lambda: str(Properties(PacketTypes.PUBLISH).unpack(packed)[0]))
record("json", lambda: repr(Properties(PacketTypes.PUBLISH).unpack(packed)[0].json()))
record("empty", lambda: Properties(PacketTypes.PUBLISH).isEmpty())
def connect_props():
    c = Properties(PacketTypes.CONNECT)
    c.SessionExpiryInterval = 10
    c.ReceiveMaximum = 100
    c.MaximumPacketSize = 1000
    c.TopicAliasMaximum = 5
    c.RequestResponseInformation = 1
    c.UserProperty = ("a", "b")
    return c.pack().hex()
record("connect", connect_props)
def sub_props():
    s = Properties(PacketTypes.SUBSCRIBE)
    s.SubscriptionIdentifier = 268435455
    return s.pack().hex()
record("subscribe", sub_props)
record("bad name", lambda: setattr(Properties(PacketTypes.PUBLISH), "NoSuchThing", 1))
record("wrong packet", lambda: setattr(Properties(PacketTypes.PUBLISH), "SessionExpiryInterval", 1))
record("bad range", lambda: setattr(Properties(PacketTypes.PUBLISH), "TopicAlias", 0))
record("bad sub id", lambda: setattr(Properties(PacketTypes.SUBSCRIBE), "SubscriptionIdentifier", 0))
# two Content Type properties (id 3): paho refuses a repeat of a single-valued property
twice = bytes([8, 3, 0, 1, 97, 3, 0, 1, 98])
record("duplicate", lambda: Properties(PacketTypes.PUBLISH).unpack(twice)[1])
print(json.dumps(out))
"""


def probe(variant: str) -> list[list[object]]:
    done = subprocess.run([sys.executable, "-c", PROBE, variant], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_patched_properties_behave_exactly_like_paho() -> None:
    shipped, patched = probe("shipped"), probe("patched")
    assert [label for label, _ in shipped] == [label for label, _ in patched]
    for (label, expected), (_, actual) in zip(shipped, patched, strict=True):
        assert actual == expected, label
    outcomes = dict(shipped)
    assert str(outcomes["duplicate"]).startswith("MQTTException")  # the probe does reach paho's checks
    assert str(outcomes["bad range"]).startswith("MQTTException")


# ---- the read path (FastReader), through the adapter against a real broker -----------------------


class OneAtATimeMosquitto(Mosquitto):
    """Sends a subscriber its next QoS 1 message only once the previous one was acknowledged."""

    def _more_listeners(self) -> str:
        return "max_inflight_messages 1\n"  # overrides the tests' 0 (no limit) above it


def running(
    mosquitto: Mosquitto, protocol: Literal["5", "3.1.1"] = "5"
) -> AbstractAsyncContextManager[Broker]:
    """The adapter connected to `mosquitto` over `protocol`."""
    client_id = f"test-{uuid.uuid4().hex[:10]}"
    return support.running(BrokerSettings(mosquitto.host, mosquitto.port, client_id, protocol=protocol))


@pytest.mark.anyio
async def test_qos1_messages_read_in_place_are_acknowledged(tmp_path: pathlib.Path) -> None:
    """Without our PUBACK the broker would send the first message and then wait for ever."""
    with OneAtATimeMosquitto(tmp_path / "broker") as mosquitto:
        async with running(mosquitto) as adapter, raw_client(mosquitto) as device:
            inbox = Inbox(20)
            async with adapter.subscription("ack/x", inbox):
                for i in range(20):
                    await device.publish("ack/x", str(i).encode(), qos=1)
                assert await inbox.wait_full(10), f"{len(inbox.messages)} of 20 arrived"
    assert [bytes(m.payload) for m in inbox.messages] == [str(i).encode() for i in range(20)]
    assert {m.qos for m in inbox.messages} == {1}
    assert all(m.properties is None for m in inbox.messages)  # decoded by FastReader, not by paho


@pytest.mark.anyio
@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_packets_cut_across_reads_arrive_whole_and_in_order(
    broker: Mosquitto, protocol: Literal["5", "3.1.1"]
) -> None:
    """Sizes around the 1- to 3-byte remaining-length steps and the 64 KiB read size, one packet of
    2 MB that takes many reads, and hundreds of small ones cut at whatever byte a read ends."""
    rng = random.Random(7)
    sizes = [0, 1, 127, 128, 16_383, 16_384, 65_535, 65_536, 65_537, 200_000, 2_000_000]
    sizes += [rng.randrange(3000) for _ in range(400)]
    rng.shuffle(sizes)
    sent = [rng.randbytes(size) for size in sizes]
    async with running(broker, protocol) as adapter, raw_client(broker) as device:
        inbox = Inbox(len(sent))
        async with adapter.subscription("cut/#", inbox):
            for i, payload in enumerate(sent):
                await device.publish(f"cut/{i % 5}", payload, qos=0)
            assert await inbox.wait_full(30), f"{len(inbox.messages)} of {len(sent)} arrived"
    assert [bytes(m.payload) for m in inbox.messages] == sent
    assert [m.topic for m in inbox.messages] == [f"cut/{i % 5}" for i in range(len(sent))]
    assert all(m.properties is None for m in inbox.messages)


@pytest.mark.anyio
async def test_messages_handed_to_paho_keep_their_place_and_their_properties(broker: Mosquitto) -> None:
    """Messages with properties of the sender's are paho's to decode; they must not overtake or fall
    behind the messages decoded in place around them, at QoS 0 or 1."""

    def properties(i: int) -> Properties | None:
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        if i % 4 == 1:
            props.UserProperty = ("n", str(i))
        elif i % 4 == 3:
            props.ContentType = "text/plain"
        else:
            return None
        return props

    count = 40
    async with running(broker) as adapter, raw_client(broker) as device:
        inbox = Inbox(count)
        async with adapter.subscription("mix/x", inbox):
            for i in range(count):
                await device.publish("mix/x", str(i).encode(), qos=i // 2 % 2, properties=properties(i))
            assert await inbox.wait_full(10), f"{len(inbox.messages)} of {count} arrived"
    assert [int(m.payload) for m in inbox.messages] == list(range(count))
    assert [m.qos for m in inbox.messages] == [i // 2 % 2 for i in range(count)]
    for message in inbox.messages:
        i = int(message.payload)
        if i % 4 == 1:
            assert message.properties is not None
            assert message.properties.user_properties == (("n", str(i)),)
        elif i % 4 == 3:
            assert message.properties is not None
            assert message.properties.content_type == "text/plain"
        else:
            assert message.properties is None


@pytest.mark.anyio
async def test_after_a_disconnect_from_the_broker_the_adapter_comes_back(fresh_broker: Mosquitto) -> None:
    """Another client taking over our client id makes Mosquitto close our connection (2.0.11 sends no
    DISCONNECT packet for it, measured with plain paho); the adapter reconnects and resubscribes."""
    async with running(fresh_broker) as adapter, raw_client(fresh_broker) as device:
        client_id = adapter.settings.client_id
        inbox = Inbox(1)
        async with adapter.subscription("takeover/x", inbox):
            with socket.create_connection((fresh_broker.host, fresh_broker.port)) as intruder:
                body = (
                    b"\x00\x04MQTT\x04\x02\x00\x3c" + len(client_id).to_bytes(2, "big") + client_id.encode()
                )
                intruder.sendall(bytes([0x10, len(body)]) + body)
                assert intruder.recv(4) == b"\x20\x02\x00\x00"  # CONNACK: the session is the intruder's
            with anyio.fail_after(10):  # connected: the adapter, the intruder, the adapter again
                while fresh_broker.log_text().count(f" as {client_id} (") < 3:  # noqa: ASYNC110
                    await anyio.sleep(0.02)
                while not adapter.connected:  # noqa: ASYNC110 - a state flag, polled briefly
                    await anyio.sleep(0.02)
            await device.publish("takeover/x", b"back", qos=1)
            assert await inbox.wait_full(10)
    assert inbox.messages[0].payload == b"back"
