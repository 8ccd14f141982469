"""The HTTP transports: Streamable HTTP at /mcp in both protocol eras, and legacy HTTP+SSE."""

import pathlib
import subprocess
import sys
from collections.abc import Iterator

import pytest
from mcp.client import Client
from mcp.client.sse import sse_client
from mcp_client import MODES, TOOLS, structured, write_config
from mosquitto import Mosquitto
from processes import free_port, wait_listening

pytestmark = pytest.mark.anyio


@pytest.fixture
def http_server(
    request: pytest.FixtureRequest, broker: Mosquitto, tmp_path: pathlib.Path
) -> Iterator[tuple[str, str]]:
    """A server process on a free port; yields (transport, base URL). Its stdout must stay empty."""
    config, _ = write_config(tmp_path, broker)
    port = free_port()
    command = [sys.executable, "-m", "mcpmqtt", "serve", "--transport", request.param, "--port", str(port)]
    log = tmp_path / "server.stderr"
    with log.open("w") as output:
        process = subprocess.Popen(
            [*command, "--config", str(config)], stdout=subprocess.PIPE, stderr=output, text=True
        )
    wait_listening(process, port, "the server", log)
    try:
        yield request.param, f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        stdout, _ = process.communicate(timeout=15)
        stderr = log.read_text(errors="replace")
        assert stdout == "", f"the server wrote to stdout: {stdout[:500]!r}"
        assert "GET /" in stderr or "POST /" in stderr  # the access log went to stderr


# Streamable HTTP in both eras; the legacy HTTP+SSE transport exists only in the handshake era.
COMBINATIONS = [*(("http", mode) for mode in MODES), ("sse", "legacy")]


@pytest.mark.parametrize(("http_server", "mode"), COMBINATIONS, indirect=["http_server"])
async def test_tools_work_over_http(http_server: tuple[str, str], mode: str) -> None:
    transport, base = http_server
    target = f"{base}/mcp" if transport == "http" else sse_client(f"{base}/sse")
    async with Client(target, mode=mode) as client:  # type: ignore[arg-type]
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert names == TOOLS
        published = await client.call_tool("mqtt_publish", {"topic": "lab/http", "payload": "x", "qos": 1})
        assert structured(published)["topic"] == "lab/http"
        read = await client.call_tool("mqtt_read", {"topic": "lab/http", "timeout": 0.2})
        assert structured(read)["timed_out"] is True
