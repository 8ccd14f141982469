"""The Sparkplug B payload schema, written out here as a protobuf `FileDescriptorProto`.

The message layout, field numbers, labels and `DataType` numbers are those the Sparkplug B 3.0
specification defines for the payload. Building the descriptor in code, rather than shipping a .proto
and a compiler's output, keeps the schema readable in one place and loadable on any protobuf runtime
(generated `_pb2` code is tied to the protobuf release that made it). Imported only with the codec,
i.e. when the first `spBv1.0/` message arrives.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2  # type: ignore[import-untyped]  # protobuf ships no stubs

PACKAGE = "mcpmqtt.sparkplug.b"
"""The protobuf package of our schema; package names never reach the wire."""

FILE_NAME = "mcpmqtt_sparkplug_b.proto"

DATATYPE_NAMES = (
    "Unknown", "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64", "Float",
    "Double", "Boolean", "String", "DateTime", "Text", "UUID", "DataSet", "Bytes", "File", "Template",
    "PropertySet", "PropertySetList", "Int8Array", "Int16Array", "Int32Array", "Int64Array",
    "UInt8Array", "UInt16Array", "UInt32Array", "UInt64Array", "FloatArray", "DoubleArray",
    "BooleanArray", "StringArray", "DateTimeArray",
)  # fmt: skip
"""Sparkplug DataType names in number order: `Unknown` is 0, `DateTimeArray` is 34."""

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "uint32": _F.TYPE_UINT32,
    "uint64": _F.TYPE_UINT64,
    "float": _F.TYPE_FLOAT,
    "double": _F.TYPE_DOUBLE,
    "bool": _F.TYPE_BOOL,
    "string": _F.TYPE_STRING,
    "bytes": _F.TYPE_BYTES,
}
_MAX_FIELD = 536_870_912  # one past the largest field number: extension ranges run "to max"

# A field: (name, number, type, repeated, oneof). A type not in _SCALARS is a message type, named
# relative to `Payload`. `oneof` is True for members of the message's `value` oneof.
Field = tuple[str, int, str, bool, bool]


def _field(owner: Any, spec: Field) -> None:
    name, number, kind, repeated, in_oneof = spec
    field = owner.field.add(name=name, number=number)
    field.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
    if kind in _SCALARS:
        field.type = _SCALARS[kind]
    else:
        field.type = _F.TYPE_MESSAGE
        field.type_name = f".{PACKAGE}.Payload.{kind}"
    if in_oneof:
        field.oneof_index = 0


def _message(parent: Any, name: str, fields: list[Field], extensions_from: int | None = None) -> Any:
    """Adds message `name` under `parent`; a `value` oneof if any field is in it; an extension range."""
    message = parent.add(name=name)
    if any(spec[4] for spec in fields):
        message.oneof_decl.add(name="value")
    for spec in fields:
        _field(message, spec)
    if extensions_from is not None:
        message.extension_range.add(start=extensions_from, end=_MAX_FIELD)
    return message


def _values(first: int, *kinds: str) -> list[Field]:
    """The typed members of a `value` oneof, numbered from `first`, in the spec's order."""
    names = {
        "uint32": "int_value",
        "uint64": "long_value",
        "float": "float_value",
        "double": "double_value",
        "bool": "boolean_value",
        "string": "string_value",
        "bytes": "bytes_value",
    }
    return [(names.get(kind, kind), first + i, kind, False, True) for i, kind in enumerate(kinds)]


_BASIC = ("uint32", "uint64", "float", "double", "bool", "string")


def _extension_value(number: int, message: str) -> Field:
    return ("extension_value", number, message, False, True)


