"""Discovery's pure parts on real samples from each convention's documentation (tests/fixtures/discovery):
what each convention announces, the command schemas derived from it, what malformed messages do."""

import json
import logging
import pathlib
from typing import Any

import pytest

from mcpmqtt.discovery import DeviceRegistry, DiscoveryIngest, DiscoveryOptions
from mcpmqtt.discovery.home_assistant import value_field
from mcpmqtt.discovery.homie import property_schema
from mcpmqtt.discovery.registry import Device
from mcpmqtt.discovery.schemas import payload_problem, summary
from mcpmqtt.rules.policy import Allowlist, Rule

SAMPLES = pathlib.Path(__file__).parent / "fixtures" / "discovery"


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text(encoding="utf-8"))


def everything() -> Allowlist:
    return Allowlist([Rule("#", frozenset({"read", "write"}))])


def ingest_for(allowlist: Allowlist | None = None, **options: Any) -> DiscoveryIngest:
    return DiscoveryIngest(DiscoveryOptions(**options), DeviceRegistry(100), allowlist or everything())


def feed(ingest: DiscoveryIngest, topic: str, payload: object) -> None:
    if isinstance(payload, bytes):
        data = payload
    else:
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
    assert ingest.wants(topic)
    ingest.ingest(topic, data)


def device(ingest: DiscoveryIngest, device_id: str) -> Device:
    found = ingest.registry.get(device_id)
    assert found is not None, [d.id for d in ingest.registry.devices()]
    return found


def entity(found: Device, key: str) -> Any:
    return next(e for e in found.entities if e.key == key)


def fits(schema: dict[str, Any] | None, payload: str) -> bool:
    assert schema is not None
    return payload_problem(schema, payload.encode()) is None


# ---- Home Assistant ------------------------------------------------------------------------------


@pytest.fixture
def home_assistant() -> DiscoveryIngest:
    ingest = ingest_for()
    for item in sample("home_assistant.json"):
        feed(ingest, item["topic"], item["payload"])
    assert ingest.skipped == 0
    return ingest


def test_ha_sensors_sharing_identifiers_are_one_device_with_units_and_value_fields(
    home_assistant: DiscoveryIngest,
) -> None:
    bedroom = device(home_assistant, "home_assistant:bedroom01ae")
    assert (bedroom.name, bedroom.manufacturer, bedroom.model) == (
        "Bedroom",
        "Example sensors Ltd.",
        "Example Sensor",
    )
    temperature, humidity = entity(bedroom, "temp01ae"), entity(bedroom, "hum01ae")
    assert temperature.state_topic == humidity.state_topic == "homeassistant/sensor/sensorBedroom/state"
    assert (temperature.unit, temperature.value_field, temperature.device_class) == (
        "°C",
        "/temperature",
        "temperature",
    )
    assert (humidity.unit, humidity.value_field) == ("%", "/humidity")
    assert temperature.command_topic is None


def test_ha_switch_takes_payload_on_and_off(home_assistant: DiscoveryIngest) -> None:
    switch = entity(device(home_assistant, "home_assistant:garden01ad"), "irr01ad")
    assert switch.command_topic == "homeassistant/switch/irrigation/set"
    assert fits(switch.command_schema, "ON") and fits(switch.command_schema, "OFF")
    assert not fits(switch.command_schema, "on")


def test_ha_abbreviations_and_the_base_topic(home_assistant: DiscoveryIngest) -> None:
    switch = entity(device(home_assistant, "home_assistant:irrigation2"), "irrigation2")
    assert switch.state_topic == "homeassistant/switch/irrigation/state"
    assert switch.command_topic == "homeassistant/switch/irrigation/set"


def test_ha_base_topic_without_a_slash_and_bracketed_value_template(home_assistant: DiscoveryIngest) -> None:
    energy = entity(device(home_assistant, "home_assistant:522851"), "522851_ENERGY_Today")
    assert energy.state_topic == "tasmota01/tele/SENSOR"
    assert energy.value_field == "/ENERGY/Today" and energy.unit == "kWh"
    assert home_assistant.registry.watches("tasmota01/tele/LWT")


