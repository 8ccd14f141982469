"""Payload shapes from observation: the inferred JSON Schema, its bounds, and the notification a
subscribed client gets when a topic's shape changes (both protocol eras, real broker and client)."""

import json
import pathlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import mcp_types
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream
from devices import raw_client
from mcp.client import Client
from mcp_client import MODES, connect
from mosquitto import Mosquitto
from server_config import unique_root, write_full_config

from mcpmqtt.mqtt import Received
from mcpmqtt.observation import ShapeObserver
from mcpmqtt.server.notifier import topic_uri


def observer(**bounds: Any) -> ShapeObserver:
    settings: dict[str, Any] = {
        "max_topics": 100,
        "sample_interval": 1.0,
        "max_sample_bytes": 10_000,
        "max_schema_bytes": 16_384,
        "max_examples": 3,
    }
    return ShapeObserver(**(settings | bounds))


def message(topic: str, payload: object, at: float) -> Received:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Received(topic, data, 0, False, at, None)


def test_schema_is_inferred_and_a_new_field_is_a_change() -> None:
    shapes = observer()
    shapes.offer(message("t", {"value": 21, "unit": "°C"}, 10.0))
    assert shapes.flush() == ["t"]
    shapes.offer(message("t", {"value": 21.5, "unit": "°C"}, 11.0))
    assert shapes.flush() == ["t"]  # integer widened to number
    shapes.offer(message("t", {"value": 22.5, "unit": "°C"}, 12.0))
    assert shapes.flush() == []  # same shape
    shapes.offer(message("t", {"value": 23.0, "unit": "°C", "battery": 80}, 13.0))
    assert shapes.flush() == ["t"]
    record = shapes.shape_of("t")
    assert record is not None and record["schema"] is not None
    assert record["schema"]["properties"] == {
        "value": {"type": "number"},
        "unit": {"type": "string"},
        "battery": {"type": "integer"},
    }
    assert record["schema"]["required"] == ["unit", "value"]
    assert record["schema_changes"] == 3 and record["messages"] == 4 and record["samples"] == 4
    assert record["rate_per_second"] == 1.0
    assert record["first_seen"] == "1970-01-01T00:00:10.000Z"
    assert record["last_seen"] == "1970-01-01T00:00:13.000Z"
    assert len(record["examples"]) == 3 and record["examples"][-1]["battery"] == 80


def test_a_firehose_is_sampled_once_per_interval() -> None:
    shapes = observer(sample_interval=1.0)
    for i in range(1000):
        shapes.offer(message("fast", {"n": i}, 100.0 + i / 1000))  # 1000 messages within one second
    shapes.flush()
    record = shapes.shape_of("fast")
    assert record is not None and record["messages"] == 1000 and record["samples"] == 1


def test_work_per_flush_is_bounded() -> None:
    shapes = observer(max_samples_per_flush=10)
    for i in range(25):
        shapes.offer(message(f"many/{i}", {"n": i}, 1.0))
    assert len(shapes.flush()) == 10
    assert len(shapes.flush()) == 10
    assert len(shapes.flush()) == 5


def test_non_json_payloads_are_counted_not_shaped() -> None:
    shapes = observer()
    for at, payload in ((1.0, b"\xff\x00"), (2.0, b"ON"), (3.0, b'{"state": "ON"}')):
        shapes.offer(message("mixed", payload, at))
        shapes.flush()
    record = shapes.shape_of("mixed")
    assert record is not None and record["samples"] == 3 and record["non_json_samples"] == 2
    assert record["schema"] is not None and record["schema"]["properties"] == {"state": {"type": "string"}}


def test_bounds_on_topics_and_sample_size() -> None:
    shapes = observer(max_topics=2, max_sample_bytes=50)
    for name in ("a", "b", "c"):
        shapes.offer(message(name, {"x": 1}, 1.0))
    assert shapes.shape_of("a") is None and len(shapes) == 2
    shapes.offer(message("big", {"text": "x" * 100}, 1.0))
    shapes.flush()
    big = shapes.shape_of("big")
    assert big is not None and big["messages"] == 1 and big["samples"] == 0 and big["schema"] is None


