"""Sparkplug B payloads: protobuf bytes to plain records, and (for the demo and tests) back.

This module imports protobuf, so nothing imports it at start-up: the registry loads it when the first
`spBv1.0/` topic is seen. Values come out as an agent can read them: signed integers undone from their
unsigned wire form, DateTime as ISO-8601, packed arrays as lists, bytes as base64, data sets and
templates as nested records.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from google.protobuf import (  # type: ignore[import-untyped]  # protobuf ships no stubs
    descriptor_pool,
    message_factory,
)

from mcpmqtt.rules.payloads import iso_utc
from mcpmqtt.sparkplug.schema import PACKAGE, file_descriptor

# A pool of our own: another copy of the Sparkplug schema in the process (an application's own
# generated code) would clash with ours in protobuf's default pool.
_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(file_descriptor())
_PACKAGE = PACKAGE + "."
_Payload: Any = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(_PACKAGE + "Payload"))

DATATYPES: dict[int, str] = {
    value.number: value.name for value in _POOL.FindEnumTypeByName(_PACKAGE + "DataType").values
}
"""Sparkplug DataType numbers to their names (Int8 ... DateTimeArray)."""
_NUMBERS = {name: number for number, name in DATATYPES.items()}

_SIGNED_BITS = {"Int8": 8, "Int16": 16, "Int32": 32, "Int64": 64}
_PACKED = {  # Sparkplug 3.0 arrays: little-endian, packed into bytes_value
    "Int8Array": "b",
    "Int16Array": "h",
    "Int32Array": "i",
    "Int64Array": "q",
    "UInt8Array": "B",
    "UInt16Array": "H",
    "UInt32Array": "I",
    "UInt64Array": "Q",
    "FloatArray": "f",
    "DoubleArray": "d",
    "DateTimeArray": "q",
}
_MAX_DEPTH = 8  # templates inside templates, property sets inside property sets


@dataclass(slots=True)
class Metric:
    """One metric as sent; `name` and `datatype` may be None in DATA messages that use aliases."""

    name: str | None
    alias: int | None
    datatype: str | None
    value: Any
    timestamp: int | None
    """Milliseconds since the epoch, as Sparkplug sends it."""
    is_null: bool = False
    is_historical: bool = False
    is_transient: bool = False
    properties: dict[str, Any] | None = None


@dataclass(slots=True)
class Payload:
    timestamp: int | None
    seq: int | None
    metrics: list[Metric]
    uuid: str | None = None


Resolver = Callable[[str | None, int | None], tuple[str, str | None] | None]
"""(name, alias) of a metric as sent -> (name, datatype) from its birth, or None if unknown."""


def decode(data: bytes | bytearray, resolve: Resolver | None = None) -> Payload:
    """Parse a Sparkplug B payload; `resolve` fills in names and datatypes that a DATA message left out.

    Raises ValueError on bytes that are not a Sparkplug B payload.
    """
    message = _Payload()
    try:
        message.ParseFromString(bytes(data))
    except Exception as exc:  # protobuf's DecodeError, or a RuntimeWarning-turned-error on bad UTF-8
        raise ValueError(f"not a Sparkplug B payload: {exc}") from None
    return Payload(
        timestamp=message.timestamp if message.HasField("timestamp") else None,
        seq=message.seq if message.HasField("seq") else None,
        metrics=[_metric(m, resolve, 0) for m in message.metrics],
        uuid=message.uuid if message.HasField("uuid") else None,
    )


def _metric(m: Any, resolve: Resolver | None, depth: int) -> Metric:
    name = m.name if m.HasField("name") else None
    alias = m.alias if m.HasField("alias") else None
    datatype = DATATYPES.get(m.datatype) if m.HasField("datatype") and m.datatype else None
    if resolve is not None and (name is None or datatype is None):
        known = resolve(name, alias)
        if known is not None:
            name = name if name is not None else known[0]
            datatype = datatype if datatype is not None else known[1]
    is_null = m.is_null if m.HasField("is_null") else False
    return Metric(
        name=name,
        alias=alias,
        datatype=datatype,
        value=None if is_null else _metric_value(m, datatype, resolve, depth),
        timestamp=m.timestamp if m.HasField("timestamp") else None,
        is_null=is_null,
        is_historical=m.is_historical,
        is_transient=m.is_transient,
        properties=_property_set(m.properties, depth) if m.HasField("properties") else None,
    )


def _metric_value(m: Any, datatype: str | None, resolve: Resolver | None, depth: int) -> Any:
    kind = m.WhichOneof("value")
    if kind == "dataset_value":
        return _dataset(m.dataset_value)
    if kind == "template_value":
        return _template(m.template_value, resolve, depth + 1)
    if kind == "bytes_value":
        return _bytes(m.bytes_value, datatype)
    return _scalar(kind, getattr(m, kind) if kind else None, datatype)


def _scalar(kind: str | None, raw: Any, datatype: str | None) -> Any:
    """A oneof scalar as an agent reads it."""
    if kind is None or kind == "extension_value":
        return None
    if kind in ("int_value", "long_value"):
        if datatype == "DateTime":
            return iso_utc(raw / 1000)
        bits = _SIGNED_BITS.get(datatype or "")
        if (
            bits is not None
        ):  # two's complement in an unsigned field: some encoders add 2**bits, others sign-extend
            raw &= (1 << bits) - 1
            if raw >= 1 << (bits - 1):
                raw -= 1 << bits
        return raw
    if kind == "float_value":
        return _float32(raw)
    if kind == "double_value":
        return raw if math.isfinite(raw) else str(raw)  # JSON has no NaN or Infinity
    return raw  # bool or str


def _float32(value: float) -> float | str:
    """A 32-bit float as its shortest decimal (41.2, not 41.20000076293945, which it widens to)."""
    if not math.isfinite(value):
        return str(value)
    exact = struct.pack("<f", value)
    for digits in range(6, 10):
        short = float(f"{value:.{digits}g}")
        if struct.pack("<f", short) == exact:
            return short
    return value


def _bytes(data: bytes, datatype: str | None) -> Any:
    code = _PACKED.get(datatype or "")
    if code is not None and len(data) % struct.calcsize("<" + code) == 0:
        values = [v for (v,) in struct.iter_unpack("<" + code, data)]
        if datatype == "DateTimeArray":
            return [iso_utc(v / 1000) for v in values]
        if datatype == "FloatArray":
            return [_float32(v) for v in values]
        return [v if not isinstance(v, float) or math.isfinite(v) else str(v) for v in values]
    if datatype == "StringArray":
        return data.decode("utf-8", errors="replace").split("\0")[:-1] if data.endswith(b"\0") else None
    if datatype == "BooleanArray" and len(data) >= 4:
        count = int.from_bytes(data[:4], "little")
        bits = data[4:]
        if count <= len(bits) * 8:
            return [bool(bits[i // 8] >> (7 - i % 8) & 1) for i in range(count)]
    return base64.b64encode(data).decode("ascii")


def _dataset(d: Any) -> dict[str, Any]:
    types = [DATATYPES.get(t) for t in d.types]
    rows = []
    for row in d.rows:
        values = []
        for i, element in enumerate(row.elements):
            kind = element.WhichOneof("value")
            values.append(_scalar(kind, getattr(element, kind) if kind else None, _at(types, i)))
        rows.append(values)
    return {"columns": list(d.columns), "types": types, "rows": rows}


def _template(t: Any, resolve: Resolver | None, depth: int) -> dict[str, Any]:
    if depth > _MAX_DEPTH:
        return {"omitted": f"templates nested deeper than {_MAX_DEPTH}"}
    found: dict[str, Any] = {}
    if t.HasField("template_ref"):
        found["template_ref"] = t.template_ref
    if t.HasField("is_definition"):
        found["is_definition"] = t.is_definition
    if t.HasField("version"):
        found["version"] = t.version
    if t.parameters:
        found["parameters"] = {
            p.name: _scalar(
                p.WhichOneof("value"),
                getattr(p, p.WhichOneof("value")) if p.WhichOneof("value") else None,
                DATATYPES.get(p.type),
            )
            for p in t.parameters
        }
    # Members of a template are named within it; the birth's aliases do not apply.
    found["metrics"] = [_as_dict(_metric(m, None, depth)) for m in t.metrics]
    return found


def _property_set(ps: Any, depth: int) -> dict[str, Any]:
    return {key: _property_value(value, depth + 1) for key, value in zip(ps.keys, ps.values, strict=False)}


def _property_value(v: Any, depth: int) -> Any:
    if v.is_null or depth > _MAX_DEPTH:
        return None
    kind = v.WhichOneof("value")
    if kind == "propertyset_value":
        return _property_set(v.propertyset_value, depth)
    if kind == "propertysets_value":
        return [_property_set(ps, depth) for ps in v.propertysets_value.propertyset]
    return _scalar(kind, getattr(v, kind) if kind else None, DATATYPES.get(v.type))


def _at(items: list[str | None], index: int) -> str | None:
    return items[index] if index < len(items) else None


def _as_dict(metric: Metric) -> dict[str, Any]:
    found: dict[str, Any] = {"name": metric.name, "datatype": metric.datatype, "value": metric.value}
    if metric.timestamp is not None:
        found["timestamp"] = iso_utc(metric.timestamp / 1000)
    return found


# ---- encoding, for the demo's edge node and the tests --------------------------------------------


@dataclass(slots=True)
class Outgoing:
    """A metric to send: a scalar, or bytes for Bytes, File and the packed arrays."""

    name: str | None
    alias: int | None
    datatype: str
    value: int | float | bool | str | bytes | None
    timestamp: int | None = None


def encode(timestamp: int | None, seq: int | None, metrics: Iterable[Outgoing]) -> bytes:
    """A Sparkplug B payload with these metrics; names go in BIRTH messages, aliases in all."""
    message = _Payload()
    if timestamp is not None:
        message.timestamp = timestamp
    if seq is not None:
        message.seq = seq
    for metric in metrics:
        m = message.metrics.add()
        if metric.name is not None:
            m.name = metric.name
        if metric.alias is not None:
            m.alias = metric.alias
        if metric.timestamp is not None:
            m.timestamp = metric.timestamp
        m.datatype = _NUMBERS[metric.datatype]
        if metric.value is None:
            m.is_null = True
        else:
            _set_scalar(m, metric.datatype, metric.value)
    data: bytes = message.SerializeToString()
    return data


def _set_scalar(m: Any, datatype: str, value: int | float | bool | str | bytes) -> None:
    if isinstance(value, bytes):
        m.bytes_value = value
    elif datatype == "Boolean":
        m.boolean_value = bool(value)
    elif datatype in ("String", "Text", "UUID"):
        m.string_value = str(value)
    elif datatype == "Float":
        m.float_value = float(value)
    elif datatype == "Double":
        m.double_value = float(value)
    elif datatype in ("Int64", "UInt64", "DateTime"):
        m.long_value = int(value) & (1 << 64) - 1
    elif datatype in ("Int8", "Int16", "Int32", "UInt8", "UInt16", "UInt32"):
        m.int_value = int(value) & (1 << 32) - 1
    else:
        raise ValueError(f"encoding {datatype} metrics is not supported")
