"""mqtt_history over the real client and broker, in both protocol eras: messages in a window, buckets
over a JSON Pointer, the allowlist on the filter and on every topic, precise refusals of bad input;
and rate_per_min in mqtt_list_topics."""

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from devices import raw_client
from mcp.client import Client
from mcp_client import MODES, connect, error_text, structured, wait_for_log, write_config
from mosquitto import Mosquitto

from mcpmqtt.config import Config
from mcpmqtt.mqtt import Received
from mcpmqtt.server.build import build_server
from mcpmqtt.server.live_state import TopicState

pytestmark = pytest.mark.anyio

TOPICS: list[dict[str, Any]] = [
    {"pattern": "hist/#", "permissions": ["read"], "description": "history"},
    {"pattern": "hist/secret/#", "permissions": ["read"], "deny": True, "description": "withheld"},
    {"pattern": "ctl/#", "permissions": ["write"], "description": "write only"},
    {"pattern": "quiet/#", "permissions": ["read"], "live": False, "description": "not kept"},
]


@dataclass
class Served:
    client: Client
    broker: Mosquitto
    mode: str


@pytest.fixture(scope="module", params=MODES)
async def served(
    request: pytest.FixtureRequest, broker: Mosquitto, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Served]:
    config, client_id = write_config(tmp_path_factory.mktemp("history"), broker, topics=TOPICS)
    data = json.loads(config.read_text())
    data["limits"] = {"max_result_bytes": 1000}
    config.write_text(json.dumps(data))
    async with connect(config, request.param) as client:
        # Messages published before the history follows its patterns would pass unseen.
        await wait_for_log(broker, client_id, "subscribe", "hist/#")
        yield Served(client, broker, request.param)


async def publish_all(broker: Mosquitto, messages: list[tuple[str, bytes]]) -> None:
    async with raw_client(broker) as device:
        for topic, payload in messages:
            await device.publish(topic, payload, qos=1)


async def history_until(client: Client, arguments: dict[str, Any], count: int) -> dict[str, Any]:
    """mqtt_history's answer once `count` messages of the window are in (the server hears them
    shortly after the broker acknowledged them)."""
    with anyio.fail_after(10):
        while True:
            result = structured(await client.call_tool("mqtt_history", {**arguments, "limit": 1000}))
            if len(result["messages"]) >= count:
                return result
            await anyio.sleep(0.05)


async def test_history_tool_is_labelled_with_an_output_schema(served: Served) -> None:
    (tool,) = [t for t in (await served.client.list_tools()).tools if t.name == "mqtt_history"]
    assert tool.title and tool.description and "bucket" in tool.description
    hints = tool.annotations
    assert hints is not None
    assert (hints.read_only_hint, hints.destructive_hint, hints.idempotent_hint, hints.open_world_hint) == (
        True,
        False,
        True,
        False,
    )
    assert tool.output_schema is not None
    assert {"topic", "messages", "truncated", "buckets", "field"} <= set(tool.output_schema["properties"])


async def test_history_returns_the_window_oldest_first_without_withheld_topics(served: Served) -> None:
    base = f"hist/{served.mode}/window"
    sent = [
        (f"{base}/a", b"1"),
        (f"{base}/b", b"2"),
        (f"hist/secret/{served.mode}", b"s"),
        (f"{base}/a", b"3"),
    ]
    await publish_all(served.broker, sent)
    result = await history_until(served.client, {"topic": f"{base}/+", "since": "5m"}, 3)
    assert [(m["topic"], m["payload"]) for m in result["messages"]] == [
        (f"{base}/a", "1"),
        (f"{base}/b", "2"),
        (f"{base}/a", "3"),
    ]
    assert result["truncated"] is False and "dropped" not in result
    # the deny entry's topic is kept by the server but never shown, even under a covering filter
    everything = structured(await served.client.call_tool("mqtt_history", {"topic": "hist/#", "since": "5m"}))
    assert all(not m["topic"].startswith("hist/secret/") for m in everything["messages"])


