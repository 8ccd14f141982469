"""Live state for agents: what is there without waiting, and being told when something changes.

- Tools `mqtt_list_topics` and `mqtt_last` answer from the live-state cache at once.
- Each readable topic is a resource, `mcpmqtt://topic/{+topic}`, with completion of topic names, and
  subscribable in both protocol eras: `resources/subscribe` (2025-11-25) and `subscriptions/listen`
  (2026-07-28). Updates are coalesced per topic, so a fast topic cannot flood a client, and new
  topics raise a (coalesced) list-changed notification.
- The allowlist of the request is applied on every path: listing, reading, completing, subscribing.
"""

import json
import time
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError
from mcp_types import (
    CallToolResult,
    Completion,
    CompletionArgument,
    CompletionContext,
    ListResourcesResult,
    PaginatedRequestParams,
    PromptReference,
    Resource,
    ResourceTemplateReference,
)
from pydantic import Field

from mcpmqtt.errors import InvalidTopic, McpMqttError
from mcpmqtt.rules.payloads import decode_payload
from mcpmqtt.rules.topics import covers, filter_problem, matches, name_problem, split_shared
from mcpmqtt.server import sdk_compat
from mcpmqtt.server.context import Runtime
from mcpmqtt.server.labels import UNTRUSTED, labelled
from mcpmqtt.server.live_state import LiveState, TopicState
from mcpmqtt.server.messages import to_message
from mcpmqtt.server.notifier import TOPIC_PREFIX, TOPIC_TEMPLATE, topic_of, topic_uri
from mcpmqtt.server.results import LastResult, ListTopicsResult, TopicSummary, ok_result
from mcpmqtt.server.subscribe import SubscribeGate
from mcpmqtt.server.topics_app import TOPICS_APP_META

_PREVIEW_CHARS = 80
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


def _check_readable(runtime: Runtime, topic: str) -> None:
    """Raise unless `topic` is a topic name (not a filter) that the caller may read."""
    if problem := name_problem(topic):
        raise InvalidTopic(problem)
    runtime.policy().decide("read", topic).enforce()


def _summary(topic: str, entry: TopicState, now: float) -> TopicSummary:
    preview, encoding = decode_payload(entry.last.payload[:_PREVIEW_CHARS])
    return TopicSummary(
        topic=topic,
        preview=preview[:_PREVIEW_CHARS],
        preview_encoding=encoding,
        retained=entry.last.retain,
        messages=entry.messages,
        last_seen_seconds_ago=round(now - entry.last.received_at, 3),
        rate_per_min=entry.rate_per_min(now),
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


def register_live(server: MCPServer[Any], runtime: Runtime, state: LiveState, gate: SubscribeGate) -> None:
    """Add the live-state tools, the topic resources, completion, and the guard of topic subscriptions."""
    followed = followed_patterns(runtime)
    lowlevel = sdk_compat.lowlevel(server)  # the SDK's MCPServer does not let us write our own
    # resources/list; it goes on the low-level server it wraps.

    def kept(topic: str) -> bool:
        return any(matches(pattern, topic) for pattern in followed)

    @server.tool(
        description=LIST_TOPICS_DESCRIPTION,
        meta=TOPICS_APP_META,  # hosts that render MCP Apps show the result as a table (topics_app.py)
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
            raise InvalidTopic(problem)
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
        _check_readable(runtime, topic)
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
            message=to_message(entry.last, runtime.sparkplug),
            age_seconds=round(time.time() - entry.last.received_at, 3),
            messages_seen=entry.messages,
            payload_truncated=entry.truncated,
            note=note,
        )

    def check_topic_uri(uri: str, ctx: Any) -> None:
        _check_readable(runtime, topic_of(uri) or "")  # the gate calls it for topic URIs only

    gate.guard(TOPIC_PREFIX, TOPIC_TEMPLATE, check_topic_uri)

    @server.resource(
        TOPIC_TEMPLATE,
        name="topic",
        title="Last message on an MQTT topic",
        description="The last message seen on a topic you may read, from the live state, and the shape "
        "of its JSON payloads inferred so far (a JSON Schema, examples, rate). Subscribe to be told when "
        "a new message arrives or the shape changes.",
        mime_type="application/json",
    )
    def topic_resource(topic: str) -> str:
        try:
            _check_readable(runtime, topic)
        except McpMqttError as exc:
            raise ResourceError(str(exc)) from None
        contents = last_result(topic).model_dump(mode="json")
        if runtime.shapes is not None:
            contents["shape"] = runtime.shapes.shape_of(topic)
        return json.dumps(contents, ensure_ascii=False)

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

    lowlevel.add_request_handler("resources/list", PaginatedRequestParams, list_resources)
    sdk_compat.advertise_resource_list_changes(server)
