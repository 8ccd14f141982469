"""Watches over the real client and broker, in both protocol eras: made, fired, polled, unwatched; the
cursor, the bounded buffer, expiry, retained values as the baseline, the watch resource and its
notifications, bad input, and the isolation of two callers (two API keys, two HTTP sessions)."""

import asyncio
import json
import pathlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import mcp_types
import pytest
from devices import raw_client
from http_server import ServerProcess, config_for, http_client
from mcp.client import Client
from mcp.shared.exceptions import MCPError
from mcp_client import MODES, connect, error_text, structured, wait_for_log
from mosquitto import Mosquitto
from server_config import unique_root, write_full_config

from mcpmqtt.config import WatchSettings, apikeys
from mcpmqtt.mqtt import Broker, BrokerSettings
from mcpmqtt.rules.policy import Allowlist, Rule
from mcpmqtt.server.watch_state import WatchBook

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning"),
]

ROOT = unique_root()
TOPICS: list[dict[str, Any]] = [
    {"pattern": f"{ROOT}/+/temperature", "permissions": ["read"], "description": "temperatures"},
    {"pattern": f"{ROOT}/+/state", "permissions": ["read"], "description": "printer states"},
    {"pattern": f"{ROOT}/secret/#", "permissions": ["write"], "description": "write only"},
]
WATCHES = {"max_watches": 100, "buffer_size": 3, "max_ttl": "2h"}


@dataclass
class Served:
    client: Client
    broker: Mosquitto
    mode: str


@pytest.fixture(scope="module", params=MODES)
async def served(
    request: pytest.FixtureRequest, broker: Mosquitto, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Served]:
    config = write_full_config(
        tmp_path_factory.mktemp("watches"),
        broker,
        TOPICS,
        watches=WATCHES,
        live_state={"notify_interval": 0.2},
    )
    async with connect(config, request.param) as client:
        yield Served(client, broker, request.param)


async def publish(broker: Mosquitto, *messages: tuple[str, str], retain: bool = False) -> None:
    async with raw_client(broker) as device:
        for topic, payload in messages:
            await device.publish(topic, payload.encode(), qos=1, retain=retain)


async def watch(client: Client, topic: str, **arguments: Any) -> dict[str, Any]:
    return structured(await client.call_tool("mqtt_watch", {"topic": topic, **arguments}))


async def poll(client: Client, watch_id: str, **arguments: Any) -> dict[str, Any]:
    return structured(await client.call_tool("mqtt_poll", {"watch_id": watch_id, **arguments}))


def payloads(result: dict[str, Any]) -> list[str]:
    return [m["payload"] for m in result["messages"]]


async def test_a_watch_fires_on_its_condition_and_is_polled_and_ended(served: Served) -> None:
    topic = f"{ROOT}/{served.mode}-a/temperature"
    made = await watch(
        served.client, f"{ROOT}/+/temperature", condition={"field": "/t", "op": ">", "value": 25}
    )
    assert made["topic"] == f"{ROOT}/+/temperature" and made["condition"] == "/t > 25"
    assert made["resource"] == f"mcpmqtt://watch/{made['watch_id']}" and made["expires_at"].endswith("Z")
    await publish(
        served.broker, (topic, '{"t": 20}'), (topic, '{"t": 26}'), (topic, "not json"), (topic, '{"t": 30}')
    )
    got = await poll(served.client, made["watch_id"], wait=10)
    while len(got["messages"]) < 2:  # the two matches may arrive between two polls
        more = await poll(served.client, made["watch_id"], cursor=got["cursor"], wait=10)
        got = {**more, "messages": got["messages"] + more["messages"]}
    assert payloads(got) == ['{"t": 26}', '{"t": 30}']
    assert got["messages"][0]["topic"] == topic and (got["dropped"], got["expired"]) == (0, False)
    ended = structured(await served.client.call_tool("mqtt_unwatch", {"watch_id": made["watch_id"]}))
    assert ended == {"watch_id": made["watch_id"], "discarded": 2}  # no poll passed them with its cursor
    gone = await served.client.call_tool("mqtt_poll", {"watch_id": made["watch_id"], "wait": 0})
    assert error_text(gone).startswith(f"invalid argument: unknown watch {made['watch_id']!r}")


