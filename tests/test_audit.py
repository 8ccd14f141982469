"""The audit log: one JSON line per tool call, written by the real server over stdio in both eras.

What a line says (time, client, tool, topic, payload size and SHA-256, decision, outcome), payloads
only when configured, and that a log that cannot be written fails no call.
"""

import base64
import hashlib
import json
import pathlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio
import pytest
from http_server import ServerProcess, config_for
from mcp.client import Client
from mcp_client import MODES, connect, error_text, structured
from mosquitto import Mosquitto
from server_config import unique_root, write_full_config
from test_faults import raw_http

from mcpmqtt.server.audit import AuditLog

pytestmark = pytest.mark.anyio

ROOT = unique_root()
TOPICS = [
    {"pattern": f"{ROOT}/lab/#", "permissions": ["read", "write"]},
    {"pattern": f"{ROOT}/lab/locked", "permissions": ["write"], "deny": True},
    {"pattern": f"{ROOT}/lab/tiny/#", "permissions": ["write"], "max_payload_bytes": 1},
]


@dataclass
class Audited:
    client: Client
    path: pathlib.Path

    async def call(self, tool: str, **arguments: Any) -> Any:
        return await self.client.call_tool(tool, arguments)

    async def lines(self, count: int) -> list[dict[str, Any]]:
        """The log's first `count` lines, once the writer thread has written them."""
        with anyio.fail_after(5):
            while True:
                text = self.path.read_text(encoding="utf-8") if self.path.exists() else ""
                if text.count("\n") >= count:
                    return [json.loads(line) for line in text.splitlines()]
                await anyio.sleep(0.02)

    async def last(self, after: int) -> dict[str, Any]:
        """The line that the call after `after` lines wrote."""
        return (await self.lines(after + 1))[after]

    def count(self) -> int:
        return self.path.read_text(encoding="utf-8").count("\n") if self.path.exists() else 0


@asynccontextmanager
async def audited_server(
    directory: pathlib.Path, broker: Mosquitto, mode: str, **audit: Any
) -> AsyncIterator[Audited]:
    path = directory / "audit.jsonl"
    config = write_full_config(directory, broker, TOPICS, audit={"path": "audit.jsonl", **audit})
    async with connect(config, mode) as client:
        yield Audited(client, path)


@pytest.fixture(scope="module", params=MODES)
async def audited(
    request: pytest.FixtureRequest, broker: Mosquitto, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Audited]:
    async with audited_server(tmp_path_factory.mktemp("audit"), broker, request.param) as served:
        yield served


async def test_a_publish_is_one_line_with_size_and_hash_but_not_the_payload(audited: Audited) -> None:
    before = audited.count()
    structured(await audited.call("mqtt_publish", topic=f"{ROOT}/lab/a", payload="héllo", qos=1))
    line = await audited.last(before)
    assert line.keys() == {
        "time",
        "client",
        "session",
        "tool",
        "topic",
        "decision",
        "reason",
        "outcome",
        "payload_bytes",
        "payload_sha256",
    }
    assert line["tool"] == "mqtt_publish" and line["topic"] == f"{ROOT}/lab/a"
    assert line["decision"] == "allowed" and line["reason"] is None and line["outcome"] == "ok"
    assert line["payload_bytes"] == 6
    assert line["payload_sha256"] == hashlib.sha256("héllo".encode()).hexdigest()
    assert line["time"].endswith("Z") and datetime.fromisoformat(line["time"].replace("Z", "+00:00"))
    assert line["client"] and "/" in line["client"]  # the SDK client's name/version
    assert line["session"] is None  # stdio has no session id


async def test_the_hash_is_of_the_bytes_sent_after_base64_decoding(audited: Audited) -> None:
    before = audited.count()
    raw = bytes(range(10))
    payload = base64.b64encode(raw).decode()
    await audited.call("mqtt_publish", topic=f"{ROOT}/lab/b", payload=payload, payload_encoding="base64")
    line = await audited.last(before)
    assert line["payload_bytes"] == 10 and line["payload_sha256"] == hashlib.sha256(raw).hexdigest()


