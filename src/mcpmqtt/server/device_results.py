"""What the device tools return: their output schemas, and how a device and a topic look to one caller.

Text that devices supply about themselves (names, manufacturer, model, units, device classes) is kept
under `device_supplied` wherever it appears, so a model can tell it from what the server states; it
is untrusted data. Entities whose state topic the caller cannot read are left out, and `writable`
says whether the caller's allowlist lets it publish to the command topic: discovery never grants.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mcpmqtt.discovery import Device, Entity
from mcpmqtt.rules.policy import Allowlist

DEVICE_TEMPLATE = "mcpmqtt://device/{device_id}"
DESCRIBE_TEMPLATE = "mcpmqtt://describe/{+topic}"


def device_uri(device_id: str) -> str:
    return "mcpmqtt://device/" + urllib.parse.quote(device_id, safe="")


def describe_uri(topic: str) -> str:
    return "mcpmqtt://describe/" + urllib.parse.quote(topic, safe="/$!&'()*+,;=:@")


def _absent(value: object) -> bool:
    return value is None


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeviceText(_Result):
    """What the device says about itself: untrusted text, shown as data."""

    name: str | None = Field(default=None, exclude_if=_absent)
    manufacturer: str | None = Field(default=None, exclude_if=_absent)
    model: str | None = Field(default=None, exclude_if=_absent)
    sw_version: str | None = Field(default=None, exclude_if=_absent)
    description: str | None = Field(default=None, exclude_if=_absent)


class EntityText(_Result):
    """What the device says about one entity: untrusted text, shown as data."""

    name: str | None = Field(default=None, exclude_if=_absent)
    unit: str | None = Field(default=None, exclude_if=_absent)
    device_class: str | None = Field(default=None, exclude_if=_absent)


class EntityInfo(_Result):
    key: str = Field(description="The entity's id within its device.")
    kind: str = Field(description="The convention's word for it (light, sensor, numeric, boolean...).")
    state_topic: str | None = Field(
        description="Where its value is published; read it with mqtt_last/mqtt_read."
    )
    value_field: str | None = Field(
        default=None,
        exclude_if=_absent,
        description="A JSON Pointer to the value within the state payload (absent: the whole payload).",
    )
    command_topic: str | None = Field(description="Where it takes commands, if it does.")
    command_schema: dict[str, Any] | None = Field(
        default=None,
        exclude_if=_absent,
        description="The command payloads the device announced, as a JSON Schema of the payload text: "
        'a plain text payload is a string (e.g. {"enum": ["ON", "OFF"]}); a JSON payload is a string with '
        "contentMediaType application/json whose parsed content must satisfy contentSchema.",
    )
    readable: bool = Field(description="Whether you may read the state topic.")
    writable: bool = Field(
        description="Whether you may publish to the command topic (the allowlist decides)."
    )
    device_supplied: EntityText


class DeviceInfo(_Result):
    id: str
    convention: str = Field(description="home_assistant, zigbee2mqtt, homie or tasmota.")
    online: bool | None = Field(description="As the device last said; null when it has not said.")
    uri: str = Field(description="The device's resource.")
    device_supplied: DeviceText
    entities: list[EntityInfo]


class ListDevicesResult(_Result):
    filter: str | None
    devices: list[DeviceInfo]
    total: int = Field(description="How many devices match, before `limit`.")
    truncated: bool
    notes: list[str] | None = Field(default=None, exclude_if=_absent)


class TopicEntity(_Result):
    device_id: str
    device_uri: str
    role: str = Field(description='"state" (the entity is read here) or "command" (it takes commands here).')
    device_supplied: DeviceText
    entity: EntityInfo


class DescribeResult(_Result):
    topic: str
    readable: bool
    writable: bool
    entities: list[TopicEntity] = Field(description="What discovery knows of this topic: the entities on it.")
    command_schema: dict[str, Any] | None = Field(
        default=None,
        exclude_if=_absent,
        description="The payloads the devices commanded on this topic accept together (if you may write it).",
    )
    command_schema_enforced: bool = Field(
        description="Whether a publish here must fit command_schema (discovery.enforce_command_schemas)."
    )
    observed: dict[str, Any] | None = Field(
        description="What was observed on the topic (shapes inferred from its payloads), when the server "
        "infers shapes; null otherwise."
    )


def entity_info(entity: Entity, policy: Allowlist) -> EntityInfo | None:
    """One entity as the caller sees it; None when the caller may not see it at all."""
    readable = entity.state_topic is not None and policy.readable(entity.state_topic)
    writable = entity.command_topic is not None and policy.decide("write", entity.command_topic).allowed
    if not readable and not (entity.state_topic is None and writable):
        return None  # its state topic is not the caller's to read
    return EntityInfo(
        key=entity.key,
        kind=entity.kind,
        state_topic=entity.state_topic,
        value_field=entity.value_field,
        command_topic=entity.command_topic,
        command_schema=entity.command_schema,
        readable=readable,
        writable=writable,
        device_supplied=EntityText(name=entity.name, unit=entity.unit, device_class=entity.device_class),
    )


def device_text(device: Device) -> DeviceText:
    return DeviceText(
        name=device.name,
        manufacturer=device.manufacturer,
        model=device.model,
        sw_version=device.sw_version,
        description=device.description,
    )


def device_info(device: Device, policy: Allowlist) -> DeviceInfo | None:
    """A device as the caller sees it; None when none of its entities is the caller's to see."""
    entities = [info for entity in device.entities if (info := entity_info(entity, policy)) is not None]
    if not entities:
        return None
    return DeviceInfo(
        id=device.id,
        convention=device.convention,
        online=device.online,
        uri=device_uri(device.id),
        device_supplied=device_text(device),
        entities=entities,
    )
