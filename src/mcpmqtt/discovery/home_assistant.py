"""Home Assistant MQTT discovery: `<prefix>/<component>/[<node_id>/]<object_id>/config`.

One config per entity (single-component discovery), or one per device whose `components` (`cmps`)
hold every entity (device discovery, component `device`). Keys may be abbreviated (`stat_t`,
`cmd_t`, `dev`, `ids`...), and `~` at the start or end of a `*_topic` value stands for the base topic
given under `~`. An empty payload removes what the topic announced. Reference:
https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery
"""

from __future__ import annotations

import re
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

ABBREVIATIONS = {
    "act_t": "action_topic", "avty": "availability", "avty_mode": "availability_mode",
    "avty_t": "availability_topic", "avty_tpl": "availability_template",
    "bri_cmd_t": "brightness_command_topic",
    "bri_cmd_tpl": "brightness_command_template", "bri_scl": "brightness_scale",
    "bri_stat_t": "brightness_state_topic", "bri_val_tpl": "brightness_value_template",
    "clr_temp_cmd_t": "color_temp_command_topic", "clr_temp_cmd_tpl": "color_temp_command_template",
    "clr_temp_k": "color_temp_kelvin", "clr_temp_stat_t": "color_temp_state_topic",
    "cmd_t": "command_topic", "cmd_tpl": "command_template", "cmps": "components", "dev": "device",
    "dev_cla": "device_class", "e": "encoding", "fx_cmd_t": "effect_command_topic",
    "fx_cmd_tpl": "effect_command_template", "fx_list": "effect_list", "fx_stat_t": "effect_state_topic",
    "fan_mode_cmd_t": "fan_mode_command_topic", "fan_mode_cmd_tpl": "fan_mode_command_template",
    "fan_mode_stat_t": "fan_mode_state_topic", "json_attr_t": "json_attributes_topic",
    "max_k": "max_kelvin", "max_mirs": "max_mireds", "min_k": "min_kelvin", "min_mirs": "min_mireds",
    "mode_cmd_t": "mode_command_topic", "mode_cmd_tpl": "mode_command_template",
    "mode_stat_t": "mode_state_topic", "o": "origin", "obj_id": "object_id", "ops": "options",
    "p": "platform", "pct_cmd_t": "percentage_command_topic", "pct_cmd_tpl": "percentage_command_template",
    "pct_stat_t": "percentage_state_topic", "pl": "payload", "pl_avail": "payload_available",
    "pl_cls": "payload_close", "pl_lock": "payload_lock", "pl_not_avail": "payload_not_available",
    "pl_off": "payload_off", "pl_on": "payload_on", "pl_open": "payload_open", "pl_prs": "payload_press",
    "pl_stop": "payload_stop", "pl_unlk": "payload_unlock", "pos_clsd": "position_closed",
    "pos_open": "position_open", "pos_t": "position_topic", "pr_mode_cmd_t": "preset_mode_command_topic",
    "pr_mode_cmd_tpl": "preset_mode_command_template", "pr_mode_stat_t": "preset_mode_state_topic",
    "pr_modes": "preset_modes", "ptrn": "pattern", "ret": "retain", "set_pos_t": "set_position_topic",
    "set_pos_tpl": "set_position_template", "spd_rng_max": "speed_range_max",
    "spd_rng_min": "speed_range_min", "stat_t": "state_topic", "stat_val_tpl": "state_value_template",
    "sup_clrm": "supported_color_modes", "t": "topic", "temp_cmd_t": "temperature_command_topic",
    "temp_cmd_tpl": "temperature_command_template", "temp_stat_t": "temperature_state_topic",
    "temp_unit": "temperature_unit", "tilt_cmd_t": "tilt_command_topic",
    "tilt_cmd_tpl": "tilt_command_template",
    "tilt_max": "tilt_max", "tilt_min": "tilt_min", "tilt_status_t": "tilt_status_topic",
    "uniq_id": "unique_id", "unit_of_meas": "unit_of_measurement", "val_tpl": "value_template",
}  # fmt: skip
"""The abbreviations this reader uses, as Home Assistant's documentation lists them."""

DEVICE_ABBREVIATIONS = {
    "cns": "connections", "ids": "identifiers", "mf": "manufacturer", "mdl": "model", "mdl_id": "model_id",
    "hw": "hw_version", "sw": "sw_version", "sn": "serial_number", "sa": "suggested_area",
    "cu": "configuration_url",
}  # fmt: skip

