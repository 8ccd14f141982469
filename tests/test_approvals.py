"""The approval queue: a publish to a confirm topic that nobody at the client can confirm waits for a
person in the console; approval publishes exactly once, rejection and expiry never; the agent gets a
pending result and learns the outcome with mqtt_approval; decisions go to the audit log.

The real server in-process with the real MCP client (which cannot elicit unless given a person) and
the real broker; the console's decision is made through the queue the console uses. The console's
own routes and the browser are tested in test_console*.py.
"""

import asyncio
import json
import pathlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from devices import raw_client, responder
from mcp.client import Client
from mcp_client import MODES, error_text, structured, write_config
from mosquitto import Mosquitto
from server_config import Person, unique_root, write_full_config

from mcpmqtt.config import parse_config
from mcpmqtt.server.approvals import Approval, ApprovalQueue
from mcpmqtt.server.build import McpMqttServer, build_server

pytestmark = pytest.mark.anyio
ROOT = unique_root()
MARKER = b"--marker--"


def topics() -> list[dict[str, Any]]:
    return [
        {"pattern": f"{ROOT}/lab/#", "permissions": ["read", "write"]},
        {"pattern": f"{ROOT}/door/#", "permissions": ["write"], "confirm": True},
        {"pattern": f"{ROOT}/vault/#", "permissions": ["write"], "confirm": "console"},
        {"pattern": f"{ROOT}/slow/#", "permissions": ["write"], "confirm": True, "rate_limit": "1/hour"},
        {"pattern": f"{ROOT}/printer/request", "permissions": ["write"], "confirm": True},
    ]


@dataclass
class Served:
    server: McpMqttServer
    client: Client
    queue: ApprovalQueue
    audit: pathlib.Path

    async def publish(self, topic: str, payload: str, **arguments: Any) -> Any:
        return await self.client.call_tool(
            "mqtt_publish", {"topic": f"{ROOT}/{topic}", "payload": payload, "qos": 1, **arguments}
        )

    async def approval(self, approval_id: str, **arguments: Any) -> dict[str, Any]:
        result = await self.client.call_tool("mqtt_approval", {"approval_id": approval_id, **arguments})
        return structured(result)

    async def submitted(self) -> Approval:
        """The next approval queued (registered before the call that makes it)."""
        arrived: asyncio.Future[Approval] = asyncio.get_running_loop().create_future()

        def note(approval: Approval) -> None:
            if approval.status == "pending" and not arrived.done():
                arrived.set_result(approval)

        stop = self.queue.listen(note)
        try:
            with anyio.fail_after(10):
                return await arrived
        finally:
            stop()

    def audit_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit.read_text(encoding="utf-8").splitlines()]


def make_server(broker: Mosquitto, audit: pathlib.Path, **approvals: Any) -> McpMqttServer:
    config = parse_config(
        {
            "mqtt": {"host": broker.host, "port": broker.port, "client_id": f"approvals-{unique_root()}"},
            "topics": topics(),
            "approvals": {"wait": 0.2, **approvals},
            "audit": {"path": str(audit)},
        },
        "test",
    )
    server = build_server(config)
    assert server.runtime.approvals is not None
    server.runtime.approvals.reviewable = True  # what serving the console does
    return server


@asynccontextmanager
async def serving(
    broker: Mosquitto, tmp_path: pathlib.Path, mode: str, **approvals: Any
) -> AsyncIterator[Served]:
    audit = tmp_path / "audit.jsonl"
    server = make_server(broker, audit, **approvals)
    assert server.runtime.approvals is not None
    async with Client(server, mode=mode) as client:
        yield Served(server, client, server.runtime.approvals, audit)


@pytest.fixture(params=MODES)
async def served(
    request: pytest.FixtureRequest, broker: Mosquitto, tmp_path: pathlib.Path
) -> AsyncIterator[Served]:
    async with serving(broker, tmp_path, request.param) as served:
        yield served


@pytest.fixture(params=MODES)
async def patient(
    request: pytest.FixtureRequest, broker: Mosquitto, tmp_path: pathlib.Path
) -> AsyncIterator[Served]:
    """A server whose calls wait 10 s for a decision before returning a pending result."""
    async with serving(broker, tmp_path, request.param, wait=10) as served:
        yield served


async def received_until_marker(spy: Any) -> list[bytes]:
    """Payloads the spy got before the marker (published after the thing under test)."""
    got: list[bytes] = []
    with anyio.fail_after(10):
        async for message in spy.messages:
            if message.payload == MARKER:
                return got
            got.append(message.payload)
    raise AssertionError("the spy's stream ended")


async def send_marker(broker: Mosquitto, topic: str) -> None:
    async with raw_client(broker) as device:
        await device.publish(f"{ROOT}/{topic}", MARKER, qos=1)


