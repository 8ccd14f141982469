"""Sparkplug B topic names: `spBv1.0/<group>/<message type>/<edge node>[/<device>]`. Pure, no protobuf."""

from __future__ import annotations

from dataclasses import dataclass

NAMESPACE = "spBv1.0"
PREFIX = NAMESPACE + "/"
NODE_TYPES = frozenset({"NBIRTH", "NDEATH", "NDATA", "NCMD"})
DEVICE_TYPES = frozenset({"DBIRTH", "DDEATH", "DDATA", "DCMD"})


@dataclass(frozen=True, slots=True)
class SparkplugTopic:
    group: str
    message_type: str
    edge_node: str
    device: str | None


def parse_topic(topic: str) -> SparkplugTopic | None:
    """The parts of a Sparkplug B topic, or None for anything else (STATE topics carry JSON, not protobuf)."""
    if not topic.startswith(PREFIX):
        return None
    parts = topic.split("/")
    if len(parts) == 4 and parts[2] in NODE_TYPES:
        return SparkplugTopic(parts[1], parts[2], parts[3], None)
    if len(parts) == 5 and parts[2] in DEVICE_TYPES:
        return SparkplugTopic(parts[1], parts[2], parts[3], parts[4])
    return None


def topic_of(group: str, message_type: str, edge_node: str, device: str | None = None) -> str:
    return "/".join((NAMESPACE, group, message_type, edge_node, *([device] if device is not None else [])))
