"""The demo's config: the allowlist of the article that introduced mcpMQTT, plus the lights' and the
printer's state.

Permissions are the article's, pattern for pattern; the descriptions add what the simulated devices
actually do, since a model picks topics and payloads from them. The entries after the article's are
new: `status/lights/+`, so that an agent can see that switching a light worked, `status/printer`, so
that it can watch a print job finish, and read access to what the devices announce about themselves
(Home Assistant discovery, the zigbee2mqtt bridge, the printer's Sparkplug B edge node).
"""

from mcpmqtt.config import Config, MqttSettings, TopicEntry

ROOMS = ("exampleroom1", "exampleroom2")
HA_PREFIX = "homeassistant"
Z2M_BASE = "zigbee2mqtt"
SPARKPLUG_GROUP = "mcpmqtt-demo"
_KNOWN_ROOMS = f"Known rooms are '{ROOMS[0]}' and '{ROOMS[1]}'"

DEMO_TOPICS = (
    TopicEntry(
        pattern="sensors/+/temperature",
        permissions=["read"],
        description="Temperature sensor data from any location (+ matches single level like 'room1', "
        f"'room2'. {_KNOWN_ROOMS}). Use subscribe, not read on this topic. Never publish. "
        'Data is JSON like {"value": 21.4, "unit": "°C"}, sent every 2 seconds.',
    ),
    TopicEntry(
        pattern="sensors/+/humidity",
        permissions=["read"],
        description="Humidity sensor data from any location. (+ matches single level like 'room1', "
        f"'room2'. {_KNOWN_ROOMS}). Use subscribe, not read on this topic. Never publish. "
        'Data returned as %RH, JSON like {"value": 45.2, "unit": "%RH"}, sent every 2 seconds.',
    ),
    TopicEntry(
        pattern="actuators/#",
        permissions=["write"],
        description="All actuator control topics (# matches multiple levels like 'lights/room1'. To "
        "enable a light you write any payload to 'lights/room1/on', to disable you write to "
        f"'lights/room1/off'; or write ON or OFF to 'lights/room1/set'). {_KNOWN_ROOMS}: "
        f"actuators/lights/{ROOMS[0]}/on.",
    ),
    TopicEntry(
        pattern="status/lights/+",
        permissions=["read"],
        description="The current state of the light in a room, retained: JSON like "
        '{"room": "exampleroom1", "state": "on"}. Read it after switching a light to check it worked.',
    ),
    TopicEntry(
        pattern="status/printer",
        permissions=["read"],
        description="The 3D printer's state, retained, sent every 2 seconds and after every request: "
        'JSON like {"state": "printing", "job": "benchy.gcode", "progress_percent": 64.0, ...}; state is '
        "printing, paused or finished. To learn when a job finishes, mqtt_watch this topic with the "
        'condition {"field": "/state", "op": "==", "value": "finished"}.',
    ),
    TopicEntry(
        pattern="status/system",
        permissions=["read"],
        description="System status information - exact topic match. Retained JSON with uptime and the "
        "devices online.",
    ),
    TopicEntry(
        pattern="commands/+/request",
        permissions=["write"],
        description="Command request topics for request/response patterns. The 3D printer listens on "
        'commands/printer/request for JSON {"command": "status"}, {"command": "pause"}, '
        '{"command": "resume"} or {"command": "set_temperature", "target": 210} (nozzle °C) and '
        "answers with its state. Use mqtt_query.",
    ),
    TopicEntry(
        pattern="commands/+/response",
        permissions=["read"],
        description="Command response topics for request/response patterns. Devices reply here when "
        "the request carries no MQTT 5 response topic, echoing a correlation_id given in the request.",
    ),
    TopicEntry(
        pattern=f"{HA_PREFIX}/#",
        permissions=["read"],
        description="Home Assistant MQTT discovery: a retained JSON config per sensor and light, naming "
        "its state and command topics, unit and device. Device-supplied.",
    ),
    TopicEntry(
        pattern=f"{Z2M_BASE}/#",
        permissions=["read"],
        description=f"A zigbee2mqtt bridge: bridge/devices (retained) lists its Zigbee devices; the "
        f"climate sensor of {ROOMS[1]} reports JSON on {Z2M_BASE}/{ROOMS[1]}_climate. Device-supplied.",
    ),
    TopicEntry(
        pattern=f"spBv1.0/{SPARKPLUG_GROUP}/#",
        permissions=["read"],
        description="The 3D printer's telemetry as a Sparkplug B edge node (protobuf payloads, which "
        "the server decodes: see each message's `decoded`).",
    ),
)


def demo_config(host: str, port: int) -> Config:
    """The demo's config for a broker at host:port."""
    return Config(mqtt=MqttSettings(host=host, port=port), topics=list(DEMO_TOPICS))
