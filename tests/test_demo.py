"""`mcpmqtt demo` (CONTRACT §1, issue 5): the whole system from one command, with Mosquitto and with
the amqtt fallback, driven by the MCP SDK's client, and nothing left running once it stops.
"""

import itertools
import json
import logging
import os
import pathlib
import re
import shlex
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
from mosquitto import Mosquitto
from node import INSPECTOR, node, npx
from support import free_port

from mcpmqtt.demo import devices
from mcpmqtt.demo.config import DEMO_TOPICS, demo_config
from mcpmqtt.demo.devices import Printer, Sensor, parse_request, run_devices
from mcpmqtt.demo.tour import STEPS
from mcpmqtt.server.build import build_server

pytestmark = pytest.mark.anyio

BROKERS = ["mosquitto", "amqtt"]

ORIGINAL = pathlib.Path(__file__).parent / "fixtures" / "original_config.json"
DEMO = [sys.executable, "-m", "mcpmqtt", "demo"]


class Running:
    """A demo process whose output goes to files, so that a full pipe can never stall it."""

    def __init__(
        self,
        workdir: pathlib.Path,
        *args: str,
        stdin: int = subprocess.DEVNULL,
        session: bool = False,
        program: list[str] = DEMO,
    ) -> None:
        self.stdout_path, self.stderr_path = workdir / "stdout", workdir / "stderr"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            # session=True: the demo leads a process group of its own, as a shell's foreground job does.
            self.process = subprocess.Popen(
                [*program, *args], stdin=stdin, stdout=out, stderr=err, start_new_session=session
            )

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

    def start(
        *args: str, stdin: int = subprocess.DEVNULL, session: bool = False, program: list[str] = DEMO
    ) -> Running:
        workdir = tmp_path / f"demo{len(started)}"
        workdir.mkdir()
        started.append(Running(workdir, *args, stdin=stdin, session=session, program=program))
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
    http_entry = {"mcpServers": {"mqtt-demo": {"type": "http", "url": f"http://127.0.0.1:{port}/mcp"}}}
    assert json.dumps(http_entry) in banner
    # Started as `python -m mcpmqtt`, the demo tells the host to start it the same way, in full.
    stdio_entry = {
        "mcpServers": {
            "mqtt-demo": {
                "command": sys.executable,
                "args": ["-m", "mcpmqtt", "demo", "--transport", "stdio"],
            }
        }
    }
    assert json.dumps(stdio_entry) in banner
    lines = banner.splitlines()
    title = next(i for i, line in enumerate(lines) if line.startswith("mcpmqtt demo"))
    assert lines[title + 2] == f"  console  http://127.0.0.1:{port}/console (in a browser)"  # first
    assert f"--cli http://127.0.0.1:{port}/mcp --transport http --method tools/list" in banner
    assert "\033[" not in banner, "colour codes written to a pipe"
    demo.process.terminate()
    assert demo.process.wait(10) == 0
    assert demo.stdout_path.read_text() == "", "the demo wrote to stdout"


async def test_demo_prints_one_line_per_tool_call_with_the_refusal(launch: Launch) -> None:
    port = free_port()
    demo = launch("--port", str(port))
    await anyio.to_thread.run_sync(demo.wait_for_stderr, "Ctrl-C stops everything")
    async with Client(f"http://127.0.0.1:{port}/mcp") as client:
        await client.call_tool("mqtt_publish", {"topic": "sensors/exampleroom1/temperature", "payload": "99"})
        await client.call_tool("mqtt_subscribe", {"topic": "#", "timeout": 1})
        await client.call_tool("mqtt_read", {"topic": "status/system"})
    await anyio.to_thread.run_sync(demo.wait_for_stderr, "→ mqtt_read status/system: ok")
    lines = [line for line in demo.stderr().splitlines() if line.startswith("→ ")]
    assert lines[0].startswith(
        "→ mqtt_publish sensors/exampleroom1/temperature: refused: permission denied: publishing to "
        "'sensors/exampleroom1/temperature' needs a write pattern"
    )
    assert lines[1].startswith("→ mqtt_subscribe #: refused: permission denied: no single read pattern")
    assert lines[2] == "→ mqtt_read status/system: ok"


