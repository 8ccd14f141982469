"""Simulated devices for the demo, on an MQTT connection of their own.

They behave like the examples of the article that introduced mcpMQTT: sensors in two rooms, lights
switched by publishing to `actuators/lights/<room>/on|off`, a retained system status, and a 3D printer
that answers requests. They talk plain MQTT through aiomqtt, never through mcpmqtt, so the server
meets them exactly as it would meet real devices.
"""

from __future__ import annotations

import json
import logging
import math
import random
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import aiomqtt
import anyio
from anyio.abc import TaskStatus
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mcpmqtt.demo.config import ROOMS

SENSOR_INTERVAL = 2.0
STATUS_INTERVAL = 10.0
PRINTER_REQUESTS = "commands/printer/request"
PRINTER_RESPONSES = "commands/printer/response"
"""Where the printer answers a request that names no MQTT 5 response topic (all of them on 3.1.1)."""

log = logging.getLogger(__name__)


@dataclass
class Sensor:
    """A reading that drifts slowly and stays plausible: a random walk pulled back toward `normal`."""

    topic: str
    unit: str
    normal: float
    step: float
    value: float = field(init=False)

    def __post_init__(self) -> None:
        self.value = self.normal

    def read(self) -> dict[str, Any]:
        """The next reading, as the sensor publishes it."""
        self.value += 0.1 * (self.normal - self.value) + random.gauss(0, self.step)
        return {"value": round(self.value, 1), "unit": self.unit}


@dataclass
class Printer:
    """A 3D printer partway through a job: it pauses, resumes, heats its nozzle and reports."""

    job: str = "benchy.gcode"
    state: Literal["printing", "paused", "finished"] = "printing"
    progress: float = 37.0
    target: float = 210.0
    nozzle: float = 209.6
    _updated: float = field(default_factory=time.monotonic)

    def status(self) -> dict[str, Any]:
        """What the printer reports about itself."""
        return {
            "state": self.state,
            "job": self.job,
            "progress_percent": round(self.progress, 1),
            "nozzle_temperature": round(self.nozzle, 1),
            "target_temperature": self.target,
        }

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """Carry out one request and answer with the printer's state, or with what was wrong."""
        self._advance()
        command = request.get("command")
        if command == "pause" and self.state != "finished":
            self.state = "paused"
        elif command == "resume" and self.state != "finished":
            self.state = "printing"
        elif command in ("pause", "resume"):
            return {"ok": False, "error": f"the job {self.job} has finished; nothing to {command}"}
        elif command == "set_temperature":
            target = request.get("target")
            if isinstance(target, bool) or not isinstance(target, int | float) or not 0 <= target <= 300:
                return {"ok": False, "error": 'set_temperature needs "target": nozzle °C from 0 to 300'}
            self.target = float(target)
        elif command != "status":
            return {
                "ok": False,
                "error": f"unknown command {command!r}; send one of status, pause, resume, set_temperature",
            }
        return {"ok": True, **self.status()}

    def _advance(self) -> None:
        now = time.monotonic()
        elapsed, self._updated = now - self._updated, now
        self.nozzle = self.target + (self.nozzle - self.target) * math.exp(-elapsed / 8)  # heats in ~30 s
        if self.state == "printing":
            self.progress = min(100.0, self.progress + elapsed * 0.05)
            if self.progress == 100.0:
                self.state = "finished"


def parse_request(payload: bytes) -> dict[str, Any]:
    """A request as a JSON object; a bare word such as `status` is taken as the command."""
    text = payload.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = text
    return data if isinstance(data, dict) else {"command": data}