async def test_a_publish_nobody_can_confirm_waits_then_is_published_once_when_approved(
    served: Served, broker: Mosquitto
) -> None:
    async with raw_client(broker) as spy:
        await spy.subscribe(f"{ROOT}/door/#", qos=1)
        pending = structured(await served.publish("door/front", "unlock"))
        assert pending["status"] == "pending"
        assert pending["bytes"] == 6
        assert "nothing has been sent" in pending["notes"][0]
        approval_id = pending["approval_id"]
        assert (await served.approval(approval_id))["status"] == "pending"
        decided = await served.queue.decide(approval_id, "approve", "api-key:ops")
        assert decided.status == "published"
        with pytest.raises(Exception, match="is not pending"):
            await served.queue.decide(approval_id, "approve", "api-key:ops")
        with pytest.raises(Exception, match="is not pending"):
            await served.queue.decide(approval_id, "reject", "api-key:ops")
        await send_marker(broker, "door/front")
        assert await received_until_marker(spy) == [b"unlock"]
    outcome = await served.approval(approval_id)
    assert outcome["status"] == "published"
    assert outcome["decided_by"] == "api-key:ops"
    assert outcome["result"] == {"topic": f"{ROOT}/door/front", "qos": 1, "retain": False, "bytes": 6}


async def test_approved_within_the_wait_the_call_returns_the_publish(
    patient: Served, broker: Mosquitto
) -> None:
    served = patient
    async with raw_client(broker) as spy, anyio.create_task_group() as tasks:
        await spy.subscribe(f"{ROOT}/door/#", qos=1)
        results: list[Any] = []

        async def call() -> None:
            results.append(await served.publish("door/back", "open"))

        tasks.start_soon(call)
        approval = await served.submitted()
        await served.queue.decide(approval.id, "approve", "someone")
    result = structured(results[0])
    assert result["status"] == "published"
    assert result["approval_id"] == approval.id


