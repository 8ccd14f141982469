"""Watches for agents: `mqtt_watch`, `mqtt_poll`, `mqtt_unwatch`, and the resource of each watch.

An agent that would wait longer than a host lets one tool call run (about 30 to 60 s in several hosts)
makes a watch instead and polls it with short calls, or subscribes to its resource and is woken. A
watch belongs to the caller that made it; to anyone else it does not exist (the same words as for an
id that never existed). The owner is, in order: the principal of the request's access token (an API
key or an OAuth client), the transport's session (Mcp-Session-Id of a 2025-11-25 HTTP session), or
else the server's one unauthenticated caller: the stdio client, or every unauthenticated sessionless
client of an HTTP server, which anyone able to reach such a server already is.
"""

import json
from typing import Annotated, Any, Literal

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import principal_components
from mcp.server.connection import Connection
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError
from mcp_types import CallToolResult
from pydantic import BaseModel, ConfigDict, Field

from mcpmqtt.errors import InvalidArgument, McpMqttError
from mcpmqtt.mqtt import Received
from mcpmqtt.rules.conditions import parse_condition
from mcpmqtt.rules.payloads import iso_utc
from mcpmqtt.rules.spans import parse_span
from mcpmqtt.server import sdk_compat
from mcpmqtt.server.context import Runtime
from mcpmqtt.server.labels import UNTRUSTED, labelled
from mcpmqtt.server.messages import to_message
from mcpmqtt.server.results import PollResult, UnwatchResult, WatchResult, WatchView, ok_result
from mcpmqtt.server.subscribe import SubscribeGate
from mcpmqtt.server.watch_state import WATCH_PREFIX, WATCH_TEMPLATE, Watch, WatchBook

MAX_WAIT = 25.0
"""The longest a poll waits: short enough for every host we know of (see docs/tools.md)."""
_DEFAULT_TTL = "1h"

WATCH_DESCRIPTION = (
    "Watch a topic filter for messages worth waking you for, without holding a call open: returns at "
    "once with a watch_id, and the server keeps each matching message for you until you collect it "
    "with mqtt_poll. Use a watch for anything you would wait on for more than about 20 seconds "
    "('tell me when the print finishes', 'alert me above 30 degrees'): hosts give up on tool calls "
    "after 30 to 60 s, so a long mqtt_subscribe or mqtt_read fails where a watch works. condition is "
    "{field?, op, value?} with op one of > >= < <= == != changed contains; field is a JSON Pointer into "
    "a JSON payload (e.g. /temperature), without it the payload itself (a number when it reads as "
    "one); no condition: every message matches. Retained messages present when the watch starts are "
    "current values, not matches (they are the baseline for 'changed'): read them with mqtt_read. "
    "Hosts that support resource subscriptions can subscribe to the watch's resource and be told when "
    f"a match arrives. The watch ends after ttl or with mqtt_unwatch. {UNTRUSTED}"
)
POLL_DESCRIPTION = (
    "Collect a watch's matches. Returns at once when matches are waiting, else when one arrives or "
    f"after wait seconds (at most {MAX_WAIT:g}). Pass the cursor of the previous result to get only "
    "newer matches; polling again with the same cursor returns the same matches, so a lost result "
    "loses nothing. dropped counts matches lost because the watch's buffer was full; expired is true "
    f"once the watch's ttl passed. {UNTRUSTED}"
)
UNWATCH_DESCRIPTION = (
    "End a watch now and discard its unread matches. Watches also end by themselves at their ttl. "
    f"{UNTRUSTED}"
)


class WatchCondition(BaseModel):
    """Which messages are matches."""

    model_config = ConfigDict(extra="forbid")

    field: str | None = Field(
        default=None,
        description="A JSON Pointer into a JSON payload, e.g. /temperature or /state; leave it out to "
        "test the payload itself.",
    )
    op: Literal[">", ">=", "<", "<=", "==", "!=", "changed", "contains"] = Field(
        description="> >= < <= compare numbers; == != compare values (numbers as numbers); contains "
        "looks for text in a string or an element in a list; changed fires when a topic's value "
        "differs from its previous one."
    )
    value: int | float | str | bool | None = Field(
        default=None, description="What to compare with; leave it out for changed."
    )


def owner_of(connection: Connection) -> str:
    """Who the caller is, for watch ownership (see the module's docstring)."""
    token = get_access_token()
    if token is not None:
        return "token:" + json.dumps(principal_components(token))
    if connection.session_id is not None:
        return "session:" + connection.session_id
    return "unauthenticated"


