"""The one error vocabulary: an exception class per prefix of the contract's tool errors, and ConfigError.

Errors are raised where they arise (the allowlist, the guardrails, the broker adapter) as typed
values and turned into a tool result at one boundary, the server's call dispatch. Each prefix's text
lives here and nowhere else, so a caller can catch precisely (`except PermissionDenied`) and the audit
log can tell a refusal from a failure by the error's class instead of parsing its text.

Pure: imports nothing, so every layer may raise these.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BrokerRefused",
    "BrokerUnavailable",
    "ConfigError",
    "InvalidArgument",
    "InvalidTopic",
    "McpMqttError",
    "PayloadTooLarge",
    "PermissionDenied",
]


class McpMqttError(Exception):
    """A failure an agent should see: its text starts with the contract's prefix, then says what to do.

    `refusal` tells the two kinds apart: the server said no before anything reached the broker
    (True), or the broker or the connection failed the operation (False).
    """

    prefix: ClassVar[str] = "error"
    refusal: ClassVar[bool] = True

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"{self.prefix}: {detail}")


class PermissionDenied(McpMqttError):
    """The allowlist, a deny entry, a grant, a rate limit or a person said no."""

    prefix = "permission denied"


class InvalidTopic(McpMqttError, ValueError):
    """A topic name or filter that MQTT forbids (a broker would drop the whole connection for it)."""

    prefix = "invalid topic"


class InvalidArgument(McpMqttError, ValueError):
    """An argument out of range or malformed: a qos, base64, a timeout, a payload a schema refuses."""

    prefix = "invalid argument"


class PayloadTooLarge(McpMqttError):
    """A payload over a configured size limit."""

    prefix = "payload too large"


class BrokerUnavailable(McpMqttError):
    """Not connected, or the connection was lost before the broker answered."""

    prefix = "broker unavailable"
    refusal = False


class BrokerRefused(McpMqttError):
    """The broker answered with a negative acknowledgement."""

    prefix = "broker refused"
    refusal = False


class ConfigError(Exception):
    """A config file that cannot be used; the message names the file, the field and the fix."""
