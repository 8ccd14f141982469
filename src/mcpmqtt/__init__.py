"""mcpmqtt: an MCP server that gives LLM agents allowlisted access to MQTT.

The public API, for embedding the server or building on its parts. Names that need the MCP SDK or the
MQTT client load on first use, so that `import mcpmqtt` (and `mcpmqtt check-config`) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mcpmqtt.errors import (
    BrokerRefused,
    BrokerUnavailable,
    ConfigError,
    InvalidArgument,
    InvalidTopic,
    McpMqttError,
    PayloadTooLarge,
    PermissionDenied,
)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from mcpmqtt.config import Config, load_config, parse_config
    from mcpmqtt.mqtt import Broker, BrokerSettings
    from mcpmqtt.rules.policy import Allowlist, Decision, Rule
    from mcpmqtt.server.build import McpMqttServer, build_server

_LAZY = {
    "Allowlist": "mcpmqtt.rules.policy",
    "Broker": "mcpmqtt.mqtt",
    "BrokerSettings": "mcpmqtt.mqtt",
    "Config": "mcpmqtt.config",
    "Decision": "mcpmqtt.rules.policy",
    "McpMqttServer": "mcpmqtt.server.build",
    "Rule": "mcpmqtt.rules.policy",
    "build_server": "mcpmqtt.server.build",
    "load_config": "mcpmqtt.config",
    "parse_config": "mcpmqtt.config",
}

__all__ = [
    "Allowlist",
    "Broker",
    "BrokerRefused",
    "BrokerSettings",
    "BrokerUnavailable",
    "Config",
    "ConfigError",
    "Decision",
    "InvalidArgument",
    "InvalidTopic",
    "McpMqttError",
    "McpMqttServer",
    "PayloadTooLarge",
    "PermissionDenied",
    "Rule",
    "__version__",
    "build_server",
    "load_config",
    "parse_config",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mcpmqtt' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
