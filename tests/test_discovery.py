"""Discovery end to end: real samples published (retained) by a test device before and after the server
starts, read through a real Mosquitto, listed and described through the SDK's client in both protocol
eras; what the caller may see; and command schemas enforced on publish and query."""

import json
import pathlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from devices import raw_client
from mcp.client import Client
from mcp.shared.exceptions import MCPError
from mcp_client import MODES, connect, error_text, structured
from mosquitto import Mosquitto
from server_config import unique_root, write_full_config

from mcpmqtt.discovery import DeviceRegistry, DiscoveryIngest, DiscoveryOptions
from mcpmqtt.rules.policy import Allowlist, Rule
from mcpmqtt.server.device_results import (
    DESCRIBE_TEMPLATE,
    DEVICE_TEMPLATE,
    describe_uri,
    device_info,
    device_uri,
)

pytestmark = pytest.mark.anyio

SAMPLES = pathlib.Path(__file__).parent / "fixtures" / "discovery"


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text(encoding="utf-8"))


def rooted(value: Any, root: str) -> Any:
    """A sample with its topics moved under `root`, so that no other test sees them."""
    text = json.dumps(value, ensure_ascii=False)
    for old, new in (
        ('"homeassistant/', f'"{root}/ha/'),
        ('"sensorBedroom/', f'"{root}/ha/sensorBedroom/'),
        ('"home/', f'"{root}/home/'),
        ('"tasmota01/', f'"{root}/tasmota01/'),
        ('"%prefix%/%topic%/"', f'"{root}/%prefix%/%topic%/"'),
    ):
        text = text.replace(old, new)
    return json.loads(text)


def topics(root: str) -> list[dict[str, Any]]:
    return [
        {"pattern": f"{root}/ha/#", "permissions": ["read"], "description": "Home Assistant discovery"},
        {"pattern": f"{root}/ha/switch/irrigation/set", "permissions": ["write"]},
        {"pattern": f"{root}/home/#", "permissions": ["read", "write"]},
        {"pattern": f"{root}/z2m/#", "permissions": ["read"]},
        {"pattern": f"{root}/z2m/+/set", "permissions": ["write"]},
        {"pattern": f"{root}/homie/#", "permissions": ["read", "write"]},
        {"pattern": f"{root}/tasmota/#", "permissions": ["read"]},
        {"pattern": f"{root}/cmnd/#", "permissions": ["write"]},
        {"pattern": f"{root}/tele/#", "permissions": ["read"]},
    ]


def discovery_section(root: str, **more: Any) -> dict[str, Any]:
    return {
        "home_assistant_prefix": f"{root}/ha",
        "zigbee2mqtt_base": f"{root}/z2m",
        "homie_domain": f"{root}/homie",
        "tasmota_prefix": f"{root}/tasmota/discovery",
        **more,
    }


async def publish_retained(broker: Mosquitto, messages: list[tuple[str, bytes]]) -> None:
    async with raw_client(broker) as device:
        for topic, payload in messages:
            await device.publish(topic, payload, qos=1, retain=True)


def ha_messages(root: str) -> list[tuple[str, bytes]]:
    return [
        (rooted(item["topic"], root), json.dumps(rooted(item["payload"], root)).encode())
        for item in sample("home_assistant.json")
    ]


def later_messages(root: str) -> list[tuple[str, bytes]]:
    """Homie 4, Homie 5 and Tasmota: published while the server runs."""
    messages = [(f"{root}/{topic}", payload.encode()) for topic, payload in sample("homie4_super_car.json")]
    homie5 = sample("homie5_description.json")
    messages.append((f"{root}/{homie5['state'][0]}", homie5["state"][1].encode()))
    messages.append((f"{root}/{homie5['topic']}", json.dumps(homie5["payload"]).encode()))
    for item in sample("tasmota.json"):
        messages.append((f"{root}/{item['topic']}", json.dumps(rooted(item["payload"], root)).encode()))
    messages.append((f"{root}/tele/parents-room-switch/LWT", b"Online"))
    return messages


@dataclass
class Served:
    client: Client
    broker: Mosquitto
    root: str