class Devices:
    """Every simulated device of the demo, sharing one MQTT connection."""

    def __init__(self, broker_kind: str) -> None:
        self.broker_kind = broker_kind
        self.started = time.monotonic()
        self.sensors = [
            sensor
            for room, temperature, humidity in zip(ROOMS, (21.5, 23.0), (46.0, 52.0), strict=True)
            for sensor in (
                Sensor(f"sensors/{room}/temperature", "°C", temperature, 0.1),
                Sensor(f"sensors/{room}/humidity", "%RH", humidity, 0.5),
            )
        ]
        self.lights = dict.fromkeys(ROOMS, False)
        self.printer = Printer()

    @property
    def count(self) -> int:
        """How many devices there are (the printer counts as one)."""
        return len(self.sensors) + len(self.lights) + 1

    def system_status(self) -> dict[str, Any]:
        """The payload of status/system."""
        return {
            "status": "ok",
            "uptime_s": round(time.monotonic() - self.started),
            "devices_online": self.count,
            "broker": self.broker_kind,
        }

    async def publish_state(self, client: aiomqtt.Client) -> None:
        """The retained topics, so that a reader gets the current state at once."""
        await client.publish("status/system", _json(self.system_status()), qos=1, retain=True)
        for room in self.lights:
            await self._report_light(client, room)

    async def sense(self, client: aiomqtt.Client) -> None:
        """Publish every sensor's reading every SENSOR_INTERVAL seconds, not retained, as sensors do."""
        while True:
            for sensor in self.sensors:
                await client.publish(sensor.topic, _json(sensor.read()))
            await anyio.sleep(SENSOR_INTERVAL)

    async def report_system(self, client: aiomqtt.Client) -> None:
        """Refresh the retained system status, so that a reader sees a current uptime."""
        while True:
            await anyio.sleep(STATUS_INTERVAL)
            await client.publish("status/system", _json(self.system_status()), qos=1, retain=True)

    async def handle(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        """React to one command: a light switch or a printer request."""
        topic = message.topic.value
        if topic == PRINTER_REQUESTS:
            await self._answer_printer(client, message)
            return
        _, _, room, action = topic.split("/")  # actuators/lights/<room>/<action>
        if room not in self.lights or action not in ("on", "off"):
            log.warning("nothing listens on %s (rooms: %s; on or off)", topic, ", ".join(ROOMS))
            return
        self.lights[room] = action == "on"
        log.info("light %s switched %s", room, action)
        await self._report_light(client, room)

    async def _report_light(self, client: aiomqtt.Client, room: str) -> None:
        state = {"room": room, "state": "on" if self.lights[room] else "off"}
        await client.publish(f"status/lights/{room}", _json(state), qos=1, retain=True)

    async def _answer_printer(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        # MQTT 5 requests name their reply topic and carry correlation data to echo; on 3.1.1 the
        # reply goes to the fixed response topic, with any correlation_id of the request echoed in it.
        request = parse_request(message.payload)
        reply = self.printer.handle(request)
        if "correlation_id" in request:
            reply["correlation_id"] = request["correlation_id"]
        log.info("printer %s -> %s", request.get("command"), "ok" if reply["ok"] else "error")
        incoming = message.properties
        reply_to = getattr(incoming, "ResponseTopic", None) or PRINTER_RESPONSES
        properties = None
        if correlation := getattr(incoming, "CorrelationData", None):
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.CorrelationData = correlation
        await client.publish(reply_to, _json(reply), qos=1, properties=properties)


def _json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode()


async def run_devices(
    host: str,
    port: int,
    protocol: Literal["5", "3.1.1"],
    broker_kind: str,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run every device until cancelled or the broker goes away; `task_status` reports once their
    retained state is published.

    A broker lost after the start ends the devices with one log line, not an error: the demo stops its
    broker when it shuts down, and a traceback then would only say what the person just asked for.
    """
    devices = Devices(broker_kind)
    client = aiomqtt.Client(
        host,
        port,
        identifier=f"mcpmqtt-demo-devices-{secrets.token_hex(4)}",
        protocol=aiomqtt.ProtocolVersion.V5 if protocol == "5" else aiomqtt.ProtocolVersion.V311,
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],  # replies in 1 ms, not 40+
        will=aiomqtt.Will("status/system", _json({"status": "offline"}), qos=1, retain=True),
    )
    started = False
    try:
        async with client, anyio.create_task_group() as tasks:
            await client.subscribe("actuators/lights/+/+", qos=1)
            await client.subscribe(PRINTER_REQUESTS, qos=1)
            await devices.publish_state(client)
            tasks.start_soon(devices.sense, client)
            tasks.start_soon(devices.report_system, client)
            task_status.started()
            started = True
            async for message in client.messages:
                await devices.handle(client, message)
    except* aiomqtt.MqttError as lost:
        if not started:  # a broker the devices cannot reach at all is the demo failing to start
            raise
        log.info(
            "the devices lost the broker at %s:%d (%s); they have stopped", host, port, lost.exceptions[0]
        )
