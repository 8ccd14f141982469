"""Sparkplug B: decoding real payloads, the registry of births, deaths and sequence numbers, and the
decoded metrics reaching an agent through a real broker and a real MCP client.

The payloads in tests/fixtures/sparkplug/ were built with protobuf from mcpmqtt's schema by
make_fixtures.py there, not by mcpmqtt's codec; protobuf's own JSON mapping cross-checks the decoder.
"""

import json
import pathlib
import struct
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from devices import raw_client
from mcp.client import Client
from mcp_client import MODES, connect, structured
from mosquitto import Mosquitto
from server_config import unique_root, write_full_config

from mcpmqtt.mqtt import Received
from mcpmqtt.sparkplug import SparkplugRegistry, parse_topic
from mcpmqtt.sparkplug.codec import Outgoing, decode, encode

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "sparkplug"
GROUP, NODE, DEVICE = "Plant A", "Line 3 Gateway", "Filler 7"


def fixture(name: str) -> bytes:
    return (FIXTURES / f"{name}.bin").read_bytes()


def fixture_topics() -> dict[str, str]:
    lines = (FIXTURES / "topics.txt").read_text().splitlines()
    return dict(line.split(" ", 1) for line in lines)  # type: ignore[misc]


TOPICS = fixture_topics()


def received(name: str, at: float = 1.0, retain: bool = False) -> Received:
    return Received(TOPICS[name], fixture(name), 0, retain, at, None)


# ---- decoding ------------------------------------------------------------------------------------


def test_topic_names_parse_and_others_do_not() -> None:
    topic = parse_topic(TOPICS["ddata1"])
    assert topic is not None
    assert (topic.group, topic.message_type, topic.edge_node, topic.device) == (GROUP, "DDATA", NODE, DEVICE)
    node = parse_topic(TOPICS["nbirth"])
    assert node is not None and node.device is None
    others = ("spBv1.0/STATE/host1", "spBv1.0/g/DDATA/node", "spBv1.0/g/NDATA/n/d", "sensors/x", "spBv1.0")
    assert [parse_topic(other) for other in others] == [None] * len(others)


def test_nbirth_decodes_every_kind_of_metric() -> None:
    payload = decode(fixture("nbirth"))
    assert payload.seq == 0 and payload.timestamp == 1_700_000_000_000
    metrics = {m.name: m for m in payload.metrics}
    assert metrics["bdSeq"].datatype == "Int64" and metrics["bdSeq"].value == 0
    assert [metrics[f"Node Control/{c}"].alias for c in ("Rebirth", "Reboot", "Next Server")] == [0, 1, 2]
    assert (metrics["Properties/Site"].alias, metrics["Properties/Site"].value) == (4, "Hall B")
    assert metrics["Line/Last Fault"].is_null and metrics["Line/Last Fault"].value is None
    assert metrics["Line/Speed"].properties == {"engUnit": "bottles/min"}
    assert metrics["Line/Shift Log"].value == {
        "columns": ["Shift", "Bottles", "Rejects"],
        "types": ["Int8", "Int16", "Int32"],
        "rows": [[1, 4200, 12], [2, 3950, 7]],
    }
    template = metrics["_types_/Valve"].value
    assert template["is_definition"] is True and template["parameters"] == {"Size": "DN50"}
    assert [m["name"] for m in template["metrics"]] == ["Open", "Position"]


def test_dbirth_decodes_signed_values_and_a_template_instance() -> None:
    payload = decode(fixture("dbirth"))
    metrics = {m.name: m for m in payload.metrics}
    assert payload.seq == 1 and [m.alias for m in payload.metrics] == [8, 9, 10, 11, 12]
    assert (metrics["Outputs/Conveyor Trim"].datatype, metrics["Outputs/Conveyor Trim"].value) == (
        "Int16",
        -12,
    )
    instance = metrics["Valve 1"].value
    assert instance["template_ref"] == "Valve" and instance["parameters"] == {"Size": "DN80"}
    assert [(m["name"], m["value"]) for m in instance["metrics"]] == [("Open", True), ("Position", 62.5)]


