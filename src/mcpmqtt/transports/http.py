"""The HTTP transports: Streamable HTTP at /mcp, or the legacy HTTP+SSE transport at /sse, made safe
to put on a network.

What a request meets, outermost first:

1. a request id (logs.py), for the logs and the `X-Request-Id` response header, and the security
   headers on every response (no sniffing, no framing, no referrer, a Content-Security-Policy that
   allows nothing);
2. `/healthz` (the process is up) and `/readyz` (connected to the broker, not shutting down), which
   answer anyone, with one word: a load balancer needs no more, and nobody learns more;
3. Host and Origin checks (http_guard.py), always (not only on loopback, where the SDK turns them
   on by itself), exact: a Host that is not ours is 421, an Origin that is not ours 403, either
   header twice 400. They defeat DNS rebinding, where a web page makes a browser talk to a server
   on the user's network;
4. with `http.api_keys` or `http.oauth` configured, a bearer token in the Authorization header (the
   SDK's middleware; 401 with WWW-Authenticate without a valid one, never read from the URL);
5. the body, read whole within `http.body_timeout` (408) and at most `http.max_body_bytes` (413)
   (http_timeouts.py, which also gives a request's headers `http.header_timeout`), then the session
   limits (http_sessions.py), then the SDK's transport.

Shutdown (SIGTERM, Ctrl-C): uvicorn stops accepting connections and waits for the ones in flight.
Idle event streams are ended at once, calls in flight get `http.shutdown_timeout` seconds to finish,
and a call still running then is answered with a JSON-RPC error saying so rather than a dropped
connection. Only then does the lifespan disconnect from the broker, cleanly.

uvicorn's default logging writes its access log to stdout; here it goes through our logging
configuration instead (stderr or the log file), as every log of this program does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import socket
import uuid
from collections.abc import Callable
from typing import Literal

import anyio
import uvicorn
from mcp.server.auth.middleware.auth_context import AuthContextMiddleware
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, BearerAuthBackend, RequireAuthMiddleware
from mcp.server.auth.routes import build_resource_metadata_url, create_protected_resource_routes
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import AnyHttpUrl, ConfigDict, TypeAdapter
from sse_starlette.sse import AppStatus
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, BaseUser
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcpmqtt.config.http import HttpSettings, is_loopback
from mcpmqtt.logs import REQUEST_ID
from mcpmqtt.server.build import McpMqttServer
from mcpmqtt.server.context import Runtime
from mcpmqtt.transports.auth import CLIENT_ADDRESS, build_verifier, refusal
from mcpmqtt.transports.http_guard import HostOriginGuard, parse_host, parse_origin
from mcpmqtt.transports.http_sessions import SessionLimits
from mcpmqtt.transports.http_timeouts import BodyDeadline, timed_h11

log = logging.getLogger(__name__)

Transport = Literal["http", "sse"]
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_EXACT_URL = TypeAdapter(AnyHttpUrl, config=ConfigDict(url_preserve_empty_path=True))
# Our guard checks Host and Origin exactly before any request reaches the SDK's app; the SDK's own
# check (by prefix) would only refuse some equivalent spellings we accept (a name in capitals).
_SDK_SECURITY = TransportSecuritySettings(enable_dns_rebinding_protection=False)
_SHUTDOWN_ERROR = -32000  # JSON-RPC "server error" range: the call did not fail, the server went away


def host_origin_guard(host: str, settings: HttpSettings) -> HostOriginGuard:
    """Loopback names, a specific bind address, and the configured hosts; loopback origins (any
    port) and the configured ones (exactly: browsers send the port only when it is not the default).
    """
    hosts = [place for name in _accepted_hosts(host, settings) if (place := parse_host(name)) is not None]
    origins = [parse_origin(f"http://{name}", any_port=True) for name in _LOOPBACK_HOSTS]
    origins += [parse_origin(origin) for origin in settings.allowed_origins]
    return HostOriginGuard(hosts, [origin for origin in origins if origin is not None])


def _accepted_hosts(host: str, settings: HttpSettings) -> list[str]:
    """Host names, each with an optional port (none: any port)."""
    hosts: list[str] = [*_LOOPBACK_HOSTS]
    if not is_loopback(host) and not _is_wildcard(host):
        hosts.append(f"[{host}]" if ":" in host else host)  # what the operator chose to bind to
    return hosts + settings.allowed_hosts


def _is_wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::")


class _Shutdown:
    """Set when the server begins to shut down; `deadline` is when calls in flight are cut off."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.started = asyncio.Event()
        self.deadline = asyncio.Event()

    def begin(self) -> None:
        if self.started.is_set():
            return
        self.started.set()
        asyncio.get_running_loop().call_later(self.grace, self.deadline.set)


class _GracefulServer(uvicorn.Server):
    """uvicorn, telling the app when shutdown begins (uvicorn itself only stops accepting)."""

    def __init__(self, config: uvicorn.Config, shutdown: _Shutdown) -> None:
        super().__init__(config)
        self._shutdown = shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._shutdown.begin()
        await super().shutdown(sockets)


