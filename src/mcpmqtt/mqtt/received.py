"""A received message as the broker adapter hands it on: plain data, cheap to make on the per-message path."""

from __future__ import annotations

from dataclasses import dataclass

from mcpmqtt.mqtt.properties import PublishProperties


@dataclass(slots=True)
class Received:
    """One message as it arrived: raw payload bytes, and its MQTT 5 properties as plain data."""

    topic: str
    payload: bytes | bytearray
    qos: int
    retain: bool
    received_at: float
    properties: PublishProperties | None = None
