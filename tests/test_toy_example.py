"""examples/toy_mcp.py, driven as a subprocess by the SDK's client in both protocol eras."""

import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp.types import TextContent, TextResourceContents

pytestmark = pytest.mark.anyio

TOY = Path(__file__).resolve().parent.parent / "examples" / "toy_mcp.py"

# How the client connects, and the protocol version that connection must end up on.
ERAS = {"legacy": "2025-11-25", "auto": "2026-07-28"}


@pytest.fixture(scope="module", params=sorted(ERAS))
async def client(request: pytest.FixtureRequest) -> AsyncIterator[Client]:
    """One toy server process per protocol era, shared by the tests of that era (each start costs ~1 s)."""
    params = StdioServerParameters(command=sys.executable, args=[str(TOY)])
    async with Client(params, mode=request.param) as connected:
        yield connected


async def test_toy_server_negotiates_the_protocol_of_its_era(client: Client) -> None:
    assert client.protocol_version == ERAS[client.mode]


async def test_toy_server_lists_now_with_title_and_all_four_annotations(client: Client) -> None:
    tools = (await client.list_tools()).tools
    assert [tool.name for tool in tools] == ["now"]
    (now,) = tools
    assert now.title == "Return the current time (UTC)."
    assert now.annotations is not None
    assert now.annotations.read_only_hint is True
    assert now.annotations.destructive_hint is False
    assert now.annotations.idempotent_hint is False
    assert now.annotations.open_world_hint is False


async def test_now_returns_the_current_utc_time_in_iso_format(client: Client) -> None:
    result = await client.call_tool("now", {})
    assert not result.is_error
    (content,) = result.content
    assert isinstance(content, TextContent)
    told = datetime.fromisoformat(content.text)
    assert told.tzinfo is not None, f"not an aware datetime: {content.text!r}"
    assert told.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - told) < timedelta(seconds=10)


async def test_toy_hello_resource_points_to_the_now_tool(client: Client) -> None:
    resources = (await client.list_resources()).resources
    result = await client.read_resource("toy://hello")
    assert [str(r.uri) for r in resources] == ["toy://hello"]
    (content,) = result.contents
    assert isinstance(content, TextResourceContents)
    assert content.text == "Hello from Toy MCP! Try the `now` tool."
