"""`mcpmqtt demo`: the broker, the devices and the server together, one banner, one Ctrl-C to stop all.

SIGTERM (and SIGHUP) are handled as Ctrl-C is, so that a host or a service manager that stops the
demo, or a closed terminal, gets the same clean shutdown: uvicorn ends its connections and the
server's lifespan, the event loop cancels the devices, and the broker process is stopped last, after
the loop has ended.

Over stdio the clean way to stop is the host closing stdin. A signal there cannot wait for the rest:
the MCP SDK reads stdin in a worker thread that can be neither cancelled nor left behind at exit, so a
graceful stop would hang until the host's next line. The demo then stops the broker and exits at once.
"""

import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import anyio
import uvicorn
from mcp_types import CallToolResult

from mcpmqtt.demo.config import ROOMS, SPARKPLUG_GROUP, demo_config
from mcpmqtt.demo.console import Style, tool_call_line
from mcpmqtt.demo.devices import PRINTER_REQUESTS, SENSOR_INTERVAL, run_devices
from mcpmqtt.demo.embedded import BrokerChoice, EmbeddedBroker, embedded_broker, ensure_free
from mcpmqtt.errors import McpMqttError
from mcpmqtt.server.build import McpMqttServer, build_server
from mcpmqtt.transports.http import http_server
from mcpmqtt.transports.stdio import serve_stdio

INSPECTOR = "npx -y @modelcontextprotocol/inspector@2.12.0"
STOPPED = "mcpmqtt demo: stopped the server, the devices and the broker"
# SIGHUP: the terminal the demo runs in was closed (POSIX only).
_HANGUP = (signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ()
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, *_HANGUP)


def mcp_url(host: str, port: int) -> str:
    """The Streamable HTTP endpoint of a server on host:port."""
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/mcp"


def run_with_broker(
    main: Callable[[EmbeddedBroker], Awaitable[int]],
    broker_choice: BrokerChoice,
    broker_port: int | None,
    *,
    interrupted: int,
) -> int:
    """Start the demo broker, run `main(broker)` on an event loop, stop the broker after; on Ctrl-C
    or SIGTERM everything stops the same way and the result is `interrupted`."""
    handlers: dict[signal.Signals, Callable[[int, FrameType | None], None]] = {
        signal.SIGINT: signal.default_int_handler,
        signal.SIGTERM: signal.default_int_handler,
    }
    # uvicorn shuts down gracefully on SIGINT and SIGTERM only: a hangup becomes a SIGTERM.
    handlers |= dict.fromkeys(_HANGUP, _raise_sigterm)
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        with embedded_broker(broker_choice, broker_port) as broker:
            return anyio.run(main, broker)
    except* KeyboardInterrupt:  # raised where the signal found us: maybe inside task groups
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return interrupted


def _raise_sigterm(signum: int, frame: FrameType | None) -> None:
    signal.raise_signal(signal.SIGTERM)


def _exit_on_signal(broker: EmbeddedBroker) -> None:
    """From now on a stop signal stops the broker and ends the process (see the module docstring)."""

    def exit_now(signum: int, frame: FrameType | None) -> None:
        broker.stop_now()
        print(STOPPED, file=sys.stderr, flush=True)
        os._exit(0)

    for sig in _STOP_SIGNALS:
        signal.signal(sig, exit_now)


@contextlib.asynccontextmanager
async def running_devices(broker: EmbeddedBroker, server: McpMqttServer | None = None) -> AsyncIterator[None]:
    """The simulated devices, connected and with their state published, while the block runs.

    With `server`, the Sparkplug edge node is born once the server is connected to the broker: its
    births are not retained, and a server that missed them could not name the printer's metrics.
    """
    online = anyio.Event() if server is not None else None
    async with anyio.create_task_group() as tasks:
        await tasks.start(run_devices, broker.host, broker.port, broker.protocol, broker.kind, online)
        if server is not None and online is not None:
            tasks.start_soon(_set_when_connected, server, online)
        try:
            yield
        finally:
            tasks.cancel_scope.cancel()


async def _set_when_connected(server: McpMqttServer, event: anyio.Event) -> None:
    # Connected means subscribed too: the broker adapter restores its subscriptions first.
    while not server.runtime.broker.connected:  # noqa: ASYNC110  (the adapter offers a flag, not an event)
        await anyio.sleep(0.02)
    event.set()


async def wait_started(web: uvicorn.Server) -> None:
    """Return once the web server accepts connections (uvicorn exits the process if it cannot)."""
    while not web.started:  # noqa: ASYNC110  (uvicorn offers a flag, not an event)
        await anyio.sleep(0.02)