def test_ha_json_light_brightness_follows_brightness_scale(home_assistant: DiscoveryIngest) -> None:
    light = entity(device(home_assistant, "home_assistant:mqtt_json_light_1"), "mqtt_json_light_1")
    assert light.command_topic == "home/light/set"
    assert fits(light.command_schema, '{"state": "ON", "brightness": 4095}')
    assert not fits(light.command_schema, '{"state": "ON", "brightness": 4096}')
    assert not fits(light.command_schema, '{"state": "DIM"}')
    assert not fits(light.command_schema, "ON")
    # the same light announced without "brightness": true takes no brightness
    kitchen = entity(device(home_assistant, "home_assistant:ea334450945afc"), "kitchen_light")
    assert fits(kitchen.command_schema, '{"state": "OFF"}')
    assert not fits(kitchen.command_schema, '{"brightness": 255}')


def test_ha_device_discovery_components_share_the_root_state_topic(home_assistant: DiscoveryIngest) -> None:
    kitchen = device(home_assistant, "home_assistant:ea334450945afc")
    assert (kitchen.name, kitchen.manufacturer, kitchen.model) == ("Kitchen", "Bla electronics", "xya")
    assert entity(kitchen, "temp01ae_t").state_topic == "sensorBedroom/state"
    assert entity(kitchen, "temp01ae_h").value_field == "/humidity"


def test_ha_default_light_brightness_topic_has_its_range() -> None:
    ingest = ingest_for()
    config = {"name": "Desk", "cmd_t": "desk/set", "stat_t": "desk/state", "bri_cmd_t": "desk/bri/set",
              "bri_scl": 100, "pl_on": "1", "pl_off": "0", "uniq_id": "desk"}  # fmt: skip
    feed(ingest, "homeassistant/light/desk/config", config)
    desk = device(ingest, "home_assistant:desk")
    assert fits(entity(desk, "desk").command_schema, "1") and not fits(
        entity(desk, "desk").command_schema, "ON"
    )
    brightness = entity(desk, "desk/brightness")
    assert brightness.command_topic == "desk/bri/set"
    assert fits(brightness.command_schema, "100") and not fits(brightness.command_schema, "101")


def test_ha_command_template_leaves_the_schema_unknown() -> None:
    ingest = ingest_for()
    feed(
        ingest, "homeassistant/switch/t/config", {"cmd_t": "t/set", "cmd_tpl": "{{ value }}!", "uniq_id": "t"}
    )
    assert entity(device(ingest, "home_assistant:t"), "t").command_schema is None
    assert ingest.registry.command_schema("t/set") is None


def test_ha_empty_payload_removes_what_the_topic_announced(home_assistant: DiscoveryIngest) -> None:
    home_assistant.ingest("homeassistant/sensor/sensorBedroomH/config", b"")
    bedroom = device(home_assistant, "home_assistant:bedroom01ae")
    assert [e.key for e in bedroom.entities] == ["temp01ae"]
    home_assistant.ingest("homeassistant/sensor/sensorBedroomT/config", b"")
    assert home_assistant.registry.get("home_assistant:bedroom01ae") is None


@pytest.mark.parametrize(
    ("template", "pointer"),
    [
        ("{{ value_json.temperature }}", "/temperature"),
        ("{{value_json['ENERGY'].Today}}", "/ENERGY/Today"),
        ('{{ value_json["a/b"][0] | float }}', "/a~1b/0"),
        ("{{ value }}", None),
        ("{% if value_json.x %}1{% endif %}", None),
    ],
)
def test_value_templates_become_json_pointers(template: str, pointer: str | None) -> None:
    assert value_field(template) == pointer


# ---- zigbee2mqtt ---------------------------------------------------------------------------------


@pytest.fixture
def zigbee() -> DiscoveryIngest:
    ingest = ingest_for()
    feed(ingest, "zigbee2mqtt/bridge/devices", sample("zigbee2mqtt_bridge_devices.json"))
    return ingest


