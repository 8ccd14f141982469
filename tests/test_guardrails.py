"""Publish guardrails per pattern: payload size, JSON Schema, rate limit, and a person's confirmation.

The pure rules first (guardrails.py, with a fake clock), then the config errors, then every refusal
through the real MCP client over stdio against the real broker, in both protocol eras; confirmation
is asked through MCP elicitation of the SDK client, which accepts, declines or cannot be asked.
"""

import base64
import pathlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from devices import raw_client, responder
from mcp.client import Client
from mcp_client import MODES, error_text, structured
from mcp_types import CallToolResult, ElicitResult, InputRequiredResult
from mosquitto import Mosquitto
from server_config import Person, connect_with, unique_root, write_full_config

from mcpmqtt.config import ConfigError, parse_config
from mcpmqtt.rules.guardrails import Guardrail, Guardrails, Rate, parse_rate, schema_problem

pytestmark = pytest.mark.anyio


def text(refusal: Exception | None) -> str | None:
    """A guardrail's refusal as the agent reads it (the guardrails return typed errors)."""
    return None if refusal is None else str(refusal)


LIGHT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"brightness": {"type": "integer", "minimum": 0, "maximum": 255}},
    "required": ["brightness"],
    "additionalProperties": False,
}


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---- rate limits -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("10/minute", Rate(10, 60, "10/minute")),
        ("5/second", Rate(5, 1, "5/second")),
        ("100/hour", Rate(100, 3600, "100/hour")),
        ("1/day", Rate(1, 86_400, "1/day")),
        (" 3 / minute ", Rate(3, 60, "3/minute")),
    ],
)
def test_rate_limit_parses_count_and_unit(text: str, rate: Rate) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["10/min", "0/minute", "-1/minute", "ten/minute", "10", "10/minutes", ""])
def test_malformed_rate_limit_says_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match=r"as in '10/minute'"):
        parse_rate(text)


def test_rate_limit_is_a_sliding_window() -> None:
    clock = Clock()
    guard = Guardrails([Guardrail("a/#", rate_limit=parse_rate("2/minute"))], clock)
    assert guard.take("a/1") is None
    clock.now += 20
    assert guard.take("a/2") is None
    clock.now += 10
    assert (
        text(guard.take("a/3"))
        == "permission denied: rate limit 2/minute for 'a/#' reached; try again in 30 s"
    )
    clock.now += 30  # the first publish leaves the window
    assert guard.take("a/3") is None
    assert (
        text(guard.take("a/4"))
        == "permission denied: rate limit 2/minute for 'a/#' reached; try again in 20 s"
    )


def test_check_looks_at_the_rate_without_counting() -> None:
    guard = Guardrails([Guardrail("a/#", rate_limit=parse_rate("1/minute"))], Clock())
    assert guard.check("a/1", b"x") is None
    assert guard.check("a/1", b"x") is None
    assert guard.take("a/1") is None
    assert (text(guard.check("a/1", b"x")) or "").startswith("permission denied: rate limit 1/minute")


def test_a_refused_publish_is_not_counted_by_any_limit() -> None:
    clock = Clock()
    guard = Guardrails(
        [
            Guardrail("a/#", rate_limit=parse_rate("1/minute")),
            Guardrail("a/b", rate_limit=parse_rate("2/hour")),
        ],
        clock,
    )
    assert guard.take("a/b") is None
    assert guard.take("a/b") is not None  # refused by 'a/#' ...
    clock.now += 61
    assert guard.take("a/b") is None  # ... so 'a/b' counted one publish, not two


def test_rate_limits_apply_per_entry_to_every_topic_it_matches() -> None:
    guard = Guardrails([Guardrail("a/+", rate_limit=parse_rate("1/second"))], Clock())
    assert guard.take("a/1") is None
    assert guard.take("a/2") is not None  # one window for the entry, not one per topic
    assert guard.take("b/1") is None  # no entry applies


# ---- payload size and schema -----------------------------------------------------------------------


