"""Bounds on the sessions of the 2025-11-25 protocol era: how many one client may hold open.

A session costs memory (about 40 kB, measured) until it is closed, and a client that never closes its
sessions would otherwise hold that memory for as long as the server runs. The SDK closes a session
idle for `http.session_idle_timeout` and refuses a new one (503) past `http.max_sessions` overall;
this middleware refuses a client (its API key or token when authenticated, else its address) a new
session past `http.max_sessions_per_client` (429), so that one client cannot take all the room, and
says the same, more clearly than the SDK, past `http.max_sessions` (503).

It counts what it sees: a session opens when a request without `Mcp-Session-Id` is answered with
one, and ends with a DELETE, with a 404 for its id, or after the same idle time as the SDK's (no
request in flight for `idle_timeout` seconds). Sessionless 2026-07-28 requests are never counted.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

_SESSION_HEADER = b"mcp-session-id"
_VERSION_HEADER = b"mcp-protocol-version"
_TOO_MANY = -32000  # JSON-RPC "server error" range
_PRUNE_INTERVAL = 1.0


@dataclass
class _Session:
    client: str
    in_flight: int = 0
    idle_since: float = 0.0


class SessionLimits:
    """Refuses a client a new session while it holds `per_client` of them (see the module docstring)."""

    def __init__(self, app: ASGIApp, limit: int, per_client: int, idle_timeout: float) -> None:
        self.app = app
        self.limit = limit
        self.per_client = per_client
        self.idle_timeout = idle_timeout
        self._sessions: dict[str, _Session] = {}
        self._by_client: defaultdict[str, set[str]] = defaultdict(set)
        self._opening: defaultdict[str, int] = defaultdict(int)
        self._pruned = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        session_id = _header(scope, _SESSION_HEADER)
        version = _header(scope, _VERSION_HEADER)
        if session_id is not None:
            await self._use(session_id, scope, receive, send)
        elif scope["method"] == "POST" and (version is None or version in HANDSHAKE_PROTOCOL_VERSIONS):
            await self._open(scope, receive, send)
        else:  # a sessionless 2026-07-28 request, or one the SDK refuses anyway
            await self.app(scope, receive, send)

    async def _open(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = _client(scope)
        self._prune()
        held = len(self._by_client.get(client, ())) + self._opening.get(client, 0)
        if held >= self.per_client:
            log.warning("refused client %s a new session: it holds %d open sessions", client, held)
            await _refuse(send, 429, f"this client already holds {held}, the most one client may", self)
            return
        if len(self._sessions) + sum(self._opening.values()) >= self.limit:
            log.warning("refused a new session: %d sessions are open, the most allowed", len(self._sessions))
            await _refuse(send, 503, f"the server holds {self.limit}, the most it may", self)
            return
        opened: list[str] = []

        async def note_session(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                given = next((v for k, v in message.get("headers", []) if k.lower() == _SESSION_HEADER), None)
                if given is not None:
                    opened.append(given.decode("latin-1"))
                    self._sessions[opened[0]] = _Session(client, in_flight=1)
                    self._by_client[client].add(opened[0])
            await send(message)

        self._opening[client] += 1
        try:
            await self.app(scope, receive, note_session)
        finally:
            self._opening[client] -= 1
            if not self._opening[client]:
                del self._opening[client]
            if opened:
                self._done(opened[0])

    async def _use(self, session_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        session = self._sessions.get(session_id)
        if session is None:
            await self.app(scope, receive, send)
            return
        status: list[int] = []

        async def note_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        session.in_flight += 1
        try:
            await self.app(scope, receive, note_status)
        finally:
            ended = status and (status[0] == 404 or (scope["method"] == "DELETE" and status[0] < 300))
            if ended:
                self._forget(session_id)
            else:
                self._done(session_id)

    def _done(self, session_id: str) -> None:
        session = self._sessions.get(session_id)
        if session is not None:
            session.in_flight -= 1
            session.idle_since = time.monotonic()

    def _forget(self, session_id: str) -> None:
        session = self._sessions.pop(session_id, None)
        if session is not None:
            ids = self._by_client[session.client]
            ids.discard(session_id)
            if not ids:
                del self._by_client[session.client]

    def _prune(self) -> None:
        """Forget the sessions the SDK has closed for idleness (checked at most once a second)."""
        now = time.monotonic()
        if now - self._pruned < _PRUNE_INTERVAL:
            return
        self._pruned = now
        expired = [
            session_id
            for session_id, session in self._sessions.items()
            if session.in_flight == 0 and now - session.idle_since >= self.idle_timeout
        ]
        for session_id in expired:
            self._forget(session_id)


def _client(scope: Scope) -> str:
    """Who holds a session: the API key or token's client when authenticated, else the address."""
    user = scope.get("user")
    if isinstance(user, AuthenticatedUser):
        return user.access_token.client_id
    address = scope.get("client")
    return str(address[0]) if address else "unknown"


def _header(scope: Scope, name: bytes) -> str | None:
    return next((v.decode("latin-1") for k, v in scope["headers"] if k.lower() == name), None)


async def _refuse(send: Send, status: int, why: str, limits: SessionLimits) -> None:
    message = (
        f"too many open sessions: {why}. Close the sessions you no longer use (HTTP DELETE with their "
        f"Mcp-Session-Id); an unused one closes by itself after {limits.idle_timeout:g} s without "
        "requests."
    )
    body = json.dumps(
        {"jsonrpc": "2.0", "id": None, "error": {"code": _TOO_MANY, "message": message}}
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
