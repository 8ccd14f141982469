"""What each tool returns: the output schemas that MCP clients see and validate against, and the
two shapes a result takes on the wire.

Errors are results (`isError: true`) whose text starts with the contract's prefix, built here from the
typed error a tool raised (server/build.py catches it), because the SDK would prefix a raised
exception with its own words.
"""

from __future__ import annotations

import json
from typing import Literal

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


def _false(value: object) -> bool:
    return value is False


class PublishResult(_Result):
    topic: str
    qos: int
    retain: bool
    bytes: int = Field(description="Payload size in bytes as sent (or as it would be sent).")
    notes: list[str] | None = Field(
        default=None,
        exclude_if=_absent,
        description="What the server could not do as asked, e.g. MQTT 5 properties left out on MQTT 3.1.1.",
    )
    dry_run: bool = Field(
        default=False,
        exclude_if=_false,
        description="Present (true) for dry_run=true: every check passed, and nothing was sent.",
    )
    payload_preview: str | None = Field(
        default=None,
        exclude_if=_absent,
        description="With dry_run: the start of the payload that would be sent (text, or base64 if binary).",
    )
    needs_approval: bool = Field(
        default=False,
        exclude_if=_false,
        description="With dry_run: a real publish would wait for a person's confirmation or approval.",
    )
    approval_id: str | None = Field(
        default=None,
        exclude_if=_absent,
        description="Present when a person must approve this publish in the operator console: ask "
        "mqtt_approval with this id for the outcome.",
    )
    status: str | None = Field(
        default=None,
        exclude_if=_absent,
        description='With approval_id: "pending" (not yet decided, nothing sent) or "published".',
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
    response_topic: str | None = Field(
        default=None,
        exclude_if=_absent,
        description="Where the reply was expected (given, or the server's private one); absent while "
        "the request waits for approval.",
    )
    correlation_id: str | None = Field(
        default=None,
        exclude_if=_absent,
        description="The MQTT 5 Correlation Data sent with the request, as text; absent while the "
        "request waits for approval.",
    )
    response: Message | None
    timed_out: bool
    approval_id: str | None = Field(
        default=None,
        exclude_if=_absent,
        description="Present when a person must approve this request in the operator console: ask "
        "mqtt_approval with this id for the outcome (and the reply).",
    )
    status: str | None = Field(
        default=None,
        exclude_if=_absent,
        description='With approval_id: "pending" (not yet decided, nothing sent) or "published".',
    )
    notes: list[str] | None = Field(default=None, exclude_if=_absent)


class TopicSummary(_Result):
    topic: str
    preview: str = Field(
        description=f"The start of the last payload (text, or base64 if binary). {UNTRUSTED_FIELD}"
    )
    preview_encoding: PayloadEncoding
    retained: bool = Field(description="Whether the last message was a retained one.")
    messages: int = Field(description="Messages seen on this topic since the server started.")
    last_seen_seconds_ago: float
    rate_per_min: float = Field(description="Messages per minute, the mean over the last 5 minutes.")


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


class WatchResult(_Result):
    watch_id: str
    topic: str = Field(description="The filter watched.")
    condition: str | None = Field(
        default=None, exclude_if=_absent, description="The condition, as text; absent: every message."
    )
    expires_at: str = Field(description="When the watch ends unless ended before, ISO-8601 UTC.")
    resource: str = Field(
        description="The watch's resource: subscribe to it to be told when a match arrives."
    )


class PollResult(_Result):
    watch_id: str
    messages: list[Message] = Field(description="Matches after the cursor given, oldest first.")
    cursor: str = Field(description="Pass it to the next mqtt_poll to get only newer matches.")
    dropped: int = Field(
        description="Matches lost before these because the watch's buffer was full (poll more often)."
    )
    expired: bool = Field(description="True once the watch's ttl passed: it takes no more messages.")
    pending: int = Field(
        default=0,
        exclude_if=_zero,
        description="Present when more matches wait after these (the result reached "
        "limits.max_result_bytes): poll again at once with the new cursor.",
    )
    messages_omitted: int = Field(
        default=0,
        exclude_if=_zero,
        description="Present when a match was skipped because its payload alone exceeds "
        "limits.max_result_bytes.",
    )


class UnwatchResult(_Result):
    watch_id: str
    discarded: int = Field(
        description="Matches still buffered, i.e. not yet passed by a cursor given to mqtt_poll."
    )


class WatchView(_Result):
    """A watch resource's content: the watch and its unread matches, read without consuming them."""

    watch_id: str
    topic: str
    condition: str | None = Field(default=None, exclude_if=_absent)
    expires_at: str
    expired: bool
    messages: list[Message] = Field(description="Unread matches (not consumed by reading), oldest first.")
    messages_omitted: int = Field(default=0, exclude_if=_zero)


class HistoryBucket(_Result):
    start: str = Field(
        description="When the bucket begins, ISO-8601 UTC (buckets start on the epoch's grid)."
    )
    count: int = Field(description="Messages in the bucket, including those without a number at field.")
    min: float | None = Field(description="Of the numbers; null when no message in the bucket had one.")
    max: float | None
    mean: float | None
    last: float | None = Field(description="The number of the bucket's latest message that had one.")


class HistoryResult(_Result):
    topic: str = Field(description="The filter that was asked.")
    since: str = Field(description="The window's start, ISO-8601 UTC.")
    until: str = Field(description="The window's end, ISO-8601 UTC.")
    messages: list[Message] | None = Field(
        default=None, exclude_if=_absent, description="Without bucket: the messages, oldest first."
    )
    truncated: bool | None = Field(
        default=None,
        exclude_if=_absent,
        description="Without bucket: true when older messages of the window were left out (limit, or "
        "limits.max_result_bytes); narrow the window or raise limit to see them.",
    )
    field: str | None = Field(
        default=None,
        exclude_if=_absent,
        description='With bucket: the JSON Pointer aggregated ("" for a payload that is a plain number).',
    )
    buckets: list[HistoryBucket] | None = Field(
        default=None, exclude_if=_absent, description="With bucket: the non-empty buckets, oldest first."
    )
    dropped: int = Field(
        default=0,
        exclude_if=_zero,
        description="Present when the history's bounds (history.max_messages_per_topic, max_age, "
        "max_bytes) dropped messages of these topics since the server started: the window may miss them.",
    )
    note: str | None = Field(default=None, exclude_if=_absent)


class ApprovalResult(_Result):
    approval_id: str
    status: Literal["pending", "approved", "published", "failed", "rejected", "expired"] = Field(
        description="pending: nobody decided yet; approved: being published; published: sent (see "
        "result); failed: approved but the publish failed (see error); rejected: a person said no; "
        "expired: nobody decided within approvals.ttl. Only published sent anything."
    )
    topic: str
    qos: int
    retain: bool
    bytes: int
    requested_at: str
    expires_at: str | None = Field(default=None, exclude_if=_absent, description="While pending.")
    decided_by: str | None = Field(default=None, exclude_if=_absent)
    decided_at: str | None = Field(default=None, exclude_if=_absent)
    result: PublishResult | QueryResult | None = Field(
        default=None, exclude_if=_absent, description="Once sent: what mqtt_publish or mqtt_query returned."
    )
    error: str | None = Field(default=None, exclude_if=_absent)
