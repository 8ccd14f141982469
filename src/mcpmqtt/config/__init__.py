"""The config file: pydantic models of every section, loading with errors that name the file and the
field, the HTTP section's keys and grants, prompt templates, and the generated JSON Schema.

Pure of the MCP SDK, so that `check-config` and `hash-key` start fast.
"""

from mcpmqtt.config.loading import (
    CONFIG_ENV_VAR,
    DEFAULT_CONFIG_PATH,
    default_config_path,
    load_config,
    parse_config,
)
from mcpmqtt.config.models import (
    ApprovalsSettings,
    AuditSettings,
    Config,
    HistorySettings,
    Limits,
    LiveStateSettings,
    LoggingSettings,
    MqttSettings,
    MqttTls,
    PromptArgumentEntry,
    PromptEntry,
    ShapesSettings,
    SparkplugSettings,
    TopicEntry,
    WatchSettings,
)
from mcpmqtt.errors import ConfigError

__all__ = [
    "CONFIG_ENV_VAR",
    "DEFAULT_CONFIG_PATH",
    "ApprovalsSettings",
    "AuditSettings",
    "Config",
    "ConfigError",
    "HistorySettings",
    "Limits",
    "LiveStateSettings",
    "LoggingSettings",
    "MqttSettings",
    "MqttTls",
    "PromptArgumentEntry",
    "PromptEntry",
    "ShapesSettings",
    "SparkplugSettings",
    "TopicEntry",
    "WatchSettings",
    "default_config_path",
    "load_config",
    "parse_config",
]
