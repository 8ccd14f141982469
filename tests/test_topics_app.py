"""The topic view as an MCP App: mqtt_list_topics links a `ui://` resource that hosts rendering apps
load; other hosts get the same complete results. In-process server and real MCP client, real broker."""

import json
from collections.abc import AsyncIterator

import pytest
from mcp.client import Client
from mcp_client import MODES, structured
from mosquitto import Mosquitto
from server_config import unique_root

from mcpmqtt.config import parse_config
from mcpmqtt.server.build import build_server
from mcpmqtt.server.topics_app import HISTORY_APP_URI, TOPICS_APP_URI

pytestmark = pytest.mark.anyio
ROOT = unique_root()


@pytest.fixture(params=MODES)
async def client(request: pytest.FixtureRequest, broker: Mosquitto) -> AsyncIterator[Client]:
    config = parse_config(
        {
            "mqtt": {"host": broker.host, "port": broker.port, "client_id": f"app-{unique_root()}"},
            "topics": [{"pattern": f"{ROOT}/#", "permissions": ["read"]}],
        },
        "test",
    )
    async with Client(build_server(config), mode=request.param) as connected:
        yield connected


async def test_list_topics_links_the_topic_view_which_the_server_serves(client: Client) -> None:
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert tools["mqtt_list_topics"].meta == {"ui": {"resourceUri": TOPICS_APP_URI}}
    [content] = (await client.read_resource(TOPICS_APP_URI)).contents
    assert content.mime_type == "text/html;profile=mcp-app"
    html = content.text  # type: ignore[union-attr]
    assert "ui/notifications/tool-result" in html
    assert "innerHTML" not in html  # topics and payloads go in as text


async def test_hosts_without_apps_get_the_complete_result(client: Client) -> None:
    result = await client.call_tool("mqtt_list_topics", {"filter": f"{ROOT}/#"})
    data = structured(result)
    assert data == {"filter": f"{ROOT}/#", "topics": [], "total": 0, "truncated": False}
    assert json.loads(result.content[0].text) == data  # type: ignore[union-attr]


async def test_history_links_the_history_view_which_the_server_serves(client: Client) -> None:
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert tools["mqtt_history"].meta == {"ui": {"resourceUri": HISTORY_APP_URI}}
    [content] = (await client.read_resource(HISTORY_APP_URI)).contents
    assert content.mime_type == "text/html;profile=mcp-app"
    html = content.text  # type: ignore[union-attr]
    assert "ui/notifications/tool-result" in html and "buckets" in html
    assert "innerHTML" not in html  # topics and payloads go in as text


async def test_hosts_without_apps_get_the_complete_history(client: Client) -> None:
    result = await client.call_tool("mqtt_history", {"topic": f"{ROOT}/#", "since": "5m"})
    data = structured(result)
    assert data["messages"] == [] and data["topic"] == f"{ROOT}/#"
    assert json.loads(result.content[0].text) == data  # type: ignore[union-attr]
