"""`$share` subscriptions where the broker grants them but delivers nothing through them (NATS).

MQTT 5 brokers say so in the CONNACK; on 3.1.1 a probe at connection start finds out. Against real
brokers: Mosquitto delivers through `$share` on both protocols; the NATS server's MQTT listener (3.1.1
only) grants the SUBSCRIBE and delivers nothing, so a shared read is refused before subscribing; amqtt
delivers nothing through it either.
"""

import pathlib
import secrets
import uuid
from collections.abc import Iterator

import anyio
import pytest
from brokers import NatsServer
from devices import raw_client
from mcp_client import connect, error_text, write_config
from mosquitto import Mosquitto
from processes import amqtt
from support import eventually, running

from mcpmqtt.errors import BrokerRefused
from mcpmqtt.mqtt import Broker, BrokerSettings, Inbox
from mcpmqtt.mqtt.shared_probe import shared_delivery

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    if NatsServer.executable() is None:
        pytest.skip("nats-server is not installed: apt-get install nats-server to run these tests")
    with NatsServer(tmp_path_factory.mktemp("nats-share")) as server:
        yield server


def settings(host: str, port: int, protocol: str = "5") -> BrokerSettings:
    return BrokerSettings(host=host, port=port, client_id=f"test-{uuid.uuid4().hex[:10]}", protocol=protocol)  # type: ignore[arg-type]


def shared_known(adapter: Broker) -> bool:
    return adapter._connection.shared_subscriptions is not None


async def shared_read(adapter: Broker, host: str, port: int) -> bytes:
    """One message read through `$share/...` while a device publishes to its topic."""
    topic = f"share/{secrets.token_hex(4)}"
    inbox = Inbox(1)
    async with (
        adapter.subscription(f"$share/readers/{topic}", inbox),
        raw_client(_At(host, port), v5=False) as device,
    ):
        await device.publish(topic, b"through the group", qos=1)
        assert await inbox.wait_full(5)
    return bytes(inbox.messages[0].payload)


class _At:
    """Where a raw device client connects (what `raw_client` reads from a broker fixture)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_mosquitto_delivers_through_share_on_both_protocols(broker: Mosquitto, protocol: str) -> None:
    async with running(settings(broker.host, broker.port, protocol)) as adapter:
        await eventually(lambda: shared_known(adapter), timeout=5)
        assert adapter._connection.shared_subscriptions is True
        assert await shared_read(adapter, broker.host, broker.port) == b"through the group"


async def test_the_probe_tells_nats_and_amqtt_from_mosquitto(
    broker: Mosquitto, nats: NatsServer, tmp_path: pathlib.Path
) -> None:
    assert await shared_delivery(settings(broker.host, broker.port)) is True
    assert await shared_delivery(settings(nats.host, nats.port)) is False
    with amqtt(tmp_path) as port:  # amqtt 0.12 takes `$share/...` for a plain filter
        assert await shared_delivery(settings("127.0.0.1", port)) is False


async def test_a_shared_subscription_on_nats_is_refused_before_subscribing(nats: NatsServer) -> None:
    async with running(settings(nats.host, nats.port)) as adapter:
        assert adapter.protocol == "3.1.1"
        await eventually(lambda: shared_known(adapter), timeout=5)
        with pytest.raises(
            BrokerRefused, match=r"^broker refused: .*delivers nothing.*plain filter 'jobs/x'"
        ):
            async with adapter.subscription("$share/workers/jobs/x", Inbox(1)):
                pass
        assert adapter.active_filters == []  # nothing was sent to the broker
        # The plain filter still works on the same connection.
        inbox = Inbox(1)
        async with (
            adapter.subscription("jobs/x", inbox),
            raw_client(_At(nats.host, nats.port), v5=False) as device,
        ):
            await device.publish("jobs/x", b"plain", qos=1)
            assert await inbox.wait_full(5)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_mqtt_read_of_a_share_on_nats_says_why_it_is_refused(
    nats: NatsServer, tmp_path: pathlib.Path, mode: str
) -> None:
    topics = [{"pattern": "$share/workers/jobs/#", "permissions": ["read"], "description": "job queue"}]
    config, _ = write_config(tmp_path, nats, topics=topics)  # type: ignore[arg-type]
    async with connect(config, mode) as client:
        with anyio.fail_after(20):
            while True:  # the probe answers within about a second of the connection
                result = await client.call_tool(
                    "mqtt_read", {"topic": "$share/workers/jobs/a", "timeout": 0.5}
                )
                if result.is_error:
                    break
        text = error_text(result)
        assert text.startswith("broker refused: ")
        assert "delivers nothing through them" in text and "'jobs/a'" in text
