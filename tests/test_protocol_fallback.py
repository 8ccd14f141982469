"""MQTT 5 first, 3.1.1 when the broker refuses it: against amqtt, a real broker that speaks only 3.1.1."""

import asyncio
import pathlib
from collections.abc import Iterator

import anyio
import pytest
from anyio.abc import SocketStream
from devices import raw_client
from mcp_client import connect, error_text, structured, write_config
from mosquitto import Mosquitto
from processes import amqtt

from mcpmqtt.errors import BrokerUnavailable
from mcpmqtt.mqtt import Broker, BrokerSettings, Inbox

pytestmark = pytest.mark.anyio


class Amqtt(Mosquitto):
    """Only what the helpers here read of a broker: its host and port."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port


@pytest.fixture(scope="module")
def amqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Amqtt]:
    with amqtt(tmp_path_factory.mktemp("amqtt")) as port:
        yield Amqtt("127.0.0.1", port)


async def test_adapter_falls_back_to_311_when_the_broker_refuses_5(amqtt_broker: Amqtt) -> None:
    adapter = Broker(BrokerSettings(amqtt_broker.host, amqtt_broker.port, "fallback-test", protocol="5"))
    task = asyncio.create_task(adapter.run())
    try:
        for _ in range(200):
            if adapter.connected:
                break
            await asyncio.sleep(0.05)
        assert adapter.connected and adapter.protocol == "3.1.1"
        inbox = Inbox(1)
        async with adapter.subscription("fallback/#", inbox):
            await adapter.publish("fallback/x", b"over 3.1.1", qos=1)
            assert await inbox.wait_full(5)
        assert inbox.messages[0].payload == b"over 3.1.1"
    finally:
        await adapter.stop(task)


async def test_a_port_that_closes_on_connect_fails_fast_and_leaves_mqtt_5_to_a_broker_that_speaks_it(
    tmp_path: pathlib.Path,
) -> None:
    """RabbitMQ 3.10 closes the connection on an MQTT 5 CONNECT instead of refusing it
    (tests/test_broker_matrix.py has the fallback it then needs); a broker on its way down or a proxy with
    no backend closes it too. Each attempt fails at once, not after the 10 s CONNACK timeout, and the
    3.1.1 tried in between does not stick: the Mosquitto that then comes up on the port gets MQTT 5."""
    mosquitto = Mosquitto(tmp_path)
    closed = 0

    async def close_at_once(stream: SocketStream) -> None:
        nonlocal closed
        closed += 1
        await stream.aclose()

    adapter = Broker(BrokerSettings(mosquitto.host, mosquitto.port, "closing-port-test", protocol="5"))
    listener = await anyio.create_tcp_listener(local_host=mosquitto.host, local_port=mosquitto.port)
    task = asyncio.create_task(adapter.run())
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, close_at_once)
            with anyio.fail_after(5):  # 3 attempts, well inside one CONNACK timeout
                while closed < 3:  # noqa: ASYNC110 - counted by the listener
                    await anyio.sleep(0.02)
            with pytest.raises(BrokerUnavailable, match="closed the connection without answering CONNECT"):
                await adapter.publish("closing/x", b"", qos=0)
            tg.cancel_scope.cancel()
        await listener.aclose()
        with mosquitto:
            with anyio.fail_after(20):
                while not adapter.connected:  # noqa: ASYNC110 - a state flag, polled briefly
                    await anyio.sleep(0.05)
            assert adapter.protocol == "5"
    finally:
        await adapter.stop(task)


async def test_tools_work_after_fallback_and_query_asks_for_a_response_topic(
    amqtt_broker: Amqtt, tmp_path: pathlib.Path
) -> None:
    config, _ = write_config(tmp_path, amqtt_broker)
    async with connect(config, "auto") as client:
        published = await client.call_tool("mqtt_publish", {"topic": "lab/old", "payload": "x", "qos": 1})
        assert structured(published)["bytes"] == 1
        text = error_text(await client.call_tool("mqtt_query", {"request_topic": "lab/req", "payload": "x"}))
        assert text.startswith("invalid argument:") and "3.1.1" in text and "response_topic" in text
        async with raw_client(amqtt_broker, v5=False) as device:
            await device.publish("status/system", b"up", qos=1, retain=True)
        read = structured(await client.call_tool("mqtt_read", {"topic": "status/system", "timeout": 5}))
        assert read["message"]["payload"] == "up" and read["message"]["retain"] is True