_STATE_ONLY = frozenset(
    {"sensor", "binary_sensor", "event", "image", "device_tracker", "tag", "device_automation", "camera"}
)
_VALUE_JSON = re.compile(
    r"^\s*\{\{\s*value_json((?:\.[A-Za-z_][A-Za-z0-9_]*|\[\s*'[^']*'\s*\]|\[\s*\"[^\"]*\"\s*\]|\[\d+\])+)"
    r"\s*(?:\|[^{}]*)?\}\}\s*$"
)
_SEGMENT = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[\s*'([^']*)'\s*\]|\[\s*\"([^\"]*)\"\s*\]|\[(\d+)\]")


def is_config_topic(topic: str, prefix: str) -> bool:
    """The cheap shape test, for the per-message path."""
    return (
        topic.startswith(prefix) and topic.endswith("/config") and topic[len(prefix) : len(prefix) + 1] == "/"
    )


def parse(topic: str, payload: bytes, prefix: str) -> list[DeviceReport]:
    """The devices a config message announces; [] for an empty payload (the topic's entities are removed).

    Raises Malformed for a message that cannot be used as a whole.
    """
    levels = topic[len(prefix) + 1 :].split("/")
    if len(levels) not in (3, 4):
        raise Malformed("not <prefix>/<component>/[<node_id>/]<object_id>/config")
    component, object_path = levels[0], "/".join(levels[1:-1])
    if not payload:
        return []
    config = parse_json(payload)
    if not isinstance(config, dict):
        raise Malformed("the payload is not a JSON object")
    config = _expanded(config)
    device = _expanded_device(config.get("device"))
    if component == "device":
        components = config.get("components")
        if not isinstance(components, dict):
            raise Malformed("a device discovery config needs components (cmps), an object")
        shared = {k: v for k, v in config.items() if k not in ("components", "device", "origin")}
        entities = []
        for key, part in components.items():
            if not isinstance(part, dict):
                raise Malformed(f"component {str(key)[:40]!r} is not an object")
            own = _expanded(part)
            platform = own.get("platform")
            if not isinstance(platform, str):
                raise Malformed(f"component {str(key)[:40]!r} has no platform (p)")
            if len(own) > 1:  # {"p": "sensor"} alone removes a component
                entities.extend(_entities(platform, str(key), _with_base({**shared, **own})))
        availability = _availability(_with_base(shared))
    else:
        config = _with_base(config)
        entities = _entities(component, object_path, config)
        availability = _availability(config)
    device_id = _device_id(device, object_path)
    return [
        DeviceReport(
            device_id=device_id,
            convention="home_assistant",
            name=device_text(device.get("name"))
            or (entities[0].name if component != "device" and entities else None),
            manufacturer=device_text(device.get("manufacturer")),
            model=device_text(device.get("model")),
            sw_version=device_text(device.get("sw_version")),
            entities=tuple(entities),
            availability=availability,
        )
    ]


def _expanded(config: dict[str, Any]) -> dict[str, Any]:
    return {ABBREVIATIONS.get(key, key): value for key, value in config.items()}


def _expanded_device(device: object) -> dict[str, Any]:
    if device is None:
        return {}
    if not isinstance(device, dict):
        raise Malformed("device (dev) is not an object")
    return {DEVICE_ABBREVIATIONS.get(str(key), str(key)): value for key, value in device.items()}


def _device_id(device: dict[str, Any], object_path: str) -> str:
    identifiers = device.get("identifiers")
    if isinstance(identifiers, list):
        identifiers = identifiers[0] if identifiers else None
    if isinstance(identifiers, str) and identifiers:
        return f"home_assistant:{identifiers[:100]}"
    connections = device.get("connections")
    if isinstance(connections, list) and connections and isinstance(connections[0], list):
        return "home_assistant:" + ":".join(str(part) for part in connections[0])[:100]
    return f"home_assistant:{object_path}"


def _with_base(config: dict[str, Any]) -> dict[str, Any]:
    """`~` at the start or end of a *_topic value (and of availability topics) replaced by the base."""
    base = config.get("~")
    if base is None:
        return config
    if not isinstance(base, str):
        raise Malformed("the base topic ~ is not a string")

    def fill(value: object) -> object:
        if isinstance(value, str):
            if value.startswith("~"):
                return base + value[1:]
            if value.endswith("~"):
                return value[:-1] + base
        return value

    filled = {key: fill(value) if key.endswith("_topic") else value for key, value in config.items()}
    listed = filled.get("availability")
    if isinstance(listed, list):
        filled["availability"] = [
            {**item, "topic": fill(item.get("topic", item.get("t")))} if isinstance(item, dict) else item
            for item in listed
        ]
    return filled


