"""MQTT 5 properties on mqtt_publish: content_type, user_properties, message_expiry.

Sent as PUBLISH properties on MQTT 5 (seen by an independent client, and read back through
mqtt_read as Message.properties); left out with a note on MQTT 3.1.1; checked before sending, since
the broker drops the whole connection for a malformed string in a property as in a topic.
"""

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from devices import raw_client
from mcp.client import Client
from mcp_client import MODES, connect, error_text, structured
from mosquitto import Mosquitto
from server_config import unique_root, write_full_config

pytestmark = pytest.mark.anyio

ROOT = unique_root()
TOPICS = [{"pattern": f"{ROOT}/#", "permissions": ["read", "write"]}]


@pytest.fixture(scope="module", params=MODES)
async def client(
    request: pytest.FixtureRequest, broker: Mosquitto, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Client]:
    config = write_full_config(tmp_path_factory.mktemp("props"), broker, TOPICS)
    async with connect(config, request.param) as connected:
        yield connected


@pytest.fixture(scope="module")
async def client_311(broker: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Client]:
    config = write_full_config(tmp_path_factory.mktemp("props311"), broker, TOPICS, {"protocol": "3.1.1"})
    async with connect(config, "legacy") as connected:
        yield connected


async def publish(client: Client, topic: str, **arguments: Any) -> Any:
    return await client.call_tool(
        "mqtt_publish", {"topic": f"{ROOT}/{topic}", "payload": "21.5", **arguments}
    )


async def test_properties_reach_a_subscriber_as_mqtt5_properties(client: Client, broker: Mosquitto) -> None:
    async with raw_client(broker) as observer:
        await observer.subscribe(f"{ROOT}/wire", qos=1)
        result = structured(
            await publish(
                client,
                "wire",
                qos=1,
                content_type="text/plain",
                user_properties=[["unit", "°C"], ["unit", "celsius"], ["source", ""]],
                message_expiry=3600,
            )
        )
        assert "notes" not in result
        with anyio.fail_after(5):
            message = await anext(aiter(observer.messages))
    props = message.properties
    assert props is not None
    assert props.ContentType == "text/plain"
    assert props.UserProperty == [
        ("unit", "°C"),
        ("unit", "celsius"),
        ("source", ""),
    ]  # order and repeats kept
    assert 3590 <= props.MessageExpiryInterval <= 3600


async def test_a_publish_with_properties_comes_back_through_mqtt_read(client: Client) -> None:
    structured(
        await publish(
            client,
            "roundtrip",
            qos=1,
            retain=True,
            content_type="application/json",
            user_properties=[["room", "kitchen"]],
            message_expiry=600,
        )
    )
    read = structured(await client.call_tool("mqtt_read", {"topic": f"{ROOT}/roundtrip", "timeout": 5}))
    properties = read["message"]["properties"]
    assert properties["content_type"] == "application/json"
    assert properties["user_properties"] == [["room", "kitchen"]]
    assert 590 <= properties["message_expiry_interval"] <= 600
    structured(
        await client.call_tool("mqtt_publish", {"topic": f"{ROOT}/roundtrip", "payload": "", "retain": True})
    )


async def test_a_publish_without_properties_sends_none(client: Client, broker: Mosquitto) -> None:
    async with raw_client(broker) as observer:
        await observer.subscribe(f"{ROOT}/plain", qos=1)
        assert "notes" not in structured(await publish(client, "plain", qos=1))
        with anyio.fail_after(5):
            message = await anext(aiter(observer.messages))
    assert not getattr(message.properties, "ContentType", None)
    assert not getattr(message.properties, "UserProperty", None)


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        (
            {"content_type": "text/\x00plain"},
            "invalid argument: content_type 'text/\\x00plain' contains the null",
        ),
        (
            {"user_properties": [["k", "a\x07"]]},
            "the value of user_properties[0] 'a\\x07' contains the control",
        ),
        ({"user_properties": [["\ufffe", "v"]]}, "the key of user_properties[0]"),
        ({"user_properties": [["k", "x" * 65_536]]}, "65,536 bytes of UTF-8; MQTT allows at most 65,535"),
        ({"user_properties": [["only-a-key"]]}, "invalid argument: user_properties.0"),
        ({"user_properties": [["k", "v"]] * 101}, "invalid argument: user_properties"),
        ({"message_expiry": 0}, "invalid argument: message_expiry"),
        ({"message_expiry": 4_294_967_296}, "invalid argument: message_expiry"),
        ({"content_type": 5}, "invalid argument: content_type"),
    ],
)
async def test_malformed_properties_are_refused_before_anything_is_sent(
    client: Client, arguments: dict[str, Any], says: str
) -> None:
    text = error_text(await publish(client, "bad", **arguments))
    assert says in text
    structured(await publish(client, "still-up", qos=1))  # the connection survived


async def test_on_mqtt_311_the_message_goes_out_without_properties_and_a_note_says_so(
    client_311: Client, broker: Mosquitto
) -> None:
    async with raw_client(broker) as observer:
        await observer.subscribe(f"{ROOT}/old", qos=1)
        result = structured(
            await publish(client_311, "old", qos=1, content_type="text/plain", user_properties=[["a", "b"]])
        )
        with anyio.fail_after(5):
            message = await anext(aiter(observer.messages))
    assert result["notes"] == [
        "the broker speaks MQTT 3.1.1, so content_type and user_properties were not sent"
    ]
    assert message.payload == b"21.5"
    one = structured(await publish(client_311, "old", message_expiry=5))
    assert one["notes"] == ["the broker speaks MQTT 3.1.1, so message_expiry was not sent"]
    assert "notes" not in structured(await publish(client_311, "old"))
