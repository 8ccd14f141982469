"""The devices discovered so far, in memory and bounded, indexed by device and by topic.

A device may be described by several sources (Home Assistant sends one config per entity; Tasmota a
config and a sensors message): each source's report replaces what that source said before, and a
device lives as long as one source still describes it. Looked up per request by the tools, which
decide what the caller may see; nothing here knows about callers.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from mcpmqtt.discovery import schemas
from mcpmqtt.discovery.model import Availability, Change, Convention, DeviceReport, Entity, Replace, SetOnline


@dataclass
class Device:
    """One device as its sources describe it together."""

    id: str
    convention: Convention
    reports: dict[str, DeviceReport] = field(default_factory=dict)
    """By source, oldest first."""
    online: bool | None = None

    def _first(self, name: str) -> str | None:
        return next((value for report in self.reports.values() if (value := getattr(report, name))), None)

    @property
    def name(self) -> str | None:
        return self._first("name")

    @property
    def manufacturer(self) -> str | None:
        return self._first("manufacturer")

    @property
    def model(self) -> str | None:
        return self._first("model")

    @property
    def sw_version(self) -> str | None:
        return self._first("sw_version")

    @property
    def description(self) -> str | None:
        return self._first("description")

    @property
    def entities(self) -> list[Entity]:
        """Every source's entities; of two with the same key, the later source's."""
        found: dict[str, Entity] = {}
        for report in self.reports.values():
            for entity in report.entities:
                found[entity.key] = entity
        return list(found.values())

    @property
    def availability(self) -> list[Availability]:
        return [item for report in self.reports.values() for item in report.availability]


class DeviceRegistry:
    """Devices by id, and which devices use each state, command and availability topic."""

    def __init__(self, max_devices: int) -> None:
        self.max_devices = max_devices
        self.evicted = 0
        self._devices: OrderedDict[str, Device] = OrderedDict()
        self._sources: dict[str, tuple[str, ...]] = {}
        self._online_hints: OrderedDict[str, bool | None] = OrderedDict()
        self._topics: dict[str, dict[str, set[str]]] = {"state": {}, "command": {}, "availability": {}}
        self._indexed: dict[str, dict[str, set[str]]] = {}
        self._schemas: dict[str, dict[str, Any] | None] = {}

    def __len__(self) -> int:
        return len(self._devices)

    def apply(self, change: Change) -> list[str]:
        """Take one change in; returns the availability topics it started to watch."""
        if isinstance(change, SetOnline):
            device = self._devices.get(change.device_id)
            if device is not None:
                device.online = change.online
            else:  # the state came before the description: keep it for when the device appears
                self._online_hints[change.device_id] = change.online
                while len(self._online_hints) > self.max_devices:
                    self._online_hints.popitem(last=False)
            return []
        return self._replace(change)

    def _replace(self, change: Replace) -> list[str]:
        source, reports = change.source, change.reports
        touched = set(self._sources.pop(source, ()))
        for device_id in touched:
            device = self._devices.get(device_id)
            if device is not None:
                device.reports.pop(source, None)
        for report in reports:
            device = self._devices.get(report.device_id)
            if device is None:
                if len(self._devices) >= self.max_devices:
                    self._evict()
                device = Device(report.device_id, report.convention)
                device.online = self._online_hints.pop(report.device_id, None)
                self._devices[report.device_id] = device
            else:
                self._devices.move_to_end(report.device_id)
            device.reports[source] = report
            if report.online is not None:
                device.online = report.online
            touched.add(report.device_id)
        if reports:
            self._sources[source] = tuple(report.device_id for report in reports)
        watched: list[str] = []
        for device_id in touched:
            device = self._devices.get(device_id)
            if device is not None and not device.reports:
                del self._devices[device_id]
            watched += self._reindex(device_id)
        return watched

    def _evict(self) -> None:
        device_id, _ = self._devices.popitem(last=False)
        self.evicted += 1
        self._reindex(device_id)

    def _reindex(self, device_id: str) -> list[str]:
        """Index the device's topics afresh; returns the availability topics that are new to the index."""
        for role, topics in self._indexed.pop(device_id, {}).items():
            for topic in topics:
                users = self._topics[role].get(topic)
                if users is not None:
                    users.discard(device_id)
                    if not users:
                        del self._topics[role][topic]
                self._schemas.pop(topic, None)
        device = self._devices.get(device_id)
        if device is None:
            return []
        entities = device.entities
        mine = {
            "state": {e.state_topic for e in entities if e.state_topic is not None},
            "command": {e.command_topic for e in entities if e.command_topic is not None},
            "availability": {a.topic for a in device.availability},
        }
        new = [topic for topic in mine["availability"] if topic not in self._topics["availability"]]
        for role, topics in mine.items():
            for topic in topics:
                self._topics[role].setdefault(topic, set()).add(device_id)
                self._schemas.pop(topic, None)
        self._indexed[device_id] = mine
        return new

    @property
    def availability_topics(self) -> Mapping[str, object]:
        """The availability topics watched (a live view: `topic in` it is one dict lookup)."""
        return self._topics["availability"]

    def watches(self, topic: str) -> bool:
        """Whether `topic` is an availability topic of a known device (cheap: one dict lookup)."""
        return topic in self._topics["availability"]

    def availability_message(self, topic: str, payload: bytes) -> None:
        """A message on an availability topic: mark its devices online or offline."""
        for device_id in self._topics["availability"].get(topic, ()):
            device = self._devices[device_id]
            for item in device.availability:
                if item.topic == topic and (online := item.read(payload)) is not None:
                    device.online = online

    def devices(self) -> Iterator[Device]:
        """Every device, by id."""
        for device_id in sorted(self._devices):
            yield self._devices[device_id]

    def get(self, device_id: str) -> Device | None:
        return self._devices.get(device_id)

    def on_topic(self, topic: str) -> list[tuple[Device, Entity]]:
        """The entities whose state or command topic is `topic`, with their devices."""
        ids = self._topics["state"].get(topic, set()) | self._topics["command"].get(topic, set())
        return [
            (self._devices[device_id], entity)
            for device_id in sorted(ids)
            for entity in self._devices[device_id].entities
            if topic in (entity.state_topic, entity.command_topic)
        ]

    def command_schema(self, topic: str) -> dict[str, Any] | None:
        """The payloads every entity commanded on `topic` accepts together; None when not all are known."""
        if topic in self._schemas:
            return self._schemas[topic]
        ids = self._topics["command"].get(topic)
        if not ids:
            return None
        entities = [
            e
            for device_id in sorted(ids)
            for e in self._devices[device_id].entities
            if e.command_topic == topic
        ]
        schema = self._schemas[topic] = schemas.combine([entity.command_schema for entity in entities])
        return schema

    def commanders(self, topic: str) -> list[Device]:
        """The devices that take commands on `topic`."""
        return [self._devices[device_id] for device_id in sorted(self._topics["command"].get(topic, ()))]

    def command_problem(self, topic: str, payload: bytes) -> str | None:
        """Why `payload` is not a command the devices on `topic` announced; None when it is, or unknown."""
        schema = self.command_schema(topic)
        if schema is None:
            return None
        problem = schemas.payload_problem(schema, payload)
        if problem is None:
            return None
        conventions = sorted({device.convention.replace("_", " ") for device in self.commanders(topic)})
        return (
            f"{topic!r} is the command topic of a discovered device ({', '.join(conventions)} discovery) "
            f"and discovery.enforce_command_schemas is on: the payload {problem}; "
            f"it accepts {schemas.summary(schema)}"
        )
