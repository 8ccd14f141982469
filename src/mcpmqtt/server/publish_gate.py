"""Everything a publish, or a query's request, must pass before it goes out; and its MQTT 5 properties."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from mcp.server.elicitation import ElicitationResult
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.resolve import Elicit
from pydantic import BaseModel

from mcpmqtt.errors import InvalidArgument, InvalidTopic, McpMqttError, PayloadTooLarge, PermissionDenied
from mcpmqtt.mqtt import PublishProperties
from mcpmqtt.rules.payloads import PayloadEncoding, decode_payload, encode_payload
from mcpmqtt.rules.topics import name_problem, text_problem
from mcpmqtt.server.approvals import Approval
from mcpmqtt.server.confirmation import (
    Confirmation,
    can_ask,
    could_not_ask,
    question,
    refuse_unless_confirmed,
)
from mcpmqtt.server.context import Runtime
from mcpmqtt.server.events import caller_name, caller_owner
from mcpmqtt.server.results import PublishResult
from mcpmqtt.shared_state import rate_windows

_PREVIEW_BYTES = 300
R = TypeVar("R", bound=BaseModel)


class PublishGate:
    """Everything a publish, or a query's request, must pass before it goes out.

    In order: the topic is valid and the allowlist lets the agent write it; the payload decodes and
    fits limits.max_payload_bytes; then the guardrails of every write entry matching the topic
    (payload size, JSON Schema, rate limit); with discovery.enforce_command_schemas, the command
    payloads a discovered device announced for the topic; last, when an entry says ``confirm``, a
    person agrees.
    The checks run twice for a confirmed publish, once before the person is asked (nobody is asked
    about a publish that would be refused anyway) and once when the call goes ahead; the rate limit
    counts a publish only then.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.guardrails = runtime.config.guardrails()  # one per server: it counts publishes
        self.windows = rate_windows(self.guardrails, runtime.config.state)
        runtime.on_close.append(self.windows.aclose)

    def check_publish(
        self,
        topic: str,
        payload: str,
        encoding: PayloadEncoding,
        content_type: str | None,
        user_properties: list[tuple[str, str]] | None,
    ) -> bytes:
        """The bytes to publish to ``topic``; raises the error that refuses it."""
        self.runtime.policy().decide("write", topic).enforce()
        if problem := _property_problem(content_type, user_properties):
            raise InvalidArgument(problem)
        return self._check_payload(topic, payload, encoding)

    def check_request(
        self, request_topic: str, response_topic: str | None, payload: str, encoding: PayloadEncoding
    ) -> bytes:
        """The request bytes for ``request_topic``; raises the error that refuses the query."""
        for name in (request_topic, response_topic):
            if name is not None and (problem := name_problem(name)):
                raise InvalidTopic(problem)
        if response_topic == request_topic:
            raise InvalidArgument(
                "response_topic must differ from request_topic, or the request "
                "itself would come back as the reply; omit response_topic to use a private reply topic"
            )
        allowlist = self.runtime.policy()
        allowlist.decide("write", request_topic).enforce()
        if response_topic is not None:
            allowlist.decide("read", response_topic).enforce()
        self.runtime.broker.check_reply_route(response_topic)
        return self._check_payload(request_topic, payload, encoding)

    def _check_payload(self, topic: str, payload: str, encoding: PayloadEncoding) -> bytes:
        limits = self.runtime.limits
        data = encode_payload(payload, encoding)
        if len(data) > limits.max_payload_bytes:
            raise PayloadTooLarge(
                f"the payload is {len(data):,} bytes; this server accepts at most "
                f"{limits.max_payload_bytes:,} bytes (limits.max_payload_bytes)"
            )
        if (refused := self.guardrails.check(topic, data)) is not None:
            raise refused
        # After the allowlist and the guardrails: what a device announces only ever narrows them.
        if (problem := self._command_problem(topic, data)) is not None:
            raise InvalidArgument(problem)
        return data

    def _command_problem(self, topic: str, data: bytes) -> str | None:
        devices = self.runtime.devices
        if devices is None or not self.runtime.config.discovery.enforce_command_schemas:
            return None
        return devices.command_problem(topic, data)

    # Resolvers: the SDK runs them before the tool, with the tool's arguments by name, and asks the
    # person whatever they return as Elicit, in either protocol era. None means: nobody to ask.

    async def ask_publish(
        self,
        ctx: Context[Any, Any],
        topic: str,
        payload: str,
        payload_encoding: PayloadEncoding,
        qos: int,
        retain: bool,
        content_type: str | None,
        user_properties: list[tuple[str, str]] | None,
        dry_run: bool = False,
    ) -> Elicit[Confirmation] | None:
        """Ask the person before a publish to a ``confirm`` topic, unless it would be refused anyway
        or it is a dry run (nothing will be sent, so there is nothing to agree to)."""
        patterns = [] if dry_run else self._confirming(ctx, topic)
        if not patterns:
            return None
        try:
            data = self.check_publish(topic, payload, payload_encoding, content_type, user_properties)
        except McpMqttError:
            return None  # the tool body raises it again, as its result
        action = f"publish to the MQTT topic {topic!r}"
        return Elicit(question(action, data, qos, retain, patterns), Confirmation)

    async def ask_request(
        self,
        ctx: Context[Any, Any],
        request_topic: str,
        response_topic: str | None,
        payload: str,
        payload_encoding: PayloadEncoding,
        qos: int,
    ) -> Elicit[Confirmation] | None:
        """Ask the person before a query's request to a ``confirm`` topic, unless it would be refused."""
        patterns = self._confirming(ctx, request_topic)
        if not patterns:
            return None
        try:
            data = self.check_request(request_topic, response_topic, payload, payload_encoding)
        except McpMqttError:
            return None
        action = f"send a request to the MQTT topic {request_topic!r} and wait for the reply"
        return Elicit(question(action, data, qos, False, patterns), Confirmation)

    def _confirming(self, ctx: Context[Any, Any], topic: str) -> list[str]:
        """The ``confirm`` patterns that apply to ``topic``, when this client can be asked at all.

        Looked at first, so that the common publish (no confirmation) is checked once, in the tool body;
        a topic that is malformed or refused is caught by the checks the caller runs before asking.
        """
        if not self.guardrails.confirms or not can_ask(ctx) or self.guardrails.console_only(topic):
            return []
        return self.guardrails.confirming_patterns(topic)

    async def dry_run(self, topic: str, data: bytes, qos: int, retain: bool) -> PublishResult:
        """What a publish that passed ``check_publish`` would send; nothing is sent and no rate limit
        is spent (``check`` only looks at the rate, and so do shared windows here)."""
        if (refused := await self.windows.look(topic)) is not None:
            raise refused
        preview, _ = decode_payload(data[:_PREVIEW_BYTES])
        return PublishResult(
            topic=topic,
            qos=qos,
            retain=retain,
            bytes=len(data),
            dry_run=True,
            payload_preview=preview,
            needs_approval=bool(self.guardrails.confirming_patterns(topic)),
        )

    def needs_approval(self, topic: str, confirmed: ElicitationResult[Any], what: str) -> bool:
        """Whether this publish must wait in the console's approval queue; raises when a person must
        agree and none can: the client cannot ask and the console is not served, or the entry says
        ``"confirm": "console"`` and the console is not served."""
        if not self.guardrails.confirming_patterns(topic):
            return False
        queue = self.runtime.approvals
        reviewable = queue is not None and queue.reviewable
        if self.guardrails.console_only(topic):
            if not reviewable:
                raise PermissionDenied(
                    f"{what} needs a person's approval in the operator console, and this server does "
                    "not serve the console (it comes with the HTTP transport); tell the user"
                )
            return True
        if could_not_ask(confirmed) and reviewable:
            return True
        refuse_unless_confirmed(confirmed, what)
        return False

    async def await_approval(
        self,
        ctx: Context[Any, Any],
        action: str,
        topic: str,
        data: bytes,
        qos: int,
        retain: bool,
        send: Callable[[], Awaitable[R]],
        pending: Callable[[Approval, str], R],
    ) -> R:
        """Queue the publish (or request) for a person, wait approvals.wait seconds for the decision,
        and return what `send` returned, or `pending(approval, note)`; raises when it was refused."""
        queue = self.runtime.approvals
        assert queue is not None  # needs_approval said so
        approval = queue.submit(
            owner=caller_owner(ctx),
            caller=caller_name(ctx),
            action=action,
            topic=topic,
            qos=qos,
            retain=retain,
            payload=data,
            send=send,
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(approval.settled.wait(), self.runtime.config.approvals.wait)
        if approval.status == "approved":  # being sent: wait for it (the broker and timeout bound it)
            await approval.settled.wait()
        if approval.status == "published" and approval.result is not None:
            update = {"approval_id": approval.id, "status": "published"}
            return cast(R, approval.result.model_copy(update=update))
        if approval.status == "failed" and approval.error is not None:
            raise approval.error
        if approval.status in ("rejected", "expired"):
            raise PermissionDenied(refusal_text(approval))
        left = max(approval.expires - time.time(), 0)
        note = (
            f"a person must approve {action} in the operator console; nothing has been sent yet. Call "
            f"mqtt_approval with approval_id to learn the outcome; it expires in {left:.0f} s if nobody "
            "decides"
        )
        return pending(approval, note)

    def counted(self, topic: str, send: Callable[[], Awaitable[R]]) -> Callable[[], Awaitable[R]]:
        """`send`, counted against the rate limits when it runs (an approval may come much later)."""

        async def counted_send() -> R:
            if (refused := await self.windows.take(topic)) is not None:
                raise refused
            return await send()

        return counted_send

    async def release(self, topic: str, confirmed: ElicitationResult[Any], what: str) -> None:
        """The last word before sending: the person's answer when one was needed, then the rate limit,
        which counts this publish. Returns when it may be sent; raises the refusal otherwise."""
        if self.guardrails.confirming_patterns(topic):
            refuse_unless_confirmed(confirmed, what)
        if (refused := await self.windows.take(topic)) is not None:
            raise refused


def refusal_text(approval: Approval) -> str:
    """Why a rejected or expired approval was not sent, as the agent reads it."""
    if approval.status == "rejected":
        return (
            f"{approval.decided_by or 'a person'} rejected {approval.action} in the operator console; "
            "do not try again unless the user asks you to"
        )
    return (
        f"nobody approved {approval.action} in the operator console within approvals.ttl, so it "
        "expired and was not sent; tell the user"
    )


def _property_problem(content_type: str | None, user_properties: list[tuple[str, str]] | None) -> str | None:
    """Why these MQTT 5 properties cannot be sent (the broker would drop the connection); None if they can."""
    if content_type is not None and (problem := text_problem(content_type, "content_type")):
        return problem
    for index, (key, value) in enumerate(user_properties or []):
        for part, text in (("key", key), ("value", value)):
            if problem := text_problem(text, f"the {part} of user_properties[{index}]"):
                return problem
    return None


def publish_properties(
    protocol: str,
    content_type: str | None,
    user_properties: list[tuple[str, str]] | None,
    message_expiry: int | None,
) -> tuple[PublishProperties | None, list[str]]:
    """The MQTT 5 PUBLISH properties to send, and notes on what could not be sent.

    MQTT 3.1.1 has no properties: the message still goes out, without them, and the note tells the
    model so rather than failing a publish whose payload is what matters.
    """
    given = {
        "content_type": content_type is not None,
        "user_properties": bool(user_properties),
        "message_expiry": message_expiry is not None,
    }
    if not any(given.values()):
        return None, []
    if protocol != "5":
        names = [name for name, present in given.items() if present]
        listed = " and ".join(names) if len(names) < 3 else f"{', '.join(names[:-1])} and {names[-1]}"
        return None, [
            f"the broker speaks MQTT 3.1.1, so {listed} {'was' if len(names) == 1 else 'were'} not sent"
        ]
    props = PublishProperties(
        content_type=content_type,
        user_properties=tuple(user_properties or ()),
        message_expiry_interval=message_expiry,
    )
    return props, []