async def test_a_waiting_poll_returns_as_soon_as_a_match_arrives(served: Served) -> None:
    topic = f"{ROOT}/{served.mode}-wait/state"
    made = await watch(served.client, topic, condition={"op": "==", "value": "finished"})
    done = anyio.Event()
    result: dict[str, Any] = {}

    async def poller() -> None:
        result.update(await poll(served.client, made["watch_id"], wait=20))
        done.set()

    async with anyio.create_task_group() as group:
        group.start_soon(poller)
        await publish(served.broker, (topic, "printing"))
        await anyio.sleep(0.3)  # the poll is waiting now; "printing" must not have ended it
        assert not done.is_set()
        started = time.monotonic()
        await publish(served.broker, (topic, "finished"))
        with anyio.fail_after(5):
            await done.wait()
    assert time.monotonic() - started < 2
    assert payloads(result) == ["finished"]


async def test_a_poll_without_matches_returns_after_its_wait_and_wait_is_capped(served: Served) -> None:
    made = await watch(served.client, f"{ROOT}/{served.mode}-quiet/state")
    started = time.monotonic()
    got = await poll(served.client, made["watch_id"], wait=0.5)
    assert 0.4 < time.monotonic() - started < 3
    assert got["messages"] == [] and got["cursor"] == "0"
    tools = {t.name: t for t in (await served.client.list_tools()).tools}
    wait = tools["mqtt_poll"].input_schema["properties"]["wait"]
    assert wait["default"] == 20 and "more than 25 counts as 25" in wait["description"]


async def test_the_cursor_makes_polling_idempotent_and_the_buffer_counts_what_it_dropped(
    served: Served,
) -> None:
    topic = f"{ROOT}/{served.mode}-buf/state"
    made = await watch(served.client, topic)
    await publish(served.broker, *[(topic, str(i)) for i in range(5)])
    with anyio.fail_after(5):
        while (first := await poll(served.client, made["watch_id"], wait=1))["dropped"] < 2:
            pass
    assert payloads(first) == ["2", "3", "4"] and first["dropped"] == 2  # buffer_size 3: the oldest go
    again = await poll(served.client, made["watch_id"], wait=0)  # no cursor: the same, nothing freed
    assert payloads(again) == ["2", "3", "4"]
    await publish(served.broker, (topic, "5"))
    newer = await poll(served.client, made["watch_id"], cursor=first["cursor"], wait=5)
    assert payloads(newer) == ["5"] and newer["dropped"] == 0
    repeat = await poll(served.client, made["watch_id"], cursor=first["cursor"], wait=0)
    assert payloads(repeat) == ["5"] and repeat["cursor"] == newer["cursor"]  # a lost result costs nothing
    empty = await poll(served.client, made["watch_id"], cursor=newer["cursor"], wait=0)
    assert empty["messages"] == [] and empty["cursor"] == newer["cursor"]


async def test_retained_values_are_the_baseline_of_changed_not_matches(served: Served) -> None:
    topic = f"{ROOT}/{served.mode}-ret/state"
    await publish(served.broker, (topic, '{"state": "printing"}'), retain=True)
    made = await watch(served.client, topic, condition={"field": "/state", "op": "changed"})
    plain = await watch(served.client, topic)  # no condition: still no retained replay
    await publish(served.broker, (topic, '{"state": "printing"}'), (topic, '{"state": "finished"}'))
    got = await poll(served.client, made["watch_id"], wait=5)
    assert payloads(got) == ['{"state": "finished"}']
    every = await poll(served.client, plain["watch_id"], wait=5)
    assert all(not m["retain"] for m in every["messages"]) and every["messages"]
    for w in (made, plain):
        await served.client.call_tool("mqtt_unwatch", {"watch_id": w["watch_id"]})
    await publish(served.broker, (topic, ""), retain=True)


