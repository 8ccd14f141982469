"""Pure rules: topic syntax and matching, the allowlist, grants, guardrails, the payload codec, examples,
spans of time, and JSON Pointers and time buckets for history.

No I/O, no MCP SDK, no paho or aiomqtt: the most tested code, and what every other layer asks.
"""
