"""Live state for agents: what is there without waiting, and being told when something changes.

- Tools `mqtt_list_topics` and `mqtt_last` answer from the live-state cache at once.
- Each readable topic is a resource, `mcpmqtt://topic/{+topic}`, with completion of topic names, and
  subscribable in both protocol eras: `resources/subscribe` (2025-11-25) and `subscriptions/listen`
  (2026-07-28). Updates are coalesced per topic, so a fast topic cannot flood a client, and new
  topics raise a (coalesced) list-changed notification.
- The allowlist of the request is applied on every path: listing, reading, completing, subscribing.
"""

import asyncio
import json
import time
import urllib.parse
import weakref
from collections.abc import Awaitable
from typing import Annotated, Any

from mcp.server.connection import Connection
from mcp.server.lowlevel.server import NotificationOptions
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    ListenHandler,
    ResourcesListChanged,
    ResourceUpdated,
)
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INVALID_PARAMS,
    CallToolResult,
    Completion,
    CompletionArgument,
    CompletionContext,
    EmptyResult,
    ListResourcesResult,
    PaginatedRequestParams,
    PromptReference,
    Resource,
    ResourceTemplateReference,
    SubscribeRequestParams,
    SubscriptionsListenRequestParams,
    SubscriptionsListenResult,
    UnsubscribeRequestParams,
)
from pydantic import Field

from mcpmqtt.messages import decode_payload, to_message
from mcpmqtt.results import LastResult, ListTopicsResult, TopicSummary, error_result, ok_result
from mcpmqtt.runtime import Runtime
from mcpmqtt.state import LiveState, TopicState
from mcpmqtt.tools import UNTRUSTED, labelled
from mcpmqtt.topics import covers, filter_problem, matches, name_problem, split_shared

TOPIC_TEMPLATE = "mcpmqtt://topic/{+topic}"
_TOPIC_PREFIX = "mcpmqtt://topic/"
_PREVIEW_CHARS = 80
_LIST_CHANGED_INTERVAL = 5.0
_MAX_LISTED_RESOURCES = 1000
_MAX_COMPLETIONS = 100

LIST_TOPICS_DESCRIPTION = (
    "List the concrete topics this server has seen that you may read, with a short preview of each "
    "one's last payload, whether it is retained, how many messages arrived and when the last one did. "
    "Answers at once from the server's live state; use it to discover what exists before reading. "
    f"{UNTRUSTED}"
)
LAST_DESCRIPTION = (
    "The last message on one topic, at once, from the server's live state, with its age in seconds; "
    "message is null if none was seen since the server started. Use mqtt_read to wait for a new one. "
    f"{UNTRUSTED}"
)


def topic_uri(topic: str) -> str:
    """The resource URI of a topic; '?', '%' and the like are escaped, '/' and '$' are kept."""
    return _TOPIC_PREFIX + urllib.parse.quote(topic, safe="/$!&'()*+,;=:@")


def topic_of(uri: str) -> str | None:
    """The topic a resource URI names, or None if it is not a topic URI."""
    if not uri.startswith(_TOPIC_PREFIX):
        return None
    return urllib.parse.unquote(uri[len(_TOPIC_PREFIX) :])


def followed_patterns(runtime: Runtime) -> list[str]:
    """The read patterns the live state subscribes to.

    Shared subscriptions are left out (they would steal messages from the group), and so is a pattern
    that another one covers (`lab/#` beside `#`): the broker sends a message once per matching
    subscription, and the copy a covered pattern brings is only ever dropped again (the adapter hands
    a follower one copy per message, see `Broker.follow`), so not subscribing saves the traffic. Of two
    patterns that cover each other (`#` and `+/#`) the first is kept.
    """
    candidates = list(
        dict.fromkeys(
            entry.pattern
            for entry in runtime.config.topics
            if "read" in entry.permissions and entry.live and split_shared(entry.pattern)[0] is None
        )
    )
    return [
        pattern
        for index, pattern in enumerate(candidates)
        if not any(
            covers(other, pattern) and (other_index < index or not covers(pattern, other))
            for other_index, other in enumerate(candidates)
            if other_index != index
        )
    ]


