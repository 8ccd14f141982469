"""Broker security (issue 4.3): TLS, mutual TLS, the host-name check, passwords over TLS, MQTT over
WebSockets. Against Mosquitto listeners and certificates that the test suite makes (mosquitto_tls.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
from http_server import ServerProcess, config_for, http_client
from mcp_client import TEST_TOPICS, connect, structured, write_config
from mosquitto import Mosquitto, find_mosquitto
from mosquitto_tls import TlsMosquitto
from processes import amqtt

from mcpmqtt.cli import main
from mcpmqtt.config import ConfigError, load_config, parse_config
from mcpmqtt.errors import BrokerUnavailable
from mcpmqtt.mqtt import Broker
from mcpmqtt.server.build import broker_settings

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsMosquitto]:
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed: run scripts/test, which installs it", pytrace=False)
    with TlsMosquitto(tmp_path_factory.mktemp("tls-broker")) as started:
        yield started


async def _publish_and_read(config: pathlib.Path, topic: str) -> dict[str, Any]:
    async with connect(config, "auto") as client:
        published = await client.call_tool(
            "mqtt_publish", {"topic": topic, "payload": "x", "qos": 1, "retain": True}
        )
        assert structured(published)["topic"] == topic
        read = structured(await client.call_tool("mqtt_read", {"topic": topic, "timeout": 5}))
        assert read["message"]["payload"] == "x"
        resource = await client.read_resource("mcpmqtt://topics/allowed")
        return json.loads(resource.contents[0].text)["broker"]  # type: ignore[union-attr,no-any-return]


async def _refusal(broker: Mosquitto, port: int, **mqtt: Any) -> str:
    """What a publish answers when the connection cannot be made: the adapter alone (no server process),
    with the settings the server would use, and short waits (a failed TLS handshake ends in milliseconds;
    a refused client certificate only when the CONNACK does not come, hence the short ack_timeout)."""
    config = parse_config(
        {"mqtt": {"host": broker.host, "port": port, **mqtt}, "topics": TEST_TOPICS}, "test"
    )
    adapter = Broker(dataclasses.replace(broker_settings(config), ack_timeout=1.0, connect_grace=0.5))
    task = asyncio.create_task(adapter.run())
    try:
        await asyncio.sleep(0.3)  # the first attempt ends
        with pytest.raises(BrokerUnavailable) as refused:
            await adapter.publish("lab/tls", b"x")
        return str(refused.value)
    finally:
        await adapter.stop(task)


async def test_tls_verified_with_the_ca_file_works_and_is_reported(
    tls_broker: TlsMosquitto, tmp_path: pathlib.Path
) -> None:
    config, _ = write_config(
        tmp_path, tls_broker, port=tls_broker.tls_port, tls={"ca_file": str(tls_broker.ca.cert)}
    )
    facts = await _publish_and_read(config, "lab/tls/one")
    assert facts["tls"] is True
    assert facts["port"] == tls_broker.tls_port


async def test_a_broker_certificate_from_an_unknown_ca_is_refused(
    tls_broker: TlsMosquitto, tmp_path: pathlib.Path
) -> None:
    text = await _refusal(tls_broker, tls_broker.tls_port, tls={})  # the system's CAs only
    assert text.startswith("broker unavailable:")
    assert "CERTIFICATE_VERIFY_FAILED" in text


async def test_a_certificate_for_another_host_is_refused(
    tls_broker: TlsMosquitto, tmp_path: pathlib.Path
) -> None:
    text = await _refusal(tls_broker, tls_broker.wrong_name_port, tls={"ca_file": str(tls_broker.ca.cert)})
    assert text.startswith("broker unavailable:")
    assert "mismatch" in text.lower() or "doesn't match" in text


async def test_insecure_skips_the_host_name_check_and_warns(
    tls_broker: TlsMosquitto, broker: Mosquitto, tmp_path: pathlib.Path
) -> None:
    tls = {"ca_file": str(tls_broker.ca.cert), "insecure": True}
    config = config_for(tls_broker, None, port=tls_broker.wrong_name_port, tls=tls)
    with ServerProcess(tmp_path, config) as server:
        server.wait_ready()
        async with http_client(server.url) as client:
            assert structured(
                await client.call_tool("mqtt_publish", {"topic": "lab/tls/insecure", "payload": "x"})
            )
        assert "mqtt.tls.insecure is set" in server.stderr()


async def test_mutual_tls_with_a_client_certificate_works(
    tls_broker: TlsMosquitto, tmp_path: pathlib.Path
) -> None:
    tls = {
        "ca_file": str(tls_broker.ca.cert),
        "cert_file": str(tls_broker.client.cert),
        "key_file": str(tls_broker.client.key),
    }
    config, client_id = write_config(tmp_path, tls_broker, port=tls_broker.mtls_port, tls=tls)
    facts = await _publish_and_read(config, "lab/tls/mutual")
    assert facts["tls"] is True
    assert (
        f"as {client_id} (p5, c1, k60, u'mcpmqtt-agent')" in tls_broker.log_text()
    )  # the certificate's name


@pytest.mark.parametrize("certificate", ["none", "rogue"])
async def test_mutual_tls_without_an_accepted_certificate_is_refused(
    tls_broker: TlsMosquitto, tmp_path: pathlib.Path, certificate: str
) -> None:
    tls: dict[str, str] = {"ca_file": str(tls_broker.ca.cert)}
    if certificate == "rogue":
        tls |= {"cert_file": str(tls_broker.rogue_client.cert), "key_file": str(tls_broker.rogue_client.key)}
    assert (await _refusal(tls_broker, tls_broker.mtls_port, tls=tls)).startswith("broker unavailable:")


@pytest.mark.parametrize(("password", "works"), [("agent-pass", True), ("wrong", False)])
async def test_a_password_from_the_environment_over_tls(
    tls_broker: TlsMosquitto,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    password: str,
    works: bool,
) -> None:
    monkeypatch.setenv("MCPMQTT_TEST_PASSWORD", password)  # the server process inherits it
    mqtt = {
        "username": "agent",
        "password_env": "MCPMQTT_TEST_PASSWORD",
        "tls": {"ca_file": str(tls_broker.ca.cert)},
    }
    if works:
        config, _ = write_config(tmp_path, tls_broker, port=tls_broker.tls_auth_port, **mqtt)
        assert (await _publish_and_read(config, "lab/tls/password"))["authentication"] is True
    else:
        text = await _refusal(tls_broker, tls_broker.tls_auth_port, **mqtt)
        assert text.startswith("broker unavailable:") and "refused" in text
    assert password not in tls_broker.log_text()


def _load(tmp_path: pathlib.Path, broker: Mosquitto, **mqtt: Any) -> str:
    """The config error for these mqtt keys ('' if the config loads)."""
    config, _ = write_config(tmp_path, broker, **mqtt)
    try:
        load_config(config)
    except ConfigError as exc:
        return str(exc)
    return ""


@pytest.mark.parametrize(
    ("tls", "says"),
    [
        ({"ca_file": "missing-ca.pem"}, "mqtt.tls.ca_file: cannot load CA certificates from"),
        ({"cert_file": "missing.pem"}, "mqtt.tls.cert_file: cannot load the client certificate"),
        ({"key_file": "client.key"}, "key_file needs cert_file"),
        ({"ca_file": "ca.pem", "verify": False}, "mqtt.tls.verify: unknown key"),
    ],
)
def test_tls_config_errors_name_the_field(
    tls_broker: TlsMosquitto, tmp_path: pathlib.Path, tls: dict[str, Any], says: str
) -> None:
    assert says in _load(tmp_path, tls_broker, tls=tls)


def test_tls_files_are_relative_to_the_config_file(tls_broker: TlsMosquitto, tmp_path: pathlib.Path) -> None:
    (tmp_path / "ca.pem").write_bytes(tls_broker.ca.cert.read_bytes())
    assert _load(tmp_path, tls_broker, tls={"ca_file": "ca.pem"}) == ""


# ---- MQTT over WebSockets ---------------------------------------------------------------------------------
# Debian's Mosquitto is built without WebSockets; amqtt (a dependency already) serves them.


@pytest.fixture(scope="module")
def websocket_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with amqtt(tmp_path_factory.mktemp("amqtt-ws"), listener="ws") as port:
        yield port


async def test_mqtt_over_websockets(websocket_port: int, broker: Mosquitto, tmp_path: pathlib.Path) -> None:
    port = websocket_port
    config, _ = write_config(tmp_path, broker, port=port, transport="websockets", websocket_path="/")
    facts = await _publish_and_read(config, "lab/ws/one")
    assert (facts["port"], facts["protocol"]) == (port, "3.1.1")  # amqtt speaks 3.1.1 only


def test_check_config_shows_tls(
    tls_broker: TlsMosquitto, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tls = {"ca_file": str(tls_broker.ca.cert), "cert_file": str(tls_broker.client.cert), "insecure": True}
    tls["key_file"] = str(tls_broker.client.key)
    config, _ = write_config(tmp_path, tls_broker, port=tls_broker.mtls_port, tls=tls)
    assert main(["check-config", "--config", str(config)]) == 0
    expected = (
        f"broker: mqtts://{tls_broker.host}:{tls_broker.mtls_port} (MQTT 5, anonymous, client certificate"
    )
    assert expected + ", host name NOT checked)" in capsys.readouterr().out