async def test_a_watch_expires_at_its_ttl(served: Served) -> None:
    topic = f"{ROOT}/{served.mode}-ttl/state"
    made = await watch(served.client, topic, ttl="1s")
    await publish(served.broker, (topic, "last"))
    got = await poll(served.client, made["watch_id"], wait=5)
    assert payloads(got) == ["last"]
    started = time.monotonic()
    ended = await poll(served.client, made["watch_id"], cursor=got["cursor"], wait=20)
    assert ended["expired"] is True and ended["messages"] == []
    assert time.monotonic() - started < 3  # the poll ends with the watch, not after its wait
    await publish(served.broker, (topic, "too late"))
    assert (await poll(served.client, made["watch_id"], wait=0))["messages"] == []


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        ({"topic": f"{ROOT}/secret/x"}, "permission denied:"),
        ({"topic": f"{ROOT}/a/#/b"}, "invalid topic:"),
        ({"topic": f"{ROOT}/a/state", "ttl": "-5m"}, "invalid argument: '-5m' is not a span of time"),
        ({"topic": f"{ROOT}/a/state", "ttl": "10 parsecs"}, "invalid argument: '10 parsecs' is not a span"),
        (
            {"topic": f"{ROOT}/a/state", "ttl": "3h"},
            "invalid argument: ttl '3h' is longer than this server allows",
        ),
        (
            {"topic": f"{ROOT}/a/state", "condition": {"field": "state", "op": "=="}},
            "invalid argument: field 'state' is not a JSON Pointer",
        ),
        ({"topic": f"{ROOT}/a/state", "condition": {"op": "~"}}, "invalid argument: condition.op"),
        (
            {"topic": f"{ROOT}/a/state", "condition": {"op": ">", "value": "hot"}},
            "invalid argument: condition op '>' compares numbers",
        ),
        (
            {"topic": f"{ROOT}/a/state", "condition": {"op": "changed", "colour": 1}},
            "invalid argument: condition",
        ),
    ],
    ids=[
        "unreadable",
        "bad-filter",
        "negative-ttl",
        "parsecs",
        "ttl-too-long",
        "pointer",
        "op",
        "value",
        "key",
    ],
)
async def test_bad_watches_are_refused_precisely(
    served: Served, arguments: dict[str, Any], says: str
) -> None:
    assert error_text(await served.client.call_tool("mqtt_watch", arguments)).startswith(says)


async def test_bad_polls_are_refused_precisely(served: Served) -> None:
    made = await watch(served.client, f"{ROOT}/{served.mode}-bad/state")
    for arguments, says in [
        ({"watch_id": "nope"}, "invalid argument: unknown watch 'nope': you have no watch with this id"),
        (
            {"watch_id": made["watch_id"], "cursor": "x"},
            "invalid argument: cursor 'x' is not one this watch gave",
        ),
        ({"watch_id": made["watch_id"], "cursor": "99"}, "invalid argument: cursor '99'"),
        ({"watch_id": made["watch_id"], "wait": -1}, "invalid argument: wait"),
    ]:
        assert error_text(await served.client.call_tool("mqtt_poll", arguments)).startswith(says)
    unknown = await served.client.call_tool("mqtt_unwatch", {"watch_id": "nope"})
    assert error_text(unknown).startswith("invalid argument: unknown watch 'nope'")
    await served.client.call_tool("mqtt_unwatch", {"watch_id": made["watch_id"]})


async def test_a_caller_holds_at_most_max_watches(broker: Mosquitto, tmp_path: pathlib.Path) -> None:
    config = write_full_config(tmp_path, broker, TOPICS, watches={"max_watches": 2})
    async with connect(config, "auto") as client:
        made = [await watch(client, f"{ROOT}/max{i}/state") for i in range(2)]
        refused = await client.call_tool("mqtt_watch", {"topic": f"{ROOT}/x/state"})
        assert error_text(refused).startswith(
            "invalid argument: you hold 2 watches, the most watches.max_watches"
        )
        await client.call_tool("mqtt_unwatch", {"watch_id": made[0]["watch_id"]})
        await watch(client, f"{ROOT}/x/state")


async def test_the_watch_resource_shows_matches_without_consuming_them(served: Served) -> None:
    topic = f"{ROOT}/{served.mode}-res/state"
    made = await watch(served.client, topic)
    await publish(served.broker, (topic, "one"))
    got = await poll(served.client, made["watch_id"], wait=5)
    read = await served.client.read_resource(made["resource"])
    view = json.loads(read.contents[0].text)  # type: ignore[union-attr]
    assert view["watch_id"] == made["watch_id"] and view["topic"] == topic and view["expired"] is False
    assert [m["payload"] for m in view["messages"]] == ["one"]
    assert payloads(await poll(served.client, made["watch_id"], wait=0)) == payloads(got)
    templates = (await served.client.list_resource_templates()).resource_templates
    assert "mcpmqtt://watch/{watch_id}" in {t.uri_template for t in templates}
    with pytest.raises(MCPError, match="unknown watch 'nope'"):
        await served.client.read_resource("mcpmqtt://watch/nope")
    await served.client.call_tool("mqtt_unwatch", {"watch_id": made["watch_id"]})


