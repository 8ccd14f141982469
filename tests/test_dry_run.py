"""mqtt_publish(dry_run=true): every check runs, nothing is sent, no rate limit is spent.

Through the real MCP client over stdio against the real broker, in both protocol eras. A spy
subscriber proves nothing was published: after the dry runs a real publish goes to the same topics,
and it must be the first message the spy sees.
"""

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from devices import raw_client
from mcp.client import Client
from mcp_client import MODES, error_text, structured
from mosquitto import Mosquitto
from server_config import Person, connect_with, unique_root, write_full_config

pytestmark = pytest.mark.anyio
ROOT = unique_root()


def topics() -> list[dict[str, Any]]:
    return [
        {"pattern": f"{ROOT}/lab/#", "permissions": ["read", "write"]},
        {"pattern": f"{ROOT}/lab/rate/#", "permissions": ["write"], "rate_limit": "1/hour"},
        {"pattern": f"{ROOT}/lab/small/#", "permissions": ["write"], "max_payload_bytes": 4},
        {
            "pattern": f"{ROOT}/lab/json/#",
            "permissions": ["write"],
            "payload_schema": {"type": "object", "required": ["on"]},
        },
        {"pattern": f"{ROOT}/lab/door/#", "permissions": ["write"], "confirm": True},
        {"pattern": f"{ROOT}/ro/#", "permissions": ["read"]},
    ]


@pytest.fixture(scope="module", params=MODES)
async def session(
    request: pytest.FixtureRequest, broker: Mosquitto, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Client, Person]]:
    config = write_full_config(tmp_path_factory.mktemp("dry"), broker, topics())
    person = Person(answer="decline")
    async with connect_with(config, request.param, person) as client:
        yield client, person


async def publish(client: Client, topic: str, payload: str, **arguments: Any) -> Any:
    return await client.call_tool(
        "mqtt_publish", {"topic": f"{ROOT}/{topic}", "payload": payload, **arguments}
    )


async def test_a_dry_run_says_what_would_be_sent_and_sends_nothing(
    session: tuple[Client, Person], broker: Mosquitto
) -> None:
    client, _ = session
    topic = f"lab/dry/{unique_root()}"
    async with raw_client(broker) as spy:
        await spy.subscribe(f"{ROOT}/{topic}", qos=1)
        result = structured(await publish(client, topic, '{"on": true}', qos=1, retain=True, dry_run=True))
        assert result == {
            "topic": f"{ROOT}/{topic}",
            "qos": 1,
            "retain": True,
            "bytes": 12,
            "dry_run": True,
            "payload_preview": '{"on": true}',
        }
        structured(await publish(client, topic, "marker", qos=1))
        with anyio.fail_after(5):
            first = await anext(aiter(spy.messages))
        assert first.payload == b"marker"  # the dry run's retained message never reached the broker


async def test_a_dry_run_runs_every_check(session: tuple[Client, Person]) -> None:
    client, _ = session
    assert error_text(await publish(client, "ro/x", "1", dry_run=True)).startswith("permission denied:")
    assert error_text(await publish(client, "lab/+", "1", dry_run=True)).startswith("invalid topic:")
    assert error_text(await publish(client, "lab/small/x", "12345", dry_run=True)).startswith(
        "payload too large:"
    )
    assert error_text(await publish(client, "lab/json/x", "{}", dry_run=True)).startswith(
        "invalid argument: the payload does not satisfy the payload_schema"
    )


async def test_a_dry_run_spends_no_rate_limit_but_sees_it(session: tuple[Client, Person]) -> None:
    client, _ = session
    for _ in range(3):
        structured(await publish(client, "lab/rate/a", "1", dry_run=True))
    structured(await publish(client, "lab/rate/a", "1"))  # the one allowed publish of the hour
    refused = error_text(await publish(client, "lab/rate/a", "1", dry_run=True))
    assert refused.startswith("permission denied: rate limit 1/hour")


async def test_a_dry_run_to_a_confirm_topic_asks_nobody_and_says_approval_is_needed(
    session: tuple[Client, Person],
) -> None:
    client, person = session
    person.asked.clear()
    result = structured(await publish(client, "lab/door/front", "unlock", dry_run=True))
    assert result["needs_approval"] is True
    assert person.asked == []
