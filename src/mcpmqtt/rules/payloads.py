"""The payload codec: MQTT payloads are bytes, and an agent gets text when it can, base64 when it cannot.

So a binary payload can neither break the server (the original went deaf on one) nor be silently
mangled. Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Literal

from mcpmqtt.errors import InvalidArgument

PayloadEncoding = Literal["utf-8", "base64"]


def decode_payload(data: bytes | bytearray) -> tuple[str, PayloadEncoding]:
    """Text for valid UTF-8, base64 otherwise."""
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), "base64"


def encode_payload(payload: str, encoding: PayloadEncoding) -> bytes:
    """The bytes to publish; raises InvalidArgument saying how to fix bad base64."""
    if encoding == "utf-8":
        return payload.encode("utf-8", "surrogatepass")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument(
            "payload is not valid base64 (use the standard alphabet A-Z a-z 0-9 + / with '=' padding), "
            'or set payload_encoding to "utf-8" for text'
        ) from None


def iso_utc(timestamp: float) -> str:
    """ISO-8601 UTC with millisecond precision and a Z suffix."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