@pytest.mark.parametrize("name", list(TOPICS))
def test_decoder_agrees_with_protobufs_own_json_mapping(name: str) -> None:
    """protobuf's MessageToDict reads the same bytes independently of our alias and datatype logic."""
    from google.protobuf import descriptor_pool, json_format, message_factory

    from mcpmqtt.sparkplug.schema import DATATYPE_NAMES, PACKAGE, file_descriptor

    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_descriptor())
    payload_class = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.Payload"))
    reference = json_format.MessageToDict(
        payload_class.FromString(fixture(name)), preserving_proto_field_name=True
    )
    ours = decode(fixture(name))
    assert ours.seq == (int(reference["seq"]) if "seq" in reference else None)
    assert ours.timestamp == int(reference["timestamp"])
    expected = reference.get("metrics", [])
    assert len(ours.metrics) == len(expected)
    scalars = ("int_value", "long_value", "float_value", "double_value", "boolean_value", "string_value")
    for mine, theirs in zip(ours.metrics, expected, strict=True):
        assert mine.name == theirs.get("name")
        assert mine.alias == (int(theirs["alias"]) if "alias" in theirs else None)
        datatype = DATATYPE_NAMES[theirs["datatype"]] if "datatype" in theirs else None
        assert mine.datatype == datatype
        assert mine.is_null == theirs.get("is_null", False)
        present = [key for key in scalars if key in theirs]
        if present:
            raw = theirs[present[0]]
            raw = int(raw) if present[0] in ("int_value", "long_value") else raw
            if datatype in ("Int8", "Int16", "Int32"):  # the fixtures send these as 32-bit two's complement
                raw = struct.unpack("<i", struct.pack("<I", raw))[0]
            elif datatype == "Int64":
                raw = struct.unpack("<q", struct.pack("<Q", raw))[0]
            assert mine.value == raw
        if "properties" in theirs:
            keys, values = theirs["properties"]["keys"], theirs["properties"]["values"]
            assert mine.properties == {
                k: next(v[key] for key in scalars if key in v) for k, v in zip(keys, values, strict=True)
            }
        if "dataset_value" in theirs:
            rows = [
                [int(next(iter(e.values()))) for e in r["elements"]] for r in theirs["dataset_value"]["rows"]
            ]
            assert mine.value["columns"] == theirs["dataset_value"]["columns"]
            assert mine.value["rows"] == rows
        if "template_value" in theirs:
            names = [m["name"] for m in theirs["template_value"]["metrics"]]
            assert [m["name"] for m in mine.value["metrics"]] == names


def test_ddata_names_metrics_by_alias_only_until_resolved() -> None:
    raw = decode(fixture("ddata1"))
    assert [(m.name, m.alias) for m in raw.metrics] == [(None, 8), (None, 9)]
    births = {8: ("Inputs/Batch", "String")}
    resolved = decode(fixture("ddata1"), lambda name, alias: births.get(alias) if alias is not None else None)
    assert resolved.metrics[0].name == "Inputs/Batch"
    assert resolved.metrics[1].name is None and resolved.metrics[1].properties == {"Quality": 192}


def test_garbage_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not a Sparkplug B payload"):
        decode(b"\xff\xff\xff\xff")


@pytest.mark.parametrize(
    ("datatype", "wire", "value"),
    [
        ("Int8", (-5) + 2**8, -5),  # some encoders add 2**bits
        ("Int8", (-5) & 0xFFFFFFFF, -5),  # others sign-extend to 32 bits
        ("Int16", (-300) + 2**16, -300),
        ("Int32", (-70000) & 0xFFFFFFFF, -70000),
        ("UInt32", 0xFFFFFFFF, 0xFFFFFFFF),
        ("Int64", (-1) & (2**64 - 1), -1),
        ("DateTime", 1_700_000_000_000, "2023-11-14T22:13:20.000Z"),
    ],
)
def test_integers_come_out_signed_as_their_datatype_says(datatype: str, wire: int, value: object) -> None:
    data = encode(None, None, [Outgoing("m", None, datatype, wire)])
    assert decode(data).metrics[0].value == value


