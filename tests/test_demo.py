"""`mcpmqtt demo` (CONTRACT §1, issue 5): the whole system from one command, with Mosquitto and with
the amqtt fallback, driven by the MCP SDK's client, and nothing left running once it stops.
"""

import itertools
import json
import pathlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import psutil
import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp_client import TOOLS, structured

from mcpmqtt.demo.config import DEMO_TOPICS
from mcpmqtt.demo.devices import Printer, Sensor, parse_request
from mcpmqtt.demo.tour import STEPS

pytestmark = pytest.mark.anyio

BROKERS = ["mosquitto", "amqtt"]

ORIGINAL = pathlib.Path(__file__).parent / "fixtures" / "original_config.json"
DEMO = [sys.executable, "-m", "mcpmqtt", "demo"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Running:
    """A demo process whose output goes to files, so that a full pipe can never stall it."""

    def __init__(self, workdir: pathlib.Path, *args: str, stdin: int = subprocess.DEVNULL) -> None:
        self.stdout_path, self.stderr_path = workdir / "stdout", workdir / "stderr"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen([*DEMO, *args], stdin=stdin, stdout=out, stderr=err)

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8")

    def wait_for_stderr(self, text: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.stderr():
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the demo never printed {text!r}:\n{self.stderr()[-3000:]}")
            time.sleep(0.05)

    def wait_for_port(self, port: int, deadline: float) -> None:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the demo did not listen on {port} in time:\n{self.stderr()[-3000:]}")
                time.sleep(0.05)


Launch = Callable[..., Running]


@pytest.fixture
def launch(tmp_path: pathlib.Path) -> Iterator[Launch]:
    """Start demos; whatever is still running at the end is killed, children first."""
    started: list[Running] = []

    def start(*args: str, stdin: int = subprocess.DEVNULL) -> Running:
        workdir = tmp_path / f"demo{len(started)}"
        workdir.mkdir()
        started.append(Running(workdir, *args, stdin=stdin))
        return started[-1]

    yield start
    for demo in started:
        if demo.process.poll() is None:
            for child in psutil.Process(demo.process.pid).children(recursive=True):
                child.kill()
            demo.process.kill()
            demo.process.wait()
        if demo.process.stdin is not None:
            demo.process.stdin.close()


@pytest.mark.parametrize("broker", BROKERS)
async def test_demo_answers_tools_list_over_http_within_10_seconds(launch: Launch, broker: str) -> None:
    port = free_port()
    began = time.monotonic()
    demo = launch("--port", str(port), "--broker", broker)
    await anyio.to_thread.run_sync(demo.wait_for_port, port, began + 10)
    async with Client(f"http://127.0.0.1:{port}/mcp") as client:
        assert {tool.name for tool in (await client.list_tools()).tools} == TOOLS
    assert time.monotonic() - began < 10

    banner = demo.stderr()
    assert ("Mosquitto" if broker == "mosquitto" else "amqtt") in banner
    assert json.dumps({"mcpServers": {"mqtt-demo": {"url": f"http://127.0.0.1:{port}/mcp"}}}) in banner
    assert '"args": ["demo", "--transport", "stdio"]' in banner
    assert f"--cli http://127.0.0.1:{port}/mcp --transport http --method tools/list" in banner
    assert "\033[" not in banner, "colour codes written to a pipe"
    demo.process.terminate()
    assert demo.process.wait(10) == 0
    assert demo.stdout_path.read_text() == "", "the demo wrote to stdout"


@pytest.mark.parametrize(
    ("transport", "stop", "broker"),
    [
        ("http", signal.SIGTERM, "mosquitto"),
        ("http", signal.SIGINT, "amqtt"),
        ("http", signal.SIGHUP, "mosquitto"),
        ("stdio", signal.SIGTERM, "mosquitto"),
    ],
    ids=["http-SIGTERM-mosquitto", "http-SIGINT-amqtt", "http-SIGHUP-mosquitto", "stdio-SIGTERM-mosquitto"],
)
def test_a_stop_signal_ends_the_demo_and_its_broker(
    launch: Launch, transport: str, stop: int, broker: str
) -> None:
    port = free_port()
    # Over stdio the host keeps stdin open: the signal, not end of input, must end the demo.
    stdin = subprocess.PIPE if transport == "stdio" else subprocess.DEVNULL
    demo = launch("--transport", transport, "--port", str(port), "--broker", broker, stdin=stdin)
    if transport == "http":
        demo.wait_for_port(port, time.monotonic() + 10)
    else:
        demo.wait_for_stderr("MCP on this process's stdin")
    children = psutil.Process(demo.process.pid).children(recursive=True)
    assert len(children) == 1 and broker in " ".join(children[0].cmdline())

    demo.process.send_signal(stop)
    assert demo.process.wait(10) == 0
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, f"left running: {alive}"
    assert "stopped the server, the devices and the broker" in demo.stderr()
    assert "Traceback" not in demo.stderr()


@pytest.mark.parametrize("broker", BROKERS)
def test_tour_passes_and_its_transcript_shows_every_step(broker: str) -> None:
    done = subprocess.run([*DEMO, "--tour", "--broker", broker], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    transcript = done.stdout
    for number, (title, _) in enumerate(STEPS, start=1):
        assert f"{number}. {title}" in transcript
    assert transcript.count("   ok\n") == len(STEPS)
    assert f"tour passed: all {len(STEPS)} steps worked" in transcript
    assert '"devices_online": 7' in transcript
    assert transcript.count("sensors/exampleroom") >= 2
    assert '{"room": "exampleroom1", "state": "on"} (retained)' in transcript
    assert "refused, as it should be: permission denied:" in transcript
    if broker == "mosquitto":  # MQTT 5: a private reply topic and correlation data
        assert "reply on mcpmqtt/replies/" in transcript
    else:  # MQTT 3.1.1: the article's response topic, the correlation id inside the payload
        assert "reply on commands/printer/response" in transcript
        assert '"correlation_id": "tour-1"' in transcript
    assert "\033[" not in transcript
    assert "Traceback" not in done.stderr


async def test_demo_over_stdio_serves_the_sdk_client() -> None:
    parameters = StdioServerParameters(command=DEMO[0], args=[*DEMO[1:], "--transport", "stdio"])
    async with Client(parameters) as client:
        assert {tool.name for tool in (await client.list_tools()).tools} == TOOLS
        read = structured(await client.call_tool("mqtt_read", {"topic": "status/system", "timeout": 5}))
    assert read["message"]["retain"] is True
    assert json.loads(read["message"]["payload"])["devices_online"] == 7


def _taken_port() -> tuple[socket.socket, int]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    return listener, int(listener.getsockname()[1])


@pytest.mark.parametrize(
    ("args", "status", "says"),
    [
        (["--config", "x.json", "demo"], 2, "--config does not apply"),
        (["demo", "--tour", "--transport", "stdio"], 2, "drop --transport stdio"),
        (["demo", "--host", "0.0.0.0"], 2, "refusing to serve HTTP on 0.0.0.0"),
        (["demo", "--port", "{taken}"], 1, "pass another --port"),
        (["demo", "--broker-port", "{taken}"], 1, "pass another --broker-port"),
    ],
)
def test_demo_refuses_what_it_cannot_do_before_starting_anything(
    args: list[str], status: int, says: str
) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = str(listener.getsockname()[1])
        command = [*DEMO[:3], *(arg.replace("{taken}", taken) for arg in args)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert done.returncode == status
    assert says in done.stderr
    assert done.stdout == ""


def test_demo_allowlist_is_the_articles_plus_the_light_state_and_the_announcements() -> None:
    original = {t["pattern"]: t["permissions"] for t in json.loads(ORIGINAL.read_text())["topics"]}
    demo = {t.pattern: t.permissions for t in DEMO_TOPICS}
    announcements = {
        "homeassistant/#": ["read"],
        "zigbee2mqtt/#": ["read"],
        "spBv1.0/mcpmqtt-demo/#": ["read"],
    }
    assert demo == {**original, "status/lights/+": ["read"], **announcements}


def test_printer_answers_each_command_with_its_state() -> None:
    printer = Printer()
    assert printer.handle({"command": "pause"})["state"] == "paused"
    assert printer.handle({"command": "resume"})["state"] == "printing"
    assert printer.handle({"command": "set_temperature", "target": 230})["target_temperature"] == 230
    assert printer.handle(parse_request(b"status"))["ok"] is True


@pytest.mark.parametrize(
    "request_",
    [{"command": "set_temperature", "target": 900}, {"command": "set_temperature"}, {"command": "explode"}],
)
def test_printer_refuses_a_bad_request_and_says_what_it_accepts(request_: dict[str, Any]) -> None:
    reply = Printer().handle(request_)
    assert reply["ok"] is False
    assert "set_temperature" in reply["error"]


def test_sensor_values_drift_but_stay_plausible() -> None:
    sensor = Sensor("sensors/x/temperature", "°C", 21.5, 0.1)
    values = [sensor.read()["value"] for _ in range(10_000)]
    assert len(set(values)) > 10
    assert all(18.5 < value < 24.5 for value in values)
    assert all(abs(a - b) < 1 for a, b in itertools.pairwise(values))
