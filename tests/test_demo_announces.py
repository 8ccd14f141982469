"""The demo's devices announce themselves (Home Assistant discovery, a zigbee2mqtt bridge, a Sparkplug B
edge node), and the demo's allowlist lets the server read it all: checked through a real broker and
the real server over the SDK's client."""

import json
import pathlib
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
from mcp.client import Client
from mcp_client import connect, structured
from mosquitto import Mosquitto

from mcpmqtt.demo.config import DEMO_TOPICS
from mcpmqtt.demo.devices import SPARKPLUG_DEVICE, SPARKPLUG_NODE, Z2M_DEVICE, run_devices

pytestmark = pytest.mark.anyio

PRINTER_DATA = f"spBv1.0/mcpmqtt-demo/DDATA/{SPARKPLUG_NODE}/{SPARKPLUG_DEVICE}"


def demo_config_file(directory: pathlib.Path, broker: Mosquitto) -> pathlib.Path:
    topics = [t.model_dump(mode="json", exclude_defaults=True) for t in DEMO_TOPICS]
    config = {"mqtt": {"host": broker.host, "port": broker.port}, "topics": topics}
    path = directory / "demo.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    return structured(await client.call_tool(tool, arguments))


async def read_json(client: Client, topic: str) -> Any:
    result = await call(client, "mqtt_read", topic=topic, timeout=10)
    assert result["message"] is not None, f"nothing on {topic}"
    return json.loads(result["message"]["payload"])


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    with anyio.fail_after(10):
        while True:
            if await check():
                return
            await anyio.sleep(0.05)


async def resource(client: Client, uri: str) -> Any:
    contents = (await client.read_resource(uri)).contents[0]
    return json.loads(contents.text)  # type: ignore[union-attr]


async def test_the_demo_devices_announce_themselves(fresh_broker: Mosquitto, tmp_path: pathlib.Path) -> None:
    online = anyio.Event()
    config = demo_config_file(tmp_path, fresh_broker)
    async with anyio.create_task_group() as tasks:
        await tasks.start(run_devices, fresh_broker.host, fresh_broker.port, "5", "mosquitto", online)
        async with connect(config, "auto") as client:

            async def subscribed() -> bool:  # the retained status reached the live state
                return (await call(client, "mqtt_last", topic="status/system"))["message"] is not None

            await eventually(subscribed)
            online.set()  # now the edge node may be born: the server will see its births

            light = await read_json(client, "homeassistant/light/mcpmqtt_demo/exampleroom1_light/config")
            assert light["command_topic"] == "actuators/lights/exampleroom1/set"
            assert (light["payload_on"], light["state_topic"]) == ("ON", "status/lights/exampleroom1")
            sensor = await read_json(client, "homeassistant/sensor/mcpmqtt_demo/exampleroom2_humidity/config")
            assert (sensor["state_topic"], sensor["unit_of_measurement"]) == (
                "sensors/exampleroom2/humidity",
                "%RH",
            )

            devices = await read_json(client, "zigbee2mqtt/bridge/devices")
            climate = next(d for d in devices if d["friendly_name"] == Z2M_DEVICE)
            exposed = {e["property"] for e in climate["definition"]["exposes"]}
            assert exposed == {"temperature", "humidity", "battery", "linkquality"}
            report = await read_json(client, f"zigbee2mqtt/{Z2M_DEVICE}")
            assert set(report) == exposed

            data = await call(client, "mqtt_read", topic=PRINTER_DATA, timeout=10)
            decoded = data["message"]["decoded"]
            assert decoded["device"] == SPARKPLUG_DEVICE
            names = {m["name"] for m in decoded["metrics"]}
            assert "progress_percent" in names and all("alias" in m for m in decoded["metrics"])
            listed = (await resource(client, "mcpmqtt://sparkplug/devices"))["devices"]
            printer = next(d for d in listed if d["device"] == SPARKPLUG_DEVICE)
            assert printer["online"] is True and printer["seq_gaps"] == 0
            assert {m["name"]: m["datatype"] for m in printer["metrics"]}["nozzle_temperature"] == "Float"

            await call(client, "mqtt_publish", topic="actuators/lights/exampleroom1/set", payload="ON")

            async def switched_on() -> bool:
                return bool((await read_json(client, "status/lights/exampleroom1"))["state"] == "on")

            await eventually(switched_on)
        tasks.cancel_scope.cancel()
