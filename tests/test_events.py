"""The tool-call event feed: every finished call reaches the hub with who, tool, topic, allowed or
refused and why; never a payload; a reader that lags loses events, counted, without slowing calls.

Through the real MCP client connected in-process to the real server, against the real broker.
"""

from collections.abc import AsyncIterator
from typing import Any

import pytest
from mcp.client import Client
from mcp_client import MODES, error_text, structured
from mosquitto import Mosquitto
from server_config import unique_root

from mcpmqtt.config import parse_config
from mcpmqtt.server.build import McpMqttServer, build_server
from mcpmqtt.server.events import ToolEvent

pytestmark = pytest.mark.anyio
ROOT = unique_root()


@pytest.fixture(params=MODES)
async def served(
    request: pytest.FixtureRequest, broker: Mosquitto
) -> AsyncIterator[tuple[McpMqttServer, Client]]:
    config = parse_config(
        {
            "mqtt": {"host": broker.host, "port": broker.port, "client_id": f"events-{unique_root()}"},
            "topics": [
                {"pattern": f"{ROOT}/lab/#", "permissions": ["read", "write"]},
                {"pattern": f"{ROOT}/ro/#", "permissions": ["read"]},
            ],
        },
        "test",
    )
    server = build_server(config)
    async with Client(server, mode=request.param) as client:
        yield server, client


async def test_every_call_is_an_event_without_its_payload(served: tuple[McpMqttServer, Client]) -> None:
    server, client = served
    seen: list[ToolEvent] = []
    stop = server.events.on_tool_call(seen.append)
    feed = server.events.subscribe()
    secret = "s3cret-payload"
    structured(await client.call_tool("mqtt_publish", {"topic": f"{ROOT}/lab/a", "payload": secret}))
    error_text(await client.call_tool("mqtt_publish", {"topic": f"{ROOT}/ro/a", "payload": secret}))
    error_text(await client.call_tool("mqtt_publish", {"topic": f"{ROOT}/lab/+", "payload": secret}))
    structured(
        await client.call_tool("mqtt_publish", {"topic": f"{ROOT}/lab/b", "payload": secret, "dry_run": True})
    )
    stop()
    assert feed.take() == seen
    assert [(e.tool, e.topic, e.decision, e.outcome) for e in seen] == [
        ("mqtt_publish", f"{ROOT}/lab/a", "allowed", "ok"),
        ("mqtt_publish", f"{ROOT}/ro/a", "refused", "permission denied"),
        ("mqtt_publish", f"{ROOT}/lab/+", "refused", "invalid topic"),
        ("mqtt_publish", f"{ROOT}/lab/b", "allowed", "dry_run"),
    ]
    assert all(secret not in repr(event) for event in seen)
    assert all(event.caller for event in seen)
    feed.close()


async def test_a_lagging_reader_loses_events_counted_and_calls_go_on(
    served: tuple[McpMqttServer, Client],
) -> None:
    server, client = served
    slow = server.events.subscribe(capacity=2)
    arguments: dict[str, Any] = {"topic": f"{ROOT}/lab/x", "payload": "1"}
    for _ in range(5):
        structured(await client.call_tool("mqtt_publish", arguments))
    assert len(slow.take()) == 2
    assert slow.dropped == 3
    structured(await client.call_tool("mqtt_publish", arguments))
    assert len(slow.take()) == 1  # room again once read
    slow.close()
    structured(await client.call_tool("mqtt_publish", arguments))
    assert slow.take() == []  # closed: no longer fed


async def test_a_failing_callback_does_not_fail_the_call(served: tuple[McpMqttServer, Client]) -> None:
    server, client = served

    def broken(_: ToolEvent) -> None:
        raise RuntimeError("boom")

    server.events.on_tool_call(broken)
    structured(await client.call_tool("mqtt_publish", {"topic": f"{ROOT}/lab/y", "payload": "1"}))
