"""What the server knows of Sparkplug B edge nodes and their devices, from the messages it follows.

Sparkplug DATA messages name their metrics by alias only; the names and datatypes are in the node's
NBIRTH and the device's DBIRTH. So the server keeps, per edge node, the metrics its births declared,
whether it and each device are online (BIRTH / DEATH), and the `seq` counter (0..255 per node, across
all its messages), recording every gap. The registry is a `Sink` on the live state's followed patterns
(those that can match `spBv1.0/...`), bounded in edge nodes, devices and metrics, and it loads protobuf
only when the first Sparkplug message arrives.

`decode` turns one message into what an agent reads (aliases resolved); `devices` gives plain records
for the device listing.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, TypedDict

from mcpmqtt.mqtt.received import Received
from mcpmqtt.rules.payloads import iso_utc
from mcpmqtt.sparkplug.topic import PREFIX, SparkplugTopic, parse_topic, topic_of

log = logging.getLogger(__name__)

_RECENT_GAPS = 10
MAX_DECODED_METRICS = 1000
"""Metrics of one message shown to an agent: names resolved from births can make a small DATA
message large, and a result must stay bounded."""


@dataclass(slots=True)
class MetricState:
    name: str
    alias: int | None
    datatype: str | None
    value: Any
    timestamp: int | None


@dataclass(slots=True)
class Endpoint:
    """An edge node's own metrics, or one device's: what its last BIRTH declared, updated by DATA."""

    online: bool = False
    born_at: float | None = None
    died_at: float | None = None
    last_message_at: float | None = None
    metrics: dict[str, MetricState] = field(default_factory=dict)
    aliases: dict[int, str] = field(default_factory=dict)

    def born(self, metrics: list[Any], at: float, max_metrics: int) -> None:
        self.online, self.born_at, self.last_message_at = True, at, at
        self.metrics, self.aliases = {}, {}
        for m in metrics:
            if m.name is None or len(self.metrics) >= max_metrics:
                continue
            self.metrics[m.name] = MetricState(m.name, m.alias, m.datatype, m.value, m.timestamp)
            if m.alias is not None:
                self.aliases[m.alias] = m.name

    def update(self, metrics: list[Any], at: float) -> None:
        self.online, self.last_message_at = True, at
        for m in metrics:
            name = m.name if m.name is not None else self.aliases.get(m.alias)
            known = self.metrics.get(name) if name is not None else None
            if known is not None:
                known.value, known.timestamp = m.value, m.timestamp

    def died(self, at: float) -> None:
        self.online, self.died_at, self.last_message_at = False, at, at


@dataclass(slots=True)
class SeqGap:
    expected: int
    received: int
    at: float
    topic: str


@dataclass(slots=True)
class EdgeNode:
    group: str
    edge_node: str
    node: Endpoint = field(default_factory=Endpoint)
    devices: OrderedDict[str, Endpoint] = field(default_factory=OrderedDict)
    bd_seq: int | None = None
    last_seq: int | None = None
    seq_gaps: int = 0
    recent_gaps: deque[SeqGap] = field(default_factory=lambda: deque(maxlen=_RECENT_GAPS))


class MetricRecord(TypedDict):
    name: str
    alias: int | None
    datatype: str | None
    value: Any
    timestamp: str | None


class SeqGapRecord(TypedDict):
    expected: int
    received: int
    at: str
    topic: str


class SparkplugDevice(TypedDict):
    """One edge node (device None) or one of its devices, as the device listing shows it."""

    convention: str
    group: str
    edge_node: str
    device: str | None
    online: bool
    born_at: str | None
    died_at: str | None
    last_seen: str | None
    metrics: list[MetricRecord]
    data_topic: str
    command_topic: str
    seq_gaps: int
    """Gaps in the edge node's `seq` since the server started (shared by the node and its devices)."""
    recent_seq_gaps: list[SeqGapRecord]


def _iso(at: float | None) -> str | None:
    return iso_utc(at) if at is not None else None


