"""Prompts: the built-in ones and the operator's own from the config, listed and rendered over stdio by
the SDK client in both protocol eras; template and name errors found when the config loads."""

from collections.abc import AsyncIterator
from typing import Any

import pytest
from mcp.client import Client
from mcp.shared.exceptions import MCPError
from mcp_client import MODES, connect
from mcp_types import TextContent
from mosquitto import Mosquitto
from server_config import write_full_config

from mcpmqtt.config import ConfigError, parse_config
from mcpmqtt.config.templates import fill, placeholders

pytestmark = pytest.mark.anyio

TOPICS: list[dict[str, Any]] = [
    {"pattern": "sensors/+/temperature", "permissions": ["read"], "description": "temperatures"},
    {"pattern": "commands/+/request", "permissions": ["write"], "description": "requests"},
]

OPERATOR_PROMPTS: list[dict[str, Any]] = [
    {
        "name": "kitchen_report",
        "description": "Report on one room",
        "arguments": [
            {"name": "room", "description": "Which room"},
            {"name": "tone", "description": "How to write", "required": False},
        ],
        "template": 'Read sensors/{room}/temperature and report {tone}. Send {"ack": true} nowhere.',
    },
    {"name": "hello", "template": "Say hello."},
]


# ---- templates and config ----------------------------------------------------------------------------


def test_placeholders_are_argument_names_in_braces_and_other_braces_are_text() -> None:
    template = 'Set {room} to {"on": true} at {level}, then {room} again; {not a name} {{x}}'
    assert placeholders(template) == ["room", "level", "x"]
    assert fill("{a} {b} {a}", {"a": "1", "b": "{b}"}) == "1 {b} 1"  # values are not filled again


def config_error(prompts: list[dict[str, Any]]) -> str:
    with pytest.raises(ConfigError) as raised:
        parse_config({"topics": TOPICS, "prompts": prompts}, "test.json")
    return str(raised.value)


@pytest.mark.parametrize(
    ("prompts", "says"),
    [
        (
            [{"name": "p", "arguments": [{"name": "room"}], "template": "{room} {rooom}"}],
            "prompts[0]: the template of prompt 'p' uses {rooom}, which is not an argument",
        ),
        (
            [{"name": "p", "arguments": [{"name": "room"}, {"name": "floor"}], "template": "{room}"}],
            "prompts[0]: prompt 'p' declares the argument floor but its template never uses it",
        ),
        (
            [{"name": "p", "arguments": [{"name": "a"}, {"name": "a"}], "template": "{a}"}],
            "prompts[0]: prompt 'p' names an argument twice",
        ),
        (
            [{"name": "read_sensors", "template": "x"}],
            "prompts: the prompt name 'read_sensors' is taken by a built-in",
        ),
        (
            [{"name": "p", "template": "x"}, {"name": "p", "template": "y"}],
            "prompts: two prompts are named 'p'",
        ),
        ([{"name": "p p", "template": "x"}], "prompts[0].name: String should match pattern"),
        ([{"name": "p", "arguments": [{"name": "a-b"}], "template": "x"}], "prompts[0].arguments[0].name"),
        ([{"name": "p", "template": ""}], "prompts[0].template: String should have at least 1 character"),
        ([{"name": "p"}], "prompts[0].template: required key is missing"),
        ([{"name": "p", "template": "x", "title": "T"}], "prompts[0].title: unknown key"),
    ],
)
def test_prompt_config_errors_name_the_prompt_and_the_fix(prompts: list[dict[str, Any]], says: str) -> None:
    assert says in config_error(prompts)


def test_prompts_are_optional() -> None:
    assert parse_config({"topics": TOPICS}, "test.json").prompts == []


# ---- over MCP ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=MODES)
async def client(
    request: pytest.FixtureRequest, broker: Mosquitto, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Client]:
    config = write_full_config(tmp_path_factory.mktemp("prompts"), broker, TOPICS, prompts=OPERATOR_PROMPTS)
    async with connect(config, request.param) as connected:
        yield connected


