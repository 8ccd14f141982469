"""Outside-supplied strings in every header a client controls, and in the SSE session id (issue 10):
whatever the value (controls, surrogates, separators, non-UTF-8 bytes, very long), the answer is a
proper HTTP status below 500, the server stays up, and its log keeps one record per line.
"""

from __future__ import annotations

import json
import pathlib
import re
import urllib.parse
from collections.abc import Iterator

import httpx2
import pytest
from http_server import INITIALIZE, MCP_HEADERS, ServerProcess, bearer, config_for
from hypothesis import example, given, settings
from hypothesis import strategies as st
from mosquitto import Mosquitto
from test_http_hardening import assert_one_record_per_line, raw_request

from mcpmqtt.config import apikeys

KEY = apikeys.new_key()
HTTP = {
    "api_keys": [{"name": "fuzz", "hash": str(apikeys.hash_key(KEY, log_n=10))}],
    "header_timeout": 2,
    "body_timeout": 2,
}
HEADERS = ("host", "origin", "mcp-session-id", "authorization", "x-request-id", "mcp-protocol-version")
_STATUS = re.compile(rb"HTTP/1\.1 (\d{3}) ")
FUZZ = settings(max_examples=40, deadline=None)

# Characters a log or a parser might trip on: controls (C0, C1, DEL), line and paragraph
# separators, lone surrogates, non-characters, quotes, separators of HTTP and URLs.
_TRICKY = st.sampled_from(
    [
        "\x00",
        "\x1b",
        "\x7f",
        "\x85",
        "\x9b",
        "\u2028",
        "\u2029",
        "\ud800",
        "\udfff",
        "\ufffe",
        "\uffff",
        "\t",
        " ",
        '"',
        "'",
        "\\",
        ",",
        ";",
        ":",
        "@",
        "/",
        "?",
        "#",
        "%",
        "=",
        "[",
        "]",
        "é",
        "\U0001f600",
    ]
)
VALUES = st.lists(st.one_of(_TRICKY, st.characters(exclude_characters="\r\n")), max_size=40).map("".join)


def _encoded(value: str) -> bytes:
    """The bytes a client could send: UTF-8, lone surrogates included (as no encoder would)."""
    return value.encode("utf-8", "surrogatepass")


@pytest.fixture(scope="module")
def logfile(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("fuzz-log") / "server.log"


@pytest.fixture(scope="module")
def http(
    broker: Mosquitto, tmp_path_factory: pytest.TempPathFactory, logfile: pathlib.Path
) -> Iterator[ServerProcess]:
    config = config_for(broker, HTTP)
    with ServerProcess(
        tmp_path_factory.mktemp("fuzz-http"), config, args=("--logfile", str(logfile))
    ) as server:
        yield server
        _check_afterwards(server, logfile)


@pytest.fixture(scope="module")
def sse(
    broker: Mosquitto, tmp_path_factory: pytest.TempPathFactory, logfile: pathlib.Path
) -> Iterator[ServerProcess]:
    config = config_for(broker, HTTP)
    args = ("--logfile", str(logfile))
    with ServerProcess(tmp_path_factory.mktemp("fuzz-sse"), config, transport="sse", args=args) as server:
        yield server
        _check_afterwards(server, logfile)


def _check_afterwards(server: ServerProcess, logfile: pathlib.Path) -> None:
    """After the module's fuzzing (in whatever order its tests ran): the server is still up, and its
    log kept one record per line."""
    assert httpx2.get(f"{server.base}/healthz").status_code == 200
    assert_one_record_per_line(logfile.read_bytes(), "text")


def _status(response: bytes) -> int:
    match = _STATUS.match(response)
    assert match, f"no HTTP status line: {response[:200]!r}"
    return int(match[1])


@FUZZ
@given(name=st.sampled_from(HEADERS), value=VALUES)
@example(name="host", value="a" * 20000)
@example(name="authorization", value="Bearer " + "\ud800" * 3000)
@example(name="origin", value="http://127.0.0.1:1@evil.com")
@example(name="mcp-session-id", value="\x85" + "x" * 5000)
@example(name="x-request-id", value="\u2028forged")
def test_any_header_value_gets_a_proper_answer(http: ServerProcess, name: str, value: str) -> None:
    body = json.dumps(INITIALIZE).encode()
    headers = {
        "host": f"127.0.0.1:{http.port}",
        **MCP_HEADERS,
        **bearer(KEY),
        "content-length": str(len(body)),
    }
    lines = [f"{key}: {text}".encode() for key, text in headers.items() if key != name]
    head = b"\r\n".join([b"POST /mcp HTTP/1.1", *lines, name.encode() + b": " + _encoded(value)])
    assert 200 <= _status(raw_request(http, head, body)) < 500


@FUZZ
@given(value=VALUES)
@example(value="x\n" + "forged " * 2000)
def test_any_sse_session_id_gets_a_proper_answer(sse: ServerProcess, value: str) -> None:
    body = json.dumps(INITIALIZE).encode()
    query = urllib.parse.quote(_encoded(value))
    head = f"POST /messages/?session_id={query} HTTP/1.1\r\nhost: 127.0.0.1:{sse.port}\r\n"
    head += f"authorization: Bearer {KEY}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}"
    assert 200 <= _status(raw_request(sse, head.encode(), body)) < 500