def test_z2m_devices_and_their_exposes(zigbee: DiscoveryIngest) -> None:
    assert [d.id for d in zigbee.registry.devices()] == [
        "zigbee2mqtt:0x00158d00018255df",
        "zigbee2mqtt:0x90fd9ffffe6494fc",
    ]
    plug = device(zigbee, "zigbee2mqtt:0x00158d00018255df")
    assert (plug.name, plug.manufacturer, plug.model) == ("my_plug", "Xiaomi", "ZNCZ02LM")
    power = entity(plug, "power")
    assert (power.state_topic, power.value_field, power.unit, power.command_topic) == (
        "zigbee2mqtt/my_plug",
        "/power",
        "W",
        None,
    )
    assert entity(plug, "state").command_topic == "zigbee2mqtt/my_plug/set"


def test_z2m_set_topic_takes_every_settable_feature_in_range(zigbee: DiscoveryIngest) -> None:
    schema = zigbee.registry.command_schema("zigbee2mqtt/my_bulb/set")
    assert fits(schema, '{"state": "TOGGLE"}')
    assert fits(schema, '{"state": "ON", "brightness": 254, "color": {"x": 0.1, "y": 0.2}}')
    assert fits(schema, '{"identify": "blink"}') and fits(schema, '{"color_temp_startup": 65535}')
    assert not fits(schema, '{"brightness": 255}')
    assert not fits(schema, '{"identify": "dance"}')
    assert not fits(schema, '{"colour": "red"}')
    assert not fits(schema, "{}")
    identify = entity(device(zigbee, "zigbee2mqtt:0x90fd9ffffe6494fc"), "identify")
    assert identify.state_topic is None  # access 2: settable, never published


def test_z2m_document_replaces_the_previous_one(zigbee: DiscoveryIngest) -> None:
    devices = sample("zigbee2mqtt_bridge_devices.json")
    feed(zigbee, "zigbee2mqtt/bridge/devices", devices[1:])
    assert [d.id for d in zigbee.registry.devices()] == ["zigbee2mqtt:0x90fd9ffffe6494fc"]


def test_z2m_composites_writing_one_property_are_both_listed(zigbee: DiscoveryIngest) -> None:
    bulb = device(zigbee, "zigbee2mqtt:0x90fd9ffffe6494fc")
    assert {entity(bulb, "color_xy").value_field, entity(bulb, "color_hs").value_field} == {"/color"}


def test_z2m_availability_marks_devices_online(zigbee: DiscoveryIngest) -> None:
    assert zigbee.wants("zigbee2mqtt/my_plug/availability")
    zigbee.ingest("zigbee2mqtt/my_plug/availability", b'{"state":"online"}')
    assert device(zigbee, "zigbee2mqtt:0x00158d00018255df").online is True
    zigbee.ingest("zigbee2mqtt/my_plug/availability", b"offline")
    assert device(zigbee, "zigbee2mqtt:0x00158d00018255df").online is False


# ---- Homie ---------------------------------------------------------------------------------------


@pytest.fixture
def homie4() -> DiscoveryIngest:
    ingest = ingest_for()
    for topic, payload in sample("homie4_super_car.json"):
        if ingest.wants(topic):
            ingest.ingest(topic, payload.encode())
    return ingest


def test_homie4_device_from_attribute_topics(homie4: DiscoveryIngest) -> None:
    car = device(homie4, "homie:super-car")
    assert car.name == "Super car" and car.online is True
    temperature = entity(car, "engine/temperature")
    assert temperature.state_topic == "homie/super-car/engine/temperature"
    assert (temperature.unit, temperature.name, temperature.command_topic) == (
        "°C",
        "Engine temperature",
        None,
    )


def test_homie4_formats_become_command_schemas(homie4: DiscoveryIngest) -> None:
    light = device(homie4, "homie:kitchen-light")
    power, brightness = entity(light, "light/power"), entity(light, "light/brightness")
    assert power.command_topic == "homie/kitchen-light/light/power/set"
    assert fits(power.command_schema, "true") and not fits(power.command_schema, "TRUE")
    assert fits(brightness.command_schema, "100") and not fits(brightness.command_schema, "101")
    assert not fits(brightness.command_schema, "50.5")
    mode, color = entity(light, "light/mode"), entity(light, "light/color")
    assert fits(mode.command_schema, "b") and not fits(mode.command_schema, "d")
    assert fits(color.command_schema, "255,0,10") and not fits(color.command_schema, "256,0,0")


