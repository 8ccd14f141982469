"""The console's Starlette app: the page and its two assets, sign-in, the event stream, decisions.

Security, in the order a request meets it (the HTTP app's Host and Origin checks came first):

- every response carries a strict Content-Security-Policy (scripts and styles from this origin only,
  no framing, no inline code) and ``X-Content-Type-Options: nosniff``; the page inserts topic names
  and payloads as text, never as HTML;
- reading (the stream, the session) needs the session cookie; signing in (``POST /console/session``)
  exchanges a key or token for it, once; without authentication configured (loopback only, as for
  /mcp) signing in needs no key;
- changing anything (sign-in, approve, reject, sign-out) needs an ``Origin`` equal to this server's
  own origin; approve and reject also need the session's CSRF token in ``X-CSRF-Token`` and a key
  granted approval;
- a viewer sees only topics its key may read or write: in the tree, the feed and the queue.

The stream coalesces: the message path only marks a topic as changed (a set insertion per open
console); each stream sends the changed topics' current values at most every `_FLUSH` seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any

from mcp.server.auth.provider import TokenVerifier
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from mcpmqtt.config.http import HttpSettings
from mcpmqtt.errors import InvalidArgument
from mcpmqtt.rules.payloads import decode_payload
from mcpmqtt.rules.policy import Allowlist
from mcpmqtt.server.approvals import Approval, ApprovalQueue
from mcpmqtt.server.build import McpMqttServer
from mcpmqtt.server.context import Access
from mcpmqtt.server.events import Subscription, ToolEvent
from mcpmqtt.server.live_state import TopicState
from mcpmqtt.transports.console.sessions import SESSION_SECONDS, ConsoleSession, Sessions

log = logging.getLogger(__name__)

CONSOLE_PATH = "/console"
COOKIE = "mcpmqtt_console"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
_ASSETS = {
    "": ("console.html", "text/html; charset=utf-8"),
    "/console.js": ("console.js", "text/javascript; charset=utf-8"),
    "/console.css": ("console.css", "text/css; charset=utf-8"),
}
_FLUSH = 0.25  # seconds: the most a value waits in the server before it is sent
_KEEPALIVE = 15.0
_FEED_BACKLOG = 200
_PREVIEW_BYTES = 1024
_STREAM_CALLS = 256

HistoryProvider = Callable[[str], Sequence[float] | None]
"""Recent numeric values of a topic for its sparkline, or None (history, issue 12, fills this)."""
DevicesProvider = Callable[[Allowlist], list[dict[str, Any]]]
"""The devices a viewer may see, as plain records (discovery, issue 13, fills this)."""


@dataclass(eq=False)
class _Stream:
    """One open console: what changed since its last flush, and the event that wakes it."""

    session_id: str
    session: ConsoleSession
    wake: asyncio.Event
    calls: Subscription
    topics: set[str] = field(default_factory=set)
    approvals: set[str] = field(default_factory=set)
    readable: dict[str, bool] = field(default_factory=dict)
    """Whether the viewer may read each topic, decided once per topic (the allowlist is fixed)."""


class Console:
    """The console of one server; `app()` is the Starlette app mounted at /console."""

    def __init__(
        self,
        server: McpMqttServer,
        verifier: TokenVerifier | None,
        settings: HttpSettings,
        history_provider: HistoryProvider | None = None,
        devices_provider: DevicesProvider | None = None,
    ) -> None:
        self.server = server
        self.verifier = verifier
        self.settings = settings
        self.history_provider = history_provider
        self.devices_provider = devices_provider
        self.sessions = Sessions()
        self.recent: deque[ToolEvent] = deque(maxlen=_FEED_BACKLOG)
        self._streams: set[_Stream] = set()
        self._assets = {
            path: (files(__package__).joinpath("static", name).read_bytes(), kind)
            for path, (name, kind) in _ASSETS.items()
        }
        queue = server.runtime.approvals
        assert queue is not None  # build_server always makes one
        self.queue: ApprovalQueue = queue
        queue.reviewable = True  # a person can now decide: publishes nobody can confirm wait here
        queue.listen(self._approval_changed)
        server.topic_changes.listen(self._topic_changed)
        server.events.on_tool_call(self.recent.append)

    # ---- what the server tells us (on the message path or in a tool call: keep it cheap) ----------

    def _topic_changed(self, topic: str, _: bool) -> None:
        for stream in self._streams:
            stream.topics.add(topic)
            stream.wake.set()

    def _approval_changed(self, approval: Approval) -> None:
        for stream in self._streams:
            stream.approvals.add(approval.id)
            stream.wake.set()

    # ---- the app --------------------------------------------------------------------------------

    def app(self) -> Starlette:
        routes = [
            Route(CONSOLE_PATH + path, self._asset(path), methods=["GET", "HEAD"]) for path in self._assets
        ]
        routes += [
            Route(CONSOLE_PATH + "/", lambda _: RedirectResponse(CONSOLE_PATH, headers=HEADERS)),
            Route(CONSOLE_PATH + "/session", self.session, methods=["GET", "POST", "DELETE"]),
            Route(CONSOLE_PATH + "/events", self.events, methods=["GET"]),
            Route(CONSOLE_PATH + "/approvals/{approval_id}/{decision}", self.decide, methods=["POST"]),
        ]
        return Starlette(routes=routes)

    def _asset(self, path: str) -> Callable[[Request], Any]:
        body, kind = self._assets[path]

        async def asset(_: Request) -> Response:
            return Response(body, media_type=kind, headers=HEADERS)

        return asset

    def _signed_in(self, request: Request) -> ConsoleSession | None:
        return self.sessions.get(request.cookies.get(COOKIE))

    async def session(self, request: Request) -> Response:
        """GET: who is signed in (and the CSRF token); POST: sign in; DELETE: sign out."""
        if request.method == "GET":
            session = self._signed_in(request)
            if session is None:
                return _json({"signed_in": False, "needs_key": self.verifier is not None})
            return _json(self._describe(session))
        if not _same_origin(request):
            return _refuse(403, "the request must come from this console's own page (Origin)")
        if request.method == "DELETE":
            self.sessions.end(request.cookies.get(COOKIE))
            response = _json({"signed_in": False})
            response.delete_cookie(COOKIE, path=CONSOLE_PATH)
            return response
        granted = await self._grant(request)
        if isinstance(granted, Response):
            return granted
        who, allowlist, may_approve, expires = granted
        session_id, session = self.sessions.create(who, allowlist, may_approve, expires)
        response = _json(self._describe(session))
        response.set_cookie(
            COOKIE,
            session_id,
            max_age=SESSION_SECONDS,
            path=CONSOLE_PATH,
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        log.info("console: %s signed in", who)
        return response

    async def _grant(self, request: Request) -> tuple[str, Allowlist, bool, int | None] | Response:
        """What the key in the request grants, or the response refusing it."""
        runtime = self.server.runtime
        if self.verifier is None:  # no authentication configured: loopback only, open as /mcp is
            return "console", runtime.allowlist, True, None
        try:
            body = await request.json()
        except ValueError:
            body = None
        key = body.get("key") if isinstance(body, dict) else None
        if not isinstance(key, str) or not key or len(key) > 8192:
            return _refuse(400, 'send {"key": "<an API key or access token>"}')
        access = await self.verifier.verify_token(key)
        if access is None:
            return _refuse(401, "that key or token is not accepted")
        oauth = self.settings.oauth
        if oauth is not None and not set(oauth.required_scopes) <= set(access.scopes):
            return _refuse(403, f"the token lacks a required scope ({', '.join(oauth.required_scopes)})")
        allowlist = access.allowlist if isinstance(access, Access) and access.allowlist else runtime.allowlist
        may_approve = isinstance(access, Access) and access.may_approve
        return access.client_id, allowlist, may_approve, access.expires_at

    def _describe(self, session: ConsoleSession) -> dict[str, Any]:
        return {
            "signed_in": True,
            "who": session.who,
            "may_approve": session.may_approve,
            "csrf": session.csrf,
            "needs_key": self.verifier is not None,
        }

    async def decide(self, request: Request) -> Response:
        """Approve or reject one queued publish."""
        session = self._signed_in(request)
        if session is None:
            return _refuse(401, "sign in first")
        if not _same_origin(request):
            return _refuse(403, "the request must come from this console's own page (Origin)")
        if not session.csrf_matches(request.headers.get("x-csrf-token")):
            return _refuse(403, "missing or wrong CSRF token; reload the console")
        if not session.may_approve:
            return _refuse(403, f"{session.who} may not approve or reject publishes")
        decision = request.path_params["decision"]
        if decision not in ("approve", "reject"):
            return _refuse(404, "no such action; use approve or reject")
        approval = self.queue.find(request.path_params["approval_id"])
        if approval is None or not session.visible(approval.topic):
            return _refuse(404, "no such approval")
        try:
            decided = await self.queue.decide(approval.id, decision, session.who)
        except InvalidArgument as exc:
            return _refuse(409, str(exc))
        log.info("console: %s %s approval %s (%s)", session.who, decided.status, approval.id, approval.topic)
        return _json(_approval(decided))

    async def events(self, request: Request) -> Response:
        """The event stream: a snapshot, then what changed, coalesced."""
        session_id = request.cookies.get(COOKIE)
        session = self.sessions.get(session_id)
        if session_id is None or session is None:
            return _refuse(401, "sign in first")
        headers = {**HEADERS, "x-accel-buffering": "no"}
        return StreamingResponse(
            self._run(session_id, session), media_type="text/event-stream", headers=headers
        )

    async def _run(self, session_id: str, session: ConsoleSession) -> AsyncIterator[bytes]:
        # Registered here, when the response starts, so that the `finally` always unregisters it.
        wake = asyncio.Event()
        stream = _Stream(session_id, session, wake, self.server.events.subscribe(_STREAM_CALLS, wake))
        self._streams.add(stream)
        try:
            yield _event("snapshot", self._snapshot(stream.session))
            dropped = 0
            while self.sessions.get(stream.session_id) is not None:  # else signed out or expired
                try:
                    await asyncio.wait_for(stream.wake.wait(), _KEEPALIVE)
                except TimeoutError:
                    yield b": keepalive\n\n"
                    continue
                await asyncio.sleep(_FLUSH)  # let a burst of changes gather into one batch
                stream.wake.clear()
                topics, stream.topics = stream.topics, set()
                approvals, stream.approvals = stream.approvals, set()
                calls = stream.calls.take()
                if topics and (values := self._topics(stream.session, sorted(topics), stream.readable)):
                    yield _event("topics", values)
                if visible_calls := [_call(c) for c in calls if _shows(stream.session, c.topic)]:
                    yield _event("calls", visible_calls)
                if approvals:
                    found = [self.queue.find(approval_id) for approval_id in approvals]
                    shown = [_approval(a) for a in found if a is not None and stream.session.visible(a.topic)]
                    if shown:
                        yield _event("approvals", shown)
                if stream.calls.dropped != dropped:
                    dropped = stream.calls.dropped
                    yield _event("dropped", {"calls": dropped})
        finally:
            self._streams.discard(stream)
            stream.calls.close()

    def _snapshot(self, session: ConsoleSession) -> dict[str, Any]:
        state = self.server.live_state
        notices = ["The approval queue is held in memory: it does not survive a restart of the server."]
        if state is None:
            notices.append("live_state is disabled in the config, so there is no topic tree.")
        if self.history_provider is None:
            notices.append("No sparklines: this server keeps no history.")
        if self.devices_provider is None:
            notices.append("No device list: this server has no device discovery.")
        topics = [topic for topic, _ in state.matching("#")] if state is not None else []
        return {
            **self._describe(session),
            "topics": self._topics(session, topics),
            "calls": [_call(c) for c in self.recent if _shows(session, c.topic)],
            "approvals": [_approval(a) for a in self.queue.all() if session.visible(a.topic)],
            "devices": self.devices_provider(session.allowlist) if self.devices_provider else None,
            "notices": notices,
        }

    def _topics(
        self, session: ConsoleSession, topics: Sequence[str], readable: dict[str, bool] | None = None
    ) -> list[dict[str, Any]]:
        state = self.server.live_state
        if state is None:
            return []
        known = {} if readable is None else readable
        values = []
        for topic in topics:
            allowed = known.get(topic)
            if allowed is None:
                allowed = known[topic] = session.allowlist.readable(topic)
            if allowed and (entry := state.get(topic)) is not None:
                values.append(self._topic(topic, entry))
        return values

    def _topic(self, topic: str, entry: TopicState) -> dict[str, Any]:
        message = entry.last
        text, encoding = decode_payload(message.payload[:_PREVIEW_BYTES])
        value: dict[str, Any] = {
            "topic": topic,
            "value": text,
            "encoding": encoding,
            "retained": message.retain,
            "at": message.received_at,
            "count": entry.messages,
            "cut": entry.truncated or len(message.payload) > _PREVIEW_BYTES,
        }
        if self.history_provider is not None and (points := self.history_provider(topic)):
            value["history"] = list(points)
        return value


def _shows(session: ConsoleSession, topic: str | None) -> bool:
    return topic is None or session.visible(topic)


def _call(event: ToolEvent) -> dict[str, Any]:
    return {
        "at": event.time,
        "caller": event.caller,
        "tool": event.tool,
        "topic": event.topic,
        "decision": event.decision,
        "outcome": event.outcome,
    }


def _approval(approval: Approval) -> dict[str, Any]:
    preview, encoding = decode_payload(approval.payload[:_PREVIEW_BYTES])
    return {
        "id": approval.id,
        "action": approval.action,
        "topic": approval.topic,
        "qos": approval.qos,
        "retain": approval.retain,
        "bytes": len(approval.payload),
        "preview": preview,
        "encoding": encoding,
        "caller": approval.caller,
        "status": approval.status,
        "created": approval.created,
        "expires": approval.expires,
        "decided_by": approval.decided_by,
        "decided_at": approval.decided_at,
        "error": str(approval.error) if approval.error is not None else None,
    }


def _event(name: str, data: object) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _json(data: object, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers=HEADERS)


def _refuse(status: int, error: str) -> JSONResponse:
    return _json({"error": error}, status)


def _same_origin(request: Request) -> bool:
    """Whether the request's Origin is this server's own origin, as the browser reached it."""
    origin, host = request.headers.get("origin"), request.headers.get("host")
    return origin is not None and host is not None and origin == f"{request.url.scheme}://{host}"
