"""Faster receiving for paho-mqtt 2.x: same results, a fraction of the work per message.

Two parts, both measured (bench/bench_core.py, bench/bench_firehose.py, docs/performance.md):

- MQTT 5 property decoding. paho builds its property tables anew for every packet and finds each
  property by a linear scan that strips spaces from all 27 names (`str.replace`, dozens of calls
  per property). Every message we receive carries at least one property, the subscription
  identifier the broker adds, so this decoding was two thirds of our per-message cost: 6,000 msg/s
  against 17,000 for the same messages without properties. Here the tables are built once, keyed
  by the compressed names paho uses as attributes, and shared; lookups are dict lookups.
  Validation of values (`Properties.__setattr__`) is paho's own, untouched.
- The read path (`FastReader`). paho reads one packet per socket-readable event, with a `recv`
  system call for the first byte, one per byte of the remaining length and one for the rest, and
  then builds an `MQTTMessage` and a `Properties` for each. A firehose then spent a quarter of its
  time in the event loop's `select` and another sixth in `recv`. `FastReader` reads the socket in
  large chunks and decodes QoS 0 and 1 PUBLISH packets whose only properties are subscription
  identifiers (what a broker sends to a subscriber, nearly always) itself, straight into a callback;
  every other packet (CONNACK, SUBACK, PUBACK, QoS 2, a PUBLISH with other properties or an invalid
  topic) it hands, whole and in order, to paho's own packet reader and callbacks.
"""

import logging
from collections.abc import Callable
from typing import Any

import paho.mqtt as paho_mqtt
import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

