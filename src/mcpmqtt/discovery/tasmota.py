"""Tasmota discovery: `tasmota/discovery/<MAC>/config` (the device, its relays and topics) and
`tasmota/discovery/<MAC>/sensors` (its sensor readings), both retained JSON.

The config gives the topic template (`ft`, e.g. `%prefix%/%topic%/`), the prefixes (`tp`: cmnd,
stat, tele), the relay kinds (`rl`: 1 relay, 2 light, 3 shutter) and the power payloads (`state`:
OFF, ON, TOGGLE, HOLD). A relay is commanded on `cmnd/<topic>/POWER<n>` and reported in
`tele/<topic>/STATE`; the sensors in `tele/<topic>/SENSOR`; `tele/<topic>/LWT` says online or
offline. The format is Tasmota's (arendst/Tasmota#9267), as read by Home Assistant's hatasmota.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from mcpmqtt.discovery import schemas
from mcpmqtt.discovery.model import (
    Availability,
    Change,
    DeviceReport,
    Entity,
    Malformed,
    Replace,
    device_text,
    parse_json,
    topic_name,
)

_RELAY, _LIGHT, _SHUTTER = 1, 2, 3
_MAX_SENSORS = 200
_UNITS = {"Humidity": "%", "Power": "W", "Voltage": "V", "Current": "A", "Today": "kWh", "Yesterday": "kWh",
          "Total": "kWh", "Illuminance": "lx", "DewPoint": None}  # fmt: skip


def is_discovery_topic(topic: str, prefix: str) -> bool:
    """The cheap shape test: `<prefix>/<MAC>/config` or `/sensors`."""
    return (
        topic.startswith(prefix)
        and topic[len(prefix) : len(prefix) + 1] == "/"
        and (topic.endswith("/config") or topic.endswith("/sensors"))
    )


class TasmotaReader:
    """Keeps each device's last config and sensors message (bounded) and reports both together."""

    def __init__(self, prefix: str, max_devices: int) -> None:
        self.prefix = prefix
        self.max_devices = max_devices
        self._devices: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def read(self, topic: str, payload: bytes) -> list[Change]:
        levels = topic[len(self.prefix) + 1 :].split("/")
        if len(levels) != 2 or levels[1] not in ("config", "sensors"):
            return []
        mac, kind = levels
        source = f"{self.prefix}/{mac}"
        if not payload:
            if kind == "config":
                self._devices.pop(mac, None)
                return [Replace(source, ())]
            self._known(mac).pop("sensors", None)
        else:
            document = parse_json(payload)
            if not isinstance(document, dict):
                raise Malformed("the payload is not a JSON object")
            self._known(mac)[kind] = document
        known = self._known(mac)
        if "config" not in known:
            return []  # sensors alone do not say where the device publishes; wait for its config
        return [Replace(source, (report(mac, known["config"], known.get("sensors")),))]

    def _known(self, mac: str) -> dict[str, Any]:
        known = self._devices.get(mac)
        if known is None:
            if len(self._devices) >= self.max_devices:
                self._devices.popitem(last=False)
            known = self._devices[mac] = {}
        else:
            self._devices.move_to_end(mac)
        return known


