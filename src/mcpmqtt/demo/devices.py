"""Simulated devices for the demo, on an MQTT connection of their own.

They behave like the examples of the article that introduced mcpMQTT: sensors in two rooms, lights
switched by publishing to `actuators/lights/<room>/on|off`, a retained system status, and a 3D printer
that answers requests. They talk plain MQTT through aiomqtt, never through mcpmqtt, so the server
meets them exactly as it would meet real devices.

They also announce themselves as real installations do: Home Assistant MQTT discovery configs
(retained) for the sensors and lights, a zigbee2mqtt bridge whose `bridge/devices` lists the climate
sensor of the second room (which also reports on its zigbee2mqtt topic), and a Sparkplug B edge node
that publishes the printer's telemetry (NBIRTH/DBIRTH with aliases, then DDATA by alias).
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

from mcpmqtt.demo.config import HA_PREFIX, ROOMS, SPARKPLUG_GROUP, Z2M_BASE
from mcpmqtt.mqtt import aiomqtt_compat

SENSOR_INTERVAL = 2.0
STATUS_INTERVAL = 10.0
PRINTER_REQUESTS = "commands/printer/request"
PRINTER_RESPONSES = "commands/printer/response"
"""Where the printer answers a request that names no MQTT 5 response topic (all of them on 3.1.1)."""
PRINTER_STATUS = "status/printer"
"""The printer's state, retained: sent with the sensors' readings and after every request."""
PRINT_SPEED = 1.0
"""Percent of a job per second: a job takes 100 s, so a watch for its end fires within minutes."""
NEXT_JOB_AFTER = 30.0
"""Seconds the printer stands finished before it starts the next job of its queue."""
JOBS = ("calibration_cube.gcode", "benchy.gcode", "phone_stand.gcode")

SPARKPLUG_NODE = "printer-gateway"
SPARKPLUG_DEVICE = "printer"
Z2M_DEVICE = f"{ROOMS[1]}_climate"
"""The zigbee2mqtt friendly name of the second room's climate sensor."""
_NODE_ID = "mcpmqtt_demo"
_ORIGIN = {"name": "mcpmqtt demo"}

log = logging.getLogger(__name__)


@dataclass
class Sensor:
    """A reading that drifts slowly and stays plausible: a random walk pulled back toward `normal`,
    which itself swings by `swing` over `period` seconds (a room warming and cooling), so that the
    history of a few minutes has a shape worth asking about."""

    topic: str
    unit: str
    normal: float
    step: float
    swing: float = 0.0
    period: float = 600.0
    value: float = field(init=False)
    _started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.value = self.normal

    def read(self) -> dict[str, Any]:
        """The next reading, as the sensor publishes it."""
        phase = 2 * math.pi * (time.monotonic() - self._started) / self.period
        target = self.normal + self.swing * math.sin(phase)
        self.value += 0.1 * (target - self.value) + random.gauss(0, self.step)
        return {"value": round(self.value, 1), "unit": self.unit}


