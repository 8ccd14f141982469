"""What the security probes broke on the HTTP side (issue 10): one broker connection under SSE, log lines
that outside values cannot forge, no payloads in DEBUG logs, bounded sessions, bogus bearer tokens,
slow clients, exact Origin checks, security headers. Each test failed before its fix.
"""

from __future__ import annotations

import io
import json
import logging
import pathlib
import re
import secrets
import socket
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import AsyncExitStack, suppress

import anyio
import httpx2
import psutil
import pytest
from http_server import INITIALIZE, MCP_HEADERS, ServerProcess, bearer, config_for, http_client, post
from mcp.client import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp_client import structured
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from mosquitto import Mosquitto

from mcpmqtt.config import apikeys
from mcpmqtt.logs import configure

pytestmark = pytest.mark.anyio


# ---- SSE: one process, one broker connection -----------------------------------------------------


async def test_sse_sessions_share_the_one_broker_connection(
    broker: Mosquitto, tmp_path: pathlib.Path
) -> None:
    with ServerProcess(tmp_path, config_for(broker), transport="sse") as sse:
        async with AsyncExitStack() as sessions:
            for _ in range(2):  # open together, closed together
                client = await sessions.enter_async_context(
                    Client(sse_client(f"{sse.base}/sse"), mode="legacy")
                )
                published = await client.call_tool("mqtt_publish", {"topic": "lab/sse", "payload": "x"})
                assert structured(published)["topic"] == "lab/sse"
        async with Client(sse_client(f"{sse.base}/sse"), mode="legacy") as third:
            published = await third.call_tool("mqtt_publish", {"topic": "lab/sse", "payload": "y"})
            assert structured(published)["topic"] == "lab/sse"
        assert httpx2.get(f"{sse.base}/readyz").status_code == 200
        connections = broker.log_text().count(f" as {sse.client_id} (")
        assert connections == 1, f"{connections} broker connections for one server"


# ---- log lines that outside values cannot forge ----------------------------------------------------

FORGED = "2026-01-01 00:00:00,000 CRITICAL mcpmqtt [-]: FORGED"
_RECORD_START = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")