def register_watches(server: MCPServer[Any], runtime: Runtime, book: WatchBook, gate: SubscribeGate) -> None:
    """Add the three watch tools, the watch resource template, and the guard of watch subscriptions."""
    settings, limits = book.settings, runtime.limits
    max_ttl = settings.max_ttl_seconds
    default_ttl = _DEFAULT_TTL if parse_span(_DEFAULT_TTL) <= max_ttl else settings.max_ttl

    def caller(ctx: Context[Any, Any]) -> str:
        return owner_of(sdk_compat.connection_of(ctx.request_context))

    def bounded(messages: list[Received]) -> tuple[list[Received], int]:
        """The leading messages that fit in limits.max_result_bytes; one too large alone is skipped."""
        kept: list[Received] = []
        total = omitted = 0
        for message in messages:
            size = len(message.payload)
            if size > limits.max_result_bytes and not kept:
                omitted += 1
                continue
            if total + size > limits.max_result_bytes:
                break
            kept.append(message)
            total += size
        return kept, omitted

    @server.tool(
        description=WATCH_DESCRIPTION,
        **labelled("Watch MQTT topics", read_only=True, destructive=False, idempotent=False, open_world=True),
    )
    async def mqtt_watch(
        topic: Annotated[
            str,
            Field(description="An MQTT topic filter you may read: a topic, or a pattern with + or #."),
        ],
        ctx: Context[Any, Any],
        condition: Annotated[
            WatchCondition | None, Field(description="Which messages are matches; leave it out for all.")
        ] = None,
        ttl: Annotated[
            str,
            Field(
                description=f'How long the watch lives, as a span: "15m", "2h", "1d" (at most '
                f"{settings.max_ttl})."
            ),
        ] = default_ttl,
    ) -> Annotated[CallToolResult, WatchResult]:
        """Watch a topic filter; collect the matches with mqtt_poll."""
        allowlist = runtime.policy()
        allowlist.decide("read", topic).enforce()
        checked = parse_condition(condition.op, condition.field, condition.value) if condition else None
        seconds = parse_span(ttl)
        if seconds > max_ttl:
            raise InvalidArgument(
                f"ttl {ttl!r} is longer than this server allows ({settings.max_ttl}, watches.max_ttl); "
                "ask for less and make a new watch when it ends"
            )
        watch = await book.start(caller(ctx), topic, checked, allowlist, seconds)
        return ok_result(
            WatchResult(
                watch_id=watch.watch_id,
                topic=topic,
                condition=checked.describe() if checked else None,
                expires_at=iso_utc(watch.expires_at),
                resource=watch.uri,
            )
        )

    @server.tool(
        description=POLL_DESCRIPTION,
        **labelled("Poll an MQTT watch", read_only=True, destructive=False, idempotent=True, open_world=True),
    )
    async def mqtt_poll(
        watch_id: Annotated[str, Field(description="The watch_id mqtt_watch returned.")],
        ctx: Context[Any, Any],
        cursor: Annotated[
            str | None,
            Field(description="The cursor of the previous mqtt_poll result; leave it out the first time."),
        ] = None,
        wait: Annotated[
            float,
            Field(
                ge=0,
                description=f"Seconds to wait for a match when none is waiting; more than {MAX_WAIT:g} "
                f"counts as {MAX_WAIT:g}, so that the call ends before a host gives up on it.",
            ),
        ] = 20.0,
    ) -> Annotated[CallToolResult, PollResult]:
        """Collect a watch's matches, waiting up to `wait` seconds for one."""
        watch = book.get(caller(ctx), watch_id)
        after = watch.cursor(cursor)
        await watch.wait(after, min(wait, MAX_WAIT))
        batch = watch.after(after)
        policy = runtime.policy()
        readable = [(n, m) for n, m in batch.matches if policy.readable(m.topic)]
        kept, omitted = bounded([m for _, m in readable])
        taken = len(kept) + omitted
        last = readable[taken - 1][0] if taken < len(readable) else batch.cursor
        return ok_result(
            PollResult(
                watch_id=watch_id,
                messages=[to_message(m) for m in kept],
                cursor=str(last),
                dropped=batch.dropped,
                expired=watch.expired,
                pending=len(readable) - taken,
                messages_omitted=omitted,
            )
        )

    @server.tool(
        description=UNWATCH_DESCRIPTION,
        **labelled(
            "End an MQTT watch", read_only=False, destructive=False, idempotent=False, open_world=False
        ),
    )
    async def mqtt_unwatch(
        watch_id: Annotated[str, Field(description="The watch_id mqtt_watch returned.")],
        ctx: Context[Any, Any],
    ) -> Annotated[CallToolResult, UnwatchResult]:
        """End a watch now."""
        watch = book.remove(caller(ctx), watch_id)
        return ok_result(UnwatchResult(watch_id=watch_id, discarded=len(watch.peek())))

    def view(watch: Watch) -> WatchView:
        policy = runtime.policy()
        kept, omitted = bounded([m for m in watch.peek() if policy.readable(m.topic)])
        return WatchView(
            watch_id=watch.watch_id,
            topic=watch.topic,
            condition=watch.condition.describe() if watch.condition else None,
            expires_at=iso_utc(watch.expires_at),
            expired=watch.expired,
            messages=[to_message(m) for m in kept],
            messages_omitted=omitted,
        )

    @server.resource(
        WATCH_TEMPLATE,
        name="watch",
        title="An MQTT watch and its unread matches",
        description="A watch you made with mqtt_watch, with the matches it holds (reading does not "
        "consume them; mqtt_poll does). Subscribe to be told when a match arrives.",
        mime_type="application/json",
    )
    def watch_resource(watch_id: str, ctx: Context[Any, Any]) -> str:
        try:
            watch = book.get(caller(ctx), watch_id)
        except McpMqttError as exc:
            raise ResourceError(str(exc)) from None
        return json.dumps(view(watch).model_dump(mode="json"), ensure_ascii=False)

    def check_watch_uri(uri: str, ctx: Any) -> None:
        book.get(owner_of(sdk_compat.connection_of(ctx)), uri[len(WATCH_PREFIX) :])

    gate.guard(WATCH_PREFIX, WATCH_TEMPLATE, check_watch_uri)