class Notifier:
    """Sends resource notifications, at most one per topic per interval, to both kinds of clients."""

    def __init__(self, bus: InMemorySubscriptionBus, interval: float) -> None:
        self.bus = bus
        self.interval = interval
        # Handshake-era subscribers per URI, by connection: a repeated subscribe is one, and a closed
        # connection drops out when the SDK lets go of it.
        self.legacy: dict[str, weakref.WeakSet[Connection]] = {}
        self._windows: dict[str, bool] = {}  # uri -> another update arrived inside its window
        self._list_window = False
        self._tasks: set[asyncio.Task[None]] = set()

    def topic_changed(self, topic: str, is_new: bool) -> None:
        """LiveState's listener: runs on the event loop, on the per-message path."""
        uri = topic_uri(topic)
        if uri in self._windows:
            self._windows[uri] = True  # coalesced into the notification at the window's end
        else:
            self._windows[uri] = False
            self._send(self._updated(uri))
            asyncio.get_running_loop().call_later(self.interval, self._window_closed, uri)
        if is_new and not self._list_window:
            self._list_window = True
            asyncio.get_running_loop().call_later(_LIST_CHANGED_INTERVAL, self._list_changed)

    def _window_closed(self, uri: str) -> None:
        if self._windows.pop(uri, False):  # updates came during the window: tell, and open another
            self._windows[uri] = False
            self._send(self._updated(uri))
            asyncio.get_running_loop().call_later(self.interval, self._window_closed, uri)

    def _list_changed(self) -> None:
        self._list_window = False
        self._send(self._list_changed_now())

    def _send(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _updated(self, uri: str) -> None:
        await self.bus.publish(ResourceUpdated(uri=uri))
        for connection in list(self.legacy.get(uri, ())):
            await connection.send_resource_updated(uri)  # best effort: never raises

    async def _list_changed_now(self) -> None:
        await self.bus.publish(ResourcesListChanged())
        for connection in {c for subscribed in self.legacy.values() for c in subscribed}:
            await connection.send_resource_list_changed()


def _connection_of(ctx: Any) -> Connection:
    """The client connection behind a low-level request context.

    The SDK builds a ServerSession per request, so that object dies with the request; the
    connection it wraps lives as long as the client is connected, and can notify it later.
    """
    connection: Connection = ctx.session._connection
    return connection


def _summary(topic: str, entry: TopicState, now: float) -> TopicSummary:
    preview, encoding = decode_payload(entry.last.payload[:_PREVIEW_CHARS])
    return TopicSummary(
        topic=topic,
        preview=preview[:_PREVIEW_CHARS],
        preview_encoding=encoding,
        retained=entry.last.retain,
        messages=entry.messages,
        last_seen_seconds_ago=round(now - entry.last.received_at, 3),
    )


def _listed(entry: TopicState, now: float) -> str:
    """A topic resource's description: facts about its last message, never the payload.

    Hosts show descriptions as the server's own words, and some hand them to the model; a payload
    is a device's words, so it stays inside the resource, whose reader knows it is data.
    """
    seen = f"{entry.messages} message{'s' if entry.messages != 1 else ''} seen"
    size = f"{'over ' if entry.truncated else ''}{len(entry.last.payload):,} bytes"
    return (
        f"Last message {now - entry.last.received_at:.0f} s ago, {size} ({seen}); read the resource for it."
    )


def register_live(server: MCPServer[Any], runtime: Runtime, state: LiveState, notifier: Notifier) -> None:
    """Add the live-state tools, the topic resources, completion and resource subscriptions."""
    followed = followed_patterns(runtime)
    lowlevel = server._lowlevel_server  # the SDK's MCPServer registers neither resources/subscribe
    # nor our own resources/list; both go on the low-level server it wraps.

    def kept(topic: str) -> bool:
        return any(matches(pattern, topic) for pattern in followed)

    @server.tool(
        description=LIST_TOPICS_DESCRIPTION,
        **labelled(
            "List known MQTT topics", read_only=True, destructive=False, idempotent=True, open_world=False
        ),
    )
    async def mqtt_list_topics(
        filter: Annotated[
            str, Field(description="Only topics this MQTT filter matches; '#' for all you may read.")
        ] = "#",
        limit: Annotated[
            int, Field(ge=1, le=1000, description="At most this many topics (1 to 1000).")
        ] = 100,
    ) -> Annotated[CallToolResult, ListTopicsResult]:
        """List known topics you may read, from the live state."""
        if problem := filter_problem(filter):
            return error_result(f"invalid topic: {problem}")
        policy, now = runtime.policy(), time.time()
        found = [(topic, entry) for topic, entry in state.matching(filter) if policy.readable(topic)]
        return ok_result(
            ListTopicsResult(
                filter=filter,
                topics=[_summary(topic, entry, now) for topic, entry in found[:limit]],
                total=len(found),
                truncated=len(found) > limit,
            )
        )

    @server.tool(
        description=LAST_DESCRIPTION,
        **labelled("Last MQTT message", read_only=True, destructive=False, idempotent=True, open_world=False),
    )
    async def mqtt_last(
        topic: Annotated[str, Field(description="A concrete MQTT topic name (no + or #).")],
    ) -> Annotated[CallToolResult, LastResult]:
        """The last message on a topic, from the live state."""
        if problem := name_problem(topic):
            return error_result(f"invalid topic: {problem}")
        decision = runtime.policy().decide("read", topic)
        if not decision.allowed:
            return error_result(decision.reason)
        return ok_result(last_result(topic))

    def last_result(topic: str) -> LastResult:
        entry = state.get(topic)
        note = None
        if not kept(topic):
            note = "this topic is not kept in the live state (its pattern has live: false); use mqtt_read"
        elif runtime.broker.protocol != "5":
            note = (
                "the broker speaks MQTT 3.1.1, so the live state holds only what calls have read; "
                "use mqtt_read for the current value"
            )
        if entry is None:
            return LastResult(topic=topic, message=None, age_seconds=None, messages_seen=0, note=note)
        return LastResult(
            topic=topic,
            message=to_message(entry.last),
            age_seconds=round(time.time() - entry.last.received_at, 3),
            messages_seen=entry.messages,
            payload_truncated=entry.truncated,
            note=note,
        )

    def readable_or_refuse(uri: str) -> str:
        """The topic of a readable topic URI; a protocol error naming the rule otherwise."""
        topic = topic_of(uri)
        if topic is None:
            raise MCPError(
                INVALID_PARAMS, f"invalid argument: {uri} is not a topic resource ({TOPIC_TEMPLATE})"
            )
        if problem := name_problem(topic):
            raise MCPError(INVALID_PARAMS, f"invalid topic: {problem}")
        decision = runtime.policy().decide("read", topic)
        if not decision.allowed:
            raise MCPError(INVALID_PARAMS, decision.reason)
        return topic

    @server.resource(
        TOPIC_TEMPLATE,
        name="topic",
        title="Last message on an MQTT topic",
        description="The last message seen on a topic you may read, from the live state. Subscribe to "
        "be told when a new one arrives.",
        mime_type="application/json",
    )
    def topic_resource(topic: str) -> str:
        if problem := name_problem(topic):
            raise ResourceError(f"invalid topic: {problem}")
        decision = runtime.policy().decide("read", topic)
        if not decision.allowed:
            raise ResourceError(decision.reason)
        return json.dumps(last_result(topic).model_dump(mode="json"), ensure_ascii=False)

    @server.completion()  # type: ignore[untyped-decorator, no-untyped-call]  # the SDK leaves it untyped
    async def complete(
        ref: PromptReference | ResourceTemplateReference,
        argument: CompletionArgument,
        context: CompletionContext | None,
    ) -> Completion | None:
        if not (isinstance(ref, ResourceTemplateReference) and ref.uri == TOPIC_TEMPLATE):
            return None
        policy = runtime.policy()
        values = [
            topic
            for topic, _ in state.matching("#")
            if topic.startswith(argument.value) and policy.readable(topic)
        ]
        return Completion(
            values=values[:_MAX_COMPLETIONS], total=len(values), has_more=len(values) > _MAX_COMPLETIONS
        )

    async def list_resources(ctx: Any, params: PaginatedRequestParams | None) -> ListResourcesResult:
        policy, now = runtime.policy(), time.time()
        topics = [
            Resource(
                uri=topic_uri(topic),
                name=topic,
                title=f"MQTT topic {topic}",
                description=_listed(entry, now),
                mime_type="application/json",
            )
            for topic, entry in state.matching("#")
            if policy.readable(topic)
        ][:_MAX_LISTED_RESOURCES]
        return ListResourcesResult(resources=[*await server.list_resources(), *topics])

    async def subscribe(ctx: Any, params: SubscribeRequestParams) -> EmptyResult:
        uri = params.uri
        readable_or_refuse(uri)
        notifier.legacy.setdefault(uri, weakref.WeakSet()).add(_connection_of(ctx))
        return EmptyResult()

    async def unsubscribe(ctx: Any, params: UnsubscribeRequestParams) -> EmptyResult:
        subscribed = notifier.legacy.get(params.uri)
        if subscribed is not None:
            subscribed.discard(_connection_of(ctx))
        return EmptyResult()

    listen = ListenHandler(notifier.bus)

    async def guarded_listen(ctx: Any, params: SubscriptionsListenRequestParams) -> SubscriptionsListenResult:
        for uri in params.notifications.resource_subscriptions or ():
            readable_or_refuse(uri)
        return await listen(ctx, params)

    lowlevel.add_request_handler("resources/list", PaginatedRequestParams, list_resources)
    lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)
    lowlevel.add_request_handler("subscriptions/listen", SubscriptionsListenRequestParams, guarded_listen)
    # Handshake-era clients learn about listChanged from the capabilities at initialize.
    options = lowlevel.create_initialization_options
    lowlevel.create_initialization_options = lambda notification_options=None, *a, **k: options(  # type: ignore[method-assign]
        notification_options or NotificationOptions(resources_changed=True), *a, **k
    )