def _availability(config: dict[str, Any]) -> tuple[Availability, ...]:
    entries: list[tuple[object, object, object]] = []
    if "availability_topic" in config:
        entries.append(
            (
                config["availability_topic"],
                config.get("payload_available"),
                config.get("payload_not_available"),
            )
        )
    listed = config.get("availability")
    if isinstance(listed, list):
        for item in listed:
            if isinstance(item, dict):
                item = _expanded(item)
                entries.append(
                    (item.get("topic"), item.get("payload_available"), item.get("payload_not_available"))
                )
    found = []
    for topic, online, offline in entries:
        name = topic_name(topic, "an availability topic")
        if name is not None:
            found.append(
                Availability(
                    name,
                    (online if isinstance(online, str) else "online",),
                    (offline if isinstance(offline, str) else "offline",),
                )
            )
    return tuple(found)


def value_field(template: object) -> str | None:
    """The JSON Pointer a simple `{{ value_json.a['b'] }}` template reads; None for anything else."""
    if not isinstance(template, str) or not (match := _VALUE_JSON.match(template)):
        return None
    parts = [
        next(group for group in m.groups() if group is not None) for m in _SEGMENT.finditer(match.group(1))
    ]
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in parts)


def _text(config: dict[str, Any], key: str, default: str) -> str:
    value = config.get(key, default)
    return value if isinstance(value, str) else default


def _number(config: dict[str, Any], key: str, default: float) -> float:
    value = config.get(key, default)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def _texts(config: dict[str, Any], key: str, default: list[str] | None = None) -> list[str] | None:
    value = config.get(key, default)
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return value
    return default


def _entities(component: str, key: str, config: dict[str, Any]) -> list[Entity]:
    """A component's entities: its main one, and those of its further command topics."""
    if not re.fullmatch(r"[a-z_]{1,40}", component):
        raise Malformed("the component is not a component name")
    main = _entity(component, key, config)
    found = ([main] if main is not None else []) + _extra_entities(component, key, config)
    if not found:
        raise Malformed(f"the {component} announces neither a state topic nor a command topic")
    return found


def _entity(component: str, key: str, config: dict[str, Any]) -> Entity | None:
    """The component's main entity: its state_topic and command_topic; None when it has neither."""
    state = topic_name(config.get("state_topic", config.get("topic")), "state_topic")
    command = None if component in _STATE_ONLY else topic_name(config.get("command_topic"), "command_topic")
    if state is None and command is None:
        return None
    schema = None if command is None or "command_template" in config else _command_schema(component, config)
    unique = config.get("unique_id")
    return Entity(
        key=device_text(unique, 100) or key,
        kind=component,
        name=device_text(config.get("name")),
        state_topic=state,
        command_topic=command,
        value_field=value_field(config.get("value_template") or config.get("state_value_template")),
        unit=device_text(config.get("unit_of_measurement"), 20),
        device_class=device_text(config.get("device_class"), 40),
        command_schema=schema,
    )


def _command_schema(component: str, config: dict[str, Any]) -> dict[str, Any] | None:
    """The payloads the command topic takes, from the component's documented options and defaults."""
    if component in ("switch", "fan", "siren", "humidifier"):
        return schemas.text_choices([_text(config, "payload_on", "ON"), _text(config, "payload_off", "OFF")])
    if component == "light":
        kind = config.get("schema", "default")
        if kind == "json":
            return schemas.json_content(_json_light(config))
        if kind in ("default", "basic"):
            return schemas.text_choices(
                [_text(config, "payload_on", "ON"), _text(config, "payload_off", "OFF")]
            )
        return None  # the template schema: payloads are whatever its templates make
    if component == "number":
        return schemas.number_text(
            _number(config, "min", 1), _number(config, "max", 100), step=_number(config, "step", 1)
        )
    if component == "select":
        options = _texts(config, "options")
        return schemas.text_choices(options) if options else None
    if component == "button":
        return schemas.text_choices([_text(config, "payload_press", "PRESS")])
    if component == "scene":
        return schemas.text_choices([_text(config, "payload_on", "ON")])
    if component == "lock":
        choices = [_text(config, "payload_lock", "LOCK"), _text(config, "payload_unlock", "UNLOCK")]
        return schemas.text_choices([*choices, _text(config, "payload_open", "OPEN")])
    if component in ("cover", "valve"):
        choices = [
            config.get(key, default)
            for key, default in (
                ("payload_open", "OPEN"),
                ("payload_close", "CLOSE"),
                ("payload_stop", "STOP"),
            )
        ]
        kept = [choice for choice in choices if isinstance(choice, str)]  # null switches one off
        return schemas.text_choices(kept) if kept else None
    if component == "text":
        schema: dict[str, Any] = {"type": "string", "minLength": int(_number(config, "min", 0))}
        schema["maxLength"] = int(_number(config, "max", 255))
        if isinstance(config.get("pattern"), str):
            schema["pattern"] = config["pattern"]
        return schema
    return None