def test_homie4_lost_state_is_offline(homie4: DiscoveryIngest) -> None:
    homie4.ingest("homie/super-car/$state", b"lost")
    assert device(homie4, "homie:super-car").online is False


def test_homie5_description_and_state() -> None:
    ingest = ingest_for()
    item = sample("homie5_description.json")
    feed(ingest, *item["state"])  # the state first: retained messages come in any order
    feed(ingest, item["topic"], item["payload"])
    car = device(ingest, "homie:super-car")
    assert car.name == "Supercar" and car.online is True
    brightness = entity(car, "lights/brightness")
    assert brightness.command_topic == "homie/5/super-car/lights/brightness/set"
    assert fits(brightness.command_schema, "0") and not fits(brightness.command_schema, "-1")
    color = entity(car, "lights/color")
    assert fits(color.command_schema, "rgb,100,100,100") and fits(color.command_schema, "hsv,300,50,75")
    assert not fits(color.command_schema, "100,100,100")
    ingest.ingest("homie/5/super-car/$state", b"")
    assert ingest.registry.get("homie:super-car") is None


@pytest.mark.parametrize(
    ("datatype", "fmt", "good", "bad"),
    [
        ("float", "10.5:", "10.5", "10.4"),
        ("integer", ":10", "-5", "11"),
        ("enum", " a, b", "a", " a"),
        ("string", None, "anything", None),
    ],
)
def test_homie_formats(datatype: str, fmt: str | None, good: str, bad: str | None) -> None:
    schema = property_schema(datatype, fmt, 4)
    assert fits(schema, good)
    if bad is not None:
        assert not fits(schema, bad)


# ---- Tasmota -------------------------------------------------------------------------------------


@pytest.fixture
def tasmota() -> DiscoveryIngest:
    ingest = ingest_for()
    for item in sample("tasmota.json"):
        feed(ingest, item["topic"], item["payload"])
    return ingest


def test_tasmota_relays_topics_and_power_payloads(tasmota: DiscoveryIngest) -> None:
    switch = device(tasmota, "tasmota:BCDDC2000000")
    assert (switch.name, switch.model, switch.sw_version) == ("Tasmota", "MJ-S01 Switch", "9.3.1")
    power = entity(switch, "power1")
    assert power.command_topic == "cmnd/parents-room-switch/POWER1"
    assert (power.state_topic, power.value_field, power.name) == (
        "tele/parents-room-switch/STATE",
        "/POWER",
        "ParentsRoomSwitch",
    )
    assert fits(power.command_schema, "TOGGLE") and not fits(power.command_schema, "HOLD")
    assert tasmota.registry.watches("tele/parents-room-switch/LWT")
    tasmota.ingest("tele/parents-room-switch/LWT", b"Online")
    assert switch.online is True


def test_tasmota_sensors_message_adds_readings(tasmota: DiscoveryIngest) -> None:
    room = device(tasmota, "tasmota:DC4F220756C6")
    assert [e.key for e in room.entities if e.kind == "relay"] == ["power1", "power2", "power3", "power4"]
    assert entity(room, "power3").value_field == "/POWER3"
    reading = entity(room, "sensor/DS18B20-1/Temperature")
    assert (reading.state_topic, reading.unit) == ("tele/cv-ruimte/SENSOR", "°C")


# ---- what is kept, and what is skipped -----------------------------------------------------------


def test_entities_outside_the_servers_allowlist_are_dropped(caplog: pytest.LogCaptureFixture) -> None:
    allowlist = Allowlist(
        [Rule("homeassistant/#", frozenset({"read"})), Rule("home/+/state", frozenset({"read"}))]
    )
    ingest = ingest_for(allowlist)
    feed(ingest, "homeassistant/sensor/a/config", {"stat_t": "home/a/state", "uniq_id": "a"})
    with caplog.at_level(logging.WARNING):
        feed(ingest, "homeassistant/sensor/b/config", {"stat_t": "secret/vault", "uniq_id": "b"})
    assert [d.id for d in ingest.registry.devices()] == ["home_assistant:a"]
    assert "outside the allowlist" in caplog.text and "secret/vault" in caplog.text


