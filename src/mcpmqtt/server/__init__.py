"""The MCP server: everything that imports the MCP SDK except the transports.

`build_server` (server/build.py) wires the tools, resources, prompts, live state and audit log to one
Runtime; `sdk_compat.py` is the only module here that touches SDK private names.
"""
