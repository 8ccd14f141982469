"""What a discovery message says about a device: its entities, their topics and command payloads.

Plain frozen records, made by the parsers and kept by the registry. Every text field a device
supplies (names, manufacturer, model, units, device classes) has been through `device_text`: control
characters removed and length bounded, since it reaches a language model and a log.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from typing import Any, Literal

from mcpmqtt.rules.topics import name_problem

Convention = Literal["home_assistant", "zigbee2mqtt", "homie", "tasmota"]

MAX_TEXT = 200
"""Characters of one device-supplied text kept; the rest is cut."""


def device_text(value: object, limit: int = MAX_TEXT) -> str | None:
    """A device-supplied text made safe to show: None unless a string, control characters dropped, cut."""
    if not isinstance(value, str):
        return None
    cleaned = "".join(ch for ch in value[: limit * 2] if unicodedata.category(ch) not in ("Cc", "Cf"))
    cleaned = cleaned.strip()[:limit]
    return cleaned or None


@dataclass(frozen=True, slots=True)
class Entity:
    """One thing a device reads or does: a sensor reading, a switch, a light's brightness."""

    key: str
    """Unique within its device (a unique_id, a property path)."""
    kind: str
    """The convention's word for it: an HA component (light, sensor), a z2m expose type, a Homie datatype."""
    name: str | None = None
    state_topic: str | None = None
    command_topic: str | None = None
    value_field: str | None = None
    """A JSON Pointer into the state payload where this entity's value is (None: the whole payload)."""
    unit: str | None = None
    device_class: str | None = None
    command_schema: dict[str, Any] | None = None
    """The command payloads the device announces, as a JSON Schema of the payload text (see schemas.py);
    None when unknown (no command topic, or a template the server cannot evaluate)."""


@dataclass(frozen=True, slots=True)
class Availability:
    """Where a device says whether it is online: payloads on a topic, or a field of a JSON payload there."""

    topic: str
    online: tuple[str, ...] = ("online",)
    offline: tuple[str, ...] = ("offline",)
    field: str | None = None
    """A top-level key of a JSON object payload holding the text (zigbee2mqtt's {"state": "online"})."""

    def read(self, payload: bytes) -> bool | None:
        """True/False when the payload says online/offline, None when it says neither."""
        text = payload.decode("utf-8", "replace").strip()
        if self.field is not None and text.startswith("{"):
            try:
                document = json.loads(text)
            except ValueError:
                return None
            value = document.get(self.field) if isinstance(document, dict) else None
            text = value if isinstance(value, str) else ""
        if text in self.online:
            return True
        if text in self.offline:
            return False
        return None


@dataclass(frozen=True, slots=True)
class DeviceReport:
    """What one discovery source (a config topic, a bridge document) says about one device."""

    device_id: str
    convention: Convention
    name: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    sw_version: str | None = None
    description: str | None = None
    entities: tuple[Entity, ...] = ()
    availability: tuple[Availability, ...] = ()
    online: bool | None = None
    """Set when the source itself tells (Homie's $state); None leaves it to availability topics."""


class Malformed(ValueError):
    """A discovery message that cannot be used; the text says why (it goes to the log, escaped)."""


def topic_name(value: object, what: str) -> str | None:
    """A topic a device names, validated as an MQTT topic name; None when absent.

    Raises Malformed for a value that is not a usable topic name (a wildcard, a control character):
    publishing to or reading from it would be refused anyway, and the broker drops the connection of
    a client that sends a malformed one.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise Malformed(f"{what} is not a string")
    if problem := name_problem(value):
        raise Malformed(f"{what} {value[:80]!r} is not a topic name: {problem}")
    return value


@dataclass(frozen=True, slots=True)
class Replace:
    """What `source` says now: these devices, replacing whatever it said before (none: it is withdrawn)."""

    source: str
    reports: tuple[DeviceReport, ...]


@dataclass(frozen=True, slots=True)
class SetOnline:
    """A device told whether it is online outside of its reports (Homie's $state)."""

    device_id: str
    online: bool | None


Change = Replace | SetOnline


def parse_json(payload: bytes, what: str = "the payload") -> Any:
    """The JSON document in `payload`; Malformed when it is not UTF-8 JSON.

    NaN and Infinity, which Python's parser takes but JSON does not have, are refused too: they would
    come back out in results as text no strict JSON client reads.
    """
    try:
        return json.loads(payload, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise Malformed(f"{what} is not JSON ({exc.msg} at {exc.pos})") from None
    except UnicodeDecodeError:
        raise Malformed(f"{what} is not UTF-8 text") from None
    except RecursionError:
        raise Malformed(f"{what} is nested too deeply") from None


def _no_constant(name: str) -> None:
    raise Malformed(f"{name} is not a JSON number")