def report(mac: str, config: dict[str, Any], sensors: dict[str, Any] | None) -> DeviceReport:
    """The device a config (and its sensors message, if any) describes."""
    full, name, prefixes = config.get("ft"), config.get("t"), config.get("tp")
    if not (
        isinstance(full, str) and isinstance(name, str) and isinstance(prefixes, list) and len(prefixes) >= 3
    ):
        raise Malformed("the config lacks its topic (t), full topic (ft) or prefixes (tp)")
    hostname = config["hn"] if isinstance(config.get("hn"), str) else ""

    def topic(index: int, command: str) -> str:
        prefix = prefixes[index] if isinstance(prefixes[index], str) else ""
        base = full.replace("%prefix%", prefix).replace("%topic%", name)
        base = base.replace("%hostname%", hostname).replace("%id%", str(config.get("mac", mac))[-6:])
        found = topic_name(base + command, "a topic")
        assert found is not None
        return found

    states = config.get("state")
    power = (
        [s for s in states[:3] if isinstance(s, str)] if isinstance(states, list) else ["OFF", "ON", "TOGGLE"]
    )
    relays: list[Any] = config["rl"] if isinstance(config.get("rl"), list) else []
    friendly: list[Any] = config["fn"] if isinstance(config.get("fn"), list) else []
    count = sum(1 for kind in relays if kind in (_RELAY, _LIGHT))
    entities = []
    shutter = 0
    for index, kind in enumerate(relays[:32]):
        label = device_text(friendly[index]) if index < len(friendly) else None
        if kind in (_RELAY, _LIGHT):
            field = "/POWER" if count == 1 else f"/POWER{index + 1}"
            entities.append(
                Entity(
                    key=f"power{index + 1}",
                    kind="light" if kind == _LIGHT else "relay",
                    name=label or f"Relay {index + 1}",
                    state_topic=topic(2, "STATE"),
                    command_topic=topic(0, f"POWER{index + 1}"),
                    value_field=field,
                    command_schema=schemas.text_choices(power),
                )
            )
        if kind == _LIGHT:
            entities.append(
                Entity(
                    key=f"dimmer{index + 1}",
                    kind="light",
                    name=f"{label or 'Light'} dimmer",
                    state_topic=topic(2, "STATE"),
                    command_topic=topic(0, "Dimmer"),
                    value_field="/Dimmer",
                    unit="%",
                    command_schema=schemas.number_text(0, 100, integer=True),
                )
            )
        if kind == _SHUTTER and index % 2 == 0:  # a shutter takes two relays (up, down)
            shutter += 1
            entities.append(
                Entity(
                    key=f"shutter{shutter}",
                    kind="shutter",
                    name=f"Shutter {shutter}",
                    state_topic=topic(2, "SENSOR"),
                    command_topic=topic(0, f"ShutterPosition{shutter}"),
                    value_field=f"/Shutter{shutter}/Position",
                    unit="%",
                    command_schema=schemas.number_text(0, 100, integer=True),
                )
            )
    readings = sensors.get("sn") if isinstance(sensors, dict) else None
    if isinstance(readings, dict):
        entities.extend(_sensors(readings, topic(2, "SENSOR")))
    online, offline = config.get("onln"), config.get("ofln")
    return DeviceReport(
        device_id=f"tasmota:{mac[:40]}",
        convention="tasmota",
        name=device_text(config.get("dn")) or device_text(name),
        manufacturer="Tasmota",
        model=device_text(config.get("md")),
        sw_version=device_text(config.get("sw")),
        entities=tuple(entities),
        availability=(
            Availability(
                topic(2, "LWT"),
                (online if isinstance(online, str) else "Online",),
                (offline if isinstance(offline, str) else "Offline",),
            ),
        ),
    )


def _sensors(readings: dict[str, Any], state: str) -> list[Entity]:
    """One entity per numeric reading, by its path in the SENSOR payload (`/DS18B20-1/Temperature`)."""
    found: list[Entity] = []
    temperature_unit = readings.get("TempUnit")

    def walk(node: dict[str, Any], path: str) -> None:
        for key, value in node.items():
            if len(found) >= _MAX_SENSORS or not isinstance(key, str):
                return
            pointer = f"{path}/{key.replace('~', '~0').replace('/', '~1')}"
            if isinstance(value, dict):
                walk(value, pointer)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                unit = _UNITS.get(key)
                if key.startswith("Temperature") and isinstance(temperature_unit, str):
                    unit = f"°{temperature_unit}"
                found.append(
                    Entity(
                        key=f"sensor{pointer}",
                        kind="sensor",
                        name=device_text(pointer[1:].replace("/", " ")),
                        state_topic=state,
                        value_field=pointer,
                        unit=device_text(unit, 20),
                    )
                )

    walk(readings, "")
    return found
