"""The stdio transport on the wire: stdout carries only JSON-RPC, and malformed input is survived."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import anyio
import pytest
from mcp_client import INITIALIZE, TOOLS, write_config
from mosquitto import Mosquitto
from support import Wire, start

pytestmark = pytest.mark.anyio


async def test_stdout_carries_only_json_rpc_and_bad_lines_get_errors(
    broker: Mosquitto, tmp_path: pathlib.Path
) -> None:
    config, _ = write_config(tmp_path, broker)
    async with await start(config) as process:
        wire = Wire(process)
        await wire.send(INITIALIZE)
        assert (await wire.response(1))["result"]["serverInfo"]["name"] == "mcpmqtt"
        await wire.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

        await wire.send("{this is not json")
        parse_error = await wire.receive()
        assert parse_error["id"] is None and parse_error["error"]["code"] == -32700

        await wire.send('{"jsonrpc": "2.0", "id": 7}')
        invalid_request = await wire.receive()
        assert invalid_request["id"] is None and invalid_request["error"]["code"] == -32600

        await wire.send({"jsonrpc": "2.0", "id": 2, "method": "no/such/method"})
        assert (await wire.response(2))["error"]["code"] == -32601

        await wire.send({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "nope"}})
        unknown = await wire.response(3)
        assert "nope" in json.dumps(unknown)

        call = {"name": "mqtt_publish", "arguments": {"topic": ["not", "a", "string"], "payload": "x"}}
        await wire.send({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": call})
        wrong_type = (await wire.response(4))["result"]
        assert wrong_type["isError"] is True
        assert wrong_type["content"][0]["text"].startswith("invalid argument: topic")

        call = {"name": "mqtt_publish", "arguments": {"topic": "lab/ok", "payload": "x", "qos": 1}}
        await wire.send({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": call})
        assert (await wire.response(5))["result"]["structuredContent"]["topic"] == "lab/ok"
        await process.stdin.aclose()  # type: ignore[union-attr]
        with anyio.fail_after(10):
            assert await process.wait() == 0


async def test_invalid_config_stops_the_server_before_it_speaks(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"topics": [{"pattern": "a/#/b", "permissions": ["read"]}]}))
    with anyio.fail_after(30):
        result = await anyio.run_process([sys.executable, "-m", "mcpmqtt", "--config", str(bad)], check=False)
    assert result.returncode == 2
    assert result.stdout == b""
    assert str(bad) in result.stderr.decode() and "topics[0].pattern" in result.stderr.decode()


@pytest.mark.inspector
def test_mcp_inspector_cli_lists_and_calls_tools(broker: Mosquitto, tmp_path: pathlib.Path) -> None:
    npx = shutil.which("npx")
    if npx is None:
        pytest.skip("npx (Node.js) is not installed: the MCP Inspector CLI needs it")
    config, _ = write_config(tmp_path, broker)
    # The server command goes first: the CLI reads --tool-arg's values up to the next option.
    command = str(pathlib.Path(sys.executable).parent / "mcpmqtt")
    inspector = [npx, "-y", "@modelcontextprotocol/inspector@2.12.0", "--cli", command]
    server = ["-e", f"MCPMQTT_CONFIG={config}"]

    listed = subprocess.run(
        [*inspector, *server, "--method", "tools/list", "--strict"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert listed.returncode == 0, listed.stderr[-2000:]
    names = {tool["name"] for tool in json.loads(listed.stdout)["tools"]}
    assert names == TOOLS

    called = subprocess.run(
        [
            *inspector,
            *server,
            "--method",
            "tools/call",
            "--tool-name",
            "mqtt_read",
            "--tool-arg",
            "topic=lab/x",
            "timeout=0.2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert called.returncode == 0, called.stderr[-2000:]
    assert json.loads(called.stdout)["structuredContent"] == {
        "topic": "lab/x",
        "message": None,
        "timed_out": True,
    }

    resource = subprocess.run(
        [*inspector, *server, "--method", "resources/read", "--uri", "mcpmqtt://topics/allowed"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resource.returncode == 0, resource.stderr[-2000:]
    assert "lab/#" in resource.stdout


async def test_ctrl_c_stops_the_stdio_server_while_stdin_is_still_open(
    broker: Mosquitto, tmp_path: pathlib.Path
) -> None:
    config, client_id = write_config(tmp_path, broker)
    async with await start(config) as process:
        wire = Wire(process)
        await wire.send(INITIALIZE)
        await wire.response(1)
        # Interrupt only once start-up is over: the live-state cache's SUBSCRIBE must be in. Mosquitto
        # handles one packet per wake-up, so a SIGINT that lands while it still answers that SUBSCRIBE
        # makes it fail the answer's write and log "out of memory" before it reads our DISCONNECT.
        with anyio.fail_after(10):
            while not broker.subscribe_events(client_id):  # noqa: ASYNC110 - until subscribed
                await anyio.sleep(0.05)
        await anyio.sleep(0.5)
        process.send_signal(signal.SIGINT)
        with anyio.fail_after(15):
            assert await process.wait() == 130
    # Mosquitto writes its line after it has read our DISCONNECT, which may be just after we exited.
    with anyio.move_on_after(5):
        while f"Client {client_id} disconnected" not in broker.log_text():  # noqa: ASYNC110
            await anyio.sleep(0.05)
    assert f"Client {client_id} disconnected." in broker.log_text()  # a clean MQTT DISCONNECT


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_stdin_from_dev_null_ends_the_server_at_once(
    command: str, broker: Mosquitto, tmp_path: pathlib.Path
) -> None:
    """`</dev/null` is a character device that the event loop cannot watch: end of input, not a hang."""
    config, _ = write_config(tmp_path, broker)
    args = ["--config", str(config)] if command == "serve" else ["demo", "--transport", "stdio"]
    with open(os.devnull, "rb") as nothing:
        done = subprocess.run(
            [sys.executable, "-m", "mcpmqtt", *args],
            stdin=nothing,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