async def test_a_json_value_payload_is_recorded_as_the_json_text_sent(audited: Audited) -> None:
    before = audited.count()
    await audited.call("mqtt_publish", topic=f"{ROOT}/lab/j", payload={"command": "status", "t": 21.5})
    line = await audited.last(before)
    sent = b'{"command":"status","t":21.5}'
    assert line["payload_bytes"] == len(sent) and line["payload_sha256"] == hashlib.sha256(sent).hexdigest()


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        ({"topic": f"{ROOT}/lab/locked", "payload": "x"}, "permission denied"),
        ({"topic": f"{ROOT}/lab/+", "payload": "x"}, "invalid topic"),
        ({"topic": f"{ROOT}/lab/a", "payload": "x", "qos": 7}, "invalid argument"),
        ({"topic": f"{ROOT}/lab/tiny/a", "payload": "xx"}, "payload too large"),
    ],
)
async def test_a_refusal_is_recorded_as_denied_with_its_prefix(
    audited: Audited, arguments: dict[str, Any], reason: str
) -> None:
    before = audited.count()
    error_text(await audited.client.call_tool("mqtt_publish", arguments))
    line = await audited.last(before)
    assert (line["decision"], line["reason"], line["outcome"]) == ("denied", reason, reason)
    assert line["topic"] == arguments["topic"]


async def test_reads_record_the_filter_and_whether_they_timed_out(audited: Audited) -> None:
    before = audited.count()
    structured(await audited.call("mqtt_read", topic=f"{ROOT}/lab/nothing", timeout=0.1))
    structured(await audited.call("mqtt_subscribe", topic=f"{ROOT}/lab/#", timeout=0.1, max_messages=1))
    read, subscribe = (await audited.lines(before + 2))[before:]
    assert (read["tool"], read["topic"], read["outcome"]) == ("mqtt_read", f"{ROOT}/lab/nothing", "timed_out")
    assert (subscribe["tool"], subscribe["topic"]) == ("mqtt_subscribe", f"{ROOT}/lab/#")
    assert "payload_bytes" not in read


async def test_a_query_records_request_and_response_topics(audited: Audited) -> None:
    before = audited.count()
    await audited.call(
        "mqtt_query",
        request_topic=f"{ROOT}/lab/req",
        response_topic=f"{ROOT}/lab/res",
        payload="?",
        timeout=0.1,
    )
    line = await audited.last(before)
    assert line["tool"] == "mqtt_query" and line["topic"] == f"{ROOT}/lab/req"
    assert line["response_topic"] == f"{ROOT}/lab/res" and line["payload_bytes"] == 1
    assert line["outcome"] == "timed_out"


async def test_payloads_are_recorded_only_when_configured(broker: Mosquitto, tmp_path: pathlib.Path) -> None:
    async with audited_server(tmp_path, broker, "legacy", include_payloads=True) as served:
        await served.call("mqtt_publish", topic=f"{ROOT}/lab/c", payload="secret-ish")
        [line] = await served.lines(1)
    assert line["payload"] == "secret-ish" and line["payload_encoding"] == "utf-8"


async def test_an_unwritable_log_fails_no_call_and_is_reported_once(
    broker: Mosquitto, tmp_path: pathlib.Path
) -> None:
    (tmp_path / "not-a-folder").write_text("a file", encoding="utf-8")
    logfile = tmp_path / "server.log"
    config = write_full_config(
        tmp_path,
        broker,
        TOPICS,
        audit={"path": "not-a-folder/audit.jsonl"},
        logging={"level": "INFO", "logfile": str(logfile)},
    )
    async with connect(config, "legacy") as client:
        for index in range(3):
            structured(
                await client.call_tool("mqtt_publish", {"topic": f"{ROOT}/lab/x", "payload": str(index)})
            )
        with anyio.fail_after(5):
            while "cannot write the audit log" not in logfile.read_text(encoding="utf-8"):  # noqa: ASYNC110
                await anyio.sleep(0.02)
    assert logfile.read_text(encoding="utf-8").count("cannot write the audit log") == 1


