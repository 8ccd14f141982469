"""The floor for per-call costs: an MCP server on the same SDK whose one tool is an async no-op.

bench_core.py times a call to it beside mcpmqtt's tools, so that what is left over (ours minus this
minus the raw MQTT operation) is mcpmqtt's own cost. Async like mcpmqtt's tools: a plain `def` tool
would add the SDK's worker-thread hop to the floor.
"""

from mcp.server.mcpserver import MCPServer

server = MCPServer("noop")


@server.tool()
async def noop() -> str:
    """Does nothing."""
    return "ok"


if __name__ == "__main__":
    server.run()