def test_every_matching_entry_applies_and_the_strictest_refuses() -> None:
    guard = Guardrails(
        [Guardrail("a/#", max_payload_bytes=100), Guardrail("a/+/strict", max_payload_bytes=4)]
    )
    assert text(guard.check("a/x/strict", b"12345")) == (
        "payload too large: the payload is 5 bytes; publishing to 'a/x/strict' allows at most 4 bytes "
        "(max_payload_bytes of the pattern 'a/+/strict')"
    )
    assert guard.check("a/x/loose", b"12345") is None
    assert guard.check("a/x/strict", b"1234") is None


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"brightness": 200}', None),
        (
            b'{"brightness": 300}',
            "invalid argument: the payload does not satisfy the payload_schema of the pattern 'l/#': "
            "at $.brightness: 300 is greater than the maximum of 255",
        ),
        (b'{"brightness": "high"}', "at $.brightness: 'high' is not of type 'integer'"),
        (b"{}", "at $: 'brightness' is a required property"),
        (b"on", "needs a JSON payload (the pattern 'l/#' has a payload_schema), and the payload is not JSON"),
        (b'{"brightness": NaN}', "NaN is not a JSON value"),
        (b"\xff\xfe", "and the payload is not UTF-8 text"),
    ],
)
def test_payload_schema_violation_is_quoted_with_its_json_path(payload: bytes, expected: str | None) -> None:
    problem = text(Guardrails([Guardrail("l/#", payload_schema=LIGHT_SCHEMA)]).check("l/kitchen", payload))
    if expected is None:
        assert problem is None
    else:
        assert problem is not None and expected in problem
        assert problem.startswith("invalid argument: ")


@pytest.mark.parametrize(
    "payload",
    [b'{"brightness": 999, "brightness": 10}', b'{"a": {"brightness": 1, "brightness": 2}, "brightness": 3}'],
)
def test_a_duplicate_key_is_refused_naming_it(payload: bytes) -> None:
    """JSON parsers disagree on which of two equal keys wins: Python's sees the last, a device's may
    see the first. Validating one reading and forwarding bytes another reads is no check at all."""
    problem = text(Guardrails([Guardrail("l/#", payload_schema=LIGHT_SCHEMA)]).check("l/kitchen", payload))
    assert problem is not None and problem.startswith("invalid argument: ")
    assert "the key 'brightness' appears twice in one object" in problem


@pytest.mark.parametrize("depth", [65, 1500, 100_000])
def test_deeply_nested_json_is_refused_with_its_limit(depth: int) -> None:
    schema = {"type": "array"}
    payload = b"[" * depth + b"]" * depth
    problem = text(Guardrails([Guardrail("l/#", payload_schema=schema)]).check("l/deep", payload))
    assert problem is not None and problem.startswith("invalid argument: ")
    assert "nests arrays and objects deeper than 64 levels" in problem
    assert (
        Guardrails([Guardrail("l/#", payload_schema=schema)]).check("l/deep", b"[" * 64 + b"]" * 64) is None
    )


@pytest.mark.parametrize("number", [b"10.0", b"1e2", b"100"])
def test_an_integral_number_satisfies_an_integer_field_whatever_its_spelling(number: bytes) -> None:
    """JSON Schema (draft 2020-12) counts any number with no fractional part as an integer; the
    payload is forwarded byte for byte, so a device receives 10.0 as 10.0 (docs/configuration.md)."""
    payload = b'{"brightness": ' + number + b"}"
    assert Guardrails([Guardrail("l/#", payload_schema=LIGHT_SCHEMA)]).check("l/kitchen", payload) is None
    assert Guardrails([Guardrail("l/#", payload_schema=LIGHT_SCHEMA)]).check(
        "l/kitchen", b'{"brightness": 1.5}'
    )


def test_a_long_violation_message_is_shortened() -> None:
    schema = {"type": "object", "properties": {"s": {"maxLength": 1}}}
    problem = text(
        Guardrails([Guardrail("l/#", payload_schema=schema)]).check("l/a", b'{"s": "' + b"x" * 500 + b'"}')
    )
    assert problem is not None and problem.endswith("…") and len(problem) < 400