@pytest.mark.inspector
def test_banner_entries_work_in_the_inspector_as_printed(launch: Launch, tmp_path: pathlib.Path) -> None:
    """Each `mcp.json` entry of the banner, pasted as is into a host's file: the Inspector's `--config`
    reads them as hosts do, from another folder and with a PATH that does not hold mcpmqtt."""
    inspector = [npx(), "-y", INSPECTOR, "--cli"]
    env = node().env  # the Inspector asks for Node >= 22.19
    env["PATH"] = os.pathsep.join(
        folder for folder in env["PATH"].split(os.pathsep) if not (pathlib.Path(folder) / "mcpmqtt").exists()
    )
    port = free_port()
    console_script = str(pathlib.Path(sys.executable).parent / "mcpmqtt")
    demo = launch("demo", "--port", str(port), program=[console_script])
    demo.wait_for_stderr("Ctrl-C stops everything")
    entries = [
        line.strip() for line in demo.stderr().splitlines() if line.strip().startswith('{"mcpServers"')
    ]
    assert len(entries) == 2, demo.stderr()

    for number, entry in enumerate(entries):
        host_file = tmp_path / f"mcp{number}.json"
        host_file.write_text(entry)
        done = subprocess.run(
            [*inspector, "--config", str(host_file), "--server", "mqtt-demo", "--method", "tools/list"],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=300,
        )
        assert done.returncode == 0, f"{entry}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        assert {tool["name"] for tool in json.loads(done.stdout)["tools"]} == TOOLS, entry
    assert json.loads(entries[1])["mcpServers"]["mqtt-demo"]["command"] == console_script

    # And the Inspector command the banner prints, as printed.
    [printed] = [line.strip() for line in demo.stderr().splitlines() if line.strip().startswith("npx ")]
    done = subprocess.run(
        [npx(), *shlex.split(printed)[1:]], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert done.returncode == 0, f"{printed}:\n{done.stderr[-2000:]}"
    assert {tool["name"] for tool in json.loads(done.stdout)["tools"]} == TOOLS


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
    where = ["--port", str(port)] if transport == "http" else []
    demo = launch("--transport", transport, *where, "--broker", broker, stdin=stdin)
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


@pytest.mark.parametrize(
    ("transport", "broker"), [("http", "mosquitto"), ("http", "amqtt"), ("stdio", "mosquitto")]
)
def test_ctrl_c_in_a_terminal_stops_the_demo_cleanly(launch: Launch, transport: str, broker: str) -> None:
    """A terminal's Ctrl-C signals the whole foreground process group, not the demo alone."""
    where = ["--port", str(free_port())] if transport == "http" else []
    stdin = subprocess.PIPE if transport == "stdio" else subprocess.DEVNULL
    demo = launch("--transport", transport, *where, "--broker", broker, stdin=stdin, session=True)
    demo.wait_for_stderr("Ctrl-C stops everything" if transport == "http" else "MCP on this process's stdin")
    children = psutil.Process(demo.process.pid).children(recursive=True)

    os.killpg(demo.process.pid, signal.SIGINT)
    assert demo.process.wait(10) == 0, demo.stderr()[-3000:]
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, f"left running: {alive}"
    assert "stopped the server, the devices and the broker" in demo.stderr()
    assert "Traceback" not in demo.stderr()
    assert "lost the broker" not in demo.stderr(), "the broker stopped before the devices"


async def test_devices_stop_quietly_when_their_broker_goes_away(
    fresh_broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """A broker stopped while the devices run (a service manager stopping the demo's whole group, say)
    ends the devices with a log line, not an exception."""
    caplog.set_level(logging.INFO, "mcpmqtt.demo.devices")
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tasks:
            await tasks.start(run_devices, fresh_broker.host, fresh_broker.port, "5", "mosquitto")
            await anyio.to_thread.run_sync(fresh_broker.stop)
    assert "the devices lost the broker" in caplog.text


@pytest.mark.parametrize("broker", BROKERS)
def test_tour_passes_and_its_transcript_shows_every_step(broker: str) -> None:
    done = subprocess.run([*DEMO, "--tour", "--broker", broker], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    transcript = done.stdout
    for number, (title, _) in enumerate(STEPS, start=1):
        assert f"{number}. {title}" in transcript
    assert transcript.count("   ok\n") == len(STEPS)
    titles = " ".join(title for title, _ in STEPS)
    assert all(tool in titles for tool in TOOLS), "the tour leaves out a tool the demo offers"
    assert (
        "Send the request '{\"command\": \"status\"}' to the device on 'commands/printer/request'"
        in transcript
    )
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
        (["demo", "--transport", "stdio", "--port", "{free}"], 2, "--port applies to HTTP only"),
        (["demo", "--port", "{taken}"], 1, "pass another --port"),
        # An explicit free --port: the default 8000 may be taken (a demo left running), and the demo
        # checks --port first.
        (["demo", "--port", "{free}", "--broker-port", "{taken}"], 1, "pass another --broker-port"),
    ],
)
def test_demo_refuses_what_it_cannot_do_before_starting_anything(
    args: list[str], status: int, says: str
) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = str(listener.getsockname()[1])
        free = str(free_port())
        command = [*DEMO[:3], *(arg.replace("{taken}", taken).replace("{free}", free) for arg in args)]
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
    assert demo == {**original, "status/lights/+": ["read"], "status/printer": ["read"], **announcements}


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


async def test_the_device_request_prompts_example_is_a_request_the_printer_understands() -> None:
    prompts = {
        prompt.name: prompt for prompt in await build_server(demo_config("127.0.0.1", 1)).list_prompts()
    }
    [command] = [
        argument for argument in prompts["device_request"].arguments or [] if argument.name == "command"
    ]
    example = re.search(r"e\.g\. (\{.*\})", command.description or "")
    assert example is not None, command.description
    assert Printer().handle(parse_request(example[1].encode()))["ok"] is True


def test_a_print_job_finishes_and_the_next_one_starts_after_a_pause() -> None:
    printer = Printer()
    printer._updated -= 100 / devices.PRINT_SPEED  # a job's time has passed
    assert printer.report()["state"] == "finished"
    assert printer.report()["state"] == "finished"  # it stands finished a while
    assert printer._finished_at is not None
    printer._finished_at -= devices.NEXT_JOB_AFTER
    started = printer.report()
    assert (started["state"], started["progress_percent"]) == ("printing", 0.0)
    assert started["job"] == devices.JOBS[0]


def test_a_sensor_swings_slowly_around_its_normal() -> None:
    sensor = Sensor("sensors/x/temperature", "°C", 21.5, 0.0, swing=2.0, period=600.0)
    sensor._started -= 150  # a quarter period: the target is normal + swing
    values = [sensor.read()["value"] for _ in range(100)]
    assert 23.3 < values[-1] < 23.7


def test_sensor_values_drift_but_stay_plausible() -> None:
    sensor = Sensor("sensors/x/temperature", "°C", 21.5, 0.1)
    values = [sensor.read()["value"] for _ in range(10_000)]
    assert len(set(values)) > 10
    assert all(18.5 < value < 24.5 for value in values)
    assert all(abs(a - b) < 1 for a, b in itertools.pairwise(values))