def test_a_full_queue_drops_records_instead_of_blocking(tmp_path: pathlib.Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", capacity=2)  # not started: nothing drains the queue
    for _ in range(5):
        log.record("mqtt_publish", topic="a", decision="allowed", outcome="ok")
    assert log.dropped == 3


def test_the_writer_writes_what_was_queued_before_it_stops(tmp_path: pathlib.Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    log.start()
    for index in range(100):
        log.record("resources/read", topic=f"t/{index}", decision="allowed", outcome="ok", uri="x")
    log.close()
    lines = (tmp_path / "audit.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 100 and json.loads(lines[-1])["topic"] == "t/99"
    assert json.loads(lines[0])["uri"] == "x" and json.loads(lines[0])["client"] is None


# ---- text from outside: the writer never stops, and a line is one record --------------------------


async def test_a_lone_surrogate_anywhere_in_a_record_stops_no_later_record(
    broker: Mosquitto, tmp_path: pathlib.Path
) -> None:
    """A lone surrogate (JSON may escape one; UTF-8 cannot encode it) in a topic or in the client's
    name is written escaped, and every call after it is recorded too. Sent as raw 2026-07-28 HTTP,
    whose parser lets such escapes through (the SDK's client cannot send them, stdio refuses them)."""
    config = config_for(broker, topics=TOPICS)
    config["audit"] = {"path": "audit.jsonl"}
    calls: list[tuple[str, dict[str, Any]]] = [
        ("mqtt_publish", {"topic": f"{ROOT}/lab/\ud800", "payload": "x"}),
        ("mqtt_read", {"topic": f"{ROOT}/lab/\ud800/#", "timeout": 0}),
        *[("mqtt_publish", {"topic": f"{ROOT}/lab/after", "payload": str(index)}) for index in range(3)],
    ]
    with ServerProcess(tmp_path, config) as server:
        server.wait_ready()
        async with raw_http(server.url, "modern") as raw:
            assert raw.meta is not None
            raw.meta = {
                **raw.meta,
                "io.modelcontextprotocol/clientInfo": {"name": "probe-\udc00", "version": "1"},
            }
            for request_id, (tool, arguments) in enumerate(calls, start=2):
                await raw.call(request_id, tool, arguments)
        lines = await Audited(None, tmp_path / "audit.jsonl").lines(len(calls))  # type: ignore[arg-type]
    assert [line["topic"] for line in lines] == [arguments["topic"] for _, arguments in calls]
    assert {line["client"] for line in lines} == {"probe-\udc00/1"}
    raw_bytes = (tmp_path / "audit.jsonl").read_bytes()
    assert b"\\ud800" in raw_bytes and b"\\udc00" in raw_bytes  # escaped: the file stays UTF-8
    raw_bytes.decode("utf-8")


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85"])
async def test_a_line_separator_in_a_topic_does_not_split_the_record(
    audited: Audited, separator: str
) -> None:
    """`str.splitlines()` breaks lines at U+2028, U+2029 and U+0085 too: they are written escaped."""
    before = audited.count()
    topic = f"{ROOT}/lab/a{separator}b"
    await audited.call("mqtt_publish", topic=topic, payload="x")
    structured(await audited.call("mqtt_publish", topic=f"{ROOT}/lab/next", payload="x"))
    lines = await audited.lines(before + 2)
    assert len(audited.path.read_text(encoding="utf-8").splitlines()) == before + 2
    assert [line["topic"] for line in lines[before:]] == [topic, f"{ROOT}/lab/next"]


def test_a_record_that_cannot_be_written_is_counted_and_reported_and_the_writer_goes_on(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no text for this")

    log = AuditLog(tmp_path / "audit.jsonl")
    log.start()
    for _ in range(3):
        log.record("resources/read", topic="t", decision="allowed", outcome="ok", odd=Unprintable())
    log.record("resources/read", topic="fine", decision="allowed", outcome="ok")
    log.close()
    [line] = (tmp_path / "audit.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(line)["topic"] == "fine"
    assert log.lost == {"RuntimeError": 3}
    reports = [r.getMessage() for r in caplog.records if "audit record" in r.getMessage()]
    assert len(reports) == 2  # once when it first happens, once with the count when the log closes
    assert "3 audit records were lost (RuntimeError" in reports[-1]
