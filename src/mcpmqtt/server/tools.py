"""The four MQTT tools: each decides with the allowlist first and touches the broker only when the
decision allows it."""

import time
from typing import Annotated, Any, Literal, NamedTuple

from mcp.server.elicitation import ElicitationResult
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.resolve import Resolve
from mcp_types import CallToolResult
from pydantic import Field, WithJsonSchema

from mcpmqtt.mqtt import Inbox, Received
from mcpmqtt.rules.payloads import PayloadEncoding
from mcpmqtt.server.approvals import Approval
from mcpmqtt.server.confirmation import Confirmation
from mcpmqtt.server.context import Runtime
from mcpmqtt.server.labels import UNTRUSTED, labelled
from mcpmqtt.server.messages import to_message
from mcpmqtt.server.publish_gate import PublishGate, publish_properties
from mcpmqtt.server.results import PublishResult, QueryResult, ReadResult, SubscribeResult, ok_result

_MAX_USER_PROPERTIES = 100
_PROGRESS_EVERY = 1.0  # seconds between progress notifications of a waiting call

PUBLISH_DESCRIPTION = (
    "Publish one message to an MQTT topic that the allowlist lets you write. This acts on real "
    "devices and services. At qos 1 or 2 it returns only after the broker acknowledged the message. "
    "retain=true makes the broker keep it as the topic's current value. See mcpmqtt://topics/allowed "
    "for the topics you may write and what they do. The operator may guard topics with a payload size "
    "limit, a JSON Schema, a rate limit or a person's confirmation; a refusal says which and why."
    f" {UNTRUSTED}"
)

SUBSCRIBE_DESCRIPTION = (
    "Subscribe to a topic filter and collect messages until max_messages arrived or timeout passed. "
    "Retained messages (a topic's current value) arrive first, marked retain=true. The subscription "
    "ends when the call returns. timed_out is true if fewer than max_messages arrived. Keep timeout "
    "under about 20 s: many hosts give up on a tool call after 30 to 60 s. To wait longer for "
    "something to happen, make a watch (mqtt_watch) and poll it; for what already happened, use "
    f"mqtt_history. {UNTRUSTED}"
)

READ_DESCRIPTION = (
    "Read the next message on a topic filter; a retained message (the current value) counts. Good for"
    " reading a sensor's or device's current state. message is null if nothing arrived within the "
    "timeout."
    f" {UNTRUSTED}"
)

QUERY_DESCRIPTION = (
    "Send a request to a device or service and wait for its reply (MQTT request/response). The server"
    " subscribes to the reply topic before it publishes, and sends MQTT 5 Response Topic and "
    "Correlation Data; on MQTT 5 only a reply that carries that correlation data counts, and a "
    "retained message never does. response is null if no reply came within the timeout."
    f" {UNTRUSTED}"
)


class Collected(NamedTuple):
    """What one subscribing call gathered, as its result reports it."""

    kept: list[Received]
    """The messages that fit in limits.max_result_bytes, in arrival order."""
    omitted: int
    """Messages that arrived within max_messages but did not fit in limits.max_result_bytes."""
    overflow: int
    """Messages that arrived after max_messages were collected, counted instead of buffered."""
    full: bool
    """Whether max_messages arrived."""


def within_bytes(messages: list[Received], cap: int) -> tuple[list[Received], int]:
    """The leading messages whose payloads fit in `cap` bytes together, and how many did not."""
    total = 0
    for index, message in enumerate(messages):
        total += len(message.payload)
        if total > cap:
            return messages[:index], len(messages) - index
    return messages, 0


async def wait_reporting(inbox: Inbox, deadline: float, ctx: Context[Any, Any]) -> bool:
    """Wait until `inbox` is full or `deadline`; True if full. When the client asked for progress
    (a progress token), report the messages so far and the seconds left about once a second."""
    meta = ctx.request_context.meta
    if not (meta and meta.get("progress_token") is not None):
        return await inbox.wait_full(deadline - time.monotonic())
    while (left := deadline - time.monotonic()) > 0:
        if await inbox.wait_full(min(left, _PROGRESS_EVERY)):
            return True
        got = len(inbox.messages)
        left = max(deadline - time.monotonic(), 0)
        await ctx.report_progress(got, inbox.limit, f"{got} of {inbox.limit} messages; {left:.0f} s left")
    return await inbox.wait_full(0)