async def test_history_limit_keeps_the_newest_and_says_truncated(served: Served) -> None:
    topic = f"hist/{served.mode}/limit"
    await publish_all(served.broker, [(topic, b"%d" % i) for i in range(5)])
    await history_until(served.client, {"topic": topic, "since": "5m"}, 5)
    result = structured(
        await served.client.call_tool("mqtt_history", {"topic": topic, "since": "5m", "limit": 2})
    )
    assert [m["payload"] for m in result["messages"]] == ["3", "4"] and result["truncated"] is True
    # limits.max_result_bytes (1000 here) cuts the oldest first, too
    await publish_all(served.broker, [(topic, b"x" * 600), (topic, b"y" * 600)])
    with anyio.fail_after(10):
        while True:
            big = structured(await served.client.call_tool("mqtt_history", {"topic": topic, "since": "5m"}))
            if big["messages"][-1]["payload"][0] == "y":
                break
            await anyio.sleep(0.05)
    assert [m["payload"][0] for m in big["messages"]] == ["y"] and big["truncated"] is True  # one fits


async def test_history_window_until_before_now(served: Served) -> None:
    topic = f"hist/{served.mode}/until"
    await publish_all(served.broker, [(topic, b"early")])
    await history_until(served.client, {"topic": topic, "since": "5m"}, 1)
    result = structured(
        await served.client.call_tool("mqtt_history", {"topic": topic, "since": "10m", "until": "5m"})
    )
    assert result["messages"] == [] and result["truncated"] is False


async def test_history_buckets_a_json_field_counting_what_is_not_a_number(served: Served) -> None:
    topic = f"hist/{served.mode}/fridge"
    payloads = [b'{"temperature": 4.0}', b'{"temperature": 6.0}', b"offline", b'{"temperature": 5.0}']
    await publish_all(served.broker, [(topic, p) for p in payloads])
    await history_until(served.client, {"topic": topic, "since": "5m"}, 4)
    result = structured(
        await served.client.call_tool(
            "mqtt_history", {"topic": topic, "since": "5m", "bucket": "1h", "field": "/temperature"}
        )
    )
    assert result["field"] == "/temperature" and "messages" not in result
    buckets = result["buckets"]
    assert 1 <= len(buckets) <= 2  # the window may straddle the hour
    assert sum(b["count"] for b in buckets) == 4
    numbers = [b for b in buckets if b["min"] is not None]
    assert min(b["min"] for b in numbers) == 4.0 and max(b["max"] for b in numbers) == 6.0
    assert numbers[-1]["last"] == 5.0
    if len(buckets) == 1:
        assert buckets[0]["mean"] == 5.0
    assert buckets[0]["start"].endswith(":00:00.000Z")  # on the hour's grid


async def test_history_buckets_plain_numeric_payloads_without_a_field(served: Served) -> None:
    topic = f"hist/{served.mode}/power"
    await publish_all(served.broker, [(topic, b"100"), (topic, b"300")])
    await history_until(served.client, {"topic": topic, "since": "5m"}, 2)
    result = structured(
        await served.client.call_tool("mqtt_history", {"topic": topic, "since": "5m", "bucket": "1d"})
    )
    assert result["field"] == ""
    assert sum(b["count"] for b in result["buckets"]) == 2
    assert result["buckets"][-1]["last"] == 300.0


async def test_history_notes_a_filter_whose_topics_are_not_kept(served: Served) -> None:
    result = structured(await served.client.call_tool("mqtt_history", {"topic": "quiet/x", "since": "1h"}))
    assert result["messages"] == [] and "live: true" in result["note"]


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"topic": "ctl/x", "since": "1h"}, "permission denied:"),
        ({"topic": "other/#", "since": "1h"}, "permission denied:"),
        ({"topic": "hist/#/x", "since": "1h"}, "invalid topic:"),
        ({"topic": "hist/#", "since": "-5m"}, "invalid argument: '-5m' is neither an ISO-8601 time"),
        ({"topic": "hist/#", "since": "10 parsecs"}, "invalid argument: '10 parsecs' is neither"),
        ({"topic": "hist/#", "since": "1h", "until": "2h"}, "invalid argument: until ("),
        (
            {"topic": "hist/#", "since": "1h", "bucket": "1m", "field": "temperature"},
            "invalid argument: field 'temperature' is not a JSON Pointer",
        ),
        (
            {"topic": "hist/#", "since": "1h", "bucket": "1m", "field": "/a~2"},
            "invalid argument: field '/a~2' is not a JSON Pointer",
        ),
        ({"topic": "hist/#", "since": "1h", "bucket": "0.5s"}, "invalid argument: bucket '0.5s' is shorter"),
        (
            {"topic": "hist/#", "since": "7d", "bucket": "1m"},
            "invalid argument: bucket '1m' over this window",
        ),
        ({"topic": "hist/#", "since": "1h", "bucket": "-1m"}, "invalid argument: '-1m' is not a span"),
        ({"topic": "hist/#", "since": "1h", "field": "/t"}, "invalid argument: field applies to buckets"),
        ({"topic": "hist/#", "since": "1h", "limit": 0}, "invalid argument:"),
    ],
)
async def test_history_bad_input_is_a_precise_invalid_argument(
    served: Served, arguments: dict[str, Any], expected: str
) -> None:
    assert error_text(await served.client.call_tool("mqtt_history", arguments)).startswith(expected)


