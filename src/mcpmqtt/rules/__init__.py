"""Pure rules: topic syntax and matching, the allowlist, grants, guardrails, the payload codec, examples.

No I/O, no MCP SDK, no paho or aiomqtt: the most tested code, and what every other layer asks.
"""
