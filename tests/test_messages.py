"""Message records and the payload codec (CONTRACT §4, `Message`): text when the bytes are UTF-8, base64
otherwise, and MQTT 5 properties with snake_case keys, present only when set.
"""

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mcpmqtt.errors import InvalidArgument
from mcpmqtt.mqtt import Received
from mcpmqtt.mqtt.properties import from_paho
from mcpmqtt.rules.payloads import decode_payload, encode_payload, iso_utc
from mcpmqtt.server.messages import to_message

# 2024-05-01T12:34:56.789Z
WHEN = datetime(2024, 5, 1, 12, 34, 56, 789_000, tzinfo=UTC).timestamp()


def _props(**values: Any) -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho ships no hints here
    for name, value in values.items():
        setattr(props, name, value)
    return props


def _dump(payload: bytes = b"21.5", properties: Any = None) -> dict[str, Any]:
    received = Received(
        topic="sensors/kitchen/temperature",
        payload=payload,
        qos=1,
        retain=False,
        received_at=WHEN,
        properties=from_paho(properties),
    )
    return to_message(received).model_dump(mode="json")


# --- decode_payload --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"21.5", "21.5"),
        (b'{"on": true}', '{"on": true}'),
        ("温度 😀".encode(), "温度 😀"),
        (b"", ""),
        (bytearray(b"from paho"), "from paho"),
    ],
)
def test_valid_utf8_payload_is_text(data: bytes, text: str) -> None:
    assert decode_payload(data) == (text, "utf-8")


@pytest.mark.parametrize("data", [b"\xff\xfe\x00", b"\x80", b"ok\xc3", "x".encode("utf-16")])
def test_invalid_utf8_payload_is_base64_that_round_trips(data: bytes) -> None:
    text, encoding = decode_payload(data)
    assert encoding == "base64"
    assert base64.b64decode(text, validate=True) == data


def test_invalid_utf8_example_gives_the_expected_base64() -> None:
    assert decode_payload(b"\xff\xfe\x00") == ("//4A", "base64")


@given(st.binary(max_size=512))
def test_decoded_payload_converts_back_to_the_original_bytes(data: bytes) -> None:
    text, encoding = decode_payload(data)
    back = text.encode("utf-8") if encoding == "utf-8" else base64.b64decode(text, validate=True)
    assert back == data
    assert encode_payload(text, encoding) == data


# --- encode_payload --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "encoding", "data"),
    [
        ("on", "utf-8", b"on"),
        ("", "utf-8", b""),
        ("温度", "utf-8", "温度".encode()),
        ("//4A", "base64", b"\xff\xfe\x00"),
        ("aGVsbG8=", "base64", b"hello"),
        ("", "base64", b""),
    ],
)
def test_encode_payload_gives_the_bytes_to_publish(payload: str, encoding: Any, data: bytes) -> None:
    assert encode_payload(payload, encoding) == data


@pytest.mark.parametrize(
    ("payload", "data"),
    [
        ({"command": "status"}, b'{"command":"status"}'),
        ({"t": "°C", "v": [1, 2.5]}, '{"t":"°C","v":[1,2.5]}'.encode()),
        (21.5, b"21.5"),
        (0, b"0"),
        (False, b"false"),
        (None, b"null"),
        ([], b"[]"),
    ],
)
def test_a_json_value_that_is_not_a_string_is_sent_as_compact_json(payload: Any, data: bytes) -> None:
    assert encode_payload(payload, "utf-8") == data


@pytest.mark.parametrize("payload", [{"a": 1}, 5, True, None, ["aGVsbG8="]])
def test_base64_applies_only_to_a_string_payload(payload: Any) -> None:
    with pytest.raises(ValueError, match="payload_encoding base64 needs the payload as a base64 string"):
        encode_payload(payload, "base64")


@pytest.mark.parametrize("payload", ["!!", "abc", "aGVsbG8", "aGVs bG8=", "aGVsbG8=\n", "é"])
def test_invalid_base64_raises_value_error_saying_what_to_do(payload: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        encode_payload(payload, "base64")
    message = caught.value.detail
    assert message.startswith("payload is not valid base64")
    assert 'payload_encoding to "utf-8"' in message


# --- iso_utc ---------------------------------------------------------------------------------------------


def test_iso_utc_is_utc_with_a_z_suffix_and_milliseconds() -> None:
    assert iso_utc(WHEN) == "2024-05-01T12:34:56.789Z"
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"


def test_iso_utc_parses_back_to_the_same_instant() -> None:
    parsed = datetime.fromisoformat(iso_utc(WHEN))
    assert parsed.utcoffset() == timedelta(0)
    assert parsed.timestamp() == pytest.approx(WHEN, abs=0.001)


# --- to_message ------------------------------------------------------------------------------------------


def test_message_without_properties_has_no_properties_key() -> None:
    assert _dump() == {
        "topic": "sensors/kitchen/temperature",
        "payload": "21.5",
        "payload_encoding": "utf-8",
        "qos": 1,
        "retain": False,
        "received_at": "2024-05-01T12:34:56.789Z",
    }


def test_binary_payload_is_base64_in_the_message() -> None:
    dumped = _dump(payload=b"\xff\xfe\x00")
    assert (dumped["payload"], dumped["payload_encoding"]) == ("//4A", "base64")


def test_empty_payload_is_empty_text() -> None:
    dumped = _dump(payload=b"")
    assert (dumped["payload"], dumped["payload_encoding"]) == ("", "utf-8")


def test_empty_properties_object_gives_no_properties_key() -> None:
    assert "properties" not in _dump(properties=_props())


def test_subscription_identifier_is_not_passed_to_the_agent() -> None:
    # The broker adds our own subscription identifier; it says nothing about the sender's message.
    assert "properties" not in _dump(properties=_props(SubscriptionIdentifier=[7]))


def test_all_properties_map_to_snake_case_keys() -> None:
    props = _props(
        ContentType="application/json",
        ResponseTopic="commands/kitchen/response",
        CorrelationData=b"req-1",
        UserProperty=[("k", "v"), ("unit", "°C")],
        MessageExpiryInterval=30,
    )
    assert _dump(properties=props)["properties"] == {
        "content_type": "application/json",
        "response_topic": "commands/kitchen/response",
        "correlation_data": "req-1",
        "user_properties": [["k", "v"], ["unit", "°C"]],
        "message_expiry_interval": 30,
    }


@pytest.mark.parametrize(
    ("name", "value", "key", "shown"),
    [
        ("ContentType", "text/plain", "content_type", "text/plain"),
        ("ResponseTopic", "replies/1", "response_topic", "replies/1"),
        ("UserProperty", [("k", "v")], "user_properties", [["k", "v"]]),
        ("MessageExpiryInterval", 0, "message_expiry_interval", 0),
    ],
)
def test_each_property_alone_gives_only_its_key(name: str, value: Any, key: str, shown: Any) -> None:
    assert _dump(properties=_props(**{name: value}))["properties"] == {key: shown}


def test_text_correlation_data_is_text_without_an_encoding_key() -> None:
    assert _dump(properties=_props(CorrelationData=b"req-1"))["properties"] == {"correlation_data": "req-1"}


def test_binary_correlation_data_is_base64_with_its_encoding() -> None:
    assert _dump(properties=_props(CorrelationData=b"\xff\xfe\x00"))["properties"] == {
        "correlation_data": "//4A",
        "correlation_data_encoding": "base64",
    }
