"""Graceful shutdown over HTTP (issue 4.4): on SIGTERM, calls in flight finish within
`http.shutdown_timeout` or get a JSON-RPC error that says why; idle event streams do not hold the
process up; the broker sees the subscriptions removed and a clean DISCONNECT.
"""

from __future__ import annotations

import json
import pathlib
import signal
import time
from typing import Any

import anyio
import httpx2
import pytest
from http_server import ServerProcess, config_for, http_client
from mcp.shared.exceptions import MCPError
from mcp_client import structured
from mosquitto import Mosquitto

pytestmark = pytest.mark.anyio

GRACE = 2.0


async def test_sigterm_lets_calls_finish_cuts_off_the_rest_and_disconnects_cleanly(
    broker: Mosquitto, tmp_path: pathlib.Path
) -> None:
    with ServerProcess(tmp_path, config_for(broker, {"shutdown_timeout": GRACE})) as server:
        server.wait_ready()
        results: dict[str, Any] = {}

        async def call(name: str, mode: str, timeout: float, started: anyio.Event) -> None:
            try:
                async with http_client(server.url, mode=mode) as client:
                    await client.list_tools()  # the SDK's client checks results against these; get them now
                    started.set()
                    try:
                        arguments = {"topic": f"lab/shutdown/{name}", "timeout": timeout, "max_messages": 1}
                        results[name] = structured(await client.call_tool("mqtt_subscribe", arguments))
                    except MCPError as exc:
                        results[name] = exc
            except* httpx2.HTTPError:
                pass  # the client's goodbye (DELETE, reopening its event stream) finds the server gone

        async with anyio.create_task_group() as tasks:
            for name, mode, timeout in (
                ("short", "auto", 1.0),
                ("long", "auto", 30.0),  # its answer has not begun when it is cut off: a 503
                ("legacy", "legacy", 1.0),
                ("long-legacy", "legacy", 30.0),  # its answer is an SSE stream already begun
            ):
                started = anyio.Event()
                tasks.start_soon(call, name, mode, timeout, started)
                await started.wait()
            await anyio.sleep(0.3)  # every call is in flight, the legacy session's GET stream is open
            signalled = time.monotonic()
            server.send_signal(signal.SIGTERM)
            status = await anyio.to_thread.run_sync(server.wait)
            took = time.monotonic() - signalled

        # uvicorn ends by re-raising the signal it handled, so a clean stop reads as "terminated by SIGTERM".
        assert status in (0, -signal.SIGTERM), server.stderr()[-2000:]
        assert GRACE - 0.5 < took < GRACE + 1.5  # waited for the long call, then no longer
        assert results["short"]["timed_out"] is True  # finished normally: 1 s < the grace
        assert not isinstance(results["legacy"], MCPError), str(results["legacy"])
        assert results["legacy"]["timed_out"] is True
        for name in ("long", "long-legacy"):
            cut_off = results[name]
            assert isinstance(cut_off, MCPError), cut_off
            assert str(cut_off).startswith("server shutting down:")
        log = broker.log_text()
        disconnected = log.index(f"Client {server.client_id} disconnected.")  # DISCONNECT sent, not dropped
        for name in ("short", "long", "legacy", "long-legacy"):
            assert (f"{server.client_id} lab/shutdown/{name}") in log[:disconnected]  # unsubscribed first
        assert "cut off a request still running" in server.stderr()


async def test_sigterm_with_only_idle_sessions_exits_at_once(
    broker: Mosquitto, tmp_path: pathlib.Path
) -> None:
    with ServerProcess(tmp_path, config_for(broker, {"shutdown_timeout": 30})) as server:
        server.wait_ready()
        async with http_client(server.url, mode="legacy") as client:
            await client.list_tools()  # the session's GET stream is open now
            signalled = time.monotonic()
            server.send_signal(signal.SIGTERM)
            assert await anyio.to_thread.run_sync(server.wait) in (0, -signal.SIGTERM)
        assert time.monotonic() - signalled < 5, "an idle event stream held the shutdown up"


def test_json_logs_carry_the_request_id(broker: Mosquitto, tmp_path: pathlib.Path) -> None:
    with ServerProcess(tmp_path, config_for(broker), args=("--log-format", "json")) as server:
        response = httpx2.get(f"{server.base}/healthz", headers={"x-request-id": "probe-1"})
        assert response.headers["x-request-id"] == "probe-1"
        server.stop()
    lines = [json.loads(line) for line in server.stderr().splitlines() if line.startswith("{")]
    assert lines, server.stderr()[:2000]
    assert {"time", "level", "logger", "request_id", "message"} <= set(lines[0])
    access = [line for line in lines if line["logger"] == "uvicorn.access" and "/healthz" in line["message"]]
    assert any(line["request_id"] == "probe-1" for line in access), access
