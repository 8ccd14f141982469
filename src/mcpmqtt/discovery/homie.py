"""Homie 4 and Homie 5: devices that describe themselves in `$`-attribute topics.

Homie 4 spreads a device over many retained topics (`homie/<device>/$name`, `$nodes`,
`<node>/$properties`, `<node>/<property>/$datatype`, `$format`, `$settable`, `$unit`, `$state`),
so the reader keeps each device's attributes and rebuilds its report on every change. Homie 5 puts
the whole description in one JSON document, `homie/5/<device>/$description`, beside `$state`.
A property's value is on `.../<property>`, commands on `.../<property>/set`. References:
https://homieiot.github.io/specification/spec-core-v4_0_0/ and https://homieiot.github.io/specification/
"""

from __future__ import annotations

import contextlib
import json
from collections import OrderedDict
from typing import Any

from mcpmqtt.discovery import schemas
from mcpmqtt.discovery.model import (
    Change,
    DeviceReport,
    Entity,
    Malformed,
    Replace,
    SetOnline,
    device_text,
    parse_json,
    topic_name,
)

_ONLINE_STATES = {
    "init": True,
    "ready": True,
    "alert": True,
    "disconnected": False,
    "sleeping": False,
    "lost": False,
}
_MAX_ATTRIBUTES = 4096
_BYTE = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_HUE = r"(360|3[0-5][0-9]|[12]?[0-9]?[0-9])"
_PERCENT = r"(100|[1-9]?[0-9])"
_FLOAT = r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?"


def is_attribute_topic(topic: str, domain: str) -> bool:
    """The cheap shape test: under the domain, with a `$` level."""
    return topic.startswith(domain) and "/$" in topic and topic[len(domain) : len(domain) + 1] == "/"


class HomieReader:
    """Keeps Homie 4 devices' attributes (bounded) and turns attribute messages into changes."""

    def __init__(self, domain: str, max_devices: int) -> None:
        self.domain = domain
        self.max_devices = max_devices
        self._devices: OrderedDict[str, dict[tuple[str, ...], str]] = OrderedDict()

    def read(self, topic: str, payload: bytes) -> list[Change]:
        levels = topic[len(self.domain) + 1 :].split("/")
        if levels[0] == "5" and len(levels) == 3:
            return _read_v5(self.domain, levels[1], levels[2], payload)
        if levels[0] == "5" or not levels[-1].startswith("$") or not 2 <= len(levels) <= 4:
            return []  # Homie 5 logs, alerts and targets; broadcasts; nothing that describes a device
        device, path = levels[0], tuple(levels[1:])
        if device.startswith("$"):
            return []
        text = payload.decode("utf-8", "replace")
        if path == ("$state",):
            online = _ONLINE_STATES.get(text)
            if not payload:  # the device is being removed
                self._devices.pop(device, None)
                return [Replace(self._source(device), ())]
            changes: list[Change] = [SetOnline(f"homie:{device}", online)]
            self._attributes(device)[path] = text
            return changes
        attributes = self._attributes(device)
        if payload:
            if len(attributes) >= _MAX_ATTRIBUTES and path not in attributes:
                raise Malformed(f"device {device[:40]!r} has more than {_MAX_ATTRIBUTES} attributes")
            attributes[path] = text
        else:
            attributes.pop(path, None)
        report = self._report(device, attributes)
        return [Replace(self._source(device), (report,) if report is not None else ())]

    def _source(self, device: str) -> str:
        return f"{self.domain}/{device}"

    def _attributes(self, device: str) -> dict[tuple[str, ...], str]:
        attributes = self._devices.get(device)
        if attributes is None:
            if len(self._devices) >= self.max_devices:
                self._devices.popitem(last=False)
            attributes = self._devices[device] = {}
        else:
            self._devices.move_to_end(device)
        return attributes

    def _report(self, device: str, attributes: dict[tuple[str, ...], str]) -> DeviceReport | None:
        listed_nodes = attributes.get(("$nodes",))
        nodes = (
            _listing(listed_nodes)
            if listed_nodes is not None
            else sorted({path[0] for path in attributes if len(path) >= 2})
        )
        entities = []
        for node in nodes:
            listed = attributes.get((node, "$properties"))
            properties = (
                _listing(listed)
                if listed is not None
                else sorted({path[1] for path in attributes if len(path) == 3 and path[0] == node})
            )
            for prop in properties:
                attrs = {
                    path[2]: value
                    for path, value in attributes.items()
                    if path[:2] == (node, prop) and len(path) == 3
                }
                if not attrs:
                    continue
                spec = {
                    "name": attrs.get("$name"),
                    "datatype": attrs.get("$datatype"),
                    "format": attrs.get("$format"),
                    "settable": attrs.get("$settable") == "true",
                    "unit": attrs.get("$unit"),
                }
                entity = _property(f"{self.domain}/{device}/{node}/{prop}", f"{node}/{prop}", spec, 4)
                if entity is not None:
                    entities.append(entity)
        if not entities and ("$name",) not in attributes:
            return None
        state = attributes.get(("$state",))
        return DeviceReport(
            device_id=f"homie:{device}",
            convention="homie",
            name=device_text(attributes.get(("$name",))),
            model=device_text(attributes.get(("$implementation",))),
            sw_version=device_text(attributes.get(("$homie",))),
            entities=tuple(entities),
            online=_ONLINE_STATES.get(state) if state is not None else None,
        )