def test_32_bit_floats_come_out_as_their_shortest_decimal() -> None:
    data = encode(None, None, [Outgoing("f", None, "Float", 41.2), Outgoing("d", None, "Double", 41.2)])
    assert [m.value for m in decode(data).metrics] == [41.2, 41.2]  # not 41.20000076293945


def test_packed_arrays_and_bytes() -> None:
    booleans = struct.pack("<I", 10) + bytes([0b10110000, 0b01000000])
    metrics = [
        Outgoing("i16", None, "Int16Array", struct.pack("<3h", -1, 2, 300)),
        Outgoing("dbl", None, "DoubleArray", struct.pack("<2d", 1.5, float("nan"))),
        Outgoing("flt", None, "FloatArray", struct.pack("<2f", 41.2, float("inf"))),
        Outgoing("bools", None, "BooleanArray", booleans),
        Outgoing("strs", None, "StringArray", b"ab\0cd\0"),
        Outgoing("raw", None, "Bytes", b"\x00\x01"),
    ]
    values = {m.name: m.value for m in decode(encode(None, None, metrics)).metrics}
    assert values == {
        "i16": [-1, 2, 300],
        "dbl": [1.5, "nan"],
        "flt": [41.2, "inf"],
        "bools": [True, False, True, True, False, False, False, False, False, True],
        "strs": ["ab", "cd"],
        "raw": "AAE=",
    }


# ---- the registry --------------------------------------------------------------------------------


def registry() -> SparkplugRegistry:
    return SparkplugRegistry(max_edge_nodes=10, max_devices_per_node=10, max_metrics=100)


def device_record(reg: SparkplugRegistry, device: str | None) -> dict[str, Any]:
    return next(dict(d) for d in reg.devices() if d["device"] == device)


def test_births_resolve_aliases_and_a_lost_message_is_a_seq_gap() -> None:
    reg = registry()
    for name in ("nbirth", "dbirth", "ddata1", "ddata3"):  # ddata2 (seq 3) lost
        reg.offer(received(name))
    decoded = reg.decode(TOPICS["ddata3"], fixture("ddata3"))
    assert decoded is not None
    assert [m["name"] for m in decoded["metrics"]] == ["Inputs/Batch", "Inputs/Fill Level"]
    assert [m["datatype"] for m in decoded["metrics"]] == ["String", "Float"]
    assert decoded["seq"] == 4 and "note" not in decoded
    device = device_record(reg, DEVICE)
    assert device["online"] is True and device["seq_gaps"] == 1
    assert [(g["expected"], g["received"]) for g in device["recent_seq_gaps"]] == [(3, 4)]
    metrics = {m["name"]: m for m in device["metrics"]}
    assert metrics["Outputs/Conveyor Trim"]["datatype"] == "Int16"
    assert metrics["Inputs/Batch"]["value"] == decoded["metrics"][0]["value"]  # DATA updated it
    assert device["data_topic"] == TOPICS["ddata1"]
    assert device["command_topic"] == f"spBv1.0/{GROUP}/DCMD/{NODE}/{DEVICE}"


def test_in_sequence_messages_leave_no_gap_and_retained_replays_are_not_counted() -> None:
    reg = registry()
    for name in ("nbirth", "dbirth", "ddata1", "ddata2", "ddata3"):
        reg.offer(received(name))
    reg.offer(received("ddata1", retain=True))  # replayed on a re-subscription: out of sequence, by design
    assert device_record(reg, DEVICE)["seq_gaps"] == 0


