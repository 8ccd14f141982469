"""The paho property speed-up changes nothing but speed: same bytes, same values, same errors.

Each side runs in its own interpreter, one with paho as shipped and one patched, on the same
inputs; their outputs must be identical.
"""

import json
import subprocess
import sys

PROBE = r"""
import json, sys
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties, MQTTException
if sys.argv[1] == "patched":
    from mcpmqtt import paho_speedups
    paho_speedups.install()

out = []
def record(label, fn):
    try:
        out.append([label, fn()])
    except MQTTException as exc:
        out.append([label, "MQTTException: " + str(exc).split(" dict_keys")[0]])

def publish_props():
    p = Properties(PacketTypes.PUBLISH)
    p.PayloadFormatIndicator = 1
    p.MessageExpiryInterval = 3600
    p.ContentType = "application/json"
    p.ResponseTopic = "replies/x"
    p.CorrelationData = b"\x00\xffid"
    p.UserProperty = ("k1", "v1")
    p.UserProperty = [("k2", "v2"), ("k3", "")]
    p.SubscriptionIdentifier = 7
    p.TopicAlias = 3
    return p

packed = publish_props().pack()
record("pack", lambda: packed.hex())
def roundtrip():
    q = Properties(PacketTypes.PUBLISH)
    q.unpack(packed)
    tables = ("packetType", "types", "names", "properties")
    return sorted((k, repr(v)) for k, v in vars(q).items() if k not in tables)
record("unpack", roundtrip)
record("str", lambda: str(Properties(PacketTypes.PUBLISH).unpack(packed)[0]))
record("json", lambda: repr(Properties(PacketTypes.PUBLISH).unpack(packed)[0].json()))
record("empty", lambda: Properties(PacketTypes.PUBLISH).isEmpty())
def connect_props():
    c = Properties(PacketTypes.CONNECT)
    c.SessionExpiryInterval = 10
    c.ReceiveMaximum = 100
    c.MaximumPacketSize = 1000
    c.TopicAliasMaximum = 5
    c.RequestResponseInformation = 1
    c.UserProperty = ("a", "b")
    return c.pack().hex()
record("connect", connect_props)
def sub_props():
    s = Properties(PacketTypes.SUBSCRIBE)
    s.SubscriptionIdentifier = 268435455
    return s.pack().hex()
record("subscribe", sub_props)
record("bad name", lambda: setattr(Properties(PacketTypes.PUBLISH), "NoSuchThing", 1))
record("wrong packet", lambda: setattr(Properties(PacketTypes.PUBLISH), "SessionExpiryInterval", 1))
record("bad range", lambda: setattr(Properties(PacketTypes.PUBLISH), "TopicAlias", 0))
record("bad sub id", lambda: setattr(Properties(PacketTypes.SUBSCRIBE), "SubscriptionIdentifier", 0))
# two Content Type properties (id 3): paho refuses a repeat of a single-valued property
twice = bytes([8, 3, 0, 1, 97, 3, 0, 1, 98])
record("duplicate", lambda: Properties(PacketTypes.PUBLISH).unpack(twice)[1])
print(json.dumps(out))
"""


def probe(variant: str) -> list[list[object]]:
    done = subprocess.run([sys.executable, "-c", PROBE, variant], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_patched_properties_behave_exactly_like_paho() -> None:
    shipped, patched = probe("shipped"), probe("patched")
    assert [label for label, _ in shipped] == [label for label, _ in patched]
    for (label, expected), (_, actual) in zip(shipped, patched, strict=True):
        assert actual == expected, label
    outcomes = dict(shipped)
    assert str(outcomes["duplicate"]).startswith("MQTTException")  # the probe does reach paho's checks
    assert str(outcomes["bad range"]).startswith("MQTTException")