@pytest.fixture(scope="module", params=MODES)
async def served(
    request: pytest.FixtureRequest, broker: Mosquitto, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Served]:
    root = unique_root()
    before = ha_messages(root)
    before.append(
        (f"{root}/z2m/bridge/devices", json.dumps(sample("zigbee2mqtt_bridge_devices.json")).encode())
    )
    await publish_retained(broker, before)
    config = write_full_config(
        tmp_path_factory.mktemp("discovery"), broker, topics(root), discovery=discovery_section(root)
    )
    async with connect(config, request.param) as client:
        await publish_retained(broker, later_messages(root))
        yield Served(client, broker, root)


async def devices_when(client: Client, ready: Any, filter: str | None = None) -> dict[str, Any]:
    """mqtt_list_devices, once `ready(result)` holds (discovery reads off the message path)."""
    arguments = {"filter": filter} if filter else {}
    with anyio.fail_after(10):
        while True:
            result = structured(await client.call_tool("mqtt_list_devices", arguments))
            if ready(result):
                return result
            await anyio.sleep(0.05)


def by_id(result: dict[str, Any], device_id: str) -> dict[str, Any] | None:
    return next((d for d in result["devices"] if d["id"] == device_id), None)


def entity(found: dict[str, Any], key: str) -> dict[str, Any]:
    return next(e for e in found["entities"] if e["key"] == key)


async def test_home_assistant_devices_retained_before_the_server_started(served: Served) -> None:
    result = await devices_when(served.client, lambda r: by_id(r, "home_assistant:bedroom01ae"))
    bedroom = by_id(result, "home_assistant:bedroom01ae")
    assert bedroom is not None and bedroom["convention"] == "home_assistant"
    assert bedroom["device_supplied"] == {
        "name": "Bedroom",
        "manufacturer": "Example sensors Ltd.",
        "model": "Example Sensor",
        "sw_version": "2024.1.0",
    }
    temperature = entity(bedroom, "temp01ae")
    assert temperature["state_topic"] == f"{served.root}/ha/sensor/sensorBedroom/state"
    assert temperature["value_field"] == "/temperature" and temperature["device_supplied"]["unit"] == "°C"
    assert temperature["readable"] is True and temperature["writable"] is False
    switch = entity(by_id(result, "home_assistant:garden01ad") or {}, "irr01ad")
    assert switch["writable"] is True and switch["command_schema"]["enum"] == ["ON", "OFF"]
    light = entity(by_id(result, "home_assistant:mqtt_json_light_1") or {}, "mqtt_json_light_1")
    assert light["command_schema"]["contentSchema"]["properties"]["brightness"]["maximum"] == 4095


async def test_a_command_topic_outside_the_allowlist_is_shown_read_only(served: Served) -> None:
    result = await devices_when(served.client, lambda r: by_id(r, "home_assistant:ea334450945afc"))
    kitchen = by_id(result, "home_assistant:ea334450945afc")
    assert kitchen is not None
    light = entity(
        kitchen, "kitchen_light"
    )  # its ~/set is under ha/light/..., which no write pattern matches
    assert light["command_topic"] == f"{served.root}/ha/light/kitchen/set"
    assert light["readable"] is True and light["writable"] is False


async def test_zigbee2mqtt_devices_from_bridge_devices(served: Served) -> None:
    bulb_id = "zigbee2mqtt:0x90fd9ffffe6494fc"
    result = await devices_when(served.client, lambda r: by_id(r, bulb_id), filter="my_bulb")
    assert [d["id"] for d in result["devices"]] == [bulb_id]
    bulb = result["devices"][0]
    assert bulb["device_supplied"]["manufacturer"] == "IKEA"
    brightness = entity(bulb, "brightness")
    assert (
        brightness["state_topic"] == f"{served.root}/z2m/my_bulb"
        and brightness["value_field"] == "/brightness"
    )
    assert brightness["command_topic"] == f"{served.root}/z2m/my_bulb/set" and brightness["writable"] is True


async def test_homie_4_and_5_devices_published_while_running(served: Served) -> None:
    result = await devices_when(
        served.client,
        lambda r: (
            (car := by_id(r, "homie:super-car")) is not None
            and any(e["key"] == "lights/brightness" for e in car["entities"])
            and by_id(r, "homie:kitchen-light") is not None
        ),
    )
    light = by_id(result, "homie:kitchen-light")
    assert light is not None and light["online"] is True
    assert (
        entity(light, "light/brightness")["command_topic"]
        == f"{served.root}/homie/kitchen-light/light/brightness/set"
    )
    car = by_id(result, "homie:super-car")
    assert car is not None and car["online"] is True


