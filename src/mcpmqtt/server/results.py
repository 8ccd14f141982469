"""What each tool returns: the output schemas that MCP clients see and validate against, and the
two shapes a result takes on the wire.

Errors are results (`isError: true`) whose text starts with the contract's prefix, built here from the
typed error a tool raised (server/build.py catches it), because the SDK would prefix a raised
exception with its own words.
"""

from __future__ import annotations

import json

from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel, ConfigDict, Field

from mcpmqtt.errors import McpMqttError
from mcpmqtt.rules.payloads import PayloadEncoding
from mcpmqtt.server.messages import UNTRUSTED_FIELD, Message


def error_result(error: McpMqttError) -> CallToolResult:
    """A tool error as the contract words it: isError with the prefixed text."""
    return CallToolResult(content=[TextContent(type="text", text=str(error))], is_error=True)


def ok_result(result: BaseModel) -> CallToolResult:
    """Structured content plus the same JSON as text, for clients that read only text."""
    data = result.model_dump(mode="json")
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=data)


def _zero(value: object) -> bool:
    return value == 0


def _absent(value: object) -> bool:
    return value is None


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PublishResult(_Result):
    topic: str
    qos: int
    retain: bool
    bytes: int = Field(description="Payload size in bytes as sent.")
    notes: list[str] | None = Field(
        default=None,
        exclude_if=_absent,
        description="What the server could not do as asked, e.g. MQTT 5 properties left out on MQTT 3.1.1.",
    )


class SubscribeResult(_Result):
    topic: str = Field(description="The filter that was subscribed.")
    messages: list[Message]
    messages_received: int = Field(description="How many messages are in `messages`.")
    timed_out: bool = Field(description="True when fewer than max_messages arrived before the timeout.")
    messages_omitted: int = Field(
        default=0,
        exclude_if=_zero,
        description="Present when messages arrived but were left out because the result reached "
        "limits.max_result_bytes of payload.",
    )
    messages_overflow: int = Field(
        default=0,
        exclude_if=_zero,
        description="Present when more than max_messages arrived before the call ended: how many "
        "arrived after max_messages were collected. They were counted, not kept; subscribe again (or "
        "with a larger max_messages) to see later ones.",
    )


class ReadResult(_Result):
    topic: str = Field(description="The filter that was read.")
    message: Message | None
    timed_out: bool
    messages_omitted: int = Field(
        default=0,
        exclude_if=_zero,
        description="Present (1) when a message arrived but its payload exceeds limits.max_result_bytes.",
    )


class QueryResult(_Result):
    request_topic: str
    response_topic: str = Field(
        description="Where the reply was expected (given, or the server's private one)."
    )
    correlation_id: str = Field(description="The MQTT 5 Correlation Data sent with the request, as text.")
    response: Message | None
    timed_out: bool


class TopicSummary(_Result):
    topic: str
    preview: str = Field(
        description=f"The start of the last payload (text, or base64 if binary). {UNTRUSTED_FIELD}"
    )
    preview_encoding: PayloadEncoding
    retained: bool = Field(description="Whether the last message was a retained one.")
    messages: int = Field(description="Messages seen on this topic since the server started.")
    last_seen_seconds_ago: float


class ListTopicsResult(_Result):
    filter: str
    topics: list[TopicSummary]
    total: int = Field(description="How many known topics match, before `limit`.")
    truncated: bool = Field(description="True when more topics match than were returned.")


class LastResult(_Result):
    topic: str
    message: Message | None
    age_seconds: float | None = Field(description="Seconds since the message arrived.")
    messages_seen: int
    payload_truncated: bool = Field(
        default=False, description="True when the payload was longer than the live state keeps."
    )
    note: str | None = Field(default=None, exclude_if=_absent)