@pytest.mark.parametrize(
    ("schema", "says"),
    [
        ({"type": "strin"}, "not a valid JSON Schema: 'strin' is not valid under any of the given schemas"),
        ({"properties": {"a": {"minimum": "zero"}}}, "at $.properties.a.minimum in the schema"),
        ({"$ref": "https://example.com/light.json"}, "points outside the schema; remote schemas are never"),
        ({"properties": {"a": {"$ref": "#/$defs/missing"}}}, "the $ref '#/$defs/missing' cannot be resolved"),
    ],
)
def test_a_bad_schema_is_found_when_the_config_loads(schema: dict[str, Any], says: str) -> None:
    assert says in (schema_problem(schema) or "")


@pytest.mark.parametrize(
    "schema",
    [
        LIGHT_SCHEMA,
        {"$defs": {"level": {"type": "integer"}}, "properties": {"a": {"$ref": "#/$defs/level"}}},
        {
            "$id": "https://example.com/s",
            "$defs": {"x": {"$anchor": "x"}},
            "properties": {"a": {"$ref": "#x"}},
        },
        {"const": {"$ref": "this is data, not a reference"}},
        {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "definitions": {"a": {}},
            "$ref": "#/definitions/a",
        },
    ],
)
def test_good_schemas_load(schema: dict[str, Any]) -> None:
    assert schema_problem(schema) is None


def test_a_reference_missed_at_load_refuses_the_publish_and_blames_the_config() -> None:
    # Under a property named like a data keyword, the load-time walk does not look.
    schema = {"properties": {"enum": {"$ref": "#/$defs/nowhere"}}}
    assert schema_problem(schema) is None
    problem = text(Guardrails([Guardrail("l/#", payload_schema=schema)]).check("l/a", b'{"enum": 1}'))
    assert problem is not None
    assert problem.startswith("permission denied: the payload_schema of the pattern 'l/#' cannot be applied")


def test_confirming_patterns_are_those_of_matching_entries_with_confirm() -> None:
    guard = Guardrails(
        [Guardrail("a/#", confirm=True), Guardrail("a/b", max_payload_bytes=9), Guardrail("c")]
    )
    assert guard.confirming_patterns("a/b") == ["a/#"]
    assert guard.confirming_patterns("c") == []


# ---- config ----------------------------------------------------------------------------------------


def load(*entries: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as raised:
        parse_config({"topics": list(entries)}, "test.json")
    return str(raised.value)


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ({"payload_schema": {"type": "strin"}}, "topics[0].payload_schema: not a valid JSON Schema"),
        ({"payload_schema": "object"}, "topics[0].payload_schema: Input should be a valid dictionary"),
        ({"rate_limit": "10/min"}, "topics[0].rate_limit: '10/min' is not a rate limit"),
        ({"max_payload_bytes": 0}, "topics[0].max_payload_bytes: Input should be greater than or equal to 1"),
        ({"confirm": "yes please"}, "topics[0].confirm: Input should be a valid boolean"),
        ({"permissions": ["read"], "confirm": True}, "topics[0]: confirm guards publishing, and this entry"),
        (
            {"permissions": ["read"], "rate_limit": "1/second", "max_payload_bytes": 3},
            "topics[0]: max_payload_bytes, rate_limit guard publishing",
        ),
        ({"deny": True, "confirm": True}, "topics[0]: confirm cannot be set on a deny entry"),
    ],
)
def test_guardrail_config_errors_name_the_field(entry: dict[str, Any], says: str) -> None:
    assert says in load({"pattern": "a/#", "permissions": ["write"], **entry})


def test_guardrails_are_optional_and_built_from_write_entries() -> None:
    config = parse_config(
        {
            "topics": [
                {"pattern": "a/#", "permissions": ["write"], "rate_limit": "10/minute", "confirm": True},
                {"pattern": "b/#", "permissions": ["read"]},
            ]
        },
        "test.json",
    )
    assert config.topics[0].rate_limit == "10/minute" and config.topics[1].payload_schema is None
    guard = config.guardrails()
    assert guard.confirming_patterns("a/x") == ["a/#"]


# ---- over MCP: every refusal, in both eras ---------------------------------------------------------

ROOT = unique_root()


