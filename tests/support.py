"""What many tests need, written once: free ports, a waiting helper, the broker adapter running, a
served MCP client, and a JSON-RPC peer on a server's stdio.

Tests import from here (and from the launchers: mosquitto.py, brokers.py, http_server.py), never from
another test module.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream
from mcp.client import Client

from mcpmqtt.mqtt import Broker, BrokerSettings

if TYPE_CHECKING:
    from mosquitto import Mosquitto


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (IPv6 for an address with ':')."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ports that are free right now, distinct because all are held open until all are picked."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets = [socket.socket(family) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll until `condition` holds; fail the test with a clear message otherwise.

    For state that has no event to wait on (counters a test reads); prefer an event where one exists.
    """
    with anyio.move_on_after(timeout):
        while not condition():  # noqa: ASYNC110 - the conditions are plain state, nothing to await
            await anyio.sleep(0.02)
        return
    pytest.fail(f"condition not met within {timeout} s")


@contextlib.asynccontextmanager
async def running(settings: BrokerSettings, *, wait: bool = True) -> AsyncIterator[Broker]:
    """The broker adapter with its connection loop running (connected, unless `wait` is False)."""
    adapter = Broker(settings)
    task = asyncio.create_task(adapter.run())
    try:
        if wait and not await adapter.wait_connected(10):
            pytest.fail(f"the adapter did not connect to {settings.host}:{settings.port} within 10 s")
        yield adapter
    finally:
        await adapter.stop(task)


@dataclass
class Served:
    """A server under test and the MCP client talking to it over stdio, in one protocol era."""

    client: Client
    client_id: str
    broker: Mosquitto
    mode: str

    async def call(self, tool: str, **arguments: Any) -> Any:
        return await self.client.call_tool(tool, arguments)

    def count(self, kind: str, topic_filter: str) -> int:
        """How often the broker logged `kind` (subscribe/unsubscribe) of `topic_filter` by this server."""
        return self.broker.subscribe_events(self.client_id).count((kind, topic_filter))

    async def subscribed(self, topic_filter: str, before: int) -> None:
        """Wait until the broker logged one more SUBSCRIBE of `topic_filter` than `before`."""
        from mcp_client import wait_for_log  # mcp_client imports this module's launchers' helpers

        await wait_for_log(self.broker, self.client_id, "subscribe", topic_filter, before + 1)


class Wire:
    """A line-oriented JSON-RPC peer on a server process's stdin/stdout."""

    def __init__(self, process: Process) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process = process
        self._lines = TextReceiveStream(process.stdout)
        self._buffer = ""

    async def send(self, message: dict[str, Any] | str) -> None:
        line = message if isinstance(message, str) else json.dumps(message)
        assert self.process.stdin is not None
        await self.process.stdin.send((line + "\n").encode())

    async def receive(self) -> dict[str, Any]:
        """The next stdout line; it must be a JSON-RPC message (anything else would break a host)."""
        with anyio.fail_after(10):
            while "\n" not in self._buffer:
                self._buffer += await self._lines.receive()
        line, self._buffer = self._buffer.split("\n", 1)
        message = json.loads(line)
        assert message["jsonrpc"] == "2.0"
        return message  # type: ignore[no-any-return]

    async def response(self, request_id: int) -> dict[str, Any]:
        while (message := await self.receive()).get("id") != request_id:
            pass
        return message


async def start(config: pathlib.Path) -> Process:
    """The server as a child process speaking JSON-RPC on its stdin/stdout (stderr discarded)."""
    return await anyio.open_process(
        [sys.executable, "-m", "mcpmqtt", "--config", str(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