def file_descriptor() -> Any:
    """The Sparkplug B payload schema as a `FileDescriptorProto` (proto2, package `PACKAGE`)."""
    proto = descriptor_pb2.FileDescriptorProto(name=FILE_NAME, package=PACKAGE, syntax="proto2")
    datatype = proto.enum_type.add(name="DataType")
    for number, name in enumerate(DATATYPE_NAMES):
        datatype.value.add(name=name, number=number)

    payload = _message(
        proto.message_type,
        "Payload",
        [
            ("timestamp", 1, "uint64", False, False),
            ("metrics", 2, "Metric", True, False),
            ("seq", 3, "uint64", False, False),
            ("uuid", 4, "string", False, False),
            ("body", 5, "bytes", False, False),
        ],
        extensions_from=6,
    )
    nested = payload.nested_type

    template = _message(
        nested,
        "Template",
        [
            ("version", 1, "string", False, False),
            ("metrics", 2, "Metric", True, False),
            ("parameters", 3, "Template.Parameter", True, False),
            ("template_ref", 4, "string", False, False),
            ("is_definition", 5, "bool", False, False),
        ],
        extensions_from=6,
    )
    parameter = _message(
        template.nested_type,
        "Parameter",
        [
            ("name", 1, "string", False, False),
            ("type", 2, "uint32", False, False),
            *_values(3, *_BASIC),
            _extension_value(9, "Template.Parameter.ParameterValueExtension"),
        ],
    )
    _message(parameter.nested_type, "ParameterValueExtension", [], extensions_from=1)

    dataset = _message(
        nested,
        "DataSet",
        [
            ("num_of_columns", 1, "uint64", False, False),
            ("columns", 2, "string", True, False),
            ("types", 3, "uint32", True, False),
            ("rows", 4, "DataSet.Row", True, False),
        ],
        extensions_from=5,
    )
    cell = _message(
        dataset.nested_type,
        "DataSetValue",
        [*_values(1, *_BASIC), _extension_value(7, "DataSet.DataSetValue.DataSetValueExtension")],
    )
    _message(cell.nested_type, "DataSetValueExtension", [], extensions_from=1)
    _message(
        dataset.nested_type,
        "Row",
        [("elements", 1, "DataSet.DataSetValue", True, False)],
        extensions_from=2,
    )

    property_value = _message(
        nested,
        "PropertyValue",
        [
            ("type", 1, "uint32", False, False),
            ("is_null", 2, "bool", False, False),
            *_values(3, *_BASIC),
            ("propertyset_value", 9, "PropertySet", False, True),
            ("propertysets_value", 10, "PropertySetList", False, True),
            _extension_value(11, "PropertyValue.PropertyValueExtension"),
        ],
    )
    _message(property_value.nested_type, "PropertyValueExtension", [], extensions_from=1)
    _message(
        nested,
        "PropertySet",
        [("keys", 1, "string", True, False), ("values", 2, "PropertyValue", True, False)],
        extensions_from=3,
    )
    _message(
        nested,
        "PropertySetList",
        [("propertyset", 1, "PropertySet", True, False)],
        extensions_from=2,
    )

    _message(
        nested,
        "MetaData",
        [
            ("is_multi_part", 1, "bool", False, False),
            ("content_type", 2, "string", False, False),
            ("size", 3, "uint64", False, False),
            ("seq", 4, "uint64", False, False),
            ("file_name", 5, "string", False, False),
            ("file_type", 6, "string", False, False),
            ("md5", 7, "string", False, False),
            ("description", 8, "string", False, False),
        ],
        extensions_from=9,
    )

    metric = _message(
        nested,
        "Metric",
        [
            ("name", 1, "string", False, False),
            ("alias", 2, "uint64", False, False),
            ("timestamp", 3, "uint64", False, False),
            ("datatype", 4, "uint32", False, False),
            ("is_historical", 5, "bool", False, False),
            ("is_transient", 6, "bool", False, False),
            ("is_null", 7, "bool", False, False),
            ("metadata", 8, "MetaData", False, False),
            ("properties", 9, "PropertySet", False, False),
            *_values(10, *_BASIC[:-1], "string", "bytes"),
            ("dataset_value", 17, "DataSet", False, True),
            ("template_value", 18, "Template", False, True),
            _extension_value(19, "Metric.MetricValueExtension"),
        ],
    )
    _message(metric.nested_type, "MetricValueExtension", [], extensions_from=1)
    return proto
