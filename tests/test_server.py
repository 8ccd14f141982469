"""The four tools and two resources, driven over stdio by the SDK's client in both protocol eras.

Includes one test per failure of the original mcpMQTT, named for it, each proving it gone.
"""

import base64
import json
import pathlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest
from devices import raw_client, responder
from mcp.client import Client
from mcp_client import MODES, TOOLS, connect, error_text, structured, wait_for_log, write_config
from mcp_types import CallToolResult
from mosquitto import Mosquitto
from support import Served

from mcpmqtt.config import Config, MqttSettings, TopicEntry
from mcpmqtt.errors import McpMqttError
from mcpmqtt.server.build import build_server

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module", params=MODES)
async def served(
    request: pytest.FixtureRequest, broker: Mosquitto, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Served]:
    config, client_id = write_config(tmp_path_factory.mktemp("server"), broker)
    async with connect(config, request.param) as client:
        yield Served(client, client_id, broker, request.param)


# ---- discovery ----------------------------------------------------------------------------------


async def test_protocol_era_is_the_one_asked_for(served: Served) -> None:
    expected = {"legacy": "2025-11-25", "auto": "2026-07-28"}[served.mode]
    assert served.client.protocol_version == expected


async def test_every_tool_has_title_description_annotations_and_schemas(served: Served) -> None:
    tools = {tool.name: tool for tool in (await served.client.list_tools()).tools}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert tool.title and tool.description and "untrusted" in tool.description
        hints = tool.annotations
        assert hints is not None
        for hint in (
            hints.read_only_hint,
            hints.destructive_hint,
            hints.idempotent_hint,
            hints.open_world_hint,
        ):
            assert hint is not None
        assert tool.input_schema["type"] == "object"
        assert tool.output_schema is not None and tool.output_schema["type"] == "object"
    assert tools["mqtt_read"].annotations.read_only_hint is True  # type: ignore[union-attr]
    assert tools["mqtt_publish"].annotations.destructive_hint is True  # type: ignore[union-attr]
    assert tools["mqtt_publish"].input_schema["properties"]["qos"]["enum"] == [0, 1, 2]


async def test_allowed_topics_resource_lists_patterns_and_broker_facts(served: Served) -> None:
    result = await served.client.read_resource("mcpmqtt://topics/allowed")
    document = json.loads(result.contents[0].text)  # type: ignore[union-attr]
    assert {"pattern": "test/+", "permissions": ["read"], "description": "one level under test"} in (
        document["topics"]
    )
    assert document["broker"]["port"] == served.broker.port
    assert document["broker"]["tls"] is False
    assert document["broker"]["authentication"] is False


async def test_examples_resource_expands_wildcards(served: Served) -> None:
    result = await served.client.read_resource("mcpmqtt://topics/examples")
    examples = {e["pattern"]: e for e in json.loads(result.contents[0].text)["examples"]}  # type: ignore[union-attr]
    assert "sensors/room1/temperature" in examples["sensors/+/temperature"]["example_topics"]
    assert "lab" in examples["lab/#"]["example_topics"]


# ---- mqtt_publish -------------------------------------------------------------------------------


async def test_publish_qos1_reaches_a_subscriber(served: Served) -> None:
    async with raw_client(served.broker) as observer:
        await observer.subscribe("actuators/lights/room1/on", qos=1)
        result = structured(
            await served.call("mqtt_publish", topic="actuators/lights/room1/on", payload="1", qos=1)
        )
        assert result == {"topic": "actuators/lights/room1/on", "qos": 1, "retain": False, "bytes": 1}
        with anyio.fail_after(5):
            message = await anext(aiter(observer.messages))
        assert message.payload == b"1"


async def test_publish_base64_sends_the_exact_bytes(served: Served) -> None:
    raw = bytes(range(256))
    async with raw_client(served.broker) as observer:
        await observer.subscribe("lab/binary", qos=1)
        encoded = base64.b64encode(raw).decode()
        result = await served.call(
            "mqtt_publish", topic="lab/binary", payload=encoded, payload_encoding="base64"
        )
        assert structured(result)["bytes"] == 256
        with anyio.fail_after(5):
            message = await anext(aiter(observer.messages))
        assert message.payload == raw