def guarded_topics(root: str) -> list[dict[str, Any]]:
    return [
        {"pattern": f"{root}/lab/#", "permissions": ["read", "write"], "description": "scratch"},
        {"pattern": f"{root}/lab/small/#", "permissions": ["write"], "max_payload_bytes": 8},
        {"pattern": f"{root}/lab/small/+/tiny", "permissions": ["write"], "max_payload_bytes": 2},
        {"pattern": f"{root}/lab/light/#", "permissions": ["write"], "payload_schema": LIGHT_SCHEMA},
        {"pattern": f"{root}/lab/rate/#", "permissions": ["write"], "rate_limit": "2/minute"},
        {
            "pattern": f"{root}/lab/door/#",
            "permissions": ["write"],
            "confirm": True,
            "max_payload_bytes": 1000,
        },
        {
            "pattern": f"{root}/devices/+/request",
            "permissions": ["write"],
            "confirm": True,
            "payload_schema": {"type": "object", "required": ["cmd"]},
        },
    ]


@dataclass
class Guarded:
    client: Client
    person: Person | None
    broker: Mosquitto
    mode: str

    async def publish(self, topic: str, payload: str, **arguments: Any) -> CallToolResult:
        return await self.client.call_tool(
            "mqtt_publish", {"topic": f"{ROOT}/{topic}", "payload": payload, **arguments}
        )

    async def query(self, device: str, payload: str, **arguments: Any) -> CallToolResult:
        return await self.client.call_tool(
            "mqtt_query",
            {
                "request_topic": f"{ROOT}/devices/{device}/request",
                "payload": payload,
                "timeout": 5,
                **arguments,
            },
        )

    def answering(self, answer: Any) -> Person:
        assert self.person is not None
        self.person.answer = answer
        self.person.asked.clear()
        return self.person


@pytest.fixture(scope="module", params=MODES)
async def guarded(
    request: pytest.FixtureRequest, broker: Mosquitto, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Guarded]:
    """A server with guardrails, and a client whose person answers elicitations."""
    config = write_full_config(tmp_path_factory.mktemp("guarded"), broker, guarded_topics(ROOT))
    person = Person()
    async with connect_with(config, request.param, person) as client:
        yield Guarded(client, person, broker, request.param)


@pytest.fixture(scope="module", params=MODES)
async def cannot_ask(
    request: pytest.FixtureRequest, broker: Mosquitto, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Guarded]:
    """The same server, with a client that does not support elicitation."""
    config = write_full_config(tmp_path_factory.mktemp("cannot-ask"), broker, guarded_topics(ROOT))
    async with connect_with(config, request.param, None) as client:
        yield Guarded(client, None, broker, request.param)


async def first_message(observer: Any) -> bytes:
    with anyio.fail_after(5):
        message = await anext(aiter(observer.messages))
    payload: bytes = message.payload
    return payload


async def test_payload_over_the_pattern_limit_is_refused_naming_pattern_and_limit(guarded: Guarded) -> None:
    text = error_text(await guarded.publish("lab/small/x", "123456789"))
    assert text == (
        f"payload too large: the payload is 9 bytes; publishing to '{ROOT}/lab/small/x' allows at most "
        f"8 bytes (max_payload_bytes of the pattern '{ROOT}/lab/small/#')"
    )
    assert structured(await guarded.publish("lab/small/x", "12345678"))["bytes"] == 8


async def test_every_matching_write_entry_must_pass(guarded: Guarded) -> None:
    text = error_text(await guarded.publish("lab/small/a/tiny", "123"))
    assert f"max_payload_bytes of the pattern '{ROOT}/lab/small/+/tiny'" in text
    structured(await guarded.publish("lab/small/a/tiny", "12"))


async def test_the_limit_counts_decoded_bytes(guarded: Guarded) -> None:
    encoded = base64.b64encode(b"\x00" * 9).decode()
    text = error_text(await guarded.publish("lab/small/x", encoded, payload_encoding="base64"))
    assert text.startswith("payload too large: the payload is 9 bytes")