async def test_a_match_notifies_the_watch_resource_subscribers(served: Served) -> None:
    """Both eras: resources/subscribe (2025-11-25) and subscriptions/listen (2026-07-28)."""
    topic = f"{ROOT}/{served.mode}-note/temperature"
    made = await watch(served.client, topic, condition={"op": ">=", "value": 30})
    uri = made["resource"]
    updates: list[str] = []
    if served.mode == "legacy":
        seen = anyio.Event()

        async def on_message(message: Any) -> None:
            if isinstance(message, mcp_types.ResourceUpdatedNotification):
                updates.append(message.params.uri)
                seen.set()

        served.client.session._message_handler = on_message  # type: ignore[attr-defined]
        await served.client.session.subscribe_resource(uri)  # type: ignore[no-untyped-call]
        await publish(served.broker, (topic, "20"))
        await anyio.sleep(0.5)
        assert updates == []  # not a match: no notification
        await publish(served.broker, (topic, "31"))
        with anyio.fail_after(5):
            await seen.wait()
    else:
        async with served.client.listen(resource_subscriptions=[uri]) as subscription:
            await publish(served.broker, (topic, "20"), (topic, "31"))
            with anyio.fail_after(5):
                async for event in subscription:
                    updates.append(event.uri)  # type: ignore[attr-defined]
                    break
    assert updates == [uri]
    assert payloads(await poll(served.client, made["watch_id"], wait=0)) == ["31"]
    await served.client.call_tool("mqtt_unwatch", {"watch_id": made["watch_id"]})


async def test_subscribing_to_an_unknown_watch_is_an_error(served: Served) -> None:
    uri = "mcpmqtt://watch/nope"
    with pytest.raises(MCPError, match="unknown watch 'nope'"):
        if served.mode == "legacy":
            await served.client.session.subscribe_resource(uri)  # type: ignore[no-untyped-call]
        else:
            async with served.client.listen(resource_subscriptions=[uri]):
                pass


async def test_watches_can_be_switched_off(broker: Mosquitto, tmp_path: pathlib.Path) -> None:
    config = write_full_config(tmp_path, broker, TOPICS, watches={"enabled": False})
    async with connect(config, "auto") as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert not names & {"mqtt_watch", "mqtt_poll", "mqtt_unwatch"}
        assert "mqtt_watch" not in (client.instructions or "")


async def test_the_instructions_steer_long_waits_to_watches(served: Served) -> None:
    assert "longer than about 20 seconds" in (served.client.instructions or "")
    tools = {t.name: t for t in (await served.client.list_tools()).tools}
    assert "more than about 20 seconds" in (tools["mqtt_watch"].description or "")


# ---- two callers over HTTP ------------------------------------------------------------------------

KEY_A, KEY_B = apikeys.new_key(), apikeys.new_key()
HTTP_KEYS = {
    "api_keys": [
        {"name": "agent-a", "hash": str(apikeys.hash_key(KEY_A, log_n=10))},
        {"name": "agent-b", "hash": str(apikeys.hash_key(KEY_B, log_n=10))},
    ]
}


async def assert_isolated(owner: Client, other: Client, broker: Mosquitto, label: str) -> None:
    """`other` can neither see, poll, read, subscribe to nor end `owner`'s watch, and learns nothing."""
    topic = f"{ROOT}/{label}/state"
    made = await watch(owner, topic)
    theirs = await watch(other, topic)
    await publish(broker, (topic, "hello"))
    wid = made["watch_id"]
    for tool, arguments in [("mqtt_poll", {"watch_id": wid, "wait": 0}), ("mqtt_unwatch", {"watch_id": wid})]:
        foreign = error_text(await other.call_tool(tool, arguments))
        never = error_text(await other.call_tool(tool, {**arguments, "watch_id": "x" * len(wid)}))
        assert foreign == never.replace("x" * len(wid), wid)  # the same words as for an id that never existed
    with pytest.raises(MCPError, match="unknown watch"):
        await other.read_resource(made["resource"])
    with pytest.raises(MCPError, match="unknown watch"):
        if other.protocol_version == "2025-11-25":
            await other.session.subscribe_resource(made["resource"])  # type: ignore[no-untyped-call]
        else:
            async with other.listen(resource_subscriptions=[made["resource"]]):
                pass
    assert payloads(await poll(owner, wid, wait=5)) == ["hello"]  # the owner's watch is untouched
    assert payloads(await poll(other, theirs["watch_id"], wait=5)) == ["hello"]


