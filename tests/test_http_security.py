"""HTTP made safe for a network (issue 4.2): Host and Origin checks, API keys, narrowed keys, body limits,
health endpoints, request ids, and what the CLI refuses. Each refusal has its test.

One server with API keys serves most tests (module scope); tests that need another config start their own.
"""

from __future__ import annotations

import json
import pathlib
import secrets
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from http_server import INITIALIZE, ServerProcess, bearer, config_for, free_port, http_client, post
from mcp.client import Client
from mcp.client.sse import sse_client
from mcp_client import error_text, structured
from mosquitto import Mosquitto
from pydantic import BaseModel

from mcpmqtt.cli import main
from mcpmqtt.config import ConfigError, MqttTls, apikeys, load_config
from mcpmqtt.config.http import ApiKey, HttpSettings, OAuthSettings, ScopeGrant

pytestmark = pytest.mark.anyio

FULL_KEY = apikeys.new_key()
LAB_KEY = apikeys.new_key()
READER_KEY = apikeys.new_key()
# Cheap hashes: the cost parameter is the client's business at `hash-key` time, not what these tests check.
API_KEYS = [
    {"name": "full", "hash": str(apikeys.hash_key(FULL_KEY, log_n=10))},
    {"name": "lab-only", "hash": str(apikeys.hash_key(LAB_KEY, log_n=10)), "topics": ["lab/shared/#"]},
    {
        "name": "reader",
        "hash": str(apikeys.hash_key(READER_KEY, log_n=10)),
        "topics": ["lab/#", "test/+"],
        "permissions": ["read"],
    },
]
HTTP = {
    "api_keys": API_KEYS,
    "allowed_hosts": ["mcp.example.net"],
    "allowed_origins": ["https://app.example.net"],
    "max_body_bytes": 64 * 1024,
}


@pytest.fixture(scope="module")
def server(broker: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("http-keys"), config_for(broker, HTTP)) as started:
        started.wait_ready()
        yield started


# ---- Host and Origin -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin", ["https://evil.example.com", "http://127.0.0.1.evil.example.com:8000", "null"], ids=str
)
def test_a_foreign_origin_gets_403_before_authentication(server: ServerProcess, origin: str) -> None:
    response = post(server.url, origin=origin)  # no key: the Origin check comes first
    assert response.status_code == 403


def test_a_foreign_host_gets_421(server: ServerProcess) -> None:
    response = post(server.url, host="attacker.example.com", **bearer(FULL_KEY))
    assert response.status_code == 421


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "https://app.example.net"},
        {"origin": "http://localhost:5173"},
        {"host": "mcp.example.net"},
        {"host": "mcp.example.net:8443"},
        {"host": "localhost:1234"},
        {},
    ],
    ids=lambda h: ",".join(f"{k}={v}" for k, v in h.items()) or "none",
)
def test_configured_and_loopback_hosts_and_origins_pass(
    server: ServerProcess, headers: dict[str, str]
) -> None:
    response = post(server.url, **headers, **bearer(FULL_KEY))
    assert response.status_code == 200, response.text


# ---- API keys --------------------------------------------------------------------------------------


def _assert_unauthorized(response: httpx2.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer ")


def test_no_key_gets_401_with_www_authenticate(server: ServerProcess) -> None:
    _assert_unauthorized(post(server.url))


@pytest.mark.parametrize(
    "authorization",
    [
        f"Bearer {FULL_KEY}x",
        f"Bearer {FULL_KEY[:-1]}",
        "Bearer",
        f"Basic {FULL_KEY}",
        FULL_KEY,
        f"Bearer {apikeys.hash_key(FULL_KEY, log_n=10)}",  # the stored hash is not a key
    ],
    ids=["appended", "truncated", "empty", "basic-scheme", "no-scheme", "the-hash"],
)
def test_a_wrong_key_gets_401(server: ServerProcess, authorization: str) -> None:
    _assert_unauthorized(post(server.url, authorization=authorization))


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({}, "no bearer token: send the header 'Authorization: Bearer <API key or access token>'"),
        ({"authorization": f"Basic {FULL_KEY}"}, "no bearer token"),
        (bearer(f"{FULL_KEY}x"), "the bearer token is not one of this server's API keys"),
    ],
    ids=["none", "basic-scheme", "wrong"],
)
def test_a_401_says_whether_the_key_was_missing_or_wrong(
    server: ServerProcess, headers: dict[str, str], why: str
) -> None:
    for _ in range(2):  # the second wrong key is answered from the rejection cache, with the same reason
        response = post(server.url, **headers)
        _assert_unauthorized(response)
        assert f'error_description="{why}' in response.headers["www-authenticate"]
        assert response.json()["error_description"].startswith(why)


