"""The payload codec: MQTT payloads are bytes, and an agent gets text when it can, base64 when it cannot.

So a binary payload can neither break the server (the original went deaf on one) nor be silently
mangled. Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Literal

from pydantic import JsonValue

from mcpmqtt.errors import InvalidArgument

PayloadEncoding = Literal["utf-8", "base64"]


def decode_payload(data: bytes | bytearray) -> tuple[str, PayloadEncoding]:
    """Text for valid UTF-8, base64 otherwise."""
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), "base64"


def payload_text(payload: JsonValue, encoding: PayloadEncoding) -> str:
    """The payload as the text to send: a string as is, any other JSON value as compact JSON.

    Models often send `{"command": "status"}` or `21.5` where a string was asked for; compact JSON
    text is what they meant. base64 encodes bytes, so it applies to strings only.
    """
    if isinstance(payload, str):
        return payload
    if encoding == "base64":
        raise InvalidArgument(
            f"payload_encoding base64 needs the payload as a base64 string, and this payload is "
            f"{_json_kind(payload)}; leave payload_encoding out to send the value as JSON text"
        )
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def encode_payload(payload: JsonValue, encoding: PayloadEncoding) -> bytes:
    """The bytes to publish (see payload_text); raises InvalidArgument saying how to fix bad base64."""
    text = payload_text(payload, encoding)
    if encoding == "utf-8":
        return text.encode("utf-8", "surrogatepass")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument(
            "payload is not valid base64 (use the standard alphabet A-Z a-z 0-9 + / with '=' padding), "
            'or set payload_encoding to "utf-8" for text'
        ) from None


def _json_kind(value: JsonValue) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return "null"


def iso_utc(timestamp: float) -> str:
    """ISO-8601 UTC with millisecond precision and a Z suffix."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
