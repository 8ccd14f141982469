"""MQTT 5 PUBLISH properties as plain data, and the conversions to and from paho's `Properties`.

Everything above the adapter sees this dataclass, never paho's attribute names; the adapter converts
once, when a message with properties arrives or a publish with properties goes out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


@dataclass(frozen=True, slots=True)
class PublishProperties:
    """The properties a sender can set on a message (subscription identifiers are ours, not theirs)."""

    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    user_properties: tuple[tuple[str, str], ...] = ()
    message_expiry_interval: int | None = None

    def __bool__(self) -> bool:
        return (
            self.content_type is not None
            or self.response_topic is not None
            or self.correlation_data is not None
            or bool(self.user_properties)
            or self.message_expiry_interval is not None
        )


def from_paho(props: Any) -> PublishProperties | None:
    """The sender's properties of a received message; None when it set none."""
    if props is None:
        return None
    data = getattr(props, "CorrelationData", None)
    expiry = getattr(props, "MessageExpiryInterval", None)
    found = PublishProperties(
        content_type=getattr(props, "ContentType", None),
        response_topic=getattr(props, "ResponseTopic", None),
        correlation_data=bytes(data) if data is not None else None,
        user_properties=tuple((str(k), str(v)) for k, v in getattr(props, "UserProperty", None) or ()),
        message_expiry_interval=int(expiry) if expiry is not None else None,
    )
    return found if found else None


def new_properties(packet_type: int) -> Properties:
    """An empty paho property set for one packet type."""
    return Properties(packet_type)  # type: ignore[no-untyped-call]  # paho ships no annotations here


def to_paho(props: PublishProperties) -> Properties:
    """paho's PUBLISH properties for `props`."""
    out = new_properties(PacketTypes.PUBLISH)
    if props.content_type is not None:
        out.ContentType = props.content_type
    if props.response_topic is not None:
        out.ResponseTopic = props.response_topic
    if props.correlation_data is not None:
        out.CorrelationData = props.correlation_data
    if props.user_properties:
        out.UserProperty = list(props.user_properties)
    if props.message_expiry_interval is not None:
        out.MessageExpiryInterval = props.message_expiry_interval
    return out