class SparkplugRegistry:
    """Births, deaths and sequence numbers of the Sparkplug edge nodes seen; a `Sink`."""

    def __init__(self, max_edge_nodes: int, max_devices_per_node: int, max_metrics: int) -> None:
        self.max_edge_nodes = max_edge_nodes
        self.max_devices_per_node = max_devices_per_node
        self.max_metrics = max_metrics
        self._nodes: OrderedDict[tuple[str, str], EdgeNode] = OrderedDict()
        self._codec: ModuleType | None = None
        self.undecodable = 0
        self.stale_deaths = 0

    def codec(self) -> ModuleType:
        """The protobuf codec, imported on first use so that a server without Sparkplug never loads it."""
        if self._codec is None:
            from mcpmqtt.sparkplug import codec

            self._codec = codec
        return self._codec

    # ---- the sink --------------------------------------------------------------------------------

    def offer(self, message: Received) -> None:
        """Track births, deaths, seq and last values; a no-op for any topic outside `spBv1.0/`."""
        if not message.topic.startswith(PREFIX):
            return
        topic = parse_topic(message.topic)
        if topic is None or topic.message_type in ("NCMD", "DCMD"):
            return  # commands come from host applications: they carry no seq of the node's
        known = self._nodes.get((topic.group, topic.edge_node))
        try:
            payload = self.codec().decode(message.payload, self._resolver(known, topic.device))
        except ValueError as exc:  # counted, and no node is made up from it
            self.undecodable += 1
            log.debug("skipped an undecodable Sparkplug payload on %s: %s", message.topic, exc)
            return
        node = self._node(topic)
        at, kind = message.received_at, topic.message_type
        if kind == "NDEATH":
            self._node_died(node, payload, at)
            return
        if not message.retain:  # a retained copy replayed on re-subscription is not in sequence
            self._check_seq(node, payload.seq, kind, at, message.topic)
        if kind == "NBIRTH":
            node.node.born(payload.metrics, at, self.max_metrics)
            node.bd_seq = next((m.value for m in payload.metrics if m.name == "bdSeq"), None)
            for device in node.devices.values():  # a new session: each device must be born again
                device.online = False
        elif kind == "NDATA":
            node.node.update(payload.metrics, at)
        else:
            device = self._device(node, topic.device or "")
            if kind == "DBIRTH":
                device.born(payload.metrics, at, self.max_metrics)
            elif kind == "DDATA":
                device.update(payload.metrics, at)
            else:  # DDEATH
                device.died(at)

    def _node(self, topic: SparkplugTopic) -> EdgeNode:
        key = (topic.group, topic.edge_node)
        node = self._nodes.get(key)
        if node is None:
            if len(self._nodes) >= self.max_edge_nodes:
                self._nodes.popitem(last=False)
            node = self._nodes[key] = EdgeNode(topic.group, topic.edge_node)
        else:
            self._nodes.move_to_end(key)
        return node

    def _device(self, node: EdgeNode, name: str) -> Endpoint:
        device = node.devices.get(name)
        if device is None:
            if len(node.devices) >= self.max_devices_per_node:
                node.devices.popitem(last=False)
            device = node.devices[name] = Endpoint()
        return device

    def _node_died(self, node: EdgeNode, payload: Any, at: float) -> None:
        bd_seq = next((m.value for m in payload.metrics if m.name == "bdSeq"), None)
        if bd_seq is not None and node.bd_seq is not None and bd_seq != node.bd_seq:
            # The Will of an earlier session, delivered after the node was born again: not this one's.
            self.stale_deaths += 1
            return
        node.node.died(at)
        for device in node.devices.values():
            if device.online:
                device.died(at)

    @staticmethod
    def _check_seq(node: EdgeNode, seq: int | None, kind: str, at: float, topic: str) -> None:
        if seq is None:
            return
        if kind != "NBIRTH" and node.last_seq is not None:
            expected = (node.last_seq + 1) % 256
            if seq != expected:
                node.seq_gaps += 1
                node.recent_gaps.append(SeqGap(expected, seq, at, topic))
        node.last_seq = seq

    @staticmethod
    def _resolver(node: EdgeNode | None, device: str | None) -> Any:
        """Names and datatypes by alias (or name), from the device's birth first, then the node's."""
        scopes = [e for e in (node.devices.get(device) if node and device else None, node and node.node) if e]

        def resolve(name: str | None, alias: int | None) -> tuple[str, str | None] | None:
            for scope in scopes:
                known = name if name is not None else scope.aliases.get(alias) if alias is not None else None
                state = scope.metrics.get(known) if known is not None else None
                if state is not None:
                    return state.name, state.datatype
            return None

        return resolve

    # ---- what agents read ------------------------------------------------------------------------

    def decode(self, topic_name: str, payload: bytes | bytearray) -> dict[str, Any] | None:
        """One message as an agent reads it, aliases resolved from the births seen; None off Sparkplug."""
        topic = parse_topic(topic_name)
        if topic is None:
            return None
        decoded: dict[str, Any] = {
            "convention": "sparkplug_b",
            "message_type": topic.message_type,
            "group": topic.group,
            "edge_node": topic.edge_node,
        }
        if topic.device is not None:
            decoded["device"] = topic.device
        node = self._nodes.get((topic.group, topic.edge_node))
        try:
            payload_ = self.codec().decode(payload, self._resolver(node, topic.device))
        except ValueError as exc:
            decoded["error"] = str(exc)
            return decoded
        if payload_.timestamp is not None:
            decoded["timestamp"] = iso_utc(payload_.timestamp / 1000)
        if payload_.seq is not None:
            decoded["seq"] = payload_.seq
        decoded["metrics"] = [_metric_out(m) for m in payload_.metrics[:MAX_DECODED_METRICS]]
        if len(payload_.metrics) > MAX_DECODED_METRICS:
            decoded["metrics_omitted"] = len(payload_.metrics) - MAX_DECODED_METRICS
        if any(m.name is None for m in payload_.metrics):
            decoded["note"] = (
                "some metrics are named by alias only: the server has not seen the birth message that "
                "names them (births are sent when a node connects, or when a host asks for a rebirth)"
            )
        return decoded

    def devices(self) -> list[SparkplugDevice]:
        """Every edge node and device known, as plain records (for mqtt_list_devices)."""
        found: list[SparkplugDevice] = []
        for node in self._nodes.values():
            found.append(self._record(node, None, node.node))
            found.extend(self._record(node, name, device) for name, device in node.devices.items())
        return found

    def _record(self, node: EdgeNode, device: str | None, endpoint: Endpoint) -> SparkplugDevice:
        data, command = ("DDATA", "DCMD") if device is not None else ("NDATA", "NCMD")
        return SparkplugDevice(
            convention="sparkplug_b",
            group=node.group,
            edge_node=node.edge_node,
            device=device,
            online=endpoint.online,
            born_at=_iso(endpoint.born_at),
            died_at=_iso(endpoint.died_at),
            last_seen=_iso(endpoint.last_message_at),
            metrics=[
                MetricRecord(
                    name=m.name,
                    alias=m.alias,
                    datatype=m.datatype,
                    value=m.value,
                    timestamp=_iso(m.timestamp / 1000) if m.timestamp is not None else None,
                )
                for m in endpoint.metrics.values()
            ],
            data_topic=topic_of(node.group, data, node.edge_node, device),
            command_topic=topic_of(node.group, command, node.edge_node, device),
            seq_gaps=node.seq_gaps,
            recent_seq_gaps=[
                SeqGapRecord(expected=g.expected, received=g.received, at=iso_utc(g.at), topic=g.topic)
                for g in node.recent_gaps
            ],
        )


def _metric_out(m: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if m.name is not None:
        found["name"] = m.name
    if m.alias is not None:
        found["alias"] = m.alias
    found["datatype"] = m.datatype
    found["value"] = m.value
    if m.timestamp is not None:
        found["timestamp"] = iso_utc(m.timestamp / 1000)
    if m.is_null:
        found["is_null"] = True
    if m.is_historical:
        found["is_historical"] = True
    if m.is_transient:
        found["is_transient"] = True
    if m.properties:
        found["properties"] = m.properties
    return found
