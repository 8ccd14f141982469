"""The server's private reply topics are its own: no session reads them, whatever the allowlist says.

Two sessions of one HTTP server share its broker connection and its reply topics. The allowlist
grants a read pattern that covers the reply prefix (as an operator who allows `#` does); still, one
session must never see another's replies, on any path: a subscription, a read, the live state.
"""

import pathlib
from collections.abc import Iterator

import anyio
import pytest
from devices import raw_client, responder
from http_server import ServerProcess, config_for, http_client
from mcp_client import error_text, structured, wait_for_log
from mosquitto import Mosquitto
from server_config import unique_root

from mcpmqtt.config import parse_config

pytestmark = pytest.mark.anyio

ROOT = unique_root()
PREFIX = f"{ROOT}/replies"


@pytest.fixture
def server(broker: Mosquitto, tmp_path: pathlib.Path) -> Iterator[ServerProcess]:
    config = config_for(
        broker,
        topics=[{"pattern": f"{ROOT}/#", "permissions": ["read", "write"]}],
        reply_topic_prefix=PREFIX,
    )
    with ServerProcess(tmp_path, config) as process:
        process.wait_ready()
        yield process


async def test_no_session_may_subscribe_to_the_reply_topics(server: ServerProcess) -> None:
    async with http_client(server.url, mode="legacy") as client:
        for tool, arguments in [
            ("mqtt_subscribe", {"topic": f"{PREFIX}/#", "timeout": 0}),
            ("mqtt_read", {"topic": f"{PREFIX}/+/+", "timeout": 0}),
            ("mqtt_last", {"topic": f"{PREFIX}/abc/def"}),
        ]:
            text = error_text(await client.call_tool(tool, arguments))
            assert text.startswith("permission denied: ") and "private reply topics" in text, text


async def test_a_wide_subscription_never_sees_another_sessions_reply(
    server: ServerProcess, broker: Mosquitto
) -> None:
    async with (
        responder(broker, f"{ROOT}/svc/request"),
        http_client(server.url, mode="legacy") as asker,
        http_client(server.url, mode="legacy") as snooper,
        anyio.create_task_group() as tg,
    ):
        seen: list[dict[str, object]] = []

        async def snoop() -> None:
            # Three messages end the call: the request, then two markers published after the reply
            # came; a leaked reply would arrive before the markers and take one of the three places.
            result = await snooper.call_tool(
                "mqtt_subscribe", {"topic": f"{ROOT}/#", "timeout": 30, "max_messages": 3}
            )
            seen.extend(structured(result)["messages"])

        tg.start_soon(snoop)
        # The live state follows the same filter: the snooper's SUBSCRIBE is the second one.
        await wait_for_log(broker, server.client_id, "subscribe", f"{ROOT}/#", count=2)
        reply = structured(
            await asker.call_tool(
                "mqtt_query", {"request_topic": f"{ROOT}/svc/request", "payload": "ping", "timeout": 5}
            )
        )
        assert reply["response"]["payload"] == "re:ping"
        assert reply["response_topic"].startswith(f"{PREFIX}/")
        async with raw_client(broker) as marker:
            for index in range(2):
                await marker.publish(f"{ROOT}/marker", str(index).encode(), qos=1)
    topics = [message["topic"] for message in seen]
    assert f"{ROOT}/svc/request" in topics  # the snooper did see traffic, and the request
    assert not [topic for topic in topics if topic.startswith(f"{PREFIX}/")]

    async with http_client(server.url, mode="legacy") as client:
        listed = structured(await client.call_tool("mqtt_list_topics", {"filter": f"{ROOT}/#"}))
        assert not [t for t in listed["topics"] if t["topic"].startswith(f"{PREFIX}/")]
        resources = (await client.list_resources()).resources
        assert not [r for r in resources if PREFIX in str(r.uri)]
        allowed = (await client.read_resource("mcpmqtt://topics/allowed")).contents[0]
        assert f'"pattern": "{PREFIX}/#"' in allowed.text  # type: ignore[union-attr]
        assert "private reply topics" in allowed.text  # type: ignore[union-attr]


def test_the_reply_prefix_is_denied_only_where_a_pattern_reaches_it() -> None:
    wide = parse_config({"topics": [{"pattern": "#", "permissions": ["read", "write"]}]}, "test")
    assert not wide.allowlist().decide("read", "mcpmqtt/replies/#").allowed
    assert wide.allowlist().decide("read", "#").withheld == ("mcpmqtt/replies/#",)
    assert not wide.allowlist().readable("mcpmqtt/replies/abc/def")
    assert not wide.allowlist().decide("write", "mcpmqtt/replies/abc/def").allowed
    narrow = parse_config({"topics": [{"pattern": "sensors/#", "permissions": ["read"]}]}, "test")
    assert [rule.pattern for rule in narrow.allowlist().rules] == ["sensors/#"]
