"""mcpmqtt: an MCP server that gives LLM agents allowlisted access to MQTT."""

__version__ = "0.1.0"