async def test_list_topics_reports_rate_per_min(served: Served) -> None:
    topic = f"hist/{served.mode}/rate"
    await publish_all(served.broker, [(topic, b"%d" % i) for i in range(10)])
    await history_until(served.client, {"topic": topic, "since": "5m"}, 10)
    listed = structured(await served.client.call_tool("mqtt_list_topics", {"filter": topic}))
    (summary,) = listed["topics"]
    assert summary["rate_per_min"] == pytest.approx(2.0, abs=0.01)  # 10 messages over 5 minutes


def test_rate_per_min_slides_over_the_last_five_minutes() -> None:
    start = 1_800_000_000.0  # on a minute boundary
    state = TopicState(Received("t", b"", 0, False, start, None), 0, False)
    for minute in range(7):  # 6 messages in each of 7 minutes
        for second in range(0, 60, 10):
            state.count(start + minute * 60 + second)
    # at the start of minute 7: minutes 2 to 6 are the last five: 30 messages
    assert state.rate_per_min(start + 7 * 60) == 6.0
    # half-way through minute 7 (no messages in it): half of minute 2 and all of 3..6
    assert state.rate_per_min(start + 7 * 60 + 30) == pytest.approx((3 + 24) / 5)
    # ten minutes later nothing is left
    assert state.rate_per_min(start + 17 * 60) == 0.0
    # a clock stepping back does not lose the count
    state.count(start)
    assert state.rate_per_min(start + 7 * 60) > 0


async def test_subscribe_steers_long_waits_to_watches_and_history(served: Served) -> None:
    (tool,) = [t for t in (await served.client.list_tools()).tools if t.name == "mqtt_subscribe"]
    assert tool.description is not None
    assert "20 s" in tool.description and "mqtt_watch" in tool.description
    assert "mqtt_history" in tool.description


async def test_history_file_survives_a_restart_of_the_server(
    broker: Mosquitto, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Through the real server: what arrived before a shutdown is answered after the restart (the last
    flush happens at shutdown, well inside the flush interval of 60 s set here)."""
    folder = tmp_path_factory.mktemp("history-file")
    config, client_id = write_config(folder, broker, topics=TOPICS)
    data = json.loads(config.read_text())
    data["history"] = {"path": "kept.db", "flush_interval": 60}
    config.write_text(json.dumps(data))
    topic = "hist/restart/boiler"
    async with connect(config, "auto") as client:
        await wait_for_log(broker, client_id, "subscribe", "hist/#")  # or the messages pass unseen
        await publish_all(broker, [(topic, b'{"temperature": 61}'), (topic, b'{"temperature": 63}')])
        await history_until(client, {"topic": topic, "since": "5m"}, 2)
    assert (folder / "kept.db").exists()
    async with connect(config, "legacy") as client:
        result = structured(await client.call_tool("mqtt_history", {"topic": topic, "since": "5m"}))
        assert [m["payload"] for m in result["messages"]] == ['{"temperature": 61}', '{"temperature": 63}']
        buckets = structured(
            await client.call_tool(
                "mqtt_history", {"topic": topic, "since": "5m", "bucket": "1h", "field": "/temperature"}
            )
        )["buckets"]
        assert max(b["max"] for b in buckets) == 63.0


async def test_history_disabled_offers_no_history_tool() -> None:
    topics = [{"pattern": "a/#", "permissions": ["read"]}]
    off = build_server(Config.model_validate({"topics": topics, "history": {"enabled": False}}))
    on = build_server(Config.model_validate({"topics": topics}))
    assert "mqtt_history" not in {tool.name for tool in await off.list_tools()}
    assert "mqtt_history" in {tool.name for tool in await on.list_tools()}