async def test_payload_must_satisfy_the_schema(guarded: Guarded) -> None:
    async with raw_client(guarded.broker) as observer:
        await observer.subscribe(f"{ROOT}/lab/light/#", qos=1)
        violation = error_text(await guarded.publish("lab/light/kitchen", '{"brightness": 300}'))
        assert violation == (
            "invalid argument: the payload does not satisfy the payload_schema of the pattern "
            f"'{ROOT}/lab/light/#': at $.brightness: 300 is greater than the maximum of 255"
        )
        not_json = error_text(await guarded.publish("lab/light/kitchen", "bright"))
        assert not_json.startswith(f"invalid argument: publishing to '{ROOT}/lab/light/kitchen' needs a JSON")
        assert "the payload is not JSON" in not_json
        structured(await guarded.publish("lab/light/kitchen", '{"brightness": 128}', qos=1))
        assert await first_message(observer) == b'{"brightness": 128}'  # the refused ones never went out


async def test_deep_nesting_and_duplicate_keys_on_a_schema_topic_get_precise_refusals(
    guarded: Guarded,
) -> None:
    deep = error_text(await guarded.publish("lab/light/kitchen", "[" * 1500 + "]" * 1500))
    assert deep.startswith(f"invalid argument: publishing to '{ROOT}/lab/light/kitchen' needs a JSON")
    assert "deeper than 64 levels" in deep
    twice = error_text(await guarded.publish("lab/light/kitchen", '{"brightness": 999, "brightness": 10}'))
    assert twice.startswith("invalid argument: ") and "'brightness' appears twice" in twice


async def test_rate_limit_refuses_and_says_when_to_try_again(guarded: Guarded) -> None:
    structured(await guarded.publish("lab/rate/a", "1"))
    structured(await guarded.publish("lab/rate/b", "2"))
    text = error_text(await guarded.publish("lab/rate/a", "3"))
    assert text.startswith(
        f"permission denied: rate limit 2/minute for '{ROOT}/lab/rate/#' reached; try again in "
    )
    seconds = int(text.rsplit(" ", 2)[1])
    assert 1 <= seconds <= 60


async def test_confirmed_publish_goes_out_after_the_person_accepts(guarded: Guarded) -> None:
    person = guarded.answering("accept")
    async with raw_client(guarded.broker) as observer:
        await observer.subscribe(f"{ROOT}/lab/door/#", qos=1)
        result = structured(await guarded.publish("lab/door/front", "unlock", qos=1, retain=True))
        assert result["bytes"] == 6
        assert await first_message(observer) == b"unlock"
    [question] = person.asked
    assert f"publish to the MQTT topic '{ROOT}/lab/door/front' (QoS 1, retained)" in question
    assert 'Payload (6 bytes): "unlock"' in question
    assert f"'{ROOT}/lab/door/#'" in question
    async with raw_client(guarded.broker) as cleaner:
        await cleaner.publish(f"{ROOT}/lab/door/front", b"", qos=1, retain=True)


@pytest.mark.parametrize(("answer", "extra"), [("decline", ""), ("cancel", " (they dismissed the question)")])
async def test_declined_or_dismissed_confirmation_refuses_and_nothing_is_sent(
    guarded: Guarded, answer: str, extra: str
) -> None:
    async with raw_client(guarded.broker) as observer:
        await observer.subscribe(f"{ROOT}/lab/door/#", qos=1)
        guarded.answering(answer)
        text = error_text(await guarded.publish("lab/door/back", "unlock", qos=1))
        assert text == (
            f"permission denied: the user declined publishing to '{ROOT}/lab/door/back'{extra}; "
            "do not try again unless the user asks you to"
        )
        guarded.answering("accept")
        structured(await guarded.publish("lab/door/back", "after", qos=1))
        assert await first_message(observer) == b"after"


async def test_the_question_shows_a_payload_quoted_and_cut(guarded: Guarded) -> None:
    person = guarded.answering("decline")
    await guarded.publish("lab/door/x", 'line one\n"Safe," said the admin' + "." * 500)
    [question] = person.asked
    assert 'Payload (531 bytes): "line one\\n\\"Safe,\\" said the admin...' in question
    assert '..."…\n' in question  # cut, and the cut is outside the quotes


