"""Helpers to drive the real server as a subprocess through the MCP SDK's client."""

import json
import os
import pathlib
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp_types import CallToolResult
from mosquitto import Mosquitto

TOOLS = frozenset(
    {
        "mqtt_publish",
        "mqtt_subscribe",
        "mqtt_read",
        "mqtt_query",
        "mqtt_list_topics",
        "mqtt_last",
        "mqtt_watch",
        "mqtt_poll",
        "mqtt_unwatch",
        "mqtt_history",
        "mqtt_list_devices",
        "mqtt_describe",
    }
)
"""The tools a server with the default config offers (live state, watches, history and discovery on)."""

MODES = ("legacy", "auto")
"""`legacy` negotiates 2025-11-25 with initialize; `auto` gets the sessionless 2026-07-28 era."""

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "tests", "version": "1"},
    },
}
"""A handshake-era initialize request, for tests that speak JSON-RPC on the wire themselves."""

TEST_TOPICS: list[dict[str, Any]] = [
    {"pattern": "sensors/+/temperature", "permissions": ["read"], "description": "temperatures"},
    {"pattern": "status/system", "permissions": ["read"], "description": "system status"},
    {"pattern": "actuators/#", "permissions": ["write"], "description": "actuators"},
    {"pattern": "commands/+/request", "permissions": ["write"], "description": "requests"},
    {"pattern": "commands/+/response", "permissions": ["read"], "description": "responses"},
    {"pattern": "test/+", "permissions": ["read"], "description": "one level under test"},
    {"pattern": "lab/#", "permissions": ["read", "write"], "description": "the lab"},
]


def write_config(
    directory: pathlib.Path,
    broker: Mosquitto,
    port: int | None = None,
    topics: list[dict[str, Any]] | None = None,
    **mqtt: Any,
) -> tuple[pathlib.Path, str]:
    """A config for the test broker; returns its path and the server's MQTT client id."""
    client_id = f"mcpmqtt-test-{uuid.uuid4().hex[:8]}"
    config = {
        "mqtt": {"host": broker.host, "port": port or broker.port, "client_id": client_id, **mqtt},
        "topics": topics or TEST_TOPICS,
        "logging": {"level": "DEBUG"},
    }
    path = directory / f"{client_id}.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path, client_id


def server_parameters(config: pathlib.Path) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcpmqtt", "--config", str(config)],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@asynccontextmanager
async def connect(config: pathlib.Path, mode: str) -> AsyncIterator[Client]:
    async with Client(server_parameters(config), mode=mode) as client:
        yield client


def structured(result: CallToolResult) -> dict[str, Any]:
    """The structured result, after checking the text content carries the same JSON."""
    assert not result.is_error, result.content
    assert result.structured_content is not None
    text = result.content[0].text  # type: ignore[union-attr]
    assert json.loads(text) == result.structured_content
    return result.structured_content


def error_text(result: CallToolResult) -> str:
    assert result.is_error, result.structured_content
    return result.content[0].text  # type: ignore[union-attr, no-any-return]


async def wait_for_log(
    broker: Mosquitto, client_id: str, kind: str, topic_filter: str, count: int = 1
) -> None:
    """Wait until the broker logged `count` subscribe/unsubscribe events of `topic_filter` by the server."""
    with anyio.move_on_after(10):
        while broker.subscribe_events(client_id).count((kind, topic_filter)) < count:  # noqa: ASYNC110
            await anyio.sleep(0.02)
        return
    raise AssertionError(f"broker never logged {kind} {topic_filter!r} x{count} for {client_id}")