def test_a_denied_config_topic_is_not_read() -> None:
    allowlist = Allowlist(
        [
            Rule("#", frozenset({"read"})),
            Rule("homeassistant/sensor/hidden/#", frozenset({"read"}), deny=True),
        ]
    )
    ingest = ingest_for(allowlist)
    feed(ingest, "homeassistant/sensor/hidden/config", {"stat_t": "x/y", "uniq_id": "h"})
    assert len(ingest.registry) == 0


MALFORMED: list[tuple[str, bytes]] = [
    ("homeassistant/sensor/a/config", b"{not json"),
    ("homeassistant/sensor/a/config", b"\xff\xfe"),
    ("homeassistant/sensor/a/config", b"[1, 2]"),
    ("homeassistant/sensor/a/config", json.dumps({"stat_t": 5}).encode()),
    ("homeassistant/sensor/a/config", json.dumps({"stat_t": "a/#"}).encode()),
    ("homeassistant/sensor/a/config", json.dumps({"~": "a/+", "stat_t": "~/x"}).encode()),
    ("homeassistant/sensor/a/config", json.dumps({"~": 7, "stat_t": "~/x"}).encode()),
    ("homeassistant/sensor/a/config", json.dumps({"stat_t": "a\u0000b"}).encode()),
    ("homeassistant/sensor/a/config", json.dumps({"dev": "x", "stat_t": "a"}).encode()),
    ("homeassistant/device/a/config", json.dumps({"cmps": [1]}).encode()),
    ("homeassistant/x/config", json.dumps({"stat_t": "a"}).encode()),
    ("zigbee2mqtt/bridge/devices", b'{"devices": 1}'),
    ("homie/5/car/$description", b"[]"),
    ("homie/5/car/$description", b'{"nodes": 3}'),
    ("tasmota/discovery/AA/config", b'{"t": 1}'),
    ("homeassistant/sensor/big/config", b'{"name": "' + b"x" * 1_000_000 + b'", "stat_t": "a"}'),
]


