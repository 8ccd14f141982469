"""From a message to the registry: which convention a topic belongs to, what its message says, and
what of it the server may keep.

`wants` runs on the per-message path and is a few string comparisons and one dict lookup, so that
a firehose pays next to nothing for discovery; `ingest` runs later, off that path. A message that
cannot be used is skipped with one log line (device text escaped) and changes nothing; one bad
entity in a good message is dropped alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from mcpmqtt.discovery import home_assistant, homie, tasmota, zigbee2mqtt
from mcpmqtt.discovery.model import Change, DeviceReport, Entity, Malformed, Replace
from mcpmqtt.discovery.registry import DeviceRegistry
from mcpmqtt.rules.policy import Allowlist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiscoveryOptions:
    """Where each convention lives (None: not read) and the bounds on what is kept."""

    home_assistant_prefix: str | None = "homeassistant"
    zigbee2mqtt_base: str | None = "zigbee2mqtt"
    homie_domain: str | None = "homie"
    tasmota_prefix: str | None = "tasmota/discovery"
    max_devices: int = 1000
    max_entities_per_device: int = 500
    max_config_bytes: int = 262_144


def escaped(text: str) -> str:
    """Text for a log line: control characters, quotes and line breaks escaped, length bounded."""
    return repr(text[:300])[1:-1]


class DiscoveryIngest:
    """Reads discovery messages into a registry, keeping only what the server's allowlist lets it read."""

    def __init__(
        self,
        options: DiscoveryOptions,
        registry: DeviceRegistry,
        allowlist: Allowlist,
        last_payload: Callable[[str], bytes | None] | None = None,
    ) -> None:
        """`last_payload` looks up a topic's last message (the live state), so that a device's
        availability, retained before its config arrived, is known at once."""
        self.options = options
        self.registry = registry
        self.allowlist = allowlist
        self.last_payload = last_payload
        self.skipped = 0
        self._ha = options.home_assistant_prefix
        self._z2m = f"{options.zigbee2mqtt_base}/bridge/devices" if options.zigbee2mqtt_base else None
        self._homie = (
            homie.HomieReader(options.homie_domain, options.max_devices) if options.homie_domain else None
        )
        self._tasmota = (
            tasmota.TasmotaReader(options.tasmota_prefix, options.max_devices)
            if options.tasmota_prefix
            else None
        )

    @property
    def prefixes(self) -> tuple[str, ...]:
        """Every discovery message's topic starts with one of these (one `str.startswith` call tells)."""
        found = [
            f"{prefix}/"
            for prefix in (self._ha, self.options.homie_domain, self.options.tasmota_prefix)
            if prefix
        ]
        return (*found, *([self._z2m] if self._z2m else []))

    def wants(self, topic: str) -> bool:
        """Whether a message on `topic` may concern discovery; cheap, for the per-message path."""
        return (
            (self._ha is not None and home_assistant.is_config_topic(topic, self._ha))
            or topic == self._z2m
            or (self._homie is not None and homie.is_attribute_topic(topic, self._homie.domain))
            or (self._tasmota is not None and tasmota.is_discovery_topic(topic, self._tasmota.prefix))
            or self.registry.watches(topic)
        )

    def ingest(self, topic: str, payload: bytes) -> None:
        """Take one message in; never raises for what a device sent."""
        if self.registry.watches(topic):
            self.registry.availability_message(topic, payload)
        if not self.allowlist.readable(topic):
            return  # a deny entry withholds it: what it says must not reach anyone either
        convention, read = self._reader(topic)
        if read is None:
            return
        if len(payload) > self.options.max_config_bytes:
            self._skip(
                convention,
                topic,
                f"the message, {len(payload):,} bytes, is larger than discovery.max_config_bytes "
                f"({self.options.max_config_bytes:,})",
            )
            return
        try:
            changes = read(topic, payload)
        except Malformed as exc:
            self._skip(convention, topic, f"the message: {exc}")
            return
        except (ValueError, TypeError, AttributeError, KeyError, IndexError, OverflowError) as exc:
            # A shape no check above foresaw: skipped like any malformed message, never raised.
            self._skip(convention, topic, f"the message: it could not be read ({type(exc).__name__}: {exc})")
            return
        for change in changes:
            if isinstance(change, Replace):
                kept = (self._kept(convention, topic, report) for report in change.reports)
                change = Replace(change.source, tuple(report for report in kept if report.entities))
            for watched in self.registry.apply(change):
                last = self.last_payload(watched) if self.last_payload is not None else None
                if last is not None:
                    self.registry.availability_message(watched, last)

    def _reader(self, topic: str) -> tuple[str, Callable[[str, bytes], list[Change]] | None]:
        if self._ha is not None and home_assistant.is_config_topic(topic, self._ha):
            prefix = self._ha
            return "Home Assistant", lambda t, p: [Replace(t, tuple(home_assistant.parse(t, p, prefix)))]
        if topic == self._z2m:
            return "zigbee2mqtt", lambda t, p: [
                Replace(t, tuple(zigbee2mqtt.parse(t, p, t.rsplit("/", 2)[0])))
            ]
        if self._homie is not None and homie.is_attribute_topic(topic, self._homie.domain):
            return "Homie", self._homie.read
        if self._tasmota is not None and tasmota.is_discovery_topic(topic, self._tasmota.prefix):
            return "Tasmota", self._tasmota.read
        return "", None

    def _kept(self, convention: str, topic: str, report: DeviceReport) -> DeviceReport:
        """The report without the entities the server may not read (it never grants anything), bounded."""
        kept: list[Entity] = []
        for entity in report.entities:
            readable = entity.state_topic is not None and self.allowlist.readable(entity.state_topic)
            commanded = (
                entity.state_topic is None
                and entity.command_topic is not None
                and self.allowlist.decide("write", entity.command_topic).allowed
            )
            if readable or commanded:
                kept.append(entity)
            else:
                self._skip(
                    convention,
                    topic,
                    f"entity {escaped(entity.key)!r} names topics outside the allowlist "
                    f"({escaped(entity.state_topic or entity.command_topic or '')!r})",
                )
        most = self.options.max_entities_per_device
        if len(kept) > most:
            self._skip(
                convention, topic, f"entities past the first {most} of {len(kept)} (max_entities_per_device)"
            )
            kept = kept[:most]
        return replace(report, entities=tuple(kept))

    def _skip(self, convention: str, topic: str, reason: str) -> None:
        self.skipped += 1
        log.warning("discovery: %s message on %r: skipped %s", convention, topic, escaped(reason))