@pytest.mark.parametrize("parameter", ["access_token", "api_key", "key", "token"])
def test_a_key_in_the_query_string_is_ignored(server: ServerProcess, parameter: str) -> None:
    _assert_unauthorized(post(f"{server.url}?{parameter}={FULL_KEY}"))


def test_the_same_wrong_key_twice_is_refused_twice(server: ServerProcess) -> None:
    wrong = apikeys.new_key()
    for _ in range(2):  # the second answer comes from the rejection cache; it must not differ
        _assert_unauthorized(post(server.url, **bearer(wrong)))


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_valid_key_works_in_both_eras(server: ServerProcess, mode: str) -> None:
    async with http_client(server.url, FULL_KEY, mode) as client:
        topic = f"lab/keys/{secrets.token_hex(4)}"
        published = await client.call_tool("mqtt_publish", {"topic": topic, "payload": "on", "qos": 1})
        assert structured(published)["topic"] == topic


async def test_a_session_opened_with_one_key_refuses_another(server: ServerProcess) -> None:
    opened = post(server.url, **bearer(FULL_KEY))
    session = opened.headers["mcp-session-id"]
    listed = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    headers = {"mcp-session-id": session, "mcp-protocol-version": "2025-11-25"}
    assert post(server.url, listed, **headers, **bearer(LAB_KEY)).status_code == 404
    assert post(server.url, listed, **headers, **bearer(FULL_KEY)).status_code == 200


# ---- narrowed keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_narrowed_key_publishes_to_its_topics_only(server: ServerProcess, mode: str) -> None:
    async with http_client(server.url, LAB_KEY, mode) as client:
        inside = await client.call_tool("mqtt_publish", {"topic": "lab/shared/x", "payload": "1"})
        assert structured(inside)["topic"] == "lab/shared/x"
        # lab/# allows this to the full allowlist; the key is narrowed to lab/shared/#.
        outside = await client.call_tool("mqtt_publish", {"topic": "lab/private/x", "payload": "1"})
        text = error_text(outside)
        assert text.startswith("permission denied:")
        assert "'lab/shared/#'" in text
        assert "actuators/#" not in text  # a narrowed caller is not told about the rest
        read = await client.call_tool("mqtt_read", {"topic": "sensors/kitchen/temperature", "timeout": 0})
        assert error_text(read).startswith("permission denied:")


async def test_a_read_only_key_reads_but_cannot_publish(server: ServerProcess) -> None:
    async with http_client(server.url, READER_KEY) as client:
        read = await client.call_tool("mqtt_read", {"topic": "lab/anything", "timeout": 0})
        assert structured(read)["timed_out"] is True
        published = await client.call_tool("mqtt_publish", {"topic": "lab/anything", "payload": "1"})
        assert error_text(published).startswith("permission denied:")


async def test_the_allowed_topics_resource_shows_the_narrowed_allowlist(server: ServerProcess) -> None:
    async with http_client(server.url, READER_KEY) as client:
        document = json.loads((await client.read_resource("mcpmqtt://topics/allowed")).contents[0].text)  # type: ignore[union-attr]
    assert [(t["pattern"], t["permissions"]) for t in document["topics"]] == [
        ("lab/#", ["read"]),
        ("test/+", ["read"]),
    ]


async def test_the_full_key_keeps_the_full_allowlist(server: ServerProcess) -> None:
    async with http_client(server.url, FULL_KEY) as client:
        published = await client.call_tool("mqtt_publish", {"topic": "lab/private/x", "payload": "1"})
        assert structured(published)["topic"] == "lab/private/x"


def test_the_key_never_reaches_the_broker(server: ServerProcess, broker: Mosquitto) -> None:
    assert post(server.url, **bearer(FULL_KEY)).status_code == 200
    log = broker.log_text()
    assert f"as {server.client_id} (p5, c1, k60)" in log  # anonymous: the server's own (no) credentials
    for key in (FULL_KEY, LAB_KEY, READER_KEY):
        assert key not in log