@pytest.mark.parametrize(
    ("payload", "sent"),
    [
        ({"command": "status", "room": "küche"}, '{"command":"status","room":"küche"}'.encode()),
        (21.5, b"21.5"),
        (7, b"7"),
        (True, b"true"),
        ([1, "a", None], b'[1,"a",null]'),
        (None, b"null"),
        ("21.5", b"21.5"),  # a string is sent as is, never quoted
        ('{"a": 1,  "b": "\\u00e9"}', b'{"a": 1,  "b": "\\u00e9"}'),  # nor parsed and written anew
    ],
    ids=["object", "float", "int", "bool", "array", "null", "string", "json-text"],
)
async def test_publish_sends_a_json_value_payload_as_compact_json(
    served: Served, payload: Any, sent: bytes, request: pytest.FixtureRequest
) -> None:
    topic = f"lab/json/{served.mode}/{request.node.callspec.id}"
    async with raw_client(served.broker) as observer:
        await observer.subscribe(topic, qos=1)
        result = structured(await served.call("mqtt_publish", topic=topic, payload=payload, qos=1))
        assert result["bytes"] == len(sent)
        with anyio.fail_after(5):
            message = await anext(aiter(observer.messages))
        assert message.payload == sent


@pytest.mark.parametrize(
    ("arguments", "prefix", "detail"),
    [
        ({"topic": "sensors/x/temperature", "payload": "1"}, "permission denied:", "write pattern"),
        (
            {"topic": "actuators/a", "payload": {"a": 1}, "payload_encoding": "base64"},
            "invalid argument:",
            "base64 string, and this payload is an object",
        ),
        ({"topic": "actuators/+", "payload": "1"}, "invalid topic:", "'+'"),
        ({"topic": "actuators/#", "payload": "1"}, "invalid topic:", "'#'"),
        ({"topic": "actuators/a\x00b", "payload": "1"}, "invalid topic:", "U+0000"),
        ({"topic": "actuators/\x07", "payload": "1"}, "invalid topic:", "U+0007"),
        ({"topic": "", "payload": "1"}, "invalid topic:", "empty"),
        ({"topic": "actuators/" + "x" * 65_535, "payload": "1"}, "invalid topic:", "65535"),
        ({"topic": "actuators/a", "payload": "1", "qos": 3}, "invalid argument:", "qos"),
        ({"topic": "actuators/a", "payload": "1", "qos": "high"}, "invalid argument:", "qos"),
        ({"topic": 42, "payload": "1"}, "invalid argument:", "topic"),
        ({"payload": "1"}, "invalid argument:", "topic: required"),
        (
            {"topic": "actuators/a", "payload": "!!", "payload_encoding": "base64"},
            "invalid argument:",
            "base64",
        ),
        ({"topic": "actuators/a", "payload": "x" * 1_048_577}, "payload too large:", "1,048,576"),
    ],
)
async def test_publish_bad_input_gets_a_precise_error_and_the_connection_stays_up(
    served: Served, arguments: dict[str, Any], prefix: str, detail: str
) -> None:
    text = error_text(await served.client.call_tool("mqtt_publish", arguments))
    assert text.startswith(prefix)
    assert detail.lower() in text.lower().replace(",", "") or detail.lower() in text.lower()
    structured(await served.call("mqtt_publish", topic="lab/still-up", payload="ok", qos=1))


async def test_publish_exactly_at_the_payload_limit_is_accepted(served: Served) -> None:
    result = await served.call("mqtt_publish", topic="lab/big", payload="x" * 1_048_576, qos=1)
    assert structured(result)["bytes"] == 1_048_576


# ---- mqtt_subscribe / mqtt_read: the original's failures ----------------------------------------


def publish_when_subscribed(
    served: Served, topic_filter: str, messages: list[tuple[str, bytes]]
) -> Callable[[], Awaitable[None]]:
    """A device task that publishes `messages` once the server has subscribed to `topic_filter`."""
    before = served.count("subscribe", topic_filter)

    async def publish() -> None:
        await served.subscribed(topic_filter, before)
        async with raw_client(served.broker) as device:
            for topic, payload in messages:
                await device.publish(topic, payload, qos=1)

    return publish


