"""The smallest useful MCP server: one tool that tells the time and one resource that says hello.

Run it with `python examples/toy_mcp.py`; it speaks MCP on stdio, so an orchestrator launches it as a
subprocess (for example with `"command": "python3", "args": ["/path/to/toy_mcp.py"]` in mcp.json).
"""

from datetime import UTC, datetime

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

NOW_TITLE = "Return the current time (UTC)."

server = MCPServer("toy-mcp")


@server.tool(
    title=NOW_TITLE,
    annotations=ToolAnnotations(
        title=NOW_TITLE,
        read_only_hint=True,
        destructive_hint=False,
        # Every call gives a different answer, and the clock is this machine's own, not the outside world.
        idempotent_hint=False,
        open_world_hint=False,
    ),
)
def now() -> str:
    """The current time in UTC, as ISO-8601 with a +00:00 offset."""
    return datetime.now(UTC).isoformat()


@server.resource("toy://hello", name="hello", title="Hello", mime_type="text/plain")
def hello() -> str:
    """A greeting that points to the tool."""
    return "Hello from Toy MCP! Try the `now` tool."


if __name__ == "__main__":
    server.run("stdio")