def register_tools(server: MCPServer[Any], runtime: Runtime) -> None:
    """Add mqtt_publish, mqtt_subscribe, mqtt_read and mqtt_query to `server`."""
    broker, limits = runtime.broker, runtime.limits

    async def collect(topic: str, limit: int, timeout: float, ctx: Context[Any, Any]) -> Collected:
        """Subscribe to `topic` if the allowlist lets us and gather up to `limit` readable messages
        until `timeout` seconds after the call began."""
        deadline = time.monotonic() + timeout
        allowlist = runtime.policy()
        allowlist.decide("read", topic).enforce()
        inbox = Inbox(limit, lambda message: allowlist.readable(message.topic))
        async with broker.subscription(topic, inbox):
            full = await wait_reporting(inbox, deadline, ctx)
        kept, omitted = within_bytes(inbox.messages, limits.max_result_bytes)
        return Collected(kept, omitted, inbox.overflow, full)

    gate = PublishGate(runtime)

    Topic = Annotated[str, Field(description="A concrete MQTT topic name (no + or #).")]
    Filter = Annotated[
        str,
        Field(description="An MQTT topic filter: a topic, or a pattern with + (one level) or # (the rest)."),
    ]
    # Any JSON value in the schema, a str here: the server turns a non-string into its JSON text
    # before the call (server/build.py). Typed str, the SDK leaves a string alone; typed as any JSON
    # value, it would parse a string that looks like JSON and the bytes sent would not be the ones given.
    Payload = Annotated[
        str,
        Field(
            description="The message body. A string is sent as is (base64 if payload_encoding is base64); "
            'any other JSON value, such as {"command": "status"} or 21.5, is sent as compact JSON text.'
        ),
        WithJsonSchema({}),
    ]
    Encoding = Annotated[
        PayloadEncoding, Field(description='"utf-8" to send the text as is, "base64" to send binary bytes.')
    ]
    Qos = Annotated[
        Literal[0, 1, 2], Field(description="MQTT QoS: 0 at most once, 1 at least once, 2 exactly once.")
    ]

    most = limits.max_timeout
    SubscribeTimeout = Annotated[
        float,
        Field(ge=0, le=most, description=f"How long to wait for max_messages, in seconds (0 to {most:g})."),
    ]
    ReadTimeout = Annotated[
        float,
        Field(ge=0, le=most, description=f"How long to wait for a message, in seconds (0 to {most:g})."),
    ]
    QueryTimeout = Annotated[
        float,
        Field(ge=0, le=most, description=f"How long to wait for the reply, in seconds (0 to {most:g})."),
    ]
    MaxMessages = Annotated[
        int,
        Field(
            ge=1,
            le=limits.max_messages,
            description=f"Return after this many messages (1 to {limits.max_messages}).",
        ),
    ]

    @server.tool(
        description=PUBLISH_DESCRIPTION,
        **labelled(
            "Publish an MQTT message", read_only=False, destructive=True, idempotent=False, open_world=True
        ),
    )
    async def mqtt_publish(
        topic: Topic,
        payload: Payload,
        confirmed: Annotated[ElicitationResult[Confirmation], Resolve(gate.ask_publish)],
        ctx: Context[Any, Any],
        qos: Qos = 0,
        retain: bool = False,
        payload_encoding: Encoding = "utf-8",
        content_type: Annotated[
            str | None,
            Field(description='MQTT 5 Content Type of the payload, e.g. "application/json".'),
        ] = None,
        user_properties: Annotated[
            list[tuple[str, str]] | None,
            Field(
                max_length=_MAX_USER_PROPERTIES,
                description='MQTT 5 User Properties as [key, value] pairs, e.g. [["source", "agent"]].',
            ),
        ] = None,
        message_expiry: Annotated[
            Annotated[int, Field(ge=1, le=4_294_967_295)] | None,
            Field(
                description="MQTT 5 Message Expiry Interval: the broker drops the message after this "
                "many seconds if it is not delivered (a retained one stops being the topic's value)."
            ),
        ] = None,
        dry_run: Annotated[
            bool,
            Field(
                description="Run every check (allowlist, payload limits, schema, rate limit) and return "
                "what would be sent, without sending it or counting it against a rate limit."
            ),
        ] = False,
    ) -> Annotated[CallToolResult, PublishResult]:
        """Publish one message to an MQTT topic that the allowlist lets you write."""
        data = gate.check_publish(topic, payload, payload_encoding, content_type, user_properties)
        if dry_run:
            return ok_result(await gate.dry_run(topic, data, qos, retain))
        properties, notes = publish_properties(broker.protocol, content_type, user_properties, message_expiry)

        async def send() -> PublishResult:
            await broker.publish(topic, data, qos=qos, retain=retain, properties=properties)
            return PublishResult(topic=topic, qos=qos, retain=retain, bytes=len(data), notes=notes or None)

        def pending(approval: Approval, note: str) -> PublishResult:
            return PublishResult(
                topic=topic,
                qos=qos,
                retain=retain,
                bytes=len(data),
                approval_id=approval.id,
                status="pending",
                notes=[note, *notes],
            )

        what = f"publishing to {topic!r}"
        if gate.needs_approval(topic, confirmed, what):
            counted = gate.counted(topic, send)
            return ok_result(await gate.await_approval(ctx, what, topic, data, qos, retain, counted, pending))
        await gate.release(topic, confirmed, what)
        return ok_result(await send())

    @server.tool(
        description=SUBSCRIBE_DESCRIPTION,
        **labelled(
            "Collect MQTT messages", read_only=True, destructive=False, idempotent=False, open_world=True
        ),
    )
    async def mqtt_subscribe(
        topic: Filter,
        ctx: Context[Any, Any],
        timeout: SubscribeTimeout = 30.0,
        max_messages: MaxMessages = 1,
    ) -> Annotated[CallToolResult, SubscribeResult]:
        """Subscribe to a topic filter and collect messages until max_messages arrived or timeout passed."""
        collected = await collect(topic, max_messages, timeout, ctx)
        messages = [to_message(m, runtime.sparkplug) for m in collected.kept]
        return ok_result(
            SubscribeResult(
                topic=topic,
                messages=messages,
                messages_received=len(messages),
                timed_out=not collected.full,
                messages_omitted=collected.omitted,
                messages_overflow=collected.overflow,
            )
        )

    @server.tool(
        description=READ_DESCRIPTION,
        **labelled(
            "Read one MQTT message", read_only=True, destructive=False, idempotent=True, open_world=True
        ),
    )
    async def mqtt_read(
        topic: Filter, ctx: Context[Any, Any], timeout: ReadTimeout = 5.0
    ) -> Annotated[CallToolResult, ReadResult]:
        """Read the next message on a topic filter; a retained message (the current value) counts."""
        collected = await collect(topic, 1, timeout, ctx)
        message = to_message(collected.kept[0], runtime.sparkplug) if collected.kept else None
        result = ReadResult(
            topic=topic, message=message, timed_out=not collected.full, messages_omitted=collected.omitted
        )
        return ok_result(result)

    @server.tool(
        description=QUERY_DESCRIPTION,
        **labelled(
            "MQTT request/response", read_only=False, destructive=True, idempotent=False, open_world=True
        ),
    )
    async def mqtt_query(
        request_topic: Topic,
        payload: Payload,
        confirmed: Annotated[ElicitationResult[Confirmation], Resolve(gate.ask_request)],
        ctx: Context[Any, Any],
        response_topic: Annotated[
            str | None,
            Field(
                description="Topic the device replies on (needs read permission). Omit it to use the "
                "server's private reply topic, sent to the device as the MQTT 5 Response Topic."
            ),
        ] = None,
        timeout: QueryTimeout = 5.0,
        qos: Qos = 0,
        payload_encoding: Encoding = "utf-8",
    ) -> Annotated[CallToolResult, QueryResult]:
        """Send a request to a device or service and wait for its reply (MQTT request/response)."""
        data = gate.check_request(request_topic, response_topic, payload, payload_encoding)
        allowlist = runtime.policy()

        async def send(report: bool = True) -> QueryResult:
            reply = await broker.request(
                request_topic,
                data,
                qos=qos,
                timeout=timeout,
                response_topic=response_topic,
                accept=(lambda message: allowlist.readable(message.topic)) if response_topic else None,
                # Progress goes to the call that asked; an approved request sent later has no call.
                wait=(lambda inbox, deadline: wait_reporting(inbox, deadline, ctx)) if report else None,
            )
            return QueryResult(
                request_topic=request_topic,
                response_topic=reply.response_topic,
                correlation_id=reply.correlation_id,
                response=to_message(reply.message, runtime.sparkplug) if reply.message else None,
                timed_out=reply.message is None,
            )

        def pending(approval: Approval, note: str) -> QueryResult:
            return QueryResult(
                request_topic=request_topic,
                response=None,
                timed_out=False,
                approval_id=approval.id,
                status="pending",
                notes=[note],
            )

        what = f"sending a request to {request_topic!r}"
        if gate.needs_approval(request_topic, confirmed, what):
            counted = gate.counted(request_topic, lambda: send(report=False))
            result = await gate.await_approval(ctx, what, request_topic, data, qos, False, counted, pending)
            return ok_result(result)
        await gate.release(request_topic, confirmed, what)
        return ok_result(await send())