async def test_wildcard_subscription_delivers_messages(served: Served) -> None:
    publish = publish_when_subscribed(
        served,
        "sensors/+/temperature",
        [("sensors/room1/temperature", b"21.5"), ("sensors/room2/temperature", b"19")],
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(publish)
        result = structured(
            await served.call("mqtt_subscribe", topic="sensors/+/temperature", timeout=10, max_messages=2)
        )
    assert [(m["topic"], m["payload"]) for m in result["messages"]] == [
        ("sensors/room1/temperature", "21.5"),
        ("sensors/room2/temperature", "19"),
    ]
    assert result["messages_received"] == 2 and result["timed_out"] is False


async def test_subscribe_timeout_is_a_total_time_not_an_idle_timeout(served: Served) -> None:
    before = served.count("subscribe", "lab/slow")

    async def slow_device() -> None:
        await served.subscribed("lab/slow", before)
        async with raw_client(served.broker) as device:
            for i in range(3):
                await anyio.sleep(1.2)
                await device.publish("lab/slow", str(i).encode(), qos=1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(slow_device)
        result = structured(await served.call("mqtt_subscribe", topic="lab/slow", timeout=10, max_messages=3))
    assert [m["payload"] for m in result["messages"]] == ["0", "1", "2"]
    assert result["timed_out"] is False


async def test_subscribe_returns_what_arrived_when_the_timeout_passes(served: Served) -> None:
    publish = publish_when_subscribed(served, "lab/partial", [("lab/partial", b"only one")])
    async with anyio.create_task_group() as tg:
        tg.start_soon(publish)
        with anyio.fail_after(5):
            result = structured(
                await served.call("mqtt_subscribe", topic="lab/partial", timeout=1.5, max_messages=2)
            )
    assert [m["payload"] for m in result["messages"]] == ["only one"]
    assert result["timed_out"] is True and result["messages_received"] == 1


async def test_burst_of_messages_is_not_lost(served: Served) -> None:
    count = 2000
    burst = [(f"lab/burst/{i % 5}", str(i).encode()) for i in range(count)]
    publish = publish_when_subscribed(served, "lab/burst/#", burst)
    async with anyio.create_task_group() as tg:
        tg.start_soon(publish)
        result = structured(
            await served.call("mqtt_subscribe", topic="lab/burst/#", timeout=30, max_messages=count)
        )
    assert [int(m["payload"]) for m in result["messages"]] == list(range(count))


async def test_non_utf8_payload_comes_as_base64_and_the_server_stays_hearing(served: Served) -> None:
    publish = publish_when_subscribed(served, "lab/bin", [("lab/bin", b"\xff\xfe\x00"), ("lab/bin", b"text")])
    async with anyio.create_task_group() as tg:
        tg.start_soon(publish)
        result = structured(await served.call("mqtt_subscribe", topic="lab/bin", timeout=10, max_messages=2))
    first, second = result["messages"]
    assert first["payload_encoding"] == "base64" and base64.b64decode(first["payload"]) == b"\xff\xfe\x00"
    assert second == {**second, "payload": "text", "payload_encoding": "utf-8"}


async def test_hash_filter_is_denied_by_a_plus_allowlist(served: Served) -> None:
    text = error_text(await served.call("mqtt_subscribe", topic="test/#", timeout=1))
    assert text.startswith("permission denied:") and "'test/+'" in text
    for tool in ("mqtt_subscribe", "mqtt_read"):
        assert (await served.call(tool, topic="test/+", timeout=0.1)).is_error is False


async def test_concurrent_waiters_on_one_topic_each_get_the_message(served: Served) -> None:
    results: list[dict[str, Any]] = []

    async def read() -> None:
        results.append(structured(await served.call("mqtt_read", topic="lab/shared", timeout=10)))

    async with anyio.create_task_group() as tg:
        before = served.count("subscribe", "lab/shared")
        for _ in range(3):
            tg.start_soon(read)
        await served.subscribed("lab/shared", before + 2)  # all three joined (one SUBSCRIBE each)
        async with raw_client(served.broker) as device:
            await device.publish("lab/shared", b"for everyone", qos=1)
    assert [r["message"]["payload"] for r in results] == ["for everyone"] * 3


async def test_every_call_removes_its_subscription(served: Served) -> None:
    before = served.count("unsubscribe", "lab/cleanup")
    for tool in ("mqtt_read", "mqtt_subscribe"):
        structured(await served.call(tool, topic="lab/cleanup", timeout=0.1))
    await wait_for_log(served.broker, served.client_id, "unsubscribe", "lab/cleanup", before + 2)


async def test_cancelled_call_removes_its_subscription(served: Served) -> None:
    before_sub = served.count("subscribe", "lab/cancelled")
    before_unsub = served.count("unsubscribe", "lab/cancelled")
    with anyio.move_on_after(1.5):
        await served.call("mqtt_subscribe", topic="lab/cancelled", timeout=60)
    assert served.count("subscribe", "lab/cancelled") == before_sub + 1
    await wait_for_log(served.broker, served.client_id, "unsubscribe", "lab/cancelled", before_unsub + 1)
    assert (await served.call("mqtt_read", topic="lab/x", timeout=0.1)).is_error is False


async def test_read_returns_a_retained_message_at_once(served: Served) -> None:
    async with raw_client(served.broker) as device:
        await device.publish("status/system", b"online", qos=1, retain=True)
    with anyio.fail_after(3):
        result = structured(await served.call("mqtt_read", topic="status/system", timeout=5))
    assert result["message"]["payload"] == "online" and result["message"]["retain"] is True
    assert result["message"]["received_at"].endswith("Z")


async def test_read_times_out_with_null_message(served: Served) -> None:
    result = structured(await served.call("mqtt_read", topic="lab/silent", timeout=0.2))
    assert result == {"topic": "lab/silent", "message": None, "timed_out": True}


@pytest.mark.parametrize(
    ("tool", "arguments", "prefix"),
    [
        ("mqtt_subscribe", {"topic": "sensors/#"}, "permission denied:"),
        ("mqtt_subscribe", {"topic": "lab/#/x"}, "invalid topic:"),
        ("mqtt_subscribe", {"topic": "lab/a+"}, "invalid topic:"),
        ("mqtt_subscribe", {"topic": "lab/x", "max_messages": 0}, "invalid argument:"),
        ("mqtt_subscribe", {"topic": "lab/x", "max_messages": 10_001}, "invalid argument:"),
        ("mqtt_subscribe", {"topic": "lab/x", "timeout": -1}, "invalid argument:"),
        ("mqtt_subscribe", {"topic": "lab/x", "timeout": 1e9}, "invalid argument:"),
        ("mqtt_read", {"topic": "actuators/x"}, "permission denied:"),
        ("mqtt_read", {"topic": "$SYS/broker/uptime"}, "permission denied:"),
        ("mqtt_read", {"topic": "$share/g/lab/x"}, "permission denied:"),
        ("mqtt_read", {"topic": "$share//lab/x"}, "invalid topic:"),
    ],
)
async def test_subscribe_and_read_bad_input(
    served: Served, tool: str, arguments: dict[str, Any], prefix: str
) -> None:
    text = error_text(await served.client.call_tool(tool, arguments))
    assert text.startswith(prefix), text


# ---- mqtt_query ---------------------------------------------------------------------------------


async def test_query_subscribes_before_it_publishes(served: Served) -> None:
    async with responder(served.broker, "commands/+/request"):
        result = structured(
            await served.call("mqtt_query", request_topic="commands/printer/request", payload="status")
        )
    assert result["timed_out"] is False
    assert result["response"]["payload"] == "re:status"
    assert result["response"]["topic"] == result["response_topic"]
    assert result["response"]["properties"]["correlation_data"] == result["correlation_id"]


async def test_query_sends_a_json_value_payload_as_compact_json(served: Served) -> None:
    async with responder(served.broker, "commands/json/request"):
        result = structured(
            await served.call(
                "mqtt_query", request_topic="commands/json/request", payload={"command": "status"}
            )
        )
    assert result["response"]["payload"] == 're:{"command":"status"}'


async def test_query_with_response_topic_needs_read_permission_and_uses_it(served: Served) -> None:
    async with responder(served.broker, "commands/p/request", reply_topic="commands/p/response"):
        result = structured(
            await served.call(
                "mqtt_query",
                request_topic="commands/p/request",
                payload="hi",
                response_topic="commands/p/response",
                qos=1,
            )
        )
    assert result["response_topic"] == "commands/p/response"
    assert result["response"]["payload"] == "re:hi"


@pytest.mark.parametrize(
    ("arguments", "prefix"),
    [
        ({"request_topic": "sensors/x/temperature", "payload": "x"}, "permission denied:"),
        (
            {"request_topic": "commands/p/request", "payload": "x", "response_topic": "lab/+"},
            "invalid topic:",
        ),
        (
            {"request_topic": "commands/p/request", "payload": "x", "response_topic": "actuators/r"},
            "permission denied:",
        ),
        ({"request_topic": "lab/same", "payload": "x", "response_topic": "lab/same"}, "invalid argument:"),
        ({"request_topic": "commands/+/request", "payload": "x"}, "invalid topic:"),
        ({"request_topic": "commands/p/request", "payload": "x", "timeout": -2}, "invalid argument:"),
    ],
)
async def test_query_bad_input(served: Served, arguments: dict[str, Any], prefix: str) -> None:
    text = error_text(await served.client.call_tool("mqtt_query", arguments))
    assert text.startswith(prefix), text


async def test_query_without_responder_times_out(served: Served) -> None:
    with anyio.fail_after(5):
        result = structured(
            await served.call("mqtt_query", request_topic="commands/ghost/request", payload="x", timeout=0.3)
        )
    assert result["timed_out"] is True and result["response"] is None


# ---- broker down --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_broker_down_server_answers_with_broker_unavailable(
    mode: str, fresh_broker: Mosquitto, tmp_path: pathlib.Path
) -> None:
    await anyio.to_thread.run_sync(fresh_broker.stop)
    config, _ = write_config(tmp_path, fresh_broker)
    async with connect(config, mode) as client:
        assert {tool.name for tool in (await client.list_tools()).tools} == TOOLS
        calls = {
            "mqtt_publish": {"topic": "lab/x", "payload": "x"},
            "mqtt_subscribe": {"topic": "lab/x", "timeout": 1},
            "mqtt_read": {"topic": "lab/x", "timeout": 1},
            "mqtt_query": {"request_topic": "lab/x", "payload": "x", "timeout": 1},
        }
        for tool, arguments in calls.items():
            text = error_text(await client.call_tool(tool, arguments))
            assert text.startswith("broker unavailable:") and f":{fresh_broker.port}" in text
        await anyio.to_thread.run_sync(fresh_broker.start)
        with anyio.fail_after(20):
            while (result := await client.call_tool("mqtt_publish", calls["mqtt_publish"])).is_error:  # noqa: ASYNC110
                await anyio.sleep(0.2)
        assert structured(result)["topic"] == "lab/x"


async def test_unknown_argument_is_refused_not_ignored(served: Served) -> None:
    text = error_text(await served.call("mqtt_publish", topic="lab/x", payload="x", retained=True))
    assert text.startswith("invalid argument: mqtt_publish has no argument 'retained'")
    assert "retain" in text


async def test_broker_refusals_reach_the_agent_as_broker_refused(
    broker: Mosquitto, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The allowlist says yes, the broker's own access rules say no: the agent hears the broker."""
    monkeypatch.setenv("MCPMQTT_TEST_BROKER_PASSWORD", broker.users["agent"])
    topics = [{"pattern": "#", "permissions": ["read", "write"], "description": "everything"}]
    config, _ = write_config(
        tmp_path,
        broker,
        port=broker.dynsec_port,
        topics=topics,
        username="agent",
        password_env="MCPMQTT_TEST_BROKER_PASSWORD",
    )
    async with connect(config, "auto") as client:
        refused = error_text(
            await client.call_tool("mqtt_publish", {"topic": "readonly/x", "payload": "x", "qos": 1})
        )
        assert refused.startswith("broker refused:") and "Not authorized" in refused
        refused = error_text(await client.call_tool("mqtt_read", {"topic": "forbidden/#", "timeout": 1}))
        assert refused.startswith("broker refused:") and "'forbidden/#'" in refused
        allowed = await client.call_tool("mqtt_publish", {"topic": "allowed/x", "payload": "x", "qos": 1})
        assert structured(allowed)["topic"] == "allowed/x"  # the connection survived both refusals


# ---- the tool call observer ---------------------------------------------------------------------


async def test_the_tool_call_observer_sees_every_call_and_cannot_break_one() -> None:
    seen: list[tuple[str, dict[str, Any], bool, str | None]] = []

    def observe(
        name: str, arguments: dict[str, Any], result: CallToolResult, error: McpMqttError | None
    ) -> None:
        seen.append((name, arguments, bool(result.is_error), error and error.prefix))
        raise RuntimeError("a broken observer")

    config = Config(
        mqtt=MqttSettings(host="127.0.0.1", port=1), topics=[TopicEntry(pattern="a", permissions=["read"])]
    )
    async with Client(build_server(config, on_tool_call=observe)) as client:
        result = await client.call_tool("mqtt_publish", {"topic": "a", "payload": {"x": 1}})
    assert error_text(result).startswith("permission denied: publishing to 'a'")
    assert seen == [("mqtt_publish", {"topic": "a", "payload": {"x": 1}}, True, "permission denied")]
