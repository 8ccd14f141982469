"""Sparkplug B: topic names, the protobuf codec (loaded on first use) and the registry of edge nodes."""

from mcpmqtt.sparkplug.registry import SparkplugDevice, SparkplugRegistry
from mcpmqtt.sparkplug.topic import parse_topic

__all__ = ["SparkplugDevice", "SparkplugRegistry", "parse_topic"]
