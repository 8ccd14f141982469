"""The operator console over plain HTTP (the browser tests are in test_console_browser.py): headers,
sign-in and the session cookie, what a narrowed key sees, and who may approve from where.

A real `mcpmqtt serve` with API keys, the real broker, and the SDK's MCP client as the agent.
"""

import json
import pathlib
from collections.abc import Iterator
from typing import Any

import anyio
import httpx2
import pytest
from console_server import ConsoleServer, start_console_server, stream_events
from devices import raw_client
from http_server import ServerProcess, config_for, free_port, http_client
from mcp_client import error_text, structured
from mosquitto import Mosquitto
from server_config import unique_root

from mcpmqtt.config import parse_config
from mcpmqtt.server.build import build_server
from mcpmqtt.transports.console.app import CSP
from mcpmqtt.transports.http import http_server

pytestmark = pytest.mark.anyio
ROOT = unique_root()


@pytest.fixture(scope="module")
def served(broker: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    server = start_console_server(tmp_path_factory.mktemp("console"), broker, ROOT)
    try:
        yield server
    finally:
        server.process.stop()


async def queue_publish(served: ConsoleServer, topic: str, payload: str) -> str:
    """The agent publishes to a confirm topic; its call returns a pending result: the approval id."""
    async with http_client(served.process.url, served.keys["agent"]) as agent:
        result = structured(
            await agent.call_tool("mqtt_publish", {"topic": f"{ROOT}/{topic}", "payload": payload, "qos": 1})
        )
    assert result["status"] == "pending"
    approval_id: str = result["approval_id"]
    return approval_id


def test_every_console_response_carries_the_strict_policy(served: ConsoleServer) -> None:
    for path, kind in [
        ("/console", "text/html"),
        ("/console/console.js", "text/javascript"),
        ("/console/console.css", "text/css"),
        ("/console/session", "application/json"),
    ]:
        response = httpx2.get(served.base + path)
        assert response.headers["content-security-policy"] == CSP
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["content-type"].startswith(kind)
    assert CSP == (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )


def test_a_key_is_exchanged_for_an_httponly_strict_cookie(served: ConsoleServer) -> None:
    assert httpx2.get(served.console + "/session").json() == {"signed_in": False, "needs_key": True}
    assert httpx2.get(served.console + "/events").status_code == 401
    response = httpx2.post(
        served.console + "/session", json={"key": served.keys["ops"]}, headers={"origin": served.base}
    )
    assert response.status_code == 200
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert "Path=/console" in cookie
    assert "Secure" not in cookie  # plain http on loopback; with TLS it is Secure
    body = response.json()
    assert body["who"] == "api-key:ops"
    assert body["may_approve"] is True
    assert served.keys["ops"] not in response.text


@pytest.mark.parametrize(
    ("key", "origin", "status"),
    [
        ("wrong", "same", 401),
        ("ops", None, 403),
        ("ops", "http://127.0.0.1:1", 403),  # another loopback origin: passes the Origin allowlist, not ours
        ("ops", "http://evil.example", 403),
    ],
)
def test_sign_in_needs_a_valid_key_from_the_page_itself(
    served: ConsoleServer, key: str, origin: str | None, status: int
) -> None:
    headers = {} if origin is None else {"origin": served.base if origin == "same" else origin}
    body = {"key": served.keys.get(key, "mcpmqtt_" + "x" * 40)}
    response = httpx2.post(served.console + "/session", json=body, headers=headers)
    assert response.status_code == status
    assert "set-cookie" not in response.headers


async def test_approve_needs_the_cookie_the_csrf_token_the_origin_and_the_right(
    served: ConsoleServer, broker: Mosquitto
) -> None:
    approval_id = await queue_publish(served, "door/front", "unlock")
    path = f"/console/approvals/{approval_id}/approve"
    ops = served.signed_in("ops")
    anonymous = httpx2.post(served.base + path, headers={"origin": served.base})
    assert anonymous.status_code == 401
    no_csrf = ops.post(path, headers={"x-csrf-token": "nope"})
    assert no_csrf.status_code == 403
    assert "CSRF" in no_csrf.json()["error"]
    cross = ops.post(path, headers={"origin": "http://127.0.0.1:1"})
    assert cross.status_code == 403
    viewer = served.signed_in("viewer").post(path)
    assert viewer.status_code == 403
    assert viewer.json()["error"] == "api-key:viewer may not approve or reject publishes"
    narrowed = served.signed_in("sensors").post(path)  # may approve, but not see this topic
    assert narrowed.status_code == 404
    async with raw_client(broker) as spy:
        await spy.subscribe(f"{ROOT}/door/#", qos=1)
        approved = ops.post(path)
        assert approved.status_code == 200, approved.text
        assert approved.json()["status"] == "published"
        assert approved.json()["decided_by"] == "api-key:ops"
        with anyio.fail_after(5):
            message = await anext(aiter(spy.messages))
        assert message.payload == b"unlock"
    again = ops.post(path)
    assert again.status_code == 409


async def test_a_narrowed_key_sees_only_its_topics_calls_and_approvals(
    served: ConsoleServer, broker: Mosquitto
) -> None:
    async with raw_client(broker) as device:
        await device.publish(f"{ROOT}/sensors/t1", b"21.5", qos=1, retain=True)
        await device.publish(f"{ROOT}/lab/secret", b"hidden", qos=1, retain=True)
    await queue_publish(served, "door/back", "open")
    ops_snapshot = _snapshot_with(served.signed_in("ops"), f"{ROOT}/lab/secret")
    assert f"{ROOT}/sensors/t1" in _topics(ops_snapshot)
    assert any(a["topic"] == f"{ROOT}/door/back" for a in ops_snapshot["approvals"])
    assert any(c["topic"] == f"{ROOT}/door/back" for c in ops_snapshot["calls"])

    [(_, narrowed)] = stream_events(served.signed_in("sensors"))
    seen = {t for t in _topics(narrowed)} | {a["topic"] for a in narrowed["approvals"]}
    seen |= {c["topic"] for c in narrowed["calls"] if c["topic"] is not None}
    assert f"{ROOT}/sensors/t1" in seen
    assert all(topic.startswith(f"{ROOT}/sensors/") for topic in seen), seen
    async with raw_client(broker) as device:
        await device.publish(f"{ROOT}/lab/secret", b"", qos=1, retain=True)
        await device.publish(f"{ROOT}/sensors/t1", b"", qos=1, retain=True)


def _snapshot_with(client: httpx2.Client, topic: str) -> dict[str, Any]:
    """The snapshot, with the topics the stream brought until `topic` was among them (the live state
    fills as the broker delivers)."""
    snapshot: dict[str, Any] = {}
    for name, data in stream_events(client, until=1000):
        if name == "snapshot":
            snapshot = data
        elif name == "topics":
            snapshot["topics"] += data
        if topic in _topics(snapshot):
            return snapshot
    raise AssertionError(f"{topic} never reached the live state")


def _topics(snapshot: dict[str, Any]) -> set[str]:
    return {entry["topic"] for entry in snapshot["topics"]}


@pytest.mark.parametrize("features", [True, False], ids=["history and discovery", "neither"])
def test_without_authentication_the_console_is_open_on_loopback(
    broker: Mosquitto, tmp_path: pathlib.Path, features: bool
) -> None:
    config = config_for(broker, topics=[{"pattern": f"{ROOT}/#", "permissions": ["read"]}])
    config["history"] = {"enabled": features}
    config["discovery"] = {"enabled": features}
    with ServerProcess(tmp_path, config) as process:
        assert httpx2.get(process.base + "/console/session").json() == {
            "signed_in": False,
            "needs_key": False,
        }
        client = httpx2.Client(base_url=process.base, headers={"origin": process.base})
        opened = client.post("/console/session", json={})
        assert opened.status_code == 200
        assert opened.json()["who"] == "console"
        assert opened.json()["may_approve"] is True
        [(name, snapshot)] = stream_events(client)
        assert name == "snapshot"
        # Sparklines come from the history, the device list from discovery; without them the console
        # says so.
        assert ("No sparklines: this server keeps no history." in snapshot["notices"]) is not features
        assert ("No device list: this server has no device discovery." in snapshot["notices"]) is not features
        # A foreign Host is refused before the console (DNS rebinding), as for /mcp.
        assert httpx2.get(process.base + "/console", headers={"host": "evil.example"}).status_code == 421


async def test_a_mcp_bearer_token_does_not_open_the_console(served: ConsoleServer) -> None:
    response = httpx2.get(
        served.console + "/events", headers={"authorization": f"Bearer {served.keys['ops']}"}
    )
    assert response.status_code == 401


async def test_only_the_key_that_asked_may_learn_an_approvals_outcome(served: ConsoleServer) -> None:
    approval_id = await queue_publish(served, "door/owned", "unlock")
    async with http_client(served.process.url, served.keys["viewer"]) as other:
        refused = await other.call_tool("mqtt_approval", {"approval_id": approval_id})
        assert error_text(refused).startswith(
            f"invalid argument: there is no approval {approval_id!r} of yours"
        )
    async with http_client(served.process.url, served.keys["agent"]) as owner:
        assert (
            structured(await owner.call_tool("mqtt_approval", {"approval_id": approval_id}))["status"]
            == "pending"
        )


async def test_history_and_discovery_fill_the_console_through_their_hooks(broker: Mosquitto) -> None:
    """The providers history (issue 12) and discovery (issue 13) set on the server reach the page:
    sparkline points with each numeric topic, the device list, and no notice that they are missing."""
    config = parse_config(
        config_for(broker, topics=[{"pattern": f"{ROOT}/hooks/#", "permissions": ["read"]}]), "t"
    )
    server = build_server(config)
    server.history_provider = lambda topic: [1.0, 2.0, 3.0] if topic.endswith("/temp") else None
    server.devices_provider = lambda allowlist: (
        [{"name": "printer"}] if allowlist.readable(f"{ROOT}/hooks/x") else []
    )
    port = free_port()
    web = http_server(server, "http", "127.0.0.1", port)
    base = f"http://127.0.0.1:{port}"
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(web.serve)
        with anyio.fail_after(10):
            while not web.started:  # noqa: ASYNC110 - uvicorn offers no event for it
                await anyio.sleep(0.02)
        async with raw_client(broker) as device:
            await device.publish(f"{ROOT}/hooks/temp", b"21", qos=1)
        async with httpx2.AsyncClient(base_url=base, headers={"origin": base}, timeout=10) as client:
            assert (await client.post("/console/session", json={})).status_code == 200
            async with client.stream("GET", "/console/events") as response:
                name, snapshot, history = None, None, None
                with anyio.fail_after(10):
                    async for line in response.aiter_lines():
                        if line.startswith("event: "):
                            name = line[7:]
                        elif line.startswith("data: "):
                            data = json.loads(line[6:])
                            snapshot = data if name == "snapshot" else snapshot
                            values = (
                                data["topics"] if name == "snapshot" else data if name == "topics" else []
                            )
                            history = next((v["history"] for v in values if "history" in v), history)
                            if history is not None:
                                break
        web.should_exit = True
    assert snapshot is not None
    assert snapshot["devices"] == [{"name": "printer"}]
    assert not any("sparklines" in notice or "device list" in notice for notice in snapshot["notices"])
    assert history == [1.0, 2.0, 3.0]