log = logging.getLogger(__name__)
_ORIGINAL_INIT = Properties.__init__
_template = Properties.__new__(Properties)
_ORIGINAL_INIT(_template, PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
_TYPES: list[str] = _template.types
# Compressed names ("ContentType") as keys: paho strips spaces from every name before use, so
# names without spaces mean the same to all of its methods.
_NAMES: dict[str, int] = {name.replace(" ", ""): ident for name, ident in _template.names.items()}
_NAME_OF: dict[int, str] = {ident: name for name, ident in _NAMES.items()}
_PROPERTIES: dict[int, Any] = _template.properties
_MULTIPLE = frozenset({11, 38})  # Subscription Identifier and User Property may repeat


def _init(self: Properties, packetType: int) -> None:
    object.__setattr__(self, "packetType", packetType)
    object.__setattr__(self, "types", _TYPES)
    object.__setattr__(self, "names", _NAMES)
    object.__setattr__(self, "properties", _PROPERTIES)


def _ident_from_name(self: Properties, compressedName: str) -> int:
    return _NAMES.get(compressedName, -1)


def _name_from_ident(self: Properties, identifier: int) -> str | None:
    return _NAME_OF.get(identifier)


def _allows_multiple(self: Properties, compressedName: str) -> bool:
    return _NAMES.get(compressedName, -1) in _MULTIPLE


def _clear(self: Properties) -> None:
    attributes = self.__dict__
    for name in _NAMES:
        attributes.pop(name, None)


PROVEN_ON = ("2.2.",)
"""paho-mqtt release series whose internals both parts were proven against (tests/test_paho_speedups.py)."""
_installed: bool | None = None


def proven(version: str) -> bool:
    """Whether `version` of paho-mqtt belongs to a series these speed-ups were proven on."""
    return version.startswith(PROVEN_ON)


def install(version: str = paho_mqtt.__version__) -> bool:
    """Patch paho's Properties class in place, once, if this paho is one the patches were proven on.

    Called when the broker adapter starts, not on import, so that merely importing the package
    changes nothing process-wide. On any other paho version nothing is patched, one line says so,
    and the caller keeps paho's own reader (slower, but what paho itself promises). Returns whether
    the speed-ups are in force (then `FastReader` may be used too).
    """
    global _installed
    if _installed is None:
        _installed = proven(version)
        if not _installed:
            log.warning(
                "paho-mqtt %s is not a version mcpmqtt's fast reader was proven on (%s); using paho's "
                "own reader, which receives several times fewer messages per second",
                version,
                ", ".join(f"{series}x" for series in PROVEN_ON),
            )
            return False
        Properties.__init__ = _init  # type: ignore[method-assign]
        Properties.getIdentFromName = _ident_from_name  # type: ignore[method-assign]
        Properties.getNameFromIdent = _name_from_ident  # type: ignore[method-assign]
        Properties.allowsMultiple = _allows_multiple  # type: ignore[method-assign]
        Properties.clear = _clear  # type: ignore[method-assign]
    return _installed


# ---- the read path ------------------------------------------------------------------------------

Deliver = Callable[[str, bytes, int, bool, list[int] | None], None]
"""Called with (topic, payload, qos, retain, subscription identifiers or None) for each PUBLISH decoded
here; paho's own `on_message` still gets the packets handed to paho."""

_CHUNK = 65_536
"""Bytes read per readable event: some 1,500 small messages, a few milliseconds of work, so that the
other tasks of the event loop (tool calls) are not held up for long."""
_SUCCESS = MQTTErrorCode.MQTT_ERR_SUCCESS
_SOCK_RECV = paho.Client._sock_recv  # the real read; the client's own attribute is replaced below


class FastReader:
    """Takes over the reading of one paho client: `loop_read`, which aiomqtt calls whenever the socket is
    readable (or a TLS socket still holds decrypted bytes).

    Each call reads one chunk and handles every complete packet in it, in order; an incomplete packet
    at the end waits for the next chunk. PUBLISH packets at QoS 0 and 1 whose properties are at most
    subscription identifiers go to `deliver`, and a QoS 1 one is then acknowledged, as paho does after
    its `on_message`. Any other packet is handed to paho's packet reader (`_packet_read`), which
    reads it through `_sock_recv` (replaced here to serve that packet) and handles it as it always
    does: acknowledgements, CONNACK, DISCONNECT, QoS 2, errors. Transports (TCP, TLS, WebSockets)
    stay paho's: chunks come from paho's own `_sock_recv` of its socket object.
    """

    __slots__ = ("_client", "_deliver", "_handover", "_needed", "_pending", "_pending_size", "_v5")

    def __init__(self, client: paho.Client, deliver: Deliver, *, v5: bool) -> None:
        self._client = client
        self._deliver = deliver
        self._v5 = v5
        self._pending: list[bytes] = []  # the start of an incomplete packet, in the chunks it came in
        self._pending_size = 0
        self._needed = 0  # bytes that packet needs (one more than held while its length is cut)
        self._handover = b""  # the rest of the packet paho is reading
        client._sock_recv = self._replay  # type: ignore[method-assign]
        client.loop_read = self.loop_read  # type: ignore[method-assign]

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """paho's `loop_read`, reading one chunk; errors end the connection the way paho's do."""
        client = self._client
        if client._sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        try:
            data = _SOCK_RECV(client, _CHUNK)
        except BlockingIOError:
            return _SUCCESS
        except OSError as err:
            client._easy_log(paho.MQTT_LOG_ERR, "failed to receive on socket: %s", err)
            return client._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
        if not data:
            return client._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
        with client._msgtime_mutex:  # what paho's keepalive check reads
            client._last_bytes_received = paho.time_func()
        if self._pending:
            self._pending.append(data)
            self._pending_size += len(data)
            if self._pending_size < self._needed:
                return _SUCCESS  # a large packet still arriving: joined once, when whole
            data = b"".join(self._pending)
            self._pending.clear()
        rc = self._packets(data)
        return client._loop_rc_handle(rc) if rc > 0 else _SUCCESS

    def _packets(self, data: bytes) -> MQTTErrorCode:
        """Handle every complete packet in `data`, in order; keep an incomplete last one."""
        client = self._client
        deliver = self._deliver
        v5 = self._v5
        size = len(data)
        pos = 0
        while pos < size:
            header = data[pos]
            length, at = _variable_int(data, pos + 1, size)  # the remaining length
            if length < 0:
                if length == _CUT:
                    return self._keep(data, pos, size - pos + 1)
                return MQTTErrorCode.MQTT_ERR_PROTOCOL
            end = at + length
            if end > size:
                return self._keep(data, pos, end - pos)
            # PUBLISH at QoS 0 or 1 (type 3, QoS bit 2 clear) with a topic: decoded here, if it can be.
            if header & 0xF4 == 0x30 and length > 2 and (data[at] or data[at + 1]):
                topic_end = at + 2 + (data[at] << 8 | data[at + 1])
                qos = header >> 1 & 1
                start = topic_end + 2 * qos
                ids: list[int] | None = None
                if v5:
                    if start >= end:
                        start = end + 1  # no property length: malformed, paho says so
                    elif data[start]:
                        ids = _subscription_ids(data, start, end)
                        start = end + 1 if ids is None else start + 1 + data[start]
                    else:
                        start += 1
                if start <= end:
                    try:
                        topic = data[at + 2 : topic_end].decode()
                    except UnicodeDecodeError:
                        pass  # paho hands it to on_message, whose reading of .topic fails as before
                    else:
                        deliver(topic, data[start:end], qos, bool(header & 1), ids)
                        if qos:
                            rc = client._send_puback(data[topic_end] << 8 | data[topic_end + 1])
                            if rc > 0:
                                return rc
                        pos = end
                        continue
            rc = self._hand_over(data[pos:end])
            if rc > 0:  # an error, as paho's loop_read reads it
                return rc
            if client._sock is None:
                return _SUCCESS  # paho closed the connection (a DISCONNECT from the broker)
            pos = end
        return _SUCCESS

    def _keep(self, data: bytes, pos: int, needed: int) -> MQTTErrorCode:
        self._pending.append(data[pos:] if pos else data)
        self._pending_size = len(data) - pos
        self._needed = needed
        return _SUCCESS

    def _hand_over(self, packet: bytes) -> MQTTErrorCode:
        """Let paho read and handle one whole packet, as if it had come from the socket."""
        self._handover = packet
        try:
            return self._client._packet_read()
        finally:
            self._handover = b""

    def _replay(self, bufsize: int) -> bytes:
        data = self._handover
        if not data:
            raise BlockingIOError  # paho asks for more than the packet: it reads no further
        self._handover = data[bufsize:]
        return data[:bufsize]


def _subscription_ids(data: bytes, start: int, end: int) -> list[int] | None:
    """The subscription identifiers of a property block at `start` (its length, then properties), or
    None if it holds anything else (those packets go to paho), is cut, or its length takes 2+ bytes."""
    stop = start + 1 + data[start]
    if data[start] >= 0x80 or stop > end:
        return None
    at = start + 1
    ids = []
    while at < stop:
        if data[at] != 0x0B:  # Subscription Identifier
            return None
        value, at = _variable_int(data, at + 1, stop)
        if value < 0:
            return None
        ids.append(value)
    return ids


_CUT = -1
_MALFORMED = -2


def _variable_int(data: bytes, at: int, stop: int) -> tuple[int, int]:
    """The MQTT Variable Byte Integer at `at` (1 to 4 bytes of 7 bits, least significant first) and the
    position after it; or (_CUT, stop) if `stop` comes first, (_MALFORMED, at) if it runs past 4 bytes."""
    value = shift = 0
    while at < stop:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7
        if shift == 28:
            return _MALFORMED, at
    return _CUT, stop