def _json_light(config: dict[str, Any]) -> dict[str, Any]:
    """A JSON-schema light's command object: state, and what its config says it supports."""
    properties: dict[str, Any] = {"state": {"enum": ["ON", "OFF"]}}
    modes = _texts(config, "supported_color_modes", []) or []
    if config.get("brightness") is True or any(mode != "onoff" for mode in modes):
        properties["brightness"] = schemas.number_range(
            0, _number(config, "brightness_scale", 255), integer=True
        )
    if "color_temp" in modes:
        if config.get("color_temp_kelvin") is True:
            low, high = _number(config, "min_kelvin", 2000), _number(config, "max_kelvin", 6535)
        else:
            low, high = _number(config, "min_mireds", 153), _number(config, "max_mireds", 500)
        properties["color_temp"] = schemas.number_range(low, high, integer=True)
    if any(mode in ("hs", "rgb", "rgbw", "rgbww", "xy") for mode in modes):
        properties["color"] = {"type": "object"}
    if config.get("effect") is True and (effects := _texts(config, "effect_list")):
        properties["effect"] = {"enum": effects}
    properties["transition"] = {"type": "number", "minimum": 0}
    properties["flash"] = {"enum": ["short", "long"]}
    return {"type": "object", "properties": properties, "minProperties": 1, "additionalProperties": False}


def _extra_entities(component: str, key: str, config: dict[str, Any]) -> list[Entity]:
    """The entities of a component's further command topics (a light's brightness, a cover's position)."""
    found = []
    specs: list[tuple[str, str, str | None, dict[str, Any] | None, str | None]] = []
    if component == "light" and config.get("schema", "default") in ("default", "basic"):
        scale = _number(config, "brightness_scale", 255)
        specs.append(
            (
                "brightness",
                "brightness_command_topic",
                "brightness_state_topic",
                schemas.number_text(0, scale, integer=True),
                "brightness_command_template",
            )
        )
        specs.append(
            (
                "color_temp",
                "color_temp_command_topic",
                "color_temp_state_topic",
                schemas.number_text(
                    _number(config, "min_mireds", 153), _number(config, "max_mireds", 500), integer=True
                ),
                "color_temp_command_template",
            )
        )
        effects = _texts(config, "effect_list")
        specs.append(
            (
                "effect",
                "effect_command_topic",
                "effect_state_topic",
                schemas.text_choices(effects) if effects else None,
                "effect_command_template",
            )
        )
    if component == "cover":
        low, high = _number(config, "position_closed", 0), _number(config, "position_open", 100)
        specs.append(
            (
                "position",
                "set_position_topic",
                "position_topic",
                schemas.number_text(min(low, high), max(low, high), integer=True),
                "set_position_template",
            )
        )
        specs.append(
            (
                "tilt",
                "tilt_command_topic",
                "tilt_status_topic",
                schemas.number_text(
                    _number(config, "tilt_min", 0), _number(config, "tilt_max", 100), integer=True
                ),
                "tilt_command_template",
            )
        )
    if component == "fan":
        specs.append(
            (
                "percentage",
                "percentage_command_topic",
                "percentage_state_topic",
                schemas.number_text(0, 100, integer=True),
                "percentage_command_template",
            )
        )
        modes = _texts(config, "preset_modes")
        specs.append(
            (
                "preset_mode",
                "preset_mode_command_topic",
                "preset_mode_state_topic",
                schemas.text_choices(modes) if modes else None,
                "preset_mode_command_template",
            )
        )
    if component == "climate":
        modes = _texts(config, "modes", ["auto", "off", "cool", "heat", "dry", "fan_only"]) or []
        specs.append(
            (
                "mode",
                "mode_command_topic",
                "mode_state_topic",
                schemas.text_choices(modes),
                "mode_command_template",
            )
        )
        specs.append(
            (
                "temperature",
                "temperature_command_topic",
                "temperature_state_topic",
                schemas.number_text(_number(config, "min_temp", 7), _number(config, "max_temp", 35)),
                "temperature_command_template",
            )
        )
        fan_modes = _texts(config, "fan_modes", ["auto", "low", "medium", "high"]) or []
        specs.append(
            (
                "fan_mode",
                "fan_mode_command_topic",
                "fan_mode_state_topic",
                schemas.text_choices(fan_modes),
                "fan_mode_command_template",
            )
        )
    name = device_text(config.get("name"))
    for suffix, command_key, state_key, schema, template_key in specs:
        command = topic_name(config.get(command_key), command_key)
        if command is None:
            continue
        found.append(
            Entity(
                key=f"{key}/{suffix}",
                kind=component,
                name=f"{name} {suffix}" if name else suffix,
                state_topic=topic_name(config.get(state_key), state_key) if state_key else None,
                command_topic=command,
                unit="°C" if suffix == "temperature" else None,
                command_schema=None if template_key in config else schema,
            )
        )
    return found
