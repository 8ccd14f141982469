"""Discovery of devices from the conventions real installations use: Home Assistant MQTT discovery,
zigbee2mqtt's bridge/devices, Homie 4 and 5, Tasmota discovery.

Pure: each convention's parser turns (topic, payload bytes) into `DeviceReport`s, the `DeviceRegistry`
keeps them (bounded, in memory) and answers by device and by topic, and `schemas` derives and checks
the command payloads devices announce. No I/O, no SDK, no paho: the server feeds it (server/discovery_feed.py)
and decides per request what a caller may see (server/devices.py).
"""

from mcpmqtt.discovery.ingest import DiscoveryIngest, DiscoveryOptions
from mcpmqtt.discovery.model import Availability, DeviceReport, Entity
from mcpmqtt.discovery.registry import Device, DeviceRegistry

__all__ = [
    "Availability",
    "Device",
    "DeviceRegistry",
    "DeviceReport",
    "DiscoveryIngest",
    "DiscoveryOptions",
    "Entity",
]
