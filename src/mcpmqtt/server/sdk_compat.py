"""The one module that touches private names of the MCP SDK (mcp 2.3).

`MCPServer` registers neither `resources/subscribe` nor a `resources/list` of our own, and its stdio
runner cannot take our relay; all three need the low-level server it wraps. A resource subscription
must notify a client long after the request that made it, which needs the connection behind a
request's session. Each such reach is written here once, so that an SDK upgrade is checked in one
place (tests/test_live.py and tests/test_stdio_wire.py exercise every one of them).
"""

from __future__ import annotations

from typing import Any

from mcp.server.connection import Connection
from mcp.server.lowlevel.server import NotificationOptions, Server
from mcp.server.mcpserver import MCPServer


def lowlevel(server: MCPServer[Any]) -> Server[Any]:
    """The low-level server an `MCPServer` wraps (where extra request handlers go)."""
    inner: Server[Any] = server._lowlevel_server
    return inner


def connection_of(ctx: Any) -> Connection:
    """The client connection behind a low-level request context.

    The SDK builds a ServerSession per request, so that object dies with the request; the
    connection it wraps lives as long as the client is connected, and can notify it later.
    """
    connection: Connection = ctx.session._connection
    return connection


def advertise_resource_list_changes(server: MCPServer[Any]) -> None:
    """Make initialize announce `resources.listChanged`, which handshake-era clients read there."""
    inner = lowlevel(server)
    options = inner.create_initialization_options
    inner.create_initialization_options = lambda notification_options=None, *a, **k: options(  # type: ignore[method-assign]
        notification_options or NotificationOptions(resources_changed=True), *a, **k
    )
