"""`resources/subscribe`, `resources/unsubscribe` (2025-11-25) and `subscriptions/listen` (2026-07-28) for
every subscribable resource: topics and watches.

Each kind of resource registers a guard for its URI prefix, which raises the typed error that says why
the caller may not subscribe (a topic it may not read, a watch that is not its own); a URI that no guard
knows is refused. The handlers are registered once, whichever features are on, so that no feature has to
know about the others.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.subscriptions import ListenHandler
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INVALID_PARAMS,
    EmptyResult,
    SubscribeRequestParams,
    SubscriptionsListenRequestParams,
    SubscriptionsListenResult,
    UnsubscribeRequestParams,
)

from mcpmqtt.errors import InvalidArgument, McpMqttError
from mcpmqtt.server import sdk_compat
from mcpmqtt.server.notifier import Notifier

Guard = Callable[[str, Any], None]
"""Called with (uri, the low-level request context); raises an McpMqttError if the caller may not."""


class SubscribeGate:
    """The subscription handlers of both protocol eras, with a guard per kind of resource."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        self._guards: dict[str, tuple[str, Guard]] = {}

    def guard(self, prefix: str, template: str, check: Guard) -> None:
        """Let clients subscribe to URIs starting with `prefix` (named by `template`) when `check` passes."""
        self._guards[prefix] = (template, check)

    def check(self, uri: str, ctx: Any) -> None:
        """Raise the protocol error naming the rule unless the caller may subscribe to `uri`."""
        try:
            for prefix, (_, check) in self._guards.items():
                if uri.startswith(prefix):
                    check(uri, ctx)
                    return
            known = ", ".join(template for template, _ in self._guards.values()) or "none on this server"
            raise InvalidArgument(f"{uri} is not a resource you can subscribe to (subscribable: {known})")
        except McpMqttError as exc:
            raise MCPError(INVALID_PARAMS, str(exc)) from None

    def register(self, server: MCPServer[Any]) -> None:
        """Install the handlers on the low-level server (MCPServer registers none of them)."""
        notifier = self.notifier
        lowlevel = sdk_compat.lowlevel(server)

        async def subscribe(ctx: Any, params: SubscribeRequestParams) -> EmptyResult:
            self.check(params.uri, ctx)
            notifier.legacy.setdefault(params.uri, weakref.WeakSet()).add(sdk_compat.connection_of(ctx))
            return EmptyResult()

        async def unsubscribe(ctx: Any, params: UnsubscribeRequestParams) -> EmptyResult:
            subscribed = notifier.legacy.get(params.uri)
            if subscribed is not None:
                subscribed.discard(sdk_compat.connection_of(ctx))
            return EmptyResult()

        listen = ListenHandler(notifier.bus)

        async def guarded_listen(
            ctx: Any, params: SubscriptionsListenRequestParams
        ) -> SubscriptionsListenResult:
            for uri in params.notifications.resource_subscriptions or ():
                self.check(uri, ctx)
            return await listen(ctx, params)

        lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
        lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)
        lowlevel.add_request_handler("subscriptions/listen", SubscriptionsListenRequestParams, guarded_listen)
