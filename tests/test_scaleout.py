"""Scale-out (issue 4.6): two replicas behind a round-robin reverse proxy, one broker.

A 2026-07-28 client is sessionless: each of its requests may land on either replica and works. A
2025-11-25 client holds a session that lives in one replica: without sticky routing its requests fail
on the other one, with the routing that docs/deploying.md describes (learn the replica from the
`Mcp-Session-Id` the initialize response carries) they work.

The proxy is a few lines of ASGI over httpx2 in this process, so the test needs nothing installed.
"""

from __future__ import annotations

import itertools
import json
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager

import anyio
import httpx2
import pytest
import uvicorn
from http_server import ServerProcess, config_for, free_port, http_client
from mcp.shared.exceptions import MCPError
from mcp_client import TOOLS, structured
from mosquitto import Mosquitto
from starlette.types import Receive, Scope, Send

pytestmark = pytest.mark.anyio

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class Proxy:
    """Round-robin per request; with `sticky`, requests of a session go where the session began."""

    def __init__(self, backends: list[str], *, sticky: bool) -> None:
        self.backends = backends
        self.sticky = sticky
        self.turns = itertools.cycle(range(len(backends)))
        self.sessions: dict[str, int] = {}
        self.calls: Counter[tuple[int, str]] = Counter()  # (backend, MCP method) -> requests
        self.client = httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=120))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await self.client.aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(k.decode(), v.decode()) for k, v in scope["headers"]]
        session = next((v for k, v in headers if k == "mcp-session-id"), None)
        backend = self.sessions[session] if self.sticky and session in self.sessions else next(self.turns)
        method = next((v for k, v in headers if k == "mcp-method"), None) or _method(bytes(body))
        self.calls[(backend, method or scope["method"])] += 1
        url = f"{self.backends[backend]}{scope['path']}"
        request = self.client.build_request(
            scope["method"],
            url,
            headers=[(k, v) for k, v in headers if k not in {"content-length"}],
            content=bytes(body),
        )
        response = await self.client.send(request, stream=True)
        try:
            if (created := response.headers.get("mcp-session-id")) is not None:
                self.sessions.setdefault(created, backend)
            out = [
                (k.encode(), v.encode()) for k, v in response.headers.items() if k.lower() not in _HOP_BY_HOP
            ]
            await send({"type": "http.response.start", "status": response.status_code, "headers": out})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()

    def replicas_that_served(self, method: str) -> set[int]:
        return {backend for (backend, seen), count in self.calls.items() if seen == method and count}


def _method(body: bytes) -> str | None:
    try:
        message = json.loads(body)
    except ValueError:
        return None
    return message.get("method") if isinstance(message, dict) else None


@pytest.fixture(scope="module")
def replicas(broker: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    folder = tmp_path_factory.mktemp("replicas")
    with ExitStack() as stack:
        started = [stack.enter_context(ServerProcess(folder / str(i), config_for(broker))) for i in range(2)]
        for replica in started:
            replica.wait_ready()
        yield started


@asynccontextmanager
async def proxy(replicas: list[ServerProcess], *, sticky: bool) -> AsyncIterator[tuple[Proxy, str]]:
    app = Proxy([replica.base for replica in replicas], sticky=sticky)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(server.serve)
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no event for it
            await anyio.sleep(0.01)
        yield app, f"http://127.0.0.1:{port}/mcp"
        server.should_exit = True


async def test_a_modern_client_works_whichever_replica_serves_each_call(
    replicas: list[ServerProcess], broker: Mosquitto
) -> None:
    topic = f"lab/replicas/{secrets.token_hex(4)}"
    async with proxy(replicas, sticky=False) as (routed, url), http_client(url, mode="auto") as client:
        assert {tool.name for tool in (await client.list_tools()).tools} == TOOLS
        for n in range(4):
            value = f"reading {n}"
            published = await client.call_tool(
                "mqtt_publish", {"topic": topic, "payload": value, "retain": True, "qos": 1}
            )
            assert structured(published)["topic"] == topic
            # The next call goes to the other replica: it reads what this one published, through the broker.
            read = structured(await client.call_tool("mqtt_read", {"topic": topic, "timeout": 5}))
            assert read["message"]["payload"] == value
    assert routed.replicas_that_served("tools/call") == {0, 1}
    for replica in replicas:  # one broker connection per replica, shared by every session it serves
        assert broker.log_text().count(f" as {replica.client_id} ") == 1


async def test_a_legacy_session_needs_sticky_routing(replicas: list[ServerProcess]) -> None:
    async with proxy(replicas, sticky=False) as (_, url):
        with pytest.RaisesGroup(pytest.RaisesGroup(pytest.RaisesExc(MCPError, match="Session not found"))):
            async with http_client(url, mode="legacy") as client:  # initialize on one, the rest on the other
                await client.list_tools()


async def test_a_legacy_session_works_with_sticky_routing(replicas: list[ServerProcess]) -> None:
    async with proxy(replicas, sticky=True) as (routed, url):
        for _ in range(2):  # two sessions: round robin puts them on different replicas
            async with http_client(url, mode="legacy") as client:
                assert {tool.name for tool in (await client.list_tools()).tools} == TOOLS
                read = structured(await client.call_tool("mqtt_read", {"topic": "lab/none", "timeout": 0}))
                assert read["timed_out"] is True
    assert routed.replicas_that_served("initialize") == {0, 1}
    assert len(routed.sessions) == 2 and set(routed.sessions.values()) == {0, 1}
