"""The live feed of tool calls: who called which tool on which topic, and whether it was allowed.

`McpMqttServer.call_tool`, which every tool call passes, hands each finished call to one `EventHub`;
the operator console streams it to the browser, and the demo's terminal can print it through a
callback. The feed is for people watching, not a record (that is the audit log): it carries no
payloads and no error details beyond the contract prefix, and a reader that falls behind loses
events (counted) rather than slowing the calls down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.mcpserver import Context
from mcp_types import CallToolResult

from mcpmqtt.errors import McpMqttError

log = logging.getLogger(__name__)

Decision = Literal["allowed", "refused"]
_SUBSCRIBER_CAPACITY = 256
_TOPIC_ARGUMENTS = ("topic", "request_topic", "filter")


@dataclass(frozen=True, slots=True)
class ToolEvent:
    """One finished tool call as the feed shows it."""

    time: float
    """When the call ended (seconds since the epoch)."""
    caller: str
    """Who called: the API key or token's client id, else the MCP client's name (and session)."""
    tool: str
    topic: str | None
    decision: Decision
    outcome: str
    """"ok", "timed_out", "dry_run", "pending_approval", "error" or the error's contract prefix."""


class Subscription:
    """One reader's bounded queue of events: when it is full, new events are dropped and counted."""

    def __init__(self, hub: EventHub, capacity: int, wake: asyncio.Event | None) -> None:
        self._hub = hub
        self._events: deque[ToolEvent] = deque()
        self._capacity = capacity
        self._ready = wake or asyncio.Event()
        self.dropped = 0

    def offer(self, event: ToolEvent) -> None:
        if len(self._events) >= self._capacity:
            self.dropped += 1
        else:
            self._events.append(event)
        self._ready.set()

    async def wait(self, timeout: float) -> bool:
        """Wait until an event is queued, at most `timeout` seconds; True if one is."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def take(self) -> list[ToolEvent]:
        """Every queued event, oldest first; the queue is empty afterwards."""
        events = list(self._events)
        self._events.clear()
        self._ready.clear()
        return events

    def close(self) -> None:
        self._hub.unsubscribe(self)


class EventHub:
    """Fans every tool call out to the subscribed readers and callbacks, in the calling task."""

    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()
        self._callbacks: list[Callable[[ToolEvent], None]] = []

    def subscribe(
        self, capacity: int = _SUBSCRIBER_CAPACITY, wake: asyncio.Event | None = None
    ) -> Subscription:
        """A new reader; `wake` is set with each event instead of an event of its own (a reader that
        waits for several sources at once)."""
        subscription = Subscription(self, capacity, wake)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def on_tool_call(self, callback: Callable[[ToolEvent], None]) -> Callable[[], None]:
        """Call `callback` with every event (keep it quick: it runs in the tool call's task); returns
        the function that stops it."""
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback)

    def publish(self, event: ToolEvent) -> None:
        """Hand `event` to every reader; never raises (a faulty callback is logged, the call stands)."""
        for subscription in self._subscriptions:
            subscription.offer(event)
        for callback in list(self._callbacks):
            try:
                callback(event)
            except Exception:
                log.exception("a tool-call event callback failed")

    def tool_call(
        self,
        tool: str,
        arguments: dict[str, Any],
        result: CallToolResult,
        error: McpMqttError | None,
        context: Context[Any, Any] | None,
    ) -> None:
        """Publish the event of a finished call (see `McpMqttServer.call_tool`)."""
        decision: Decision = "refused" if error is not None and error.refusal else "allowed"
        if error is not None:
            outcome = error.prefix
        elif result.is_error:
            outcome = "error"
        else:
            structured = result.structured_content or {}
            if structured.get("dry_run") is True:
                outcome = "dry_run"
            elif structured.get("status") == "pending":
                outcome = "pending_approval"
            elif structured.get("timed_out") is True:
                outcome = "timed_out"
            else:
                outcome = "ok"
        topic = next((arguments[k] for k in _TOPIC_ARGUMENTS if isinstance(arguments.get(k), str)), None)
        self.publish(ToolEvent(time.time(), caller_name(context), tool, topic, decision, outcome))


class TopicChanges:
    """The live state's one listener, fanned out: resource notifications, and the console's streams.

    Runs on the per-message path: each listener must be a few dict or set operations.
    """

    def __init__(self, *listeners: Callable[[str, bool], None]) -> None:
        self._listeners = list(listeners)

    def __call__(self, topic: str, is_new: bool) -> None:
        for listener in self._listeners:
            listener(topic, is_new)

    def listen(self, listener: Callable[[str, bool], None]) -> Callable[[], None]:
        """Call `listener` with (topic, is_new_topic) after every change; returns the stopping function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)


def caller_name(context: Context[Any, Any] | None) -> str:
    """Who is calling, for people to read: the key or token's client id when the request carried one,
    else the MCP client's name and version and the first characters of its HTTP session, if any."""
    token = get_access_token()
    if token is not None:
        return token.client_id
    client = session = None
    if context is not None:
        try:
            params = context.session.client_params
            headers = context.headers
        except ValueError:  # outside any request
            pass
        else:
            if params is not None:
                client = f"{params.client_info.name}/{params.client_info.version}"
            if headers is not None:
                session = headers.get("mcp-session-id")
    name = client or "an MCP client"
    return f"{name} (session {session[:8]})" if session else name


def caller_owner(context: Context[Any, Any] | None) -> str:
    """Whose a thing made by this call is (an approval): the key or token, else the HTTP session, else
    "local" (stdio serves one client, and HTTP without a key or session cannot tell callers apart)."""
    token = get_access_token()
    if token is not None:
        return f"token:{token.client_id}"
    if context is not None:
        try:
            headers = context.headers
        except ValueError:
            headers = None
        if headers is not None and (session := headers.get("mcp-session-id")):
            return f"session:{session}"
    return "local"