def launch_command() -> list[str]:
    """The command that started this process, with an absolute path, for a host to start it again.

    A host starts servers with its own working directory and often its own PATH, so a bare `mcpmqtt`
    fails there (`spawn mcpmqtt ENOENT`) for anyone who has not put the virtualenv on PATH.
    """
    script = Path(sys.argv[0])
    if script.name != "__main__.py" and script.is_file() and os.access(script, os.X_OK):
        return [str(script.resolve())]  # the console script
    return [sys.executable, "-m", "mcpmqtt"]  # `python -m mcpmqtt`, or anything else unexpected


def host_entries(url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The `mcp.json` entries for the running demo over HTTP, and for a host starting it over stdio."""
    command, *args = launch_command()
    http = {"mcpServers": {"mqtt-demo": {"type": "http", "url": url}}}
    stdio = {
        "mcpServers": {"mqtt-demo": {"command": command, "args": [*args, "demo", "--transport", "stdio"]}}
    }
    return http, stdio


def banner(broker: EmbeddedBroker, transport: Literal["http", "stdio"], url: str, style: Style) -> str:
    """What runs and how to connect to it, for the person who started the demo."""
    rooms = " and ".join(ROOMS)
    lines = [
        style.bold("mcpmqtt demo") + " - a broker, simulated devices and the MCP server on this machine",
        "",
        f"  {style.cyan('broker')}   {broker.program} at {broker.url} (MQTT {broker.protocol})",
        f"  {style.cyan('devices')}  temperature and humidity in {rooms} (sensors/<room>/..., "
        f"every {SENSOR_INTERVAL:g} s)",
        "           lights: publish to actuators/lights/<room>/on or /off, state on status/lights/<room>",
        f"           a 3D printer answering on {PRINTER_REQUESTS} (status, pause, resume, set_temperature)",
        "           system status on status/system (retained)",
        "           announced by Home Assistant discovery (homeassistant/...), a zigbee2mqtt bridge",
        f"           (zigbee2mqtt/...) and the printer's Sparkplug B node (spBv1.0/{SPARKPLUG_GROUP}/...)",
    ]
    if transport == "stdio":
        lines.append(f"  {style.cyan('server')}   MCP on this process's stdin and stdout")
        return "\n".join(lines)
    lines.insert(
        2, f"  {style.cyan('console')}  {style.bold(url.removesuffix('/mcp') + '/console')} (in a browser)"
    )
    http_entry, stdio_entry = host_entries(url)
    lines += [
        f"  {style.cyan('server')}   {style.bold(url)} (Streamable HTTP)",
        "",
        "Connect an agent host: add this to its mcp.json",
        f"  {json.dumps(http_entry)}",
        "or let the host start the demo itself, over stdio:",
        f"  {json.dumps(stdio_entry)}",
        "Try it from a terminal with the MCP Inspector:",
        f"  {INSPECTOR} --cli {url} --transport http --method tools/list",
        "",
        style.dim("Ctrl-C stops everything."),
    ]
    return "\n".join(lines)


async def _serve(broker: EmbeddedBroker, transport: Literal["http", "stdio"], host: str, port: int) -> int:
    style = Style(sys.stderr)

    def show(
        name: str, arguments: dict[str, Any], result: CallToolResult, error: McpMqttError | None
    ) -> None:
        print(tool_call_line(name, arguments, result, error, style), file=sys.stderr, flush=True)

    server = build_server(demo_config(broker.host, broker.port), on_tool_call=show)
    url = mcp_url(host, port)
    async with running_devices(broker, server):
        if transport == "stdio":
            _exit_on_signal(broker)
            print(banner(broker, transport, url, style), file=sys.stderr, flush=True)
            await serve_stdio(server)
            return 0
        web = http_server(server, "http", host, port)
        async with anyio.create_task_group() as tasks:

            async def announce() -> None:
                await wait_started(web)
                print(banner(broker, transport, url, style), file=sys.stderr, flush=True)

            tasks.start_soon(announce)
            await web.serve()
            tasks.cancel_scope.cancel()
    return 0


def run_demo(
    transport: Literal["http", "stdio"],
    host: str,
    port: int,
    broker_choice: BrokerChoice,
    broker_port: int | None = None,
) -> int:
    """Run the demo until Ctrl-C, SIGTERM, or (stdio) the host closing stdin; the exit status."""

    async def main(broker: EmbeddedBroker) -> int:
        return await _serve(broker, transport, host, port)

    if transport == "http":
        ensure_free(host, port, "--port")
    status = run_with_broker(main, broker_choice, broker_port, interrupted=0)
    print(STOPPED, file=sys.stderr)
    return status