def test_a_schema_past_its_bound_stops_growing() -> None:
    shapes = observer(max_schema_bytes=256)
    shapes.offer(message("grow", {"a": 1}, 1.0))
    shapes.flush()
    shapes.offer(message("grow", {f"key_{i}": i for i in range(30)}, 3.0))
    assert shapes.flush() == []
    record = shapes.shape_of("grow")
    assert record is not None and record["schema_capped"] is True
    assert record["schema"] is not None and list(record["schema"]["properties"]) == ["a"]


def test_examples_are_distinct_and_bounded() -> None:
    shapes = observer(max_examples=2, sample_interval=0.5)
    for i, value in enumerate([1, 1, 2, 3]):
        shapes.offer(message("ex", {"v": value}, float(i)))
        shapes.flush()
    record = shapes.shape_of("ex")
    assert record is not None and record["examples"] == [{"v": 2}, {"v": 3}]


# ---- through a real broker and a real MCP client -------------------------------------------------

pytestmark = pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")


@asynccontextmanager
async def notifications(client: Client, mode: str, uri: str) -> AsyncIterator[MemoryObjectReceiveStream[str]]:
    """The URIs of resource-updated notifications for `uri`, in either protocol era."""
    send, receive = anyio.create_memory_object_stream[str](100)
    if mode == "legacy":

        async def on_message(message: Any) -> None:
            if isinstance(message, mcp_types.ResourceUpdatedNotification):
                await send.send(message.params.uri)

        client.session._message_handler = on_message  # type: ignore[attr-defined]
        await client.session.subscribe_resource(uri)  # type: ignore[no-untyped-call]
        yield receive
    else:
        async with (
            client.listen(resource_subscriptions=[uri]) as subscription,
            anyio.create_task_group() as tg,
        ):

            async def forward() -> None:
                async for event in subscription:
                    await send.send(event.uri)  # type: ignore[attr-defined]

            tg.start_soon(forward)
            yield receive
            tg.cancel_scope.cancel()


async def read_shape(client: Client, uri: str) -> dict[str, Any] | None:
    result = await client.read_resource(uri)
    return json.loads(result.contents[0].text)["shape"]  # type: ignore[union-attr, no-any-return]


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_a_change_of_shape_notifies_at_once_whatever_the_update_window(
    mode: str, broker: Mosquitto, tmp_path: pathlib.Path
) -> None:
    root = unique_root()
    topic = f"{root}/kitchen/climate"
    uri = topic_uri(topic)
    topics = [{"pattern": f"{root}/#", "permissions": ["read"], "description": "rooms"}]
    # A minute-long update window: value updates after the first are held back for 60 s, so a
    # notification within seconds can only be the shape change.
    config = write_full_config(
        tmp_path, broker, topics, live_state={"notify_interval": 60}, shapes={"sample_interval": 0.01}
    )
    async with connect(config, mode) as client, raw_client(broker) as device:
        async with notifications(client, mode, uri) as updates:
            # Retained, so that it reaches the server however late its own subscription is made.
            await device.publish(topic, json.dumps({"temperature": 21.5}).encode(), qos=1, retain=True)
            with anyio.fail_after(10):
                while True:  # the message's own notification, then the first shape's
                    await updates.receive()
                    shape = await read_shape(client, uri)
                    if shape is not None and shape["schema"] is not None:
                        break
            assert shape["schema"]["properties"] == {"temperature": {"type": "number"}}
            while True:  # let anything else the first message caused arrive
                with anyio.move_on_after(0.5):
                    await updates.receive()
                    continue
                break

            changed = json.dumps({"temperature": 21.6, "humidity": 40}).encode()
            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:

                    async def keep_publishing() -> None:
                        while True:  # until sampled: each publish is past the 0.01 s sample interval
                            await device.publish(topic, changed, qos=1)
                            await anyio.sleep(0.1)

                    tg.start_soon(keep_publishing)
                    assert await updates.receive() == uri
                    tg.cancel_scope.cancel()
        await device.publish(topic, b"", qos=1, retain=True)
        shape = await read_shape(client, uri)
        assert shape is not None and shape["schema"] is not None
        assert set(shape["schema"]["properties"]) == {"temperature", "humidity"}
        assert shape["examples"][-1] == {"temperature": 21.6, "humidity": 40}