async def test_tasmota_device_and_its_availability(served: Served) -> None:
    result = await devices_when(
        served.client, lambda r: (d := by_id(r, "tasmota:BCDDC2000000")) is not None and d["online"] is True
    )
    switch = by_id(result, "tasmota:BCDDC2000000")
    assert switch is not None
    power = entity(switch, "power1")
    assert (
        power["command_topic"] == f"{served.root}/cmnd/parents-room-switch/POWER1"
        and power["writable"] is True
    )
    assert power["command_schema"]["enum"] == ["OFF", "ON", "TOGGLE"]


async def test_describe_a_command_topic(served: Served) -> None:
    topic = f"{served.root}/z2m/my_bulb/set"
    await devices_when(served.client, lambda r: by_id(r, "zigbee2mqtt:0x90fd9ffffe6494fc"))
    described = structured(await served.client.call_tool("mqtt_describe", {"topic": topic}))
    assert described["writable"] is True and described["readable"] is True
    assert described["command_schema_enforced"] is False and described["observed"] is None
    assert {e["entity"]["key"] for e in described["entities"]} >= {"state", "brightness", "identify"}
    assert {e["role"] for e in described["entities"]} == {"command"}
    content = described["command_schema"]["contentSchema"]
    assert content["properties"]["brightness"]["maximum"] == 254 and content["additionalProperties"] is False


async def test_describe_refuses_a_topic_neither_readable_nor_writable(served: Served) -> None:
    text = error_text(await served.client.call_tool("mqtt_describe", {"topic": "elsewhere/x"}))
    assert text.startswith("permission denied:")
    assert error_text(await served.client.call_tool("mqtt_describe", {"topic": "a/+"})).startswith(
        "invalid topic:"
    )


async def test_devices_and_topics_are_resources(served: Served) -> None:
    await devices_when(served.client, lambda r: by_id(r, "home_assistant:bedroom01ae"))
    templates = {t.uri_template for t in (await served.client.list_resource_templates()).resource_templates}
    assert {DEVICE_TEMPLATE, DESCRIBE_TEMPLATE} <= templates
    read = await served.client.read_resource(device_uri("home_assistant:bedroom01ae"))
    document = json.loads(read.contents[0].text)  # type: ignore[union-attr]
    assert document["id"] == "home_assistant:bedroom01ae" and len(document["entities"]) == 2
    topic = f"{served.root}/ha/sensor/sensorBedroom/state"
    read = await served.client.read_resource(describe_uri(topic))
    described = json.loads(read.contents[0].text)  # type: ignore[union-attr]
    assert {e["entity"]["key"] for e in described["entities"]} == {"temp01ae", "hum01ae"}
    with pytest.raises(MCPError, match="invalid argument"):
        await served.client.read_resource(device_uri("home_assistant:nothing"))


async def test_malformed_discovery_messages_disturb_nothing(served: Served) -> None:
    root = served.root
    await publish_retained(
        served.broker,
        [
            (f"{root}/ha/sensor/bad1/config", b"{not json"),
            (
                f"{root}/ha/sensor/bad2/config",
                json.dumps({"stat_t": f"{root}/../#", "uniq_id": "x"}).encode(),
            ),
            (
                f"{root}/ha/sensor/bad3/config",
                json.dumps({"stat_t": "outside/allowlist", "uniq_id": "y"}).encode(),
            ),
            (f"{root}/ha/sensor/big/config", b'{"name": "' + b"x" * 1_000_000 + b'"}'),
            (
                f"{root}/ha/sensor/good/config",
                json.dumps({"stat_t": f"{root}/home/good", "uniq_id": "fine"}).encode(),
            ),
        ],
    )
    result = await devices_when(served.client, lambda r: by_id(r, "home_assistant:good"))
    assert by_id(result, "home_assistant:bad3") is None and by_id(result, "home_assistant:bad2") is None
    assert by_id(result, "home_assistant:bedroom01ae") is not None
    last = structured(await served.client.call_tool("mqtt_last", {"topic": f"{root}/home/good"}))
    assert last["topic"] == f"{root}/home/good"  # the server goes on answering