@pytest.mark.parametrize(("topic", "payload"), MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_messages_are_skipped_with_a_log_line_and_disturb_nothing(
    topic: str, payload: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    ingest = ingest_for(max_config_bytes=1_000_000)
    feed(ingest, "homeassistant/sensor/good/config", {"stat_t": "good/state", "uniq_id": "good"})
    with caplog.at_level(logging.WARNING, logger="mcpmqtt.discovery"):
        ingest.ingest(topic, payload)
    assert [d.id for d in ingest.registry.devices()] == ["home_assistant:good"]
    assert ingest.skipped == 1 and "discovery:" in caplog.text


def test_log_lines_escape_device_text(caplog: pytest.LogCaptureFixture) -> None:
    ingest = ingest_for(Allowlist([Rule("homeassistant/#", frozenset({"read"}))]))
    with caplog.at_level(logging.WARNING):
        feed(ingest, "homeassistant/sensor/a/config", {"stat_t": "x\nFAKE LOG LINE", "uniq_id": "evil\r\n"})
    assert "\nFAKE" not in caplog.text and "\\nFAKE" in caplog.text


def test_device_text_is_cleaned_and_bounded() -> None:
    ingest = ingest_for()
    feed(ingest, "homeassistant/sensor/a/config",
         {"stat_t": "a/b", "uniq_id": "a", "name": "Lamp\u0007\u202e" + "y" * 500})  # fmt: skip
    name = entity(device(ingest, "home_assistant:a"), "a").name
    assert name is not None and name.startswith("Lampy") and len(name) == 200


def test_the_registry_is_bounded_in_devices() -> None:
    ingest = DiscoveryIngest(DiscoveryOptions(), DeviceRegistry(3), everything())
    for index in range(5):
        feed(
            ingest, f"homeassistant/sensor/s{index}/config", {"stat_t": f"s/{index}", "uniq_id": f"s{index}"}
        )
    assert [d.id for d in ingest.registry.devices()] == [f"home_assistant:s{i}" for i in (2, 3, 4)]
    assert ingest.registry.evicted == 2 and ingest.registry.on_topic("s/0") == []


def test_availability_known_before_the_config_is_used() -> None:
    last = {"dev/lwt": b"online"}
    ingest = DiscoveryIngest(DiscoveryOptions(), DeviceRegistry(10), everything(), last.get)
    feed(ingest, "homeassistant/sensor/a/config", {"stat_t": "a/b", "uniq_id": "a", "avty_t": "dev/lwt"})
    assert device(ingest, "home_assistant:a").online is True


def test_conventions_can_be_switched_off() -> None:
    ingest = ingest_for(home_assistant_prefix=None, tasmota_prefix="tas")
    assert not ingest.wants("homeassistant/sensor/a/config")
    assert ingest.wants("tas/AA/config") and not ingest.wants("tasmota/discovery/AA/config")


def test_wants_only_discovery_shapes() -> None:
    ingest = ingest_for()
    for topic in ("sensors/kitchen/temperature", "homeassistant/sensor/a/state", "zigbee2mqtt/my_plug",
                  "homie/dev/node/prop", "tasmota/discovery"):  # fmt: skip
        assert not ingest.wants(topic), topic


def test_summaries_name_what_is_valid() -> None:
    assert summary({"type": "string", "enum": ["ON", "OFF"]}) == 'one of "ON", "OFF"'
    text = summary({"type": "string", "contentMediaType": "application/json",
                    "contentSchema": {"type": "integer", "minimum": 0, "maximum": 100}})  # fmt: skip
    assert text == "an integer from 0 to 100"


# ---- any JSON at all -----------------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

KEYS = st.sampled_from(
    ["~", "stat_t", "cmd_t", "dev", "ids", "cmps", "p", "schema", "brightness", "name", "exposes", "features",
     "type", "property", "access", "definition", "friendly_name", "ieee_address", "nodes", "properties",
     "datatype", "format", "settable", "t", "ft", "tp", "rl", "state", "sn", "fn", "value_min", "values"]
)  # fmt: skip
"""Keys the parsers look at, so that the generated documents reach past the first checks."""
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)


def _containers(children: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.one_of(
        st.lists(children, max_size=5), st.dictionaries(KEYS | st.text(max_size=8), children, max_size=6)
    )


JSON_VALUES = st.recursive(SCALARS | st.text(max_size=20), _containers, max_leaves=30)
TOPICS = [
    "homeassistant/light/a/config",
    "homeassistant/device/a/config",
    "zigbee2mqtt/bridge/devices",
    "homie/5/dev/$description",
    "tasmota/discovery/AA/config",
    "tasmota/discovery/AA/sensors",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topic=st.sampled_from(TOPICS), document=JSON_VALUES)
def test_any_json_is_read_or_skipped_never_raised(topic: str, document: object) -> None:
    ingest = ingest_for()
    ingest.ingest(topic, json.dumps(document).encode())
    for found in ingest.registry.devices():
        assert found.entities  # a device is kept only with something to show
        for each in found.entities:
            assert each.state_topic is not None or each.command_topic is not None
            json.dumps(each.command_schema, allow_nan=False)  # results are strict JSON


@pytest.mark.parametrize("payload", [b'{"stat_t": "a", "min": Infinity}', b"[" * 100_000])
def test_json_without_a_json_meaning_is_skipped(payload: bytes) -> None:
    ingest = ingest_for()
    ingest.ingest("homeassistant/number/a/config", payload)
    assert ingest.skipped == 1 and len(ingest.registry) == 0


def test_ha_device_discovery_component_with_only_its_platform_is_removed(
    home_assistant: DiscoveryIngest,
) -> None:
    # The documentation's example: "This will explicitly remove the humidity sensor and its entry."
    item = next(i for i in sample("home_assistant.json") if i["topic"].startswith("homeassistant/device/"))
    payload = json.loads(json.dumps(item["payload"]))
    payload["cmps"]["some_unique_id2"] = {"p": "sensor"}
    feed(home_assistant, item["topic"], payload)
    kitchen = device(home_assistant, "home_assistant:ea334450945afc")
    assert {e.key for e in kitchen.entities} == {"temp01ae_t", "kitchen_light"}