def _listing(value: str) -> list[str]:
    return [
        part.strip()
        for part in value.split(",")
        if part.strip() and "/" not in part and "#" not in part and "+" not in part
    ]


def _read_v5(domain: str, device: str, attribute: str, payload: bytes) -> list[Change]:
    source, device_id = f"{domain}/5/{device}", f"homie:{device}"
    if attribute == "$state":
        if not payload:  # a zero-length $state removes the device
            return [Replace(source, ())]
        return [SetOnline(device_id, _ONLINE_STATES.get(payload.decode("utf-8", "replace")))]
    if attribute != "$description":
        return []
    if not payload:
        return [Replace(source, ())]
    description = parse_json(payload, "$description")
    if not isinstance(description, dict):
        raise Malformed("$description is not a JSON object")
    nodes = description.get("nodes", {})
    if not isinstance(nodes, dict):
        raise Malformed("$description's nodes is not an object")
    entities = []
    for node_id, node in nodes.items():
        properties = node.get("properties", {}) if isinstance(node, dict) else None
        if not isinstance(properties, dict):
            continue
        for prop_id, spec in properties.items():
            if isinstance(spec, dict):
                entity = _property(
                    f"{domain}/5/{device}/{node_id}/{prop_id}", f"{node_id}/{prop_id}", spec, 5
                )
                if entity is not None:
                    entities.append(entity)
    report = DeviceReport(
        device_id=device_id,
        convention="homie",
        name=device_text(description.get("name")) or device_text(device),
        model=device_text(description.get("type")),
        sw_version=device_text(description.get("homie")),
        entities=tuple(entities),
    )
    return [Replace(source, (report,))]


def _property(topic: str, key: str, spec: dict[str, Any], version: int) -> Entity | None:
    """One property as an entity; None when its topic is not a usable topic name."""
    try:
        state = topic_name(topic, "the property topic")
    except Malformed:
        return None
    datatype, fmt = spec.get("datatype"), spec.get("format")
    settable = spec.get("settable") is True
    return Entity(
        key=key,
        kind=datatype if isinstance(datatype, str) else "unknown",
        name=device_text(spec.get("name")),
        state_topic=state,
        command_topic=f"{topic}/set" if settable else None,
        unit=device_text(spec.get("unit"), 20),
        command_schema=property_schema(datatype, fmt, version) if settable else None,
    )


def property_schema(datatype: object, fmt: object, version: int) -> dict[str, Any] | None:
    """The payloads a Homie property takes, from its $datatype and $format; None when unknown."""
    fmt = fmt if isinstance(fmt, str) else None
    if datatype in ("integer", "float"):
        low, high, step = _range(fmt)
        return schemas.number_text(low, high, integer=datatype == "integer", step=step)
    if datatype == "boolean":
        return schemas.text_choices(["true", "false"])
    if datatype == "enum":
        if not fmt:
            return None
        values = fmt.split(",") if version == 5 else [value.strip() for value in fmt.split(",")]
        return schemas.text_choices([value for value in values if value])
    if datatype == "color":
        forms = [form.strip() for form in (fmt or "").split(",") if form.strip() in ("rgb", "hsv", "xyz")]
        if not forms:
            return None
        if version == 4:
            patterns = [
                f"{_BYTE},{_BYTE},{_BYTE}" if form == "rgb" else f"{_HUE},{_PERCENT},{_PERCENT}"
                for form in forms
                if form != "xyz"
            ]
        else:
            patterns = [f"{form}," + ",".join([_FLOAT] * (2 if form == "xyz" else 3)) for form in forms]
        return {"type": "string", "pattern": "^(" + "|".join(f"({p})" for p in patterns) + ")$"}
    if datatype in ("string", "datetime", "duration"):
        return {"type": "string"}
    if datatype == "json":
        content: object = {"anyOf": [{"type": "array"}, {"type": "object"}]}
        if fmt:
            with contextlib.suppress(ValueError):  # a schema that does not parse is ignored (Homie 5)
                content = json.loads(fmt)
        return schemas.json_content(content if isinstance(content, dict) else {})
    return None


def _range(fmt: str | None) -> tuple[float | None, float | None, float | None]:
    """`min:max[:step]` with either end open, as Homie 5 writes it (Homie 4 writes both ends)."""
    if not fmt:
        return None, None, None
    parts = fmt.split(":")
    numbers: list[float | None] = []
    for part in parts[:3]:
        try:
            numbers.append(float(part) if part.strip() else None)
        except ValueError:
            return None, None, None
    while len(numbers) < 3:
        numbers.append(None)
    low, high, step = numbers
    return (_whole(low), _whole(high), step)


def _whole(value: float | None) -> float | None:
    return int(value) if value is not None and value.is_integer() else value