def test_deaths_mark_offline() -> None:
    reg = registry()
    for name in ("nbirth", "dbirth", "ddata1", "ddata2", "ddata3", "ddeath"):
        reg.offer(received(name))
    assert device_record(reg, DEVICE)["online"] is False
    assert device_record(reg, None)["online"] is True
    reg.offer(received("dbirth"))  # out of sequence now, but born again
    reg.offer(received("ndeath", at=2.0))  # bdSeq 0, as in the NBIRTH: this session's death
    node, device = device_record(reg, None), device_record(reg, DEVICE)
    assert node["online"] is False and device["online"] is False
    assert node["died_at"] == "1970-01-01T00:00:02.000Z"


def test_a_stale_death_from_an_earlier_session_is_ignored() -> None:
    reg = registry()
    reg.offer(received("nbirth"))
    late_will = encode(None, None, [Outgoing("bdSeq", None, "Int64", 7)])
    reg.offer(Received(TOPICS["ndeath"], late_will, 0, False, 2.0, None))
    assert device_record(reg, None)["online"] is True and reg.stale_deaths == 1


def test_aliases_unknown_without_the_birth_are_noted() -> None:
    reg = registry()
    reg.offer(received("ddata1"))
    decoded = reg.decode(TOPICS["ddata1"], fixture("ddata1"))
    assert decoded is not None and "birth" in decoded["note"]
    assert [m.get("name") for m in decoded["metrics"]] == [None, None]


def test_undecodable_payloads_are_counted_and_skipped() -> None:
    reg = registry()
    reg.offer(Received(TOPICS["ddata1"], b"\xff\xff\xff", 0, False, 1.0, None))
    assert reg.undecodable == 1
    decoded = reg.decode(TOPICS["ddata1"], b"\xff\xff\xff")
    assert decoded is not None and decoded["error"].startswith("not a Sparkplug B payload")


def test_undecodable_payloads_make_up_no_edge_node() -> None:
    reg = registry()
    reg.offer(Received("spBv1.0/g/NDATA/ghost", b"\xff\xff\xff", 0, False, 1.0, None))
    assert reg.devices() == []


def test_a_decoded_message_shows_at_most_1000_metrics() -> None:
    metrics = [Outgoing(f"m{i}", i, "Int32", i) for i in range(1005)]
    decoded = registry().decode("spBv1.0/g/NDATA/n", encode(None, 1, metrics))
    assert decoded is not None and len(decoded["metrics"]) == 1000 and decoded["metrics_omitted"] == 5


def test_registry_is_bounded_in_edge_nodes() -> None:
    reg = SparkplugRegistry(max_edge_nodes=2, max_devices_per_node=1, max_metrics=2)
    for node in ("a", "b", "c"):
        reg.offer(Received(f"spBv1.0/g/NBIRTH/{node}", fixture("nbirth"), 0, False, 1.0, None))
    nodes = [d for d in reg.devices() if d["device"] is None]
    assert [d["edge_node"] for d in nodes] == ["b", "c"]
    assert all(len(d["metrics"]) == 2 for d in nodes)


