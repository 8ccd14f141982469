"""Topic resources' URIs, and the notifications that tell clients a resource (a topic, a watch) changed,
in both protocol eras.

`resources/subscribe` (2025-11-25) subscribers are kept per URI by connection; `subscriptions/listen`
(2026-07-28) listeners go through the SDK's subscription bus. Updates are coalesced per topic, so a fast
topic (or watch) cannot flood a client, and new topics raise a (coalesced) list-changed notification.
"""

from __future__ import annotations

import asyncio
import urllib.parse
import weakref
from collections.abc import Awaitable

from mcp.server.connection import Connection
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourcesListChanged, ResourceUpdated

TOPIC_TEMPLATE = "mcpmqtt://topic/{+topic}"
TOPIC_PREFIX = "mcpmqtt://topic/"
_LIST_CHANGED_INTERVAL = 5.0


def topic_uri(topic: str) -> str:
    """The resource URI of a topic; '?', '%' and the like are escaped, '/' and '$' are kept."""
    return TOPIC_PREFIX + urllib.parse.quote(topic, safe="/$!&'()*+,;=:@")


def topic_of(uri: str) -> str | None:
    """The topic a resource URI names, or None if it is not a topic URI."""
    if not uri.startswith(TOPIC_PREFIX):
        return None
    return urllib.parse.unquote(uri[len(TOPIC_PREFIX) :])


class Notifier:
    """Sends resource notifications, at most one per resource per interval, to both kinds of clients."""

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
        self.resource_changed(topic_uri(topic))
        if is_new and not self._list_window:
            self._list_window = True
            asyncio.get_running_loop().call_later(_LIST_CHANGED_INTERVAL, self._list_changed)

    def resource_changed(self, uri: str) -> None:
        """Tell the resource's subscribers it changed, at once or at the end of its window."""
        if uri in self._windows:
            self._windows[uri] = True  # coalesced into the notification at the window's end
        else:
            self._windows[uri] = False
            self._send(self._updated(uri))
            asyncio.get_running_loop().call_later(self.interval, self._window_closed, uri)

    def forget(self, uri: str) -> None:
        """The resource is gone (a watch ended): drop its handshake-era subscribers."""
        self.legacy.pop(uri, None)

    def shape_changed(self, topic: str) -> None:
        """The shape observer's listener: a topic's inferred schema changed.

        Sent at once, outside the topic's coalescing window: a new shape is rare (the observer samples
        each topic at most once per `shapes.sample_interval`) and is news a client should not wait for.
        """
        self._send(self._updated(topic_uri(topic)))

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