# ---- limits, health, request ids ---------------------------------------------------------------------


def test_a_body_over_the_limit_gets_413(server: ServerProcess) -> None:
    big = {**INITIALIZE, "params": {**INITIALIZE["params"], "padding": "x" * (64 * 1024)}}  # type: ignore[dict-item]
    assert post(server.url, big, **bearer(FULL_KEY)).status_code == 413


@pytest.mark.parametrize(("path", "body"), [("/healthz", "ok\n"), ("/readyz", "ready\n")])
def test_health_endpoints_need_no_key_or_host_and_say_one_word(
    server: ServerProcess, path: str, body: str
) -> None:
    # A load balancer probes with the pod's address as Host and no credentials.
    response = httpx2.get(f"{server.base}{path}", headers={"host": "10.1.2.3:8000"})
    assert response.status_code == 200
    assert response.text == body
    assert "server" not in response.headers  # uvicorn's banner is off


def test_readyz_is_503_while_the_broker_is_unreachable(broker: Mosquitto, tmp_path: pathlib.Path) -> None:
    config = config_for(broker, HTTP, port=free_port())  # nothing listens there
    with ServerProcess(tmp_path, config) as server:
        assert httpx2.get(f"{server.base}/healthz").status_code == 200
        response = httpx2.get(f"{server.base}/readyz")
        assert (response.status_code, response.text) == (503, "not ready\n")


def test_responses_carry_a_request_id_that_the_logs_carry_too(server: ServerProcess) -> None:
    response = post(server.url, **bearer(FULL_KEY), **{"x-request-id": "trace-4711"})
    assert response.headers["x-request-id"] == "trace-4711"
    generated = post(server.url, **bearer(FULL_KEY), **{"x-request-id": "not a valid id"})
    assert generated.headers["x-request-id"] != "not a valid id"
    assert "[trace-4711]" in server.stderr()


# ---- the command line ----------------------------------------------------------------------------------


def test_serving_on_all_interfaces_with_api_keys_starts(broker: Mosquitto, tmp_path: pathlib.Path) -> None:
    with ServerProcess(tmp_path, config_for(broker, HTTP), host="0.0.0.0") as server:
        _assert_unauthorized(post(server.url))
        assert post(server.url, **bearer(FULL_KEY)).status_code == 200


def test_serving_on_all_interfaces_without_auth_is_refused(broker: Mosquitto, tmp_path: pathlib.Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(config_for(broker, {"allowed_hosts": ["mcp.example.net"]})))
    done = _cli("serve", "--transport", "http", "--host", "0.0.0.0", "--port", "1", "--config", str(config))
    assert done.returncode == 2
    assert "http.api_keys or http.oauth" in done.stderr
    assert "Uvicorn running" not in done.stderr


def _cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcpmqtt", *args], input=stdin, capture_output=True, text=True, timeout=30
    )


def test_hash_key_makes_a_key_and_a_hash_that_matches_it() -> None:
    done = _cli("hash-key")
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(":", 1) for line in done.stdout.splitlines())
    key, stored = lines["key"].strip(), lines["hash"].strip()
    assert key.startswith(apikeys.KEY_PREFIX)
    assert apikeys.parse_hash(stored).matches(key)
    assert key not in stored


def test_hash_key_hashes_a_key_from_stdin() -> None:
    key = "a-key-chosen-by-an-operator-0123456789"
    done = _cli("hash-key", "--stdin", stdin=key + "\n")
    assert done.returncode == 0, done.stderr
    assert apikeys.parse_hash(done.stdout.strip()).matches(key)
    assert key not in done.stdout + done.stderr


def test_hash_key_refuses_a_short_key() -> None:
    done = _cli("hash-key", "--stdin", stdin="short\n")
    assert done.returncode == 2
    assert "at least 16 characters" in done.stderr
    assert done.stdout == ""


