"""zigbee2mqtt: the retained `<base>/bridge/devices` document lists every device with its `exposes`.

A device's state is the JSON object on `<base>/<friendly_name>`; commands are JSON objects on
`<base>/<friendly_name>/set`; `<base>/<friendly_name>/availability` says online/offline when the
bridge's availability feature is on. The `access` bitmask of an expose says whether it is published
(1) and settable (2). References: https://www.zigbee2mqtt.io/guide/usage/mqtt_topics_and_messages.html
and https://www.zigbee2mqtt.io/guide/usage/exposes.html
"""

from __future__ import annotations

from typing import Any

from mcpmqtt.discovery import schemas
from mcpmqtt.discovery.model import (
    Availability,
    DeviceReport,
    Entity,
    Malformed,
    device_text,
    parse_json,
    topic_name,
)

_PUBLISHED, _SETTABLE = 1, 2
_MAX_FEATURES = 200


def parse(topic: str, payload: bytes, base: str) -> list[DeviceReport]:
    """The devices of a bridge/devices document (the whole list: devices not in it are gone)."""
    if not payload:
        return []
    document = parse_json(payload)
    if not isinstance(document, list):
        raise Malformed("the payload is not a JSON array of devices")
    reports = []
    for item in document:
        if not isinstance(item, dict) or item.get("type") == "Coordinator":
            continue
        name, address = item.get("friendly_name"), item.get("ieee_address")
        if not isinstance(name, str) or not isinstance(address, str):
            continue  # a device without its name or address cannot be addressed; skip it alone
        try:
            reports.append(_device(base, name, address, item))
        except Malformed:
            continue
    return reports


def _device(base: str, name: str, address: str, item: dict[str, Any]) -> DeviceReport:
    state = topic_name(f"{base}/{name}", "the device topic")
    assert state is not None
    definition = item.get("definition")
    definition = definition if isinstance(definition, dict) else {}
    exposes = definition.get("exposes")
    entities: list[Entity] = []
    for expose in exposes if isinstance(exposes, list) else []:
        entities.extend(_entities(state, expose, None))
    return DeviceReport(
        device_id=f"zigbee2mqtt:{address[:40]}",
        convention="zigbee2mqtt",
        name=device_text(name),
        manufacturer=device_text(definition.get("vendor")),
        model=device_text(definition.get("model")),
        sw_version=device_text(item.get("software_build_id")),
        description=device_text(definition.get("description")),
        entities=tuple(entities[:_MAX_FEATURES]),
        availability=(Availability(f"{state}/availability", field="state"),),
    )


def _entities(state: str, expose: object, parent: str | None) -> list[Entity]:
    """The entities of one expose: one for a generic expose, one per feature of a specific one (light)."""
    if not isinstance(expose, dict):
        return []
    kind = expose.get("type")
    features = expose.get("features")
    if isinstance(features, list) and kind != "composite":  # specific: light, switch, cover, climate...
        return [
            entity for feature in features[:_MAX_FEATURES] for entity in _entities(state, feature, str(kind))
        ]
    field = expose.get("property")
    if not isinstance(field, str) or not field:
        return []
    access = expose.get("access")
    if kind == "composite":  # no access of its own: settable when one of its features is
        parts = [f for f in features or [] if isinstance(f, dict)]
        access = 0
        for part in parts:
            access |= part.get("access", 0) if isinstance(part.get("access"), int) else 0
    if not isinstance(access, int):
        return []
    value = value_schema(expose)
    command = None
    schema = None
    if access & _SETTABLE:
        command = f"{state}/set"
        if value is not None:
            content = {
                "type": "object",
                "properties": {field: value},
                "required": [field],
                "additionalProperties": False,
            }
            schema = schemas.json_content(content)
    label = expose.get("label") or expose.get("name")
    return [
        Entity(
            # a light's color_xy and color_hs both write `color`: keyed by their names, both are listed
            key=str(expose.get("name") or field) if kind == "composite" else field,
            kind=f"{parent}/{kind}" if parent else str(kind),
            name=device_text(label),
            state_topic=state if access & _PUBLISHED else None,
            command_topic=command,
            value_field="/" + field.replace("~", "~0").replace("/", "~1"),
            unit=device_text(expose.get("unit"), 20),
            device_class=device_text(expose.get("category"), 40),
            command_schema=schema,
        )
    ]


def value_schema(expose: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON Schema of the value one expose takes, from its documented fields; None if unknown."""
    kind = expose.get("type")
    if kind == "binary":
        values = [expose.get(key) for key in ("value_on", "value_off", "value_toggle") if key in expose]
        return {"enum": values} if values else None
    if kind == "numeric":
        low, high = expose.get("value_min"), expose.get("value_max")
        numbers: list[float | None] = [
            value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
            for value in (low, high)
        ]
        schema = schemas.number_range(numbers[0], numbers[1])
        presets = expose.get("presets")
        preset_values = (
            [p.get("value") for p in presets if isinstance(p, dict)] if isinstance(presets, list) else []
        )
        if preset_values:
            return {"anyOf": [schema, {"enum": preset_values}]}
        return schema
    if kind == "enum":
        choices = expose.get("values")
        return {"enum": choices} if isinstance(choices, list) and choices else None
    if kind == "text":
        return {"type": "string"}
    if kind == "composite":
        properties = {}
        for feature in expose.get("features") or []:
            part = value_schema(feature) if isinstance(feature, dict) else None
            if part is not None and isinstance(feature.get("property"), str):
                properties[feature["property"]] = part
        return {"type": "object", "properties": properties}
    if kind == "list":
        schema = {"type": "array"}
        item = expose.get("item_type")
        if isinstance(item, dict) and (items := value_schema(item)) is not None:
            schema["items"] = items
        for key, word in (("length_min", "minItems"), ("length_max", "maxItems")):
            if isinstance(expose.get(key), int):
                schema[word] = expose[key]
        return schema
    return None
