"""What the security probes broke on the HTTP side (issue 10): one broker connection under SSE, log lines
that outside values cannot forge, no payloads in DEBUG logs, bounded sessions, bogus bearer tokens,
slow clients, exact Origin checks, security headers. Each test failed before its fix.
"""

from __future__ import annotations

import pathlib
from contextlib import AsyncExitStack

import httpx2
import pytest
from http_server import ServerProcess, config_for
from mcp.client import Client
from mcp.client.sse import sse_client
from mcp_client import structured
from mosquitto import Mosquitto

pytestmark = pytest.mark.anyio


# ---- SSE: one process, one broker connection -----------------------------------------------------


async def test_sse_sessions_share_the_one_broker_connection(
    broker: Mosquitto, tmp_path: pathlib.Path
) -> None:
    with ServerProcess(tmp_path, config_for(broker), transport="sse") as sse:
        async with AsyncExitStack() as sessions:
            for _ in range(2):  # open together, closed together
                client = await sessions.enter_async_context(
                    Client(sse_client(f"{sse.base}/sse"), mode="legacy")
                )
                published = await client.call_tool("mqtt_publish", {"topic": "lab/sse", "payload": "x"})
                assert structured(published)["topic"] == "lab/sse"
        async with Client(sse_client(f"{sse.base}/sse"), mode="legacy") as third:
            published = await third.call_tool("mqtt_publish", {"topic": "lab/sse", "payload": "y"})
            assert structured(published)["topic"] == "lab/sse"
        assert httpx2.get(f"{sse.base}/readyz").status_code == 200
        connections = broker.log_text().count(f" as {sse.client_id} (")
        assert connections == 1, f"{connections} broker connections for one server"
