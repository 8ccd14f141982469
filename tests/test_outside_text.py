"""Text from outside, in every string argument of every tool: the server answers each call with a
result or a contract error, goes on serving, and its audit log keeps one JSON record per line.

The strings are those the security probes used: lone surrogates (JSON may escape them, UTF-8 cannot
encode them), NUL and other control characters, the separators that `str.splitlines()` breaks on,
non-characters, and values far over the limits. They go as raw JSON-RPC, over 2026-07-28 HTTP, whose
parser lets lone surrogates through, and over stdio, whose parser refuses a line holding one with a
JSON-RPC parse error (that call never reaches a tool, so it has no audit record).
"""

import json
import pathlib
from typing import Any

import pytest
from http_server import INITIALIZE, ServerProcess, config_for
from mcp_types import PARSE_ERROR
from mosquitto import Mosquitto
from server_config import unique_root
from support import Wire, start
from test_faults import raw_http

pytestmark = pytest.mark.anyio

ROOT = unique_root()
PREFIXES = (
    "permission denied: ",
    "invalid topic: ",
    "invalid argument: ",
    "payload too large: ",
    "broker unavailable: ",
    "broker refused: ",
)
STRINGS = [
    "\ud800",
    "a\udfffb",
    "\x00",
    "\x01\x1b[31mred",
    "\x7f",
    "\x85",
    "\u2028",
    "\u2029",
    "\r\nX-Injected: 1",
    "%0A%0D",
    "\ufffe",
    "\U0010ffff",
    "🙂",
    "",
    "+",
    "#",
    "/",
    "$SYS/x",
    "é" * 40_000,
]


def calls_with(text: str) -> list[tuple[str, dict[str, Any]]]:
    """Every tool, with `text` in each of its string arguments in turn."""
    lab = f"{ROOT}/lab"
    return [
        ("mqtt_publish", {"topic": f"{lab}/{text}", "payload": "x"}),
        ("mqtt_publish", {"topic": f"{lab}/p", "payload": text, "content_type": text}),
        ("mqtt_publish", {"topic": f"{lab}/p", "payload": "x", "user_properties": [[text, text]]}),
        ("mqtt_subscribe", {"topic": f"{lab}/{text}", "timeout": 0}),
        ("mqtt_read", {"topic": f"{lab}/{text}", "timeout": 0}),
        ("mqtt_query", {"request_topic": f"{lab}/q{text}", "payload": text, "timeout": 0}),
        (
            "mqtt_query",
            {"request_topic": f"{lab}/q", "response_topic": f"{lab}/r{text}", "payload": "x", "timeout": 0},
        ),
        ("mqtt_list_topics", {"filter": f"{lab}/{text}"}),
        ("mqtt_last", {"topic": f"{lab}/{text}"}),
    ]


async def test_outside_text_through_every_tool(broker: Mosquitto, tmp_path: pathlib.Path) -> None:
    config = config_for(broker, topics=[{"pattern": f"{ROOT}/lab/#", "permissions": ["read", "write"]}])
    config["audit"] = {"path": "audit.jsonl", "include_payloads": True}
    config["limits"] = {"max_payload_bytes": 65_536}
    made: list[tuple[str, dict[str, Any]]] = []
    with ServerProcess(tmp_path, config) as server:
        server.wait_ready()
        async with raw_http(server.url, "modern") as raw:
            for text in STRINGS:
                for tool, arguments in calls_with(text):
                    result = await raw.call(len(made) + 1, tool, arguments)
                    made.append((tool, arguments))
                    if result.get("isError"):
                        answer = result["content"][0]["text"]
                        assert answer.startswith(PREFIXES), (tool, arguments.keys(), answer[:300])
            after = await raw.call(
                len(made) + 1, "mqtt_publish", {"topic": f"{ROOT}/lab/after", "payload": "x"}
            )
            made.append(("mqtt_publish", {"topic": f"{ROOT}/lab/after"}))
            assert not after.get("isError") and after["structuredContent"]["bytes"] == 1
        server.stop()  # the audit log's writer writes out what is queued as the server stops
        stderr = server.stderr()
    assert "Traceback" not in stderr and "audit record" not in stderr, stderr[-3000:]
    text = (tmp_path / "audit.jsonl").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) == text.count("\n") == len(made)
    records = [json.loads(line) for line in lines]
    assert [record["tool"] for record in records] == [tool for tool, _ in made]


def has_surrogate(value: Any) -> bool:
    return any(0xD800 <= ord(char) <= 0xDFFF for char in json.dumps(value, ensure_ascii=False))


async def test_outside_text_through_every_tool_over_stdio(broker: Mosquitto, tmp_path: pathlib.Path) -> None:
    config = config_for(broker, topics=[{"pattern": f"{ROOT}/lab/#", "permissions": ["read", "write"]}])
    config["audit"] = {"path": "audit.jsonl", "include_payloads": True}
    config["limits"] = {"max_payload_bytes": 65_536}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    made: list[str] = []
    async with await start(path) as process:
        wire = Wire(process)
        await wire.send(INITIALIZE)
        await wire.response(1)
        await wire.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        request_id = 1
        for text in [*STRINGS, None]:
            for tool, arguments in (
                calls_with(text)
                if text is not None
                else [("mqtt_publish", {"topic": f"{ROOT}/lab/after", "payload": "x"})]
            ):
                request_id += 1
                params = {"name": tool, "arguments": arguments}
                await wire.send(
                    {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}
                )
                if has_surrogate(arguments):
                    reply = await wire.receive()
                    assert reply["id"] is None and reply["error"]["code"] == PARSE_ERROR
                    continue
                result = (await wire.response(request_id))["result"]
                made.append(tool)
                if result.get("isError"):
                    answer = result["content"][0]["text"]
                    assert answer.startswith(PREFIXES), (tool, arguments.keys(), answer[:300])
        assert not result.get("isError") and result["structuredContent"]["bytes"] == 1  # the last call
        await process.aclose()  # stdin closes: the server stops and writes out the audit log
    text = (tmp_path / "audit.jsonl").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) == text.count("\n") == len(made)
    assert [json.loads(line)["tool"] for line in lines] == made