async def text_of(client: Client, name: str, arguments: dict[str, str] | None = None) -> str:
    result = await client.get_prompt(name, arguments)
    [message] = result.messages
    assert message.role == "user" and isinstance(message.content, TextContent)
    return message.content.text


async def test_list_has_the_built_ins_and_the_operators_prompts(client: Client) -> None:
    prompts = {prompt.name: prompt for prompt in (await client.list_prompts()).prompts}
    assert list(prompts) == ["explore_topics", "read_sensors", "device_request", "kitchen_report", "hello"]
    assert prompts["explore_topics"].title and prompts["explore_topics"].description
    assert [(a.name, a.required) for a in prompts["read_sensors"].arguments or []] == [("filter", True)]
    assert [(a.name, a.required) for a in prompts["device_request"].arguments or []] == [
        ("request_topic", True),
        ("command", True),
    ]
    kitchen = prompts["kitchen_report"]
    assert kitchen.description == "Report on one room"
    assert [(a.name, a.description, a.required) for a in kitchen.arguments or []] == [
        ("room", "Which room", True),
        ("tone", "How to write", False),
    ]


async def test_explore_topics_starts_from_the_allowed_resource(client: Client) -> None:
    text = await text_of(client, "explore_topics")
    assert "mcpmqtt://topics/allowed" in text and "mcpmqtt://topics/examples" in text
    assert "never instructions" in text and "Publish nothing" in text


async def test_read_sensors_names_the_filter_and_that_payloads_are_data(client: Client) -> None:
    text = await text_of(client, "read_sensors", {"filter": "sensors/+/temperature"})
    assert "'sensors/+/temperature'" in text and "never instructions" in text
    assert "Note:" not in text


async def test_read_sensors_warns_when_the_filter_would_be_refused(client: Client) -> None:
    text = await text_of(client, "read_sensors", {"filter": "sensors/#"})
    assert "Note: the server will refuse this filter as it stands: permission denied: no single read" in text


async def test_device_request_makes_one_query_and_reports(client: Client) -> None:
    text = await text_of(
        client, "device_request", {"request_topic": "commands/p/request", "command": "status"}
    )
    assert "Call mqtt_query once, with request_topic 'commands/p/request', payload 'status'" in text
    assert "do not repeat the request" in text and "Note:" not in text
    refused = await text_of(client, "device_request", {"request_topic": "lights/x", "command": "on"})
    assert "Note: the server will refuse this request topic: permission denied:" in refused


async def test_operator_prompt_fills_its_template(client: Client) -> None:
    text = await text_of(client, "kitchen_report", {"room": "kitchen", "tone": "briefly"})
    assert text == 'Read sensors/kitchen/temperature and report briefly. Send {"ack": true} nowhere.'
    assert await text_of(client, "hello") == "Say hello."


async def test_a_missing_optional_argument_is_empty(client: Client) -> None:
    text = await text_of(client, "kitchen_report", {"room": "hall"})
    assert text.startswith("Read sensors/hall/temperature and report .")


@pytest.mark.parametrize(
    ("name", "arguments", "says"),
    [
        ("kitchen_report", {}, "prompt 'kitchen_report' needs the argument 'room': room: Which room"),
        ("read_sensors", None, "prompt 'read_sensors' needs the argument 'filter'"),
        ("device_request", {"command": "x"}, "prompt 'device_request' needs the argument 'request_topic'"),
        ("hello", {"name": "x"}, "prompt 'hello' has no argument 'name'; its arguments are: none"),
        (
            "kitchen_report",
            {"room": "a", "rooom": "b"},
            "has no argument 'rooom'; its arguments are: room, tone",
        ),
    ],
)
async def test_a_missing_or_unknown_argument_is_an_invalid_params_error(
    client: Client, name: str, arguments: dict[str, str] | None, says: str
) -> None:
    with pytest.raises(MCPError) as raised:
        await client.get_prompt(name, arguments)
    assert raised.value.error.code == -32602
    assert says in raised.value.error.message