async def test_without_enforcement_a_payload_outside_the_schema_is_published(served: Served) -> None:
    topic = f"{served.root}/home/light/set"
    await devices_when(served.client, lambda r: by_id(r, "home_assistant:mqtt_json_light_1"))
    result = structured(await served.client.call_tool("mqtt_publish", {"topic": topic, "payload": "DIM"}))
    assert result["bytes"] == 3


# ---- enforcement -----------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=MODES)
async def enforcing(
    request: pytest.FixtureRequest, broker: Mosquitto, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Served]:
    root = unique_root()
    config = write_full_config(
        tmp_path_factory.mktemp("enforcing"),
        broker,
        topics(root),
        discovery=discovery_section(root, enforce_command_schemas=True),
    )
    async with connect(config, request.param) as client:
        await publish_retained(broker, ha_messages(root) + later_messages(root))
        await devices_when(
            client,
            lambda r: (
                by_id(r, "home_assistant:mqtt_json_light_1") is not None
                and by_id(r, "homie:kitchen-light") is not None
            ),
        )
        yield Served(client, broker, root)


async def test_enforcement_refuses_a_payload_the_device_does_not_take(enforcing: Served) -> None:
    topic = f"{enforcing.root}/home/light/set"
    refused = await enforcing.client.call_tool(
        "mqtt_publish", {"topic": topic, "payload": '{"state": "ON", "brightness": 5000}'}
    )
    text = error_text(refused)
    assert text.startswith("invalid argument:") and "brightness" in text and "4095" in text
    accepted = await enforcing.client.call_tool(
        "mqtt_publish", {"topic": topic, "payload": '{"state": "ON", "brightness": 4095}'}
    )
    assert structured(accepted)["topic"] == topic


async def test_enforcement_names_the_valid_text_payloads(enforcing: Served) -> None:
    topic = f"{enforcing.root}/homie/kitchen-light/light/mode/set"
    text = error_text(await enforcing.client.call_tool("mqtt_publish", {"topic": topic, "payload": "z"}))
    assert text.startswith("invalid argument:") and 'one of "a", "b", "c"' in text
    assert structured(await enforcing.client.call_tool("mqtt_publish", {"topic": topic, "payload": "b"}))


async def test_enforcement_applies_to_a_querys_request(enforcing: Served) -> None:
    topic = f"{enforcing.root}/homie/kitchen-light/light/brightness/set"
    result = await enforcing.client.call_tool(
        "mqtt_query", {"request_topic": topic, "payload": "150", "timeout": 0.1}
    )
    assert error_text(result).startswith("invalid argument:") and "from 0 to 100" in error_text(result)


async def test_enforcement_never_allows_what_the_allowlist_refuses(enforcing: Served) -> None:
    topic = f"{enforcing.root}/ha/light/kitchen/set"  # discovered, and the payload fits, but not writable
    text = error_text(
        await enforcing.client.call_tool("mqtt_publish", {"topic": topic, "payload": '{"state": "ON"}'})
    )
    assert text.startswith("permission denied:")


async def test_describe_says_when_the_schema_is_enforced(enforcing: Served) -> None:
    topic = f"{enforcing.root}/home/light/set"
    described = structured(await enforcing.client.call_tool("mqtt_describe", {"topic": topic}))
    assert described["command_schema_enforced"] is True


# ---- what one caller sees ----------------------------------------------------------------------------


def test_a_narrower_caller_sees_only_entities_it_may_read_and_writes_only_what_it_may() -> None:
    ingest = DiscoveryIngest(
        DiscoveryOptions(), DeviceRegistry(10), Allowlist([Rule("#", frozenset({"read", "write"}))])
    )
    for item in sample("home_assistant.json"):
        ingest.ingest(item["topic"], json.dumps(item["payload"]).encode())
    device = ingest.registry.get("home_assistant:ea334450945afc")
    assert device is not None
    caller = Allowlist([Rule("sensorBedroom/#", frozenset({"read"}))])
    info = device_info(device, caller)
    assert info is not None and {e.key for e in info.entities} == {"temp01ae_t", "temp01ae_h"}
    assert all(not e.writable for e in info.entities)
    nobody = Allowlist([Rule("elsewhere/#", frozenset({"read", "write"}))])
    assert device_info(device, nobody) is None