def raw_request(server: ServerProcess, head: bytes, body: bytes = b"") -> bytes:
    """One request as raw bytes (headers that no HTTP client would send); the raw response."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(head + b"\r\nconnection: close\r\n\r\n" + body)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    return received


def assert_one_record_per_line(log: bytes, log_format: str) -> None:
    """Every record on one line (a text traceback continues on indented lines); nothing raw that a
    line-splitting reader or a terminal would act on."""
    text = log.decode("utf-8")  # strict: a lone surrogate written raw would fail here
    for unsafe in ("\x1b", "\x85", "\u2028", "\u2029", "\r", "\x0b", "\x0c", "\x1c"):
        assert unsafe not in text, f"{unsafe!r} in the log"
    lines = text.split("\n")
    assert lines.pop() == ""
    assert text.splitlines() == lines
    for line in lines:
        if log_format == "json":
            json.loads(line)
        else:
            assert _RECORD_START.match(line) or line.startswith("    "), line
        assert not line.startswith(FORGED)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_outside_values_cannot_forge_or_split_log_records(
    broker: Mosquitto, tmp_path: pathlib.Path, log_format: str
) -> None:
    forged = FORGED.encode()
    logfile = tmp_path / "server.log"
    args = ("--log-format", log_format, "--logfile", str(logfile))
    with ServerProcess(tmp_path / "http", config_for(broker), args=args) as server:
        for head in (
            b"POST /mcp HTTP/1.1\r\nhost: evil\xc2\x85" + forged + b"\x1b[2J",
            b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\norigin: http://evil\xc2\x85" + forged,
            b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\nmcp-session-id: \xc2\x85"
            + forged
            + b"\r\nmcp-protocol-version: 2025-11-25\r\naccept: application/json, text/event-stream"
            + b"\r\ncontent-type: application/json\r\ncontent-length: 2",
        ):
            assert raw_request(server, head, b"{}").startswith(b"HTTP/1.1 4")
    with ServerProcess(tmp_path / "sse", config_for(broker), transport="sse", args=args) as server:
        query = urllib.parse.quote(f"x\n{FORGED}\u2028{FORGED}\x1b[2J\ud800".encode("utf-8", "surrogatepass"))
        head = f"POST /messages/?session_id={query} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 2"
        head += "\r\ncontent-type: application/json"
        assert raw_request(server, head.encode(), b"{}").startswith(b"HTTP/1.1 4")
    log = logfile.read_bytes()
    assert log.count(b"FORGED") >= 4, log.decode(errors="replace")  # the values did reach the log
    assert_one_record_per_line(log, log_format)


# ---- no payloads at DEBUG ---------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_debug_logs_carry_no_tool_arguments_or_payloads(
    broker: Mosquitto, tmp_path: pathlib.Path, transport: str
) -> None:
    marker = f"payload-marker-{secrets.token_hex(8)}"
    args = ("--log-level", "DEBUG")
    with ServerProcess(tmp_path, config_for(broker), transport=transport, args=args) as server:
        server.wait_ready()
        connect = (
            sse_client(f"{server.base}/sse") if transport == "sse" else streamable_http_client(server.url)
        )
        async with Client(connect, mode="legacy") as client:  # type: ignore[arg-type]
            published = await client.call_tool("mqtt_publish", {"topic": "lab/debug", "payload": marker})
            assert structured(published)["bytes"] == len(marker)
        log = server.stderr()
    assert " DEBUG " in log  # the level did apply
    assert marker not in log


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_traceback_with_outside_text_stays_inside_its_record(log_format: str) -> None:
    stream = io.StringIO()
    handler = configure(logging.StreamHandler(stream), log_format)  # type: ignore[arg-type]
    logger = logging.getLogger(f"mcpmqtt.test.{log_format}")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        raise ValueError(f"bad topic\n{FORGED}\u2028\ud800")
    except ValueError:
        logger.exception("refused %s", f"lab/\x1b[2J\n{FORGED}")
    finally:
        logger.removeHandler(handler)
    written = stream.getvalue()
    assert "ValueError: bad topic" in written
    assert_one_record_per_line(written.encode(), log_format)
    records = [line for line in written.splitlines() if not line.startswith(" ")]
    assert len(records) == 1, written


# ---- Host and Origin, exactly ------------------------------------------------------------------------

GUARDED = {"allowed_hosts": ["mcp.example.net"], "allowed_origins": ["https://app.example.net"]}


@pytest.fixture(scope="module")
def guarded(broker: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("guarded"), config_for(broker, GUARDED)) as started:
        yield started


@pytest.mark.parametrize(
    "origin",
    [
        "http://127.0.0.1:1@evil.com",
        "http://localhost:5173.evil.com",
        "http://127.0.0.1:8000/",
        "https://app.example.net.evil.com",
        "https://app.example.net:8443",
        "http://app.example.net",
        "https://app.example.net@evil.com",
        "null",
        "",
    ],
)
def test_an_origin_is_compared_whole_not_by_prefix(guarded: ServerProcess, origin: str) -> None:
    head = f"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1:{guarded.port}\r\norigin: {origin}"
    assert raw_request(guarded, head.encode()).startswith(b"HTTP/1.1 403 ")


@pytest.mark.parametrize("host", ["127.0.0.1:1@evil.com", "localhost:80/evil", "mcp.example.net.evil.com"])
def test_a_host_is_compared_whole_not_by_prefix(guarded: ServerProcess, host: str) -> None:
    assert raw_request(guarded, f"POST /mcp HTTP/1.1\r\nhost: {host}".encode()).startswith(b"HTTP/1.1 421 ")


@pytest.mark.parametrize(
    "headers",
    [
        "origin: http://127.0.0.1\r\norigin: https://evil.example.com",
        "origin: https://evil.example.com\r\norigin: http://127.0.0.1",
        "origin: http://127.0.0.1\r\norigin: http://127.0.0.1",
        "host: evil.example.com",  # a second Host after the first
    ],
)
def test_a_repeated_host_or_origin_header_is_refused(guarded: ServerProcess, headers: str) -> None:
    body = json.dumps(INITIALIZE).encode()
    head = f"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1:{guarded.port}\r\n{headers}\r\ncontent-length: {len(body)}"
    head += "".join(f"\r\n{name}: {value}" for name, value in MCP_HEADERS.items())
    assert raw_request(guarded, head.encode(), body).startswith(b"HTTP/1.1 400 ")


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "https://app.example.net"},
        {"origin": "https://app.example.net:443"},
        {"origin": "http://localhost:5173"},
        {"origin": "http://127.0.0.1"},
        {"origin": "http://[::1]:8000"},
        {"host": "mcp.example.net"},
        {"host": "MCP.example.net:8443"},
        {"host": "localhost:1234"},
        {},
    ],
    ids=lambda h: ",".join(f"{k}={v}" for k, v in h.items()) or "none",
)
def test_the_configured_and_loopback_hosts_and_origins_still_pass(
    guarded: ServerProcess, headers: dict[str, str]
) -> None:
    assert post(guarded.url, **headers).status_code == 200


# ---- security headers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("POST", "/mcp", {}, 200),
        ("GET", "/healthz", {}, 200),
        ("GET", "/readyz", {}, 200),
        ("GET", "/nothing-here", {}, 404),
        ("POST", "/mcp", {"origin": "https://evil.example.com"}, 403),
        ("POST", "/mcp", {"host": "evil.example.com"}, 421),
    ],
)
def test_every_response_carries_the_security_headers(
    guarded: ServerProcess, method: str, path: str, headers: dict[str, str], status: int
) -> None:
    guarded.wait_ready()
    response = httpx2.request(
        method, f"{guarded.base}{path}", json=INITIALIZE, headers={**MCP_HEADERS, **headers}, timeout=10
    )
    assert response.status_code == status
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"


# ---- abandoned sessions ---------------------------------------------------------------------------------


def open_session(server: ServerProcess, http: httpx2.Client | None = None, **headers: str) -> str:
    """A new 2025-11-25 session (initialize only, never closed); its id."""
    sender = http or httpx2.Client(timeout=10)
    response = sender.post(server.url, json=INITIALIZE, headers={**MCP_HEADERS, **headers})
    assert response.status_code == 200, response.text
    return response.headers["mcp-session-id"]


def in_session(session: str, **headers: str) -> dict[str, str]:
    return {"mcp-session-id": session, "mcp-protocol-version": "2025-11-25", **headers}


PING = {"jsonrpc": "2.0", "id": 2, "method": "ping"}


def wait_for_log(server: ServerProcess, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in server.stderr():
        assert time.monotonic() < deadline, f"no {text!r} in the log within {timeout} s"
        time.sleep(0.05)


def test_an_abandoned_session_is_closed_after_the_idle_timeout(
    broker: Mosquitto, tmp_path: pathlib.Path
) -> None:
    with ServerProcess(tmp_path, config_for(broker, {"session_idle_timeout": 1})) as server:
        session = open_session(server)
        assert post(server.url, PING, **in_session(session)).status_code == 200
        used = time.monotonic()
        wait_for_log(server, f"Session {session} idle timeout", timeout=10)
        assert time.monotonic() - used >= 0.9  # not before its time
        answer = post(server.url, PING, **in_session(session))
        assert answer.status_code == 404


async def test_sessions_are_bounded_per_client_and_overall(broker: Mosquitto, tmp_path: pathlib.Path) -> None:
    first, second = apikeys.new_key(), apikeys.new_key()
    keys = [
        {"name": name, "hash": str(apikeys.hash_key(key, log_n=10))}
        for name, key in (("a", first), ("b", second))
    ]
    http = {"api_keys": keys, "max_sessions_per_client": 2, "max_sessions": 3}
    with ServerProcess(tmp_path, config_for(broker, http)) as server:
        held = [open_session(server, **bearer(first)) for _ in range(2)]
        refused = post(server.url, **bearer(first))
        assert refused.status_code == 429
        assert refused.json()["error"]["message"].startswith("too many open sessions: this client")
        async with http_client(server.url, first, mode="auto") as modern:  # sessionless: not counted
            assert modern.protocol_version not in HANDSHAKE_PROTOCOL_VERSIONS
            assert structured(await modern.call_tool("mqtt_read", {"topic": "lab/x", "timeout": 0}))[
                "timed_out"
            ]
        open_session(server, **bearer(second))  # another client still has room
        full = post(server.url, **bearer(second))
        assert full.status_code == 503
        assert full.json()["error"]["message"].startswith("too many open sessions: the server")
        closed = httpx2.delete(server.url, headers=in_session(held[0], **bearer(first)))
        assert closed.status_code == 200
        open_session(server, **bearer(first))  # the closed session's room is free again


def test_memory_held_by_abandoned_sessions_is_returned(broker: Mosquitto, tmp_path: pathlib.Path) -> None:
    """Rounds of sessions that are never closed: once the first round's have expired, later rounds
    reuse their memory, so the server's RSS stops growing (it grew with every round before)."""
    rounds, per_round = 4, 400
    http = {"session_idle_timeout": 1, "max_sessions": 1000, "max_sessions_per_client": 1000}
    with ServerProcess(tmp_path, config_for(broker, http)) as server, httpx2.Client(timeout=10) as client:
        process = psutil.Process(server.process.pid)  # type: ignore[union-attr]
        resident = [process.memory_info().rss]
        for _ in range(rounds):
            sessions = [open_session(server, client) for _ in range(per_round)]
            wait_for_log(server, f"Session {sessions[-1]} idle timeout", timeout=30)
            resident.append(process.memory_info().rss)
    first_round = resident[1] - resident[0]
    later_rounds = resident[-1] - resident[1]
    print("RSS after each round (MB):", [round(r / 2**20, 1) for r in resident])
    assert later_rounds < first_round / 2, [round(r / 2**20, 1) for r in resident]