class _RequestIds:
    """Gives every HTTP request an id for the logs, and echoes it in the `X-Request-Id` header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Request(scope).headers.get("x-request-id", "")
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex[:16]
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        token = REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)


SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
"""On every response: nothing here is a page to render, frame or leak a URL from."""


class _SecurityHeaders:
    """Adds `SECURITY_HEADERS` to every response, unless the response sets one of them itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {key.lower() for key, _ in headers}
                headers += [(key, value) for key, value in SECURITY_HEADERS if key not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _Graceful:
    """Ends requests in flight at shutdown: idle event streams at once, calls at the deadline.

    A call cut off at the deadline is answered, if its response has not begun, with a 503 carrying a
    JSON-RPC error for its id; if it has (an SSE stream), with that error as the stream's last event.
    """

    def __init__(self, app: ASGIApp, shutdown: _Shutdown, transport: Transport) -> None:
        self.app = app
        self.shutdown = shutdown
        self.transport = transport

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # A Streamable HTTP GET is the session's idle notification stream; every HTTP+SSE response
        # goes through its GET stream, so that one lives until the deadline like any call.
        idle_stream = scope["method"] == "GET" and self.transport == "http"
        until = self.shutdown.started if idle_stream else self.shutdown.deadline
        body = bytearray()
        started: list[Message] = []
        finished = False

        async def receive_and_keep() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(body) < 1024 * 1024:
                body.extend(message.get("body", b""))
            return message

        async def send_and_note(message: Message) -> None:
            nonlocal finished
            if message["type"] == "http.response.start":
                started.append(message)
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                finished = True
            await send(message)

        async with anyio.create_task_group() as tasks:

            async def cut_off() -> None:
                await until.wait()
                tasks.cancel_scope.cancel()

            tasks.start_soon(cut_off)
            await self.app(scope, receive_and_keep, send_and_note)
            tasks.cancel_scope.cancel()
        if until.is_set() and not finished:
            await self._end(send, started, bytes(body), idle_stream)

    async def _end(self, send: Send, started: list[Message], body: bytes, idle_stream: bool) -> None:
        if idle_stream:
            if started:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        log.warning(
            "shutting down: cut off a request still running after the %g s grace", self.shutdown.grace
        )
        error = _shutdown_error(body, self.shutdown.grace)
        if not started:
            await _send(send, 503, error, b"application/json")
        elif error is not None and _content_type(started[0]).startswith(b"text/event-stream"):
            event = b"event: message\ndata: " + error + b"\n\n"
            await send({"type": "http.response.body", "body": event, "more_body": False})
        else:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


def _shutdown_error(body: bytes, grace: float) -> bytes | None:
    """The JSON-RPC error answering the request in `body` (None if it is not a request)."""
    try:
        request = json.loads(body)
    except ValueError:
        return None
    if not isinstance(request, dict) or "id" not in request or "method" not in request:
        return None
    message = (
        f"server shutting down: the call was still running {grace:g} s after the server was asked to "
        "stop, so it was cut off; it may or may not have taken effect. Try again (another replica, "
        "or this one once it is back)."
    )
    return json.dumps(
        {"jsonrpc": "2.0", "id": request["id"], "error": {"code": _SHUTDOWN_ERROR, "message": message}}
    ).encode()


def _content_type(start: Message) -> bytes:
    return next((v for k, v in start.get("headers", []) if k.lower() == b"content-type"), b"")


async def _send(send: Send, status: int, body: bytes | None, content_type: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", str(len(body or b"")).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body or b""})


class _Router:
    """Lifespan to the app that holds the broker connection; health and metadata to the public
    routes; the rest, once the Host and Origin pass, to the (authenticated) MCP app."""

    def __init__(self, lifespan: ASGIApp, protected: ASGIApp, public: Starlette, guard: HostOriginGuard):
        self.lifespan = lifespan
        self.protected = protected
        self.public = public
        self.public_paths = frozenset(route.path for route in public.routes if isinstance(route, Route))
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(scope, receive, send)
        elif scope["type"] == "http" and scope["path"] in self.public_paths:
            await self.public(scope, receive, send)
        elif scope["type"] != "http":
            await send({"type": "websocket.close"})  # no WebSocket endpoint here
        elif (refusal := self.guard.refusal(scope)) is not None:
            await refusal(scope, receive, send)
        else:
            client = scope.get("client")
            token = CLIENT_ADDRESS.set(str(client[0]) if client else "unknown")
            try:
                await self.protected(scope, receive, send)
            finally:
                CLIENT_ADDRESS.reset(token)


def _health(ready: Callable[[], bool]) -> list[Route]:
    headers = {"cache-control": "no-store"}

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok\n", headers=headers)

    async def readyz(_: Request) -> Response:
        if ready():
            return PlainTextResponse("ready\n", headers=headers)
        return PlainTextResponse("not ready\n", status_code=503, headers=headers)

    return [
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
    ]


def build_app(
    server: McpMqttServer, transport: Transport, host: str, runtime: Runtime, shutdown: _Shutdown
) -> ASGIApp:
    """The whole HTTP application for `server` bound to `host` (see the module docstring)."""
    settings = runtime.config.http
    security = _SDK_SECURITY
    if transport == "http":
        mcp = server.streamable_http_app(
            host=host,
            transport_security=security,
            max_request_body_size=settings.max_body_bytes,
            session_idle_timeout=settings.session_idle_timeout,
            max_sessions=settings.max_sessions,
        )
        lifespan: ASGIApp = mcp  # the session manager enters the server's lifespan once, at start-up
    else:
        mcp = server.sse_app(
            host=host, transport_security=security, max_request_body_size=settings.max_body_bytes
        )
        # The SDK's SSE app has no lifespan of its own and enters the server's per session: hold the
        # broker connection here for the whole process, so that the sessions' entries are nested.
        holder = server.lifespan_holder
        lifespan = Starlette(lifespan=lambda _: holder.hold())
    public = _health(lambda: runtime.broker.connected and not shutdown.started.is_set())
    protected: ASGIApp = mcp
    if transport == "http":  # an SSE session lives as long as its connection: nothing to bound here
        limits = settings.max_sessions, settings.max_sessions_per_client, settings.session_idle_timeout
        protected = SessionLimits(mcp, *limits)
    protected = BodyDeadline(protected, settings.body_timeout, settings.max_body_bytes)
    verifier = build_verifier(settings, runtime.allowlist)
    if verifier is not None:
        metadata_url: AnyHttpUrl | None = None
        scopes: list[str] = []
        if (oauth := settings.oauth) is not None:
            resource = _url(oauth.resource)
            scopes = oauth.required_scopes
            supported = sorted({*scopes, *(oauth.scopes or {})}) or None
            public += create_protected_resource_routes(resource, [_url(oauth.issuer)], supported)
            metadata_url = build_resource_metadata_url(resource)
        protected = AuthenticationMiddleware(
            _ExplainingRequireAuth(AuthContextMiddleware(protected), scopes, metadata_url),
            backend=_ExplainingBearer(verifier),
        )
    guard = host_origin_guard(host, settings)
    router = _Router(lifespan, _Graceful(protected, shutdown, transport), Starlette(routes=public), guard)
    return _SecurityHeaders(_RequestIds(router))


_REFUSAL = "mcpmqtt.bearer_refusal"
"""The request scope's key for why its bearer token was refused."""


class _ExplainingBearer(BearerAuthBackend):
    """The SDK's bearer check, noting in the request why it was refused: no token, a wrong one, an
    expired one."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        refusal.set(None)
        result: tuple[AuthCredentials, BaseUser] | None = await super().authenticate(conn)
        if result is None:
            header = conn.headers.get("authorization", "")
            if not header.lower().startswith("bearer "):
                why = "no bearer token: send the header 'Authorization: Bearer <API key or access token>'"
            else:  # the verifier said why; if it accepted the token, the SDK found it expired
                why = refusal.get() or "the access token has expired; get a new one"
            conn.scope[_REFUSAL] = why
        return result


class _ExplainingRequireAuth(RequireAuthMiddleware):
    """The SDK's check, with a 401 whose error_description says why instead of only "Authentication
    required"."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        why = scope.get(_REFUSAL)
        if why is None or isinstance(scope.get("user"), AuthenticatedUser):
            await super().__call__(scope, receive, send)
            return
        quoted = re.sub(r'["\\]|[^\x20-\x7e]', "'", why)  # RFC 6750: no quote, backslash or non-ASCII
        challenge = f'Bearer error="invalid_token", error_description="{quoted}"'
        if self.resource_metadata_url is not None:
            challenge += f', resource_metadata="{self.resource_metadata_url}"'
        body = {"error": "invalid_token", "error_description": why}
        await JSONResponse(body, status_code=401, headers={"WWW-Authenticate": challenge})(
            scope, receive, send
        )


def _url(text: str) -> AnyHttpUrl:
    """The URL as configured: an issuer is compared as a string (RFC 8414), so no '/' may be added."""
    return _EXACT_URL.validate_python(text)


def http_server(server: McpMqttServer, transport: Transport, host: str, port: int) -> uvicorn.Server:
    """The web server for `server`, not yet started: a caller that runs it in a task can watch
    `started` and end it gracefully (lifespan included) by setting `should_exit`."""
    runtime = server.runtime
    # sse-starlette (the SDK's SSE responses) ends every event stream the moment uvicorn is asked to
    # stop, which would cut off calls in flight whose answer is on its way; _Graceful ends them instead.
    AppStatus.disable_automatic_graceful_drain()  # type: ignore[no-untyped-call]
    grace = runtime.config.http.shutdown_timeout
    shutdown = _Shutdown(grace)
    app = build_app(server, transport, host, runtime, shutdown)
    settings = runtime.config.http
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=timed_h11(settings.header_timeout, settings.body_timeout),
        log_config=None,
        lifespan="on",
        server_header=False,
        # A backstop: _Graceful ends every request at `grace`; this cancels whatever still lingers.
        timeout_graceful_shutdown=math.ceil(grace) + 2,
    )
    return _GracefulServer(config, shutdown)