async def test_device_tools_are_labelled_and_have_output_schemas(served: Served) -> None:
    tools = {tool.name: tool for tool in (await served.client.list_tools()).tools}
    for name in ("mqtt_list_devices", "mqtt_describe"):
        tool = tools[name]
        hints = tool.annotations
        assert tool.title and tool.description and "device_supplied" in tool.description
        assert hints is not None and hints.read_only_hint is True and hints.destructive_hint is False
        assert hints.idempotent_hint is True and hints.open_world_hint is False
        assert tool.output_schema is not None and "properties" in tool.output_schema


async def test_the_feed_queues_only_discovery_messages_and_is_bounded() -> None:
    from mcpmqtt.mqtt import Received
    from mcpmqtt.server.discovery_feed import DiscoveryFeed

    everything = Allowlist([Rule("#", frozenset({"read", "write"}))])
    feed = DiscoveryFeed(DiscoveryIngest(DiscoveryOptions(), DeviceRegistry(10), everything), max_pending=2)
    for index in range(4):
        config = json.dumps({"stat_t": f"s/{index}", "uniq_id": f"s{index}"}).encode()
        feed.offer(Received(f"homeassistant/sensor/s{index}/config", config, 0, True, 0.0))
        feed.offer(Received(f"s/{index}", b"21.5", 0, False, 0.0))  # not discovery: not queued
    assert len(feed.ingest.registry) == 0  # nothing parsed on the per-message path
    assert feed.dropped == 2
    await feed.idle()
    assert [d.id for d in feed.ingest.registry.devices()] == ["home_assistant:s0", "home_assistant:s1"]


# ---- per caller, over HTTP with API keys -------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_each_api_key_sees_only_what_its_grant_reads_and_writes(
    broker: Mosquitto, tmp_path: pathlib.Path, mode: str
) -> None:
    from http_server import ServerProcess, config_for, http_client

    from mcpmqtt.config import apikeys

    full, kitchen = apikeys.new_key(), apikeys.new_key()
    root = unique_root()
    keys = [
        {"name": "full", "hash": str(apikeys.hash_key(full, log_n=10))},
        {
            "name": "kitchen",
            "hash": str(apikeys.hash_key(kitchen, log_n=10)),
            "topics": [f"{root}/home/kitchen/#"],
            "permissions": ["read"],
        },
    ]
    await publish_retained(
        broker,
        [
            (
                f"{root}/ha/switch/{name}/config",
                json.dumps(
                    {
                        "stat_t": f"{root}/home/{name}/state",
                        "cmd_t": f"{root}/home/{name}/set",
                        "uniq_id": name,
                    }
                ).encode(),
            )
            for name in ("kitchen", "hall")
        ],
    )
    config = config_for(broker, {"api_keys": keys}, topics(root))
    config["discovery"] = discovery_section(root)
    with ServerProcess(tmp_path, config) as server:
        server.wait_ready()
        async with http_client(server.url, full, mode) as client:
            everything = await devices_when(client, lambda r: len(r["devices"]) == 2)
            assert all(entity(d, d["id"].split(":")[1])["writable"] for d in everything["devices"])
        async with http_client(server.url, kitchen, mode) as client:
            narrowed = structured(await client.call_tool("mqtt_list_devices", {}))
            assert [d["id"] for d in narrowed["devices"]] == ["home_assistant:kitchen"]
            switch = entity(narrowed["devices"][0], "kitchen")
            assert switch["readable"] is True and switch["writable"] is False
            refused = await client.call_tool("mqtt_describe", {"topic": f"{root}/home/hall/state"})
            assert error_text(refused).startswith("permission denied:")


async def test_describe_shows_what_was_observed_on_a_state_topic(served: Served) -> None:
    """mqtt_describe's `observed`: the shape inferred from the payloads seen on the topic."""
    topic = f"{served.root}/ha/sensor/sensorBedroom/state"
    async with raw_client(served.broker) as device:
        await device.publish(topic, json.dumps({"temperature": 21.5, "humidity": 40}).encode(), qos=1)
    with anyio.fail_after(10):
        while True:  # the shape is inferred off the message path, shortly after the message
            described = structured(await served.client.call_tool("mqtt_describe", {"topic": topic}))
            if (described["observed"] or {}).get("schema") is not None:
                break
            await anyio.sleep(0.05)
    observed = described["observed"]
    assert observed["topic"] == topic and observed["messages"] >= 1
    assert observed["schema"]["properties"]["temperature"]["type"] == "number"