# ---- bogus bearer tokens ---------------------------------------------------------------------------------


async def test_a_flood_of_bogus_tokens_does_not_delay_a_valid_key(
    broker: Mosquitto, tmp_path: pathlib.Path
) -> None:
    """60 made-up tokens in parallel from one address, then a valid key's first use from another: it
    is answered in about the time of one check, not after the flood's (real-cost scrypt hashes)."""
    valid, other = apikeys.new_key(), apikeys.new_key()
    keys = [
        {"name": name, "hash": str(apikeys.hash_key(key))}
        for name, key in (("valid", valid), ("other", other))
    ]
    with ServerProcess(tmp_path, config_for(broker, {"api_keys": keys})) as server:
        body = json.dumps(INITIALIZE)
        async with (
            httpx2.AsyncClient(timeout=60) as flood,
            httpx2.AsyncClient(
                timeout=60, transport=httpx2.AsyncHTTPTransport(local_address="127.0.0.2")
            ) as own,
        ):

            async def first_use(client: httpx2.AsyncClient, token: str) -> tuple[int, float]:
                started = time.monotonic()
                response = await client.post(
                    server.url, content=body, headers={**MCP_HEADERS, **bearer(token)}
                )
                return response.status_code, time.monotonic() - started

            status, one_check = await first_use(flood, apikeys.new_key())  # every key hashed: the worst case
            assert status == 401
            async with anyio.create_task_group() as tasks:
                for _ in range(60):
                    tasks.start_soon(first_use, flood, apikeys.new_key())
                with anyio.move_on_after(1):  # the flood is under way (the fixed server says so)
                    while "unchecked" not in server.stderr():  # noqa: ASYNC110 (a file: no event to await)
                        await anyio.sleep(0.02)
                status, waited = await first_use(own, valid)
            assert status == 200
    print(f"one check {one_check:.3f} s, a valid key under the flood {waited:.3f} s")
    # At most one check to wait for a slot, then its own; the rest is headroom for a busy machine.
    assert waited < 5 * one_check, f"a valid key waited {waited:.2f} s; one check takes {one_check:.2f} s"