def test_neither_protobuf_nor_genson_loads_at_start() -> None:
    """Start-up stays as it was: the codec and the schema inference load on first use only."""
    code = (
        "import sys\n"
        "from mcpmqtt.config import parse_config\n"
        "from mcpmqtt.server.build import build_server\n"
        "build_server(parse_config({'topics': [{'pattern': '#', 'permissions': ['read']}]}, 'test'))\n"
        "print(sorted(m for m in sys.modules if m.startswith(('google.protobuf', 'genson'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---- through a real broker and a real MCP client -------------------------------------------------


@dataclass
class Served:
    client: Client
    broker: Mosquitto
    group: str


@pytest.fixture(params=MODES)
async def served(
    request: pytest.FixtureRequest, broker: Mosquitto, tmp_path: pathlib.Path
) -> AsyncIterator[Served]:
    group = f"{unique_root()}-{request.param}"  # a group of its own: retained DDATA stays on the broker
    topics = [{"pattern": f"spBv1.0/{group}/#", "permissions": ["read"], "description": "the plant"}]
    config = write_full_config(tmp_path, broker, topics)
    async with connect(config, request.param) as client:
        yield Served(client, broker, group)


def topic(served: Served, name: str) -> str:
    return TOPICS[name].replace(GROUP, served.group)


async def read_devices(client: Client) -> list[dict[str, Any]]:
    result = await client.read_resource("mcpmqtt://sparkplug/devices")
    return json.loads(result.contents[0].text)["devices"]  # type: ignore[union-attr, no-any-return]


async def wait_device(client: Client, device: str, **expected: Any) -> dict[str, Any]:
    with anyio.fail_after(10):
        while True:
            found = [d for d in await read_devices(client) if d["device"] == device]
            if found and all(found[0][key] == value for key, value in expected.items()):
                return found[0]
            await anyio.sleep(0.05)


async def wait_listed(client: Client, topic: str) -> None:
    with anyio.fail_after(10):
        while True:
            if structured(await client.call_tool("mqtt_list_topics", {"filter": topic}))["total"]:
                return
            await anyio.sleep(0.05)


pytestmark = pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")


@pytest.mark.anyio
async def test_an_agent_reads_decoded_metrics_and_sees_gaps_and_deaths(served: Served) -> None:
    async with raw_client(served.broker) as node:
        # Births are not retained: send them once the server's own subscription is in place, which a
        # retained probe reaching its live state shows.
        probe = f"spBv1.0/{served.group}/probe"
        await node.publish(probe, b"ready", qos=1, retain=True)
        await wait_listed(served.client, probe)
        await node.publish(probe, b"", qos=1, retain=True)
        await node.publish(topic(served, "nbirth"), fixture("nbirth"), qos=1)
        await node.publish(topic(served, "dbirth"), fixture("dbirth"), qos=1)
        await wait_device(served.client, DEVICE, online=True)
        # Retained so that mqtt_read gets it at once; ddata2 (seq 3) is lost on the way.
        await node.publish(topic(served, "ddata1"), fixture("ddata1"), qos=1, retain=True)
        await node.publish(topic(served, "ddata3"), fixture("ddata3"), qos=1)
        device = await wait_device(served.client, DEVICE, seq_gaps=1)
        assert [(g["expected"], g["received"]) for g in device["recent_seq_gaps"]] == [(3, 4)]

        read = structured(
            await served.client.call_tool("mqtt_read", {"topic": topic(served, "ddata1"), "timeout": 5})
        )
        message = read["message"]
        assert message["payload_encoding"] == "base64"
        decoded = message["decoded"]
        assert decoded["convention"] == "sparkplug_b" and decoded["message_type"] == "DDATA"
        assert (decoded["group"], decoded["edge_node"], decoded["device"]) == (served.group, NODE, DEVICE)
        assert decoded["seq"] == 2 and decoded["timestamp"] == "2023-11-14T22:13:20.000Z"
        first, second = decoded["metrics"]
        assert (first["name"], first["alias"], first["datatype"]) == ("Inputs/Batch", 8, "String")
        assert (second["name"], second["properties"]) == ("Inputs/Fill Level", {"Quality": 192})

        last = structured(await served.client.call_tool("mqtt_last", {"topic": topic(served, "ddata3")}))
        assert last["message"]["decoded"]["seq"] == 4
        assert last["message"]["decoded"]["metrics"][0]["name"] == "Inputs/Batch"

        await node.publish(topic(served, "ddeath"), fixture("ddeath"), qos=1)
        await wait_device(served.client, DEVICE, online=False)
        await node.publish(topic(served, "ndeath"), fixture("ndeath"), qos=1)
        await wait_device(served.client, None, online=False)
        await node.publish(topic(served, "ddata1"), b"", qos=1, retain=True)  # clear the retained one