# ---- config errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("http", "expected"),
    [
        pytest.param(
            {"api_keys": [{"name": "a", "hash": "mcpmqtt_plain_key_in_config"}]},
            "not an scrypt hash",
            id="plain-key-as-hash",
        ),
        pytest.param({"api_keys": [API_KEYS[0], API_KEYS[0]]}, "names must be unique", id="duplicate-name"),
        pytest.param(
            {"api_keys": [{**API_KEYS[0], "name": "has space"}]}, "http.api_keys[0].name", id="bad-name"
        ),
        pytest.param(
            {"api_keys": [{**API_KEYS[0], "topics": ["secret/#"]}]},
            "http.api_keys[0].topics[0]: 'secret/#' is not within the allowlist",
            id="outside",
        ),
        pytest.param(
            {"api_keys": [{**API_KEYS[0], "topics": ["lab/#", "sensors/#"]}]},
            "http.api_keys[0].topics[1]: 'sensors/#' is not within",
            id="wider-than-pattern",
        ),
        pytest.param(
            {"api_keys": [{**API_KEYS[0], "topics": ["sensors/+/temperature"], "permissions": ["write"]}]},
            "gives it only read",
            id="permission-not-granted",
        ),
        pytest.param(
            {"api_keys": [{**API_KEYS[0], "topics": ["lab/#/x"]}]},
            "http.api_keys[0].topics",
            id="bad-pattern",
        ),
        pytest.param({"api_key": []}, "http.api_key: unknown key", id="unknown-key"),
        pytest.param({"allowed_hosts": ["https://mcp.example.net"]}, "http.allowed_hosts", id="host-as-url"),
        pytest.param(
            {"allowed_origins": ["app.example.net"]}, "http.allowed_origins", id="origin-without-scheme"
        ),
        pytest.param({"max_body_bytes": 10}, "http.max_body_bytes", id="tiny-body-limit"),
    ],
)
def test_invalid_http_sections_are_config_errors(
    broker: Mosquitto, tmp_path: pathlib.Path, http: dict[str, Any], expected: str
) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(config_for(broker, http)))
    with pytest.raises(ConfigError) as error:
        load_config(config)
    assert expected in str(error.value)
    assert str(config) in str(error.value)


def test_check_config_exits_2_for_an_invalid_http_section(broker: Mosquitto, tmp_path: pathlib.Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(config_for(broker, {"api_keys": [{**API_KEYS[0], "topics": ["secret/#"]}]})))
    done = _cli("check-config", "--config", str(config))
    assert done.returncode == 2
    assert "http.api_keys[0].topics[0]" in done.stderr


@pytest.mark.parametrize("model", [HttpSettings, ApiKey, OAuthSettings, ScopeGrant, MqttTls])
def test_the_configuration_reference_names_every_http_and_tls_key(model: type[BaseModel]) -> None:
    reference = (pathlib.Path(__file__).parents[1] / "docs" / "configuration.md").read_text(encoding="utf-8")
    missing = [name for name in model.model_fields if f"`{name}`" not in reference]
    assert not missing, f"docs/configuration.md does not describe {model.__name__} keys {missing}"


def test_check_config_says_who_may_call_over_http(
    broker: Mosquitto, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(config_for(broker, HTTP)))
    assert main(["check-config", "--config", str(config)]) == 0
    printed = capsys.readouterr().out
    assert "http: API key full, API key lab-only (narrowed), API key reader (narrowed)\n" in printed
    for key in (FULL_KEY, LAB_KEY, READER_KEY):
        assert key not in printed


def test_a_websocket_upgrade_is_refused(server: ServerProcess) -> None:
    headers = {
        "connection": "Upgrade",
        "upgrade": "websocket",
        "sec-websocket-version": "13",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
        **bearer(FULL_KEY),
    }
    response = httpx2.get(server.url, headers=headers)
    assert response.status_code in (400, 403, 404, 405, 426)  # anything but 101 Switching Protocols


async def test_the_legacy_sse_transport_needs_the_key_too(broker: Mosquitto, tmp_path: pathlib.Path) -> None:
    with ServerProcess(tmp_path, config_for(broker, HTTP), transport="sse") as sse:
        _assert_unauthorized(httpx2.get(f"{sse.base}/sse"))
        _assert_unauthorized(httpx2.post(f"{sse.base}/messages/?session_id=0", json=INITIALIZE))
        assert (
            httpx2.get(f"{sse.base}/sse", headers={"origin": "https://evil.example.com"}).status_code == 403
        )
        async with Client(sse_client(f"{sse.base}/sse", headers=bearer(FULL_KEY)), mode="legacy") as client:
            published = await client.call_tool("mqtt_publish", {"topic": "lab/sse", "payload": "x"})
            assert structured(published)["topic"] == "lab/sse"