# ---- slow clients ---------------------------------------------------------------------------------------

SLOW_KEY = apikeys.new_key()
TRICKLE_LIMIT = 15.0


@pytest.fixture(scope="module")
def impatient(broker: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    keys = [{"name": "slow", "hash": str(apikeys.hash_key(SLOW_KEY, log_n=10))}]
    http = {"header_timeout": 1, "body_timeout": 1, "api_keys": keys}
    with ServerProcess(tmp_path_factory.mktemp("impatient"), config_for(broker, http)) as started:
        yield started


async def trickle(port: int, head: bytes, drip: bytes) -> tuple[bytes, float]:
    """Send `head`, then `drip` one byte every 0.2 s until the server closes the connection; what the
    server sent and after how many seconds it closed (TRICKLE_LIMIT if it never did)."""
    received = bytearray()
    started = time.monotonic()
    closed = anyio.Event()
    async with await anyio.connect_tcp("127.0.0.1", port) as stream, anyio.create_task_group() as tasks:

        async def read() -> None:
            with suppress(anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
                while True:
                    received.extend(await stream.receive())
            closed.set()

        tasks.start_soon(read)
        await stream.send(head)
        with anyio.move_on_after(TRICKLE_LIMIT), suppress(anyio.BrokenResourceError, ConnectionError):
            for byte in drip * 1000:
                with anyio.move_on_after(0.2):
                    await closed.wait()
                if closed.is_set():
                    break
                await stream.send(bytes([byte]))
        with anyio.move_on_after(2):
            await closed.wait()
        elapsed = time.monotonic() - started
        tasks.cancel_scope.cancel()
    return bytes(received), elapsed


def _body_head(server: ServerProcess, **headers: str) -> bytes:
    lines = ["POST /mcp HTTP/1.1", f"host: 127.0.0.1:{server.port}", "content-length: 1000"]
    lines += [f"{name}: {value}" for name, value in {**MCP_HEADERS, **headers}.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_slow_headers_are_cut_off(impatient: ServerProcess) -> None:
    results = []
    async with anyio.create_task_group() as tasks:

        async def one() -> None:
            results.append(await trickle(impatient.port, b"POST /mcp HTTP/1.1\r\n", b"x-slow: abcdefgh"))

        for _ in range(20):
            tasks.start_soon(one)
    for received, elapsed in results:
        assert elapsed < 4, f"a connection trickling its headers lived {elapsed:.1f} s"
        assert received.startswith(b"HTTP/1.1 408 ")
    assert httpx2.get(f"{impatient.base}/healthz").status_code == 200


@pytest.mark.parametrize(("authorized", "answer"), [(True, b"HTTP/1.1 408 "), (False, b"HTTP/1.1 401 ")])
async def test_a_slow_body_is_cut_off(impatient: ServerProcess, authorized: bool, answer: bytes) -> None:
    head = _body_head(impatient, **(bearer(SLOW_KEY) if authorized else {}))
    results = []
    async with anyio.create_task_group() as tasks:

        async def one() -> None:
            results.append(await trickle(impatient.port, head, b'{"jsonrpc": "2.0"'))

        for _ in range(20):
            tasks.start_soon(one)
    for received, elapsed in results:
        assert elapsed < 4, f"a connection trickling its body lived {elapsed:.1f} s"
        assert received.startswith(answer)


def test_requests_of_normal_speed_pass(impatient: ServerProcess) -> None:
    assert post(impatient.url, **bearer(SLOW_KEY)).status_code == 200