@dataclass
class Printer:
    """A 3D printer partway through a job: it pauses, resumes, heats its nozzle and reports. A job
    finishes a minute or so after the demo starts; half a minute later the next one of its queue begins."""

    job: str = "benchy.gcode"
    state: Literal["printing", "paused", "finished"] = "printing"
    progress: float = 37.0
    target: float = 210.0
    nozzle: float = 209.6
    _updated: float = field(default_factory=time.monotonic)
    _finished_at: float | None = None
    _queue: int = 0

    def status(self) -> dict[str, Any]:
        """What the printer reports about itself."""
        return {
            "state": self.state,
            "job": self.job,
            "progress_percent": round(self.progress, 1),
            "nozzle_temperature": round(self.nozzle, 1),
            "target_temperature": self.target,
        }

    def report(self) -> dict[str, Any]:
        """The status as of now (the printer has moved on since the last request): for the retained
        status topic and the Sparkplug B edge node."""
        self._advance()
        return self.status()

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
            self.progress = min(100.0, self.progress + elapsed * PRINT_SPEED)
            if self.progress == 100.0:
                self.state, self._finished_at = "finished", now
        elif self._finished_at is not None and now - self._finished_at >= NEXT_JOB_AFTER:
            self.job, self._queue = JOBS[self._queue % len(JOBS)], self._queue + 1
            self.state, self.progress, self._finished_at = "printing", 0.0, None


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
            for room, temperature, humidity, swing in zip(
                ROOMS, (21.5, 23.0), (46.0, 52.0), (1.5, 0.8), strict=True
            )
            for sensor in (
                Sensor(f"sensors/{room}/temperature", "°C", temperature, 0.1, swing=swing),
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
        await self._report_printer(client)
        await self.announce(client)

    async def announce(self, client: aiomqtt.Client) -> None:
        """What the devices say about themselves, retained: HA discovery, the zigbee2mqtt bridge."""
        for topic, config in ha_discovery(self.sensors):
            await client.publish(topic, _json(config), qos=1, retain=True)
        await client.publish(f"{Z2M_BASE}/bridge/state", _json({"state": "online"}), qos=1, retain=True)
        devices = _json(z2m_bridge_devices())  # type: ignore[arg-type]  # a list, as zigbee2mqtt sends
        await client.publish(f"{Z2M_BASE}/bridge/devices", devices, qos=1, retain=True)

    def climate_report(self) -> dict[str, Any]:
        """The zigbee2mqtt state of the second room's climate sensor: the same readings as its sensors."""
        readings = {
            s.topic.rsplit("/", 1)[1]: s.value for s in self.sensors if s.topic.split("/")[1] == ROOMS[1]
        }
        return {
            "temperature": round(readings["temperature"], 1),
            "humidity": round(readings["humidity"], 1),
            "battery": 97,
            "linkquality": 142,
        }

    async def sense(self, client: aiomqtt.Client) -> None:
        """Publish every sensor's reading every SENSOR_INTERVAL seconds, not retained, as sensors do,
        and the printer's status, retained."""
        while True:
            for sensor in self.sensors:
                await client.publish(sensor.topic, _json(sensor.read()))
            await self._report_printer(client)
            await client.publish(f"{Z2M_BASE}/{Z2M_DEVICE}", _json(self.climate_report()))
            await anyio.sleep(SENSOR_INTERVAL)

    async def _report_printer(self, client: aiomqtt.Client) -> None:
        await client.publish(PRINTER_STATUS, _json(self.printer.report()), qos=1, retain=True)

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
        if action == "set":  # Home Assistant's form (see ha_discovery): ON or OFF on one topic
            action = {b"ON": "on", b"OFF": "off"}.get(bytes(message.payload), "set")
        if room not in self.lights or action not in ("on", "off"):
            log.warning(
                "nothing listens on %s (rooms: %s; on or off, or ON/OFF to set)", topic, ", ".join(ROOMS)
            )
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
        await self._report_printer(client)


def _json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode()


def ha_discovery(sensors: list[Sensor]) -> list[tuple[str, dict[str, Any]]]:
    """Home Assistant MQTT discovery configs (topic, config) for the sensors and the lights.

    As Home Assistant documents them: one config per entity under `homeassistant/<component>/...`,
    entities of one physical device sharing its `device.identifiers`.
    """
    configs: list[tuple[str, dict[str, Any]]] = []
    for sensor in sensors:
        _, room, quantity = sensor.topic.split("/")
        configs.append(
            (
                f"{HA_PREFIX}/sensor/{_NODE_ID}/{room}_{quantity}/config",
                {
                    "name": quantity.capitalize(),
                    "unique_id": f"{_NODE_ID}_{room}_{quantity}",
                    "state_topic": sensor.topic,
                    "value_template": "{{ value_json.value }}",
                    "unit_of_measurement": sensor.unit,
                    "device_class": quantity,
                    "state_class": "measurement",
                    "device": _ha_device(f"{room}_climate", f"{room} climate sensor", "Climate sensor"),
                    "origin": _ORIGIN,
                },
            )
        )
    for room in ROOMS:
        configs.append(
            (
                f"{HA_PREFIX}/light/{_NODE_ID}/{room}_light/config",
                {
                    "name": None,  # the device's own name, as HA names a device's main entity
                    "unique_id": f"{_NODE_ID}_{room}_light",
                    "command_topic": f"actuators/lights/{room}/set",
                    "payload_on": "ON",
                    "payload_off": "OFF",
                    "state_topic": f"status/lights/{room}",
                    "state_value_template": "{{ value_json.state }}",
                    "state_on": "on",
                    "state_off": "off",
                    "device": _ha_device(f"{room}_light", f"{room} light", "Ceiling light"),
                    "origin": _ORIGIN,
                },
            )
        )
    return configs


def _ha_device(key: str, name: str, model: str) -> dict[str, Any]:
    return {
        "identifiers": [f"{_NODE_ID}_{key}"],
        "name": name,
        "manufacturer": "mcpmqtt demo",
        "model": model,
    }


def z2m_bridge_devices() -> list[dict[str, Any]]:
    """zigbee2mqtt's `bridge/devices`: the coordinator and the one Zigbee device, with its `exposes`."""
    return [
        {
            "ieee_address": "0x00124b0014d9a1f0",
            "type": "Coordinator",
            "friendly_name": "Coordinator",
            "network_address": 0,
            "supported": True,
            "interviewing": False,
            "interview_completed": True,
        },
        {
            "ieee_address": "0x00158d0008a1b2c3",
            "type": "EndDevice",
            "network_address": 41234,
            "friendly_name": Z2M_DEVICE,
            "supported": True,
            "interviewing": False,
            "interview_completed": True,
            "power_source": "Battery",
            "model_id": "lumi.weather",
            "manufacturer": "LUMI",
            "definition": {
                "model": "WSDCGQ11LM",
                "vendor": "Aqara",
                "description": "Temperature, humidity and pressure sensor",
                "exposes": [
                    _z2m_numeric("temperature", "Measured temperature value", "°C"),
                    _z2m_numeric("humidity", "Measured relative humidity", "%"),
                    _z2m_numeric("battery", "Remaining battery in %", "%", value_min=0, value_max=100),
                    _z2m_numeric(
                        "linkquality", "Link quality (signal strength)", "lqi", value_min=0, value_max=255
                    ),
                ],
            },
        },
    ]


def _z2m_numeric(name: str, description: str, unit: str, **limits: int) -> dict[str, Any]:
    return {
        "type": "numeric",
        "name": name,
        "property": name,
        "label": name.capitalize(),
        "description": description,
        "access": 1,  # published state only
        "unit": unit,
        **limits,
    }


_PRINTER_METRICS = (  # Sparkplug metric name, alias, datatype, key of Printer.status()
    ("state", 1, "String", "state"),
    ("job", 2, "String", "job"),
    ("progress_percent", 3, "Float", "progress_percent"),
    ("nozzle_temperature", 4, "Float", "nozzle_temperature"),
    ("target_temperature", 5, "Float", "target_temperature"),
)


async def run_edge_node(
    host: str,
    port: int,
    protocol: Literal["5", "3.1.1"],
    printer: Printer,
    online: anyio.Event | None = None,
) -> None:
    """The printer's telemetry as a Sparkplug B edge node, on a connection of its own (with its NDEATH
    as the Will), until cancelled.

    Sparkplug births are not retained, so a server that subscribes after them never learns the metric
    names; with `online`, the node connects only once the event is set (the runner sets it when the
    MCP server is connected), as a node waits for its host application.
    """
    from mcpmqtt.sparkplug.codec import Outgoing, encode  # protobuf loads only with the edge node

    if online is not None:
        await online.wait()
    node_topic = f"spBv1.0/{SPARKPLUG_GROUP}/{{}}/{SPARKPLUG_NODE}"
    device_topic = node_topic + f"/{SPARKPLUG_DEVICE}"
    bd_seq = 0
    death = encode(None, None, [Outgoing("bdSeq", None, "Int64", bd_seq)])
    client = aiomqtt.Client(
        host,
        port,
        identifier=f"mcpmqtt-demo-edge-node-{secrets.token_hex(4)}",
        protocol=aiomqtt.ProtocolVersion.V5 if protocol == "5" else aiomqtt.ProtocolVersion.V311,
        will=aiomqtt.Will(node_topic.format("NDEATH"), death, qos=1),
    )
    aiomqtt_compat.retrieve_disconnect(client)  # the devices' client may end the group first
    aiomqtt_compat.guard_socket_writes(client)
    seq = 0

    def next_seq() -> int:
        nonlocal seq
        current, seq = seq, (seq + 1) % 256
        return current

    def now() -> int:
        return int(time.time() * 1000)

    try:
        async with client:
            birth = [
                Outgoing("bdSeq", None, "Int64", bd_seq),
                Outgoing("Node Control/Rebirth", 0, "Boolean", False),
            ]
            await client.publish(node_topic.format("NBIRTH"), encode(now(), next_seq(), birth), qos=0)
            status, stamp = printer.report(), now()
            metrics = [
                Outgoing(name, alias, kind, status[key], stamp) for name, alias, kind, key in _PRINTER_METRICS
            ]
            await client.publish(device_topic.format("DBIRTH"), encode(stamp, next_seq(), metrics), qos=0)
            while True:
                await anyio.sleep(SENSOR_INTERVAL)
                previous, status, stamp = status, printer.report(), now()
                changed = [
                    Outgoing(None, alias, kind, status[key], stamp)
                    for _, alias, kind, key in _PRINTER_METRICS
                    if status[key] != previous[key]
                ]
                if changed:
                    await client.publish(
                        device_topic.format("DDATA"), encode(stamp, next_seq(), changed), qos=0
                    )
    except aiomqtt.MqttError as lost:  # the broker went away: the node ends quietly, as the devices do
        log.info("the Sparkplug edge node lost the broker at %s:%d (%s)", host, port, lost)


async def run_devices(
    host: str,
    port: int,
    protocol: Literal["5", "3.1.1"],
    broker_kind: str,
    edge_node_online: anyio.Event | None = None,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run every device until cancelled or the broker goes away; `task_status` reports once their
    retained state is published. The Sparkplug edge node is born when `edge_node_online` is set (at
    once without it).

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
    aiomqtt_compat.retrieve_disconnect(client)  # the edge node may end the group first
    aiomqtt_compat.guard_socket_writes(client)
    started = False
    try:
        async with client, anyio.create_task_group() as tasks:
            await client.subscribe("actuators/lights/+/+", qos=1)
            await client.subscribe(PRINTER_REQUESTS, qos=1)
            await devices.publish_state(client)
            tasks.start_soon(devices.sense, client)
            tasks.start_soon(devices.report_system, client)
            tasks.start_soon(run_edge_node, host, port, protocol, devices.printer, edge_node_online)
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
