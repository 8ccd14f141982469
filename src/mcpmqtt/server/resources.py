"""The two resources that make the allowlist self-describing: what is allowed, and examples."""

import json
from typing import Any

from mcp.server.mcpserver import MCPServer

from mcpmqtt.rules.examples import examples_for
from mcpmqtt.server.context import Runtime


def register_resources(server: MCPServer[Any], runtime: Runtime) -> None:
    """Add mcpmqtt://topics/allowed and mcpmqtt://topics/examples to `server`."""
    config, broker = runtime.config, runtime.broker

    @server.resource(
        "mcpmqtt://topics/allowed",
        name="allowed_topics",
        title="Allowed MQTT topics",
        description="The topic patterns you may read and write, what each is for, and broker facts.",
        mime_type="application/json",
    )
    def allowed_topics() -> str:
        mqtt = config.mqtt
        document = {
            "broker": {
                "host": mqtt.host,
                "port": mqtt.port,
                "tls": mqtt.tls is not None,
                "authentication": mqtt.username is not None,
                "protocol": broker.protocol,
                "connected": broker.connected,
            },
            "rules": [
                "A publish needs a write pattern that matches the topic.",
                "A subscribe or read needs ONE read pattern that covers every topic the filter can match.",
                "+ matches exactly one level; # matches the level before it and everything below.",
                "Patterns starting with + or # never match topics starting with $.",
            ],
            "topics": [
                {
                    "pattern": r.pattern,
                    "permissions": sorted(r.permissions),
                    "description": r.description,
                    **({"deny": True} if r.deny else {}),  # a deny entry refuses what it names
                }
                for r in runtime.policy().rules
            ],
        }
        return json.dumps(document, indent=2, ensure_ascii=False)

    @server.resource(
        "mcpmqtt://topics/examples",
        name="topic_examples",
        title="Example MQTT topics",
        description="Concrete topics for each allowed pattern, showing how + and # expand.",
        mime_type="application/json",
    )
    def topic_examples() -> str:
        return json.dumps(
            {"examples": [examples_for(r) for r in runtime.policy().rules]}, indent=2, ensure_ascii=False
        )