async def test_nobody_is_asked_about_a_publish_that_would_be_refused(guarded: Guarded) -> None:
    person = guarded.answering("accept")
    text = error_text(await guarded.publish("lab/door/front", "x" * 1001))
    assert text.startswith("payload too large:")
    assert person.asked == []


async def test_a_client_that_cannot_elicit_gets_a_refusal_that_says_why(cannot_ask: Guarded) -> None:
    async with raw_client(cannot_ask.broker) as observer:
        await observer.subscribe(f"{ROOT}/lab/door/#", qos=1)
        text = error_text(await cannot_ask.publish("lab/door/side", "unlock", qos=1))
        assert text.startswith(
            f"permission denied: publishing to '{ROOT}/lab/door/side' needs a person's confirmation, "
            "and this client cannot ask (it does not support elicitation)"
        )
        structured(await cannot_ask.publish("lab/open", "still works", qos=1))  # unguarded topics need nobody
        await observer.subscribe(f"{ROOT}/lab/open", qos=1)
        structured(await cannot_ask.publish("lab/open", "seen", qos=1))
        assert await first_message(observer) == b"seen"


async def test_query_request_is_guarded_like_a_publish(guarded: Guarded) -> None:
    async with responder(guarded.broker, f"{ROOT}/devices/+/request") as requests:
        bad = error_text(await guarded.query("printer", '{"temp": 1}'))
        assert bad.startswith("invalid argument: the payload does not satisfy the payload_schema")
        assert "'cmd' is a required property" in bad
        person = guarded.answering("decline")
        declined = error_text(await guarded.query("printer", '{"cmd": "status"}'))
        assert declined.startswith(
            f"permission denied: the user declined sending a request to '{ROOT}/devices/"
        )
        assert "send a request to the MQTT topic" in person.asked[0]
        guarded.answering("accept")
        reply = structured(await guarded.query("printer", '{"cmd": "status"}'))
        assert reply["response"]["payload"] == 're:{"cmd": "status"}'
        assert [message.payload for message in requests] == [b'{"cmd": "status"}']


async def test_query_to_a_confirm_topic_from_a_client_that_cannot_ask_is_refused(cannot_ask: Guarded) -> None:
    text = error_text(await cannot_ask.query("printer", '{"cmd": "status"}'))
    assert text.startswith(
        f"permission denied: sending a request to '{ROOT}/devices/printer/request' needs a person's "
        "confirmation"
    )


async def test_a_confirmation_answers_one_publish_however_often_it_is_replayed(
    broker: Mosquitto, tmp_path: pathlib.Path
) -> None:
    """2026-07-28: the answer and the sealed requestState travel with the retried call. Sent again
    as they are, they must not publish again: one confirmation, one publish."""
    config = write_full_config(tmp_path, broker, guarded_topics(ROOT))
    arguments = {"topic": f"{ROOT}/lab/door/replayed", "payload": "unlock", "qos": 1}
    async with (
        connect_with(config, "auto", Person()) as client,
        raw_client(broker) as observer,
    ):
        await observer.subscribe(f"{ROOT}/lab/door/replayed", qos=1)
        asked = await client.session.call_tool("mqtt_publish", arguments, allow_input_required=True)
        assert isinstance(asked, InputRequiredResult) and asked.input_requests
        answers = {key: ElicitResult(action="accept", content={}) for key in asked.input_requests}
        results = [
            await client.session.call_tool(
                "mqtt_publish",
                arguments,
                input_responses=answers,  # type: ignore[arg-type]
                request_state=asked.request_state,
                allow_input_required=True,
            )
            for _ in range(3)
        ]
        assert isinstance(results[0], CallToolResult)
        assert structured(results[0])["bytes"] == 6
        for replay in results[1:]:
            assert isinstance(replay, CallToolResult)
            assert error_text(replay).startswith("permission denied: this confirmation was already used")
        async with raw_client(broker) as marker:  # published after every replay was answered
            await marker.publish(f"{ROOT}/lab/door/replayed", b"marker", qos=1)
        arrived = []
        with anyio.fail_after(5):
            async for message in observer.messages:
                arrived.append(message.payload)
                if message.payload == b"marker":
                    break
        assert arrived == [b"unlock", b"marker"]  # one publish, whatever was replayed