@pytest.mark.parametrize("how", ["reject", "expire"])
async def test_rejected_or_expired_approvals_never_publish(
    how: str, broker: Mosquitto, tmp_path: pathlib.Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    server = make_server(broker, audit, ttl=1)
    queue = server.runtime.approvals
    assert queue is not None
    async with Client(server) as client, raw_client(broker) as spy:
        served = Served(server, client, queue, audit)
        await spy.subscribe(f"{ROOT}/door/#", qos=1)
        approval_id = structured(await served.publish("door/side", "unlock"))["approval_id"]
        approval = queue.find(approval_id)
        assert approval is not None
        if how == "reject":
            await queue.decide(approval_id, "reject", "api-key:ops")
        with anyio.fail_after(5):
            await approval.settled.wait()
        assert approval.status == ("rejected" if how == "reject" else "expired")
        with pytest.raises(Exception, match="is not pending"):
            await queue.decide(approval_id, "approve", "api-key:ops")  # too late
        await send_marker(broker, "door/side")
        assert await received_until_marker(spy) == []
        outcome = await served.approval(approval_id)
        assert outcome["status"] == approval.status
        assert "result" not in outcome
    [record] = [line for line in served.audit_lines() if line["tool"] == "approval"]
    assert record["approval_id"] == approval_id
    assert record["outcome"] == approval.status
    assert record["decision"] == "denied"
    assert record["decided_by"] == ("api-key:ops" if how == "reject" else None)
    assert "payload_sha256" not in record


async def test_a_rejection_within_the_wait_is_a_refusal(patient: Served) -> None:
    served = patient
    async with anyio.create_task_group() as tasks:
        results: list[Any] = []

        async def call() -> None:
            results.append(await served.publish("door/x", "open"))

        tasks.start_soon(call)
        approval = await served.submitted()
        await served.queue.decide(approval.id, "reject", "api-key:boss")
    assert error_text(results[0]) == (
        f"permission denied: api-key:boss rejected publishing to '{ROOT}/door/x' in the operator "
        "console; do not try again unless the user asks you to"
    )


async def test_the_audit_log_says_who_approved_and_when(served: Served) -> None:
    approval_id = structured(await served.publish("door/audit", "unlock"))["approval_id"]
    await served.queue.decide(approval_id, "approve", "api-key:ops")
    await asyncio.to_thread(served.server.audit.close)  # type: ignore[union-attr]
    lines = served.audit_lines()
    call = next(line for line in lines if line["tool"] == "mqtt_publish")
    assert call["outcome"] == "pending_approval"
    decision = next(line for line in lines if line["tool"] == "approval")
    assert decision["decision"] == "allowed"
    assert decision["outcome"] == "published"
    assert decision["decided_by"] == "api-key:ops"
    assert decision["decided_at"].endswith("Z")
    assert decision["payload_bytes"] == 6


async def test_the_rate_limit_counts_when_the_approved_publish_is_sent(served: Served) -> None:
    first = structured(await served.publish("slow/a", "1"))["approval_id"]
    second = structured(await served.publish("slow/a", "2"))["approval_id"]  # queued: nothing counted yet
    assert (await served.queue.decide(first, "approve", "ops")).status == "published"
    refused = await served.queue.decide(second, "approve", "ops")
    assert refused.status == "failed"
    outcome = await served.approval(second)
    assert outcome["error"].startswith("permission denied: rate limit 1/hour")


async def test_an_unknown_approval_id_is_an_invalid_argument(served: Served) -> None:
    result = await served.client.call_tool("mqtt_approval", {"approval_id": "nope"})
    assert error_text(result).startswith("invalid argument: there is no approval 'nope' of yours")


async def test_too_many_pending_approvals_are_refused(broker: Mosquitto, tmp_path: pathlib.Path) -> None:
    server = make_server(broker, tmp_path / "audit.jsonl", max_pending=1)
    async with Client(server) as client:
        arguments = {"topic": f"{ROOT}/door/a", "payload": "1"}
        structured(await client.call_tool("mqtt_publish", arguments))
        text = error_text(await client.call_tool("mqtt_publish", arguments))
        assert text.startswith("permission denied: 1 publishes are already waiting for approval")


async def test_a_client_that_can_elicit_is_still_asked(broker: Mosquitto, tmp_path: pathlib.Path) -> None:
    person = Person(answer="accept")
    server = make_server(broker, tmp_path / "audit.jsonl")
    async with Client(server, elicitation_callback=person) as client:
        result = structured(
            await client.call_tool("mqtt_publish", {"topic": f"{ROOT}/door/b", "payload": "1"})
        )
    assert "approval_id" not in result
    assert len(person.asked) == 1


async def test_console_only_topics_are_queued_even_for_a_client_that_can_elicit(
    broker: Mosquitto, tmp_path: pathlib.Path
) -> None:
    person = Person(answer="accept")
    server = make_server(broker, tmp_path / "audit.jsonl")
    async with Client(server, elicitation_callback=person) as client:
        result = structured(
            await client.call_tool("mqtt_publish", {"topic": f"{ROOT}/vault/b", "payload": "1"})
        )
    assert result["status"] == "pending"
    assert person.asked == []


@pytest.mark.parametrize("mode", MODES)
async def test_without_the_console_nothing_is_queued(
    mode: str, broker: Mosquitto, tmp_path: pathlib.Path
) -> None:
    """Over stdio there is no console: confirm true keeps refusing a client that cannot ask, and
    confirm "console" is refused saying why."""
    from server_config import connect_with

    config = write_full_config(tmp_path, broker, topics())
    async with connect_with(config, mode, None) as client:
        door = await client.call_tool("mqtt_publish", {"topic": f"{ROOT}/door/a", "payload": "1"})
        assert "this client cannot ask (it does not support elicitation)" in error_text(door)
        vault = await client.call_tool("mqtt_publish", {"topic": f"{ROOT}/vault/a", "payload": "1"})
        assert error_text(vault) == (
            f"permission denied: publishing to '{ROOT}/vault/a' needs a person's approval in the operator "
            "console, and this server does not serve the console (it comes with the HTTP transport); "
            "tell the user"
        )
        tools = {tool.name for tool in (await client.list_tools()).tools}
        assert "mqtt_approval" in tools


async def test_no_approval_tool_without_confirm_topics(broker: Mosquitto, tmp_path: pathlib.Path) -> None:
    from mcp_client import TOOLS, connect

    config, _ = write_config(tmp_path, broker)
    async with connect(config, "auto") as client:
        assert {tool.name for tool in (await client.list_tools()).tools} == TOOLS


async def test_a_query_request_waits_for_approval_and_the_reply_comes_with_the_outcome(
    served: Served, broker: Mosquitto
) -> None:
    async with responder(broker, f"{ROOT}/printer/request") as requests:
        pending = structured(
            await served.client.call_tool(
                "mqtt_query",
                {"request_topic": f"{ROOT}/printer/request", "payload": "status", "timeout": 5},
            )
        )
        assert pending["status"] == "pending"
        assert pending["response"] is None
        assert "sending a request to" in pending["notes"][0]
        assert requests == []  # nothing sent before the approval
        decided = await served.queue.decide(pending["approval_id"], "approve", "ops")
        assert decided.status == "published"
        outcome = await served.approval(pending["approval_id"])
    assert outcome["result"]["response"]["payload"] == "re:status"
    assert [message.payload for message in requests] == [b"status"]