async def test_two_api_keys_see_only_their_own_watches(broker: Mosquitto, tmp_path: pathlib.Path) -> None:
    with ServerProcess(tmp_path, config_for(broker, HTTP_KEYS, TOPICS)) as server:
        server.wait_ready()
        async with http_client(server.url, KEY_A) as a, http_client(server.url, KEY_B) as b:
            await assert_isolated(a, b, broker, "keys")
        # The watch belongs to the key, not to one connection: a new session with key A finds it.
        async with http_client(server.url, KEY_A) as a:
            made = await watch(a, f"{ROOT}/keys2/state")
        async with http_client(server.url, KEY_A, mode="legacy") as again:
            assert (await poll(again, made["watch_id"], wait=0))["messages"] == []


async def test_two_http_sessions_without_keys_see_only_their_own_watches(
    broker: Mosquitto, tmp_path: pathlib.Path
) -> None:
    with ServerProcess(tmp_path, config_for(broker, None, TOPICS)) as server:
        server.wait_ready()
        async with http_client(server.url, mode="legacy") as a, http_client(server.url, mode="legacy") as b:
            await assert_isolated(a, b, broker, "sessions")
        # Sessionless (2026-07-28) clients without authentication are one caller, as documented: on a
        # loopback server without keys, each of them could do everything the other can anyway.
        async with http_client(server.url) as a, http_client(server.url) as b:
            made = await watch(a, f"{ROOT}/sessionless/state")
            assert (await poll(b, made["watch_id"], wait=0))["messages"] == []


# ---- the book of watches on its own --------------------------------------------------------------


async def test_expired_watches_kept_for_a_last_poll_are_bounded_per_owner(broker: Mosquitto) -> None:
    adapter = Broker(BrokerSettings(broker.host, broker.port, f"watch-book-{uuid.uuid4().hex[:6]}"))
    task = asyncio.create_task(adapter.run())
    book = WatchBook(adapter, WatchSettings(max_watches=2), lambda uri: None, lambda uri: None)
    allowlist = Allowlist([Rule(f"{ROOT}/#", frozenset({"read"}))])
    try:
        for i in range(5):
            watch = await book.start("me", f"{ROOT}/book{i}", None, allowlist, ttl=0.05)
            await watch.wait(0, 5)  # ends when the watch expires
            assert watch.expired
        live = await book.start("me", f"{ROOT}/live", None, allowlist, ttl=60)
        assert len(book) == 3  # two expired ones kept for a last poll (max_watches), not five, and one live
        other = await book.start("someone else", f"{ROOT}/other", None, allowlist, ttl=60)
        assert len(book) == 4 and book.get("someone else", other.watch_id) is other
        assert book.get("me", live.watch_id) is live
    finally:
        await book.close()
        await adapter.stop(task)


async def test_a_watch_keeps_its_subscription_across_a_broker_restart(
    fresh_broker: Mosquitto, tmp_path: pathlib.Path
) -> None:
    config = write_full_config(tmp_path, fresh_broker, TOPICS)
    client_id = json.loads(config.read_text())["mqtt"]["client_id"]
    topic = f"{ROOT}/restart/state"
    async with connect(config, "auto") as client:
        made = await watch(client, topic, condition={"op": "==", "value": "finished"})
        await wait_for_log(fresh_broker, client_id, "subscribe", topic)
        await anyio.to_thread.run_sync(fresh_broker.restart, 0.5)
        await wait_for_log(fresh_broker, client_id, "subscribe", topic, 2)  # restored on the new connection
        await publish(fresh_broker, (topic, "printing"), (topic, "finished"))
        got = await poll(client, made["watch_id"], wait=10)
        assert payloads(got) == ["finished"] and got["expired"] is False
