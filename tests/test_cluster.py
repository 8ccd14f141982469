"""Replicas on a broker cluster, through real MCP clients over HTTP via HAProxy (`tests/cluster.py`).

Two mcpmqtt replicas, each on its own node of a 3-node NATS cluster, behind HAProxy; the clients are
sessionless 2026-07-28 ones, whose requests any replica may serve (one test holds a 2025-11-25
session). Proven here: a publish crosses the
cluster; a NATS node killed mid-run loses no acknowledged QoS 1 publish and leaves no call stuck; a
replica killed mid-run, the clients carry on through the other.
"""

import secrets
import time
from collections.abc import Iterator

import anyio
import pytest
from brokers import NatsServer
from cluster import Deployment, HAProxy, deployment
from devices import raw_client
from http_server import http_client
from mcp.client import Client
from support import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

TOPICS = [{"pattern": "cluster/#", "permissions": ["read", "write"], "description": "the cluster tests"}]
CALL_TIMEOUT = (
    10 + 3
)  # the broker's acknowledgement timeout (10 s), and a margin for the round trip through HAProxy


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    for missing, package in (
        (NatsServer.executable() is None, "nats-server"),
        (HAProxy.executable() is None, "haproxy"),
    ):
        if missing:
            pytest.skip(f"the cluster tests need Debian's {package} package: apt-get install {package}")
    with deployment(tmp_path_factory.mktemp("cluster"), TOPICS) as setup:
        yield setup


@pytest.fixture
def deployed(started: Deployment) -> Deployment:
    """The deployment with every node and replica up and in HAProxy's rotation (tests kill them)."""
    started.restore()
    return started


async def test_a_publish_through_either_replica_reaches_a_subscriber_on_another_node(
    deployed: Deployment,
) -> None:
    base = f"cluster/{secrets.token_hex(4)}"
    third = deployed.cluster.nodes[2]
    async with raw_client(third, v5=False) as subscriber, http_client(deployed.haproxy.url) as client:  # type: ignore[arg-type]
        await subscriber.subscribe(f"{base}/#", qos=1)
        sent = [f"{base}/{i}" for i in range(4)]
        for topic in sent:
            result = await client.call_tool("mqtt_publish", {"topic": topic, "payload": "hi", "qos": 1})
            assert not result.is_error, result.content
        got: list[str] = []
        with anyio.fail_after(10):
            async for message in subscriber.messages:
                got.append(message.topic.value)
                if len(got) == len(sent):
                    break
    assert sorted(got) == sent
    # Round robin: both replicas (on nodes 0 and 1) published some of them.
    await eventually(lambda: all(deployed.calls_served(i, base) > 0 for i in (0, 1)))


async def test_a_2025_11_25_session_stays_on_the_replica_that_opened_it(deployed: Deployment) -> None:
    """Round robin alone would send every other request of a session to the replica that does not know
    it (404); the stick table learns the replica from the initialize response."""
    base = f"cluster/{secrets.token_hex(4)}"
    for _ in range(2):  # two sessions: round robin opens them on different replicas
        async with http_client(deployed.haproxy.url, mode="legacy") as client:
            for i in range(6):
                result = await client.call_tool("mqtt_publish", {"topic": f"{base}/{i}", "payload": "x"})
                assert not result.is_error, result.content
    await eventually(lambda: [deployed.calls_served(i, base) for i in (0, 1)] == [6, 6])


async def test_a_nats_node_killed_mid_run_loses_no_acknowledged_publish(deployed: Deployment) -> None:
    base = f"cluster/{secrets.token_hex(4)}"
    third = deployed.cluster.nodes[2]
    errors: list[str] = []
    outcomes: list[tuple[str, bool, float]] = []  # (topic, acknowledged, when it was called) in order

    async def publish(client: Client, number: int) -> None:
        topic = f"{base}/{number}"
        started = time.monotonic()
        with anyio.fail_after(CALL_TIMEOUT):
            result = await client.call_tool("mqtt_publish", {"topic": topic, "payload": "x", "qos": 1})
        assert time.monotonic() - started < CALL_TIMEOUT
        if result.is_error:
            text = result.content[0].text  # type: ignore[union-attr]
            assert text.startswith("broker unavailable:"), text
            errors.append(text)
        outcomes.append((topic, not result.is_error, started))

    async with raw_client(third, v5=False) as subscriber, http_client(deployed.haproxy.url) as client:  # type: ignore[arg-type]
        await subscriber.subscribe(f"{base}/#", qos=1)
        for _ in range(10):
            await publish(client, len(outcomes))
        assert all(ok for _, ok, _ in outcomes)
        deployed.cluster.nodes[0].kill()  # replica 0's node, mid-run
        killed_at, killed_time = len(outcomes), time.monotonic()
        # Calls go on while HAProxy's health check (/readyz every 0.5 s, two failures) finds replica 0
        # without a broker, within 1.5 s; meanwhile the calls it gets fail fast with `broker unavailable:`.
        # Calls go on for 4 s. Besides replica 0's calls until HAProxy's check takes it out, calls on the
        # surviving nodes may fail too, fast, with `broker unavailable:`: NATS sometimes drops their MQTT
        # connections for a few seconds after a node dies (JetStream, which its MQTT layer uses, elects
        # new leaders for what node 0 led). What must hold is that none hangs and none acknowledged is lost.
        while time.monotonic() < killed_time + 4:
            await publish(client, len(outcomes))
            await anyio.sleep(0.02)  # pacing: a few dozen calls over the 4 s
        await anyio.to_thread.run_sync(deployed.cluster.nodes[0].start)
        await anyio.to_thread.run_sync(deployed.replicas[0].wait_ready, 30)
        for _ in range(10):
            await publish(client, len(outcomes))
        acknowledged = {topic for topic, ok, _ in outcomes if ok}
        got: set[str] = set()
        with anyio.move_on_after(10):
            async for message in subscriber.messages:
                got.add(message.topic.value)
                if got >= acknowledged:
                    break
    lost = sorted(acknowledged - got, key=lambda topic: int(topic.rsplit("/", 1)[1]))
    assert not lost, f"acknowledged but never delivered: {lost}"
    assert any(not ok for _, ok, _ in outcomes[killed_at:]), "replica 0 never noticed its node was gone"
    assert all(ok for _, ok, _ in outcomes[-10:]), f"calls failed after node 0 came back: {errors[-3:]}"


async def test_a_replica_killed_mid_run_the_clients_carry_on_through_the_other(deployed: Deployment) -> None:
    base = f"cluster/{secrets.token_hex(4)}"
    async with http_client(deployed.haproxy.url) as first, http_client(deployed.haproxy.url) as second:
        for i in range(20):
            if i == 6:
                victim = deployed.replicas[0]
                assert victim.process is not None
                victim.process.kill()
                victim.process.wait()
            for client in (first, second):
                with anyio.fail_after(CALL_TIMEOUT):
                    result = await client.call_tool(
                        "mqtt_publish", {"topic": f"{base}/{i}", "payload": "x", "qos": 1}
                    )
                assert not result.is_error, (i, result.content)
