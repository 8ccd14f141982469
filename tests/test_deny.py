"""Deny entries: evaluated before any allow, as Mosquitto does.

A table of cases on one allowlist shaped like a deployment that carves holes out of broad patterns,
Hypothesis properties (a deny entry never grants anything, and a denied topic is never reachable),
the config rules, and the refusals over MCP against the real broker.
"""

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from devices import raw_client
from hypothesis import given
from hypothesis import strategies as st
from mcp.client import Client
from mcp_client import MODES, connect, error_text, structured
from mosquitto import Mosquitto
from server_config import unique_root, write_full_config
from strategies import FAST, plain_filters, topic_matched_by

from mcpmqtt.config import ConfigError, parse_config
from mcpmqtt.rules.policy import Allowlist, Permission, Rule
from mcpmqtt.rules.topics import matches

pytestmark = pytest.mark.anyio

READ: frozenset[Permission] = frozenset({"read"})
WRITE: frozenset[Permission] = frozenset({"write"})
READ_WRITE: frozenset[Permission] = frozenset({"read", "write"})

HOUSE = Allowlist(
    [
        Rule("home/#", READ_WRITE),
        Rule("home/locks/#", WRITE, deny=True),  # may read the locks, never work them
        Rule("home/cameras/#", READ_WRITE, deny=True),
        Rule("home/+/secret", READ, deny=True),
        Rule("$share/g/home/#", READ),
    ]
)


@pytest.mark.parametrize(
    ("topic", "allowed"),
    [
        ("home/lights/kitchen", True),
        ("home", True),
        ("home/locks", False),  # 'home/locks/#' matches its parent
        ("home/locks/front", False),
        ("home/cameras/door", False),
        ("home/lights/secret", True),  # that deny entry denies reading only
    ],
)
def test_a_deny_write_pattern_that_matches_the_topic_refuses_the_publish(topic: str, allowed: bool) -> None:
    assert HOUSE.decide("write", topic).allowed is allowed


def test_write_refusal_names_the_deny_pattern_and_what_is_allowed() -> None:
    assert HOUSE.decide("write", "home/locks/front").reason == (
        "permission denied: publishing to 'home/locks/front' is refused by the deny pattern 'home/locks/#' "
        "(deny entries take precedence over write patterns); write patterns allowed: 'home/#' (except "
        "topics that the deny patterns 'home/locks/#', 'home/cameras/#' match)"
    )


@pytest.mark.parametrize(
    ("topic_filter", "allowed", "withheld"),
    [
        ("home/lights/kitchen", True, ()),
        ("home/lights/+", True, ("home/+/secret",)),
        ("home/locks/#", True, ("home/+/secret",)),  # the deny-write entry does not touch reading
        ("home/cameras/#", False, ()),  # covered by a deny pattern: refused
        ("home/cameras/door", False, ()),
        ("home/kitchen/secret", False, ()),
        ("home/#", True, ("home/cameras/#", "home/+/secret")),  # overlaps: allowed, messages withheld
        ("home/+/+", True, ("home/cameras/#", "home/+/secret")),
        ("home/+/kitchen", True, ("home/cameras/#",)),
        ("$share/g/home/#", True, ("home/cameras/#", "home/+/secret")),  # the inner filter is judged
        ("$share/g/home/cameras/#", False, ()),
    ],
)
def test_a_deny_read_pattern_refuses_a_filter_it_covers_and_withholds_one_it_overlaps(
    topic_filter: str, allowed: bool, withheld: tuple[str, ...]
) -> None:
    decision = HOUSE.decide("read", topic_filter)
    assert decision.allowed is allowed
    assert decision.withheld == withheld


def test_read_refusal_names_the_deny_pattern() -> None:
    reason = HOUSE.decide("read", "home/cameras/+").reason
    assert reason.startswith(
        "permission denied: reading 'home/cameras/+' is refused by the deny pattern 'home/cameras/#', "
        "which covers every topic of that filter (deny entries take precedence over read patterns); "
        "read patterns allowed: 'home/#', '$share/g/home/#'"
    )


def test_an_allowed_decision_says_which_messages_are_withheld() -> None:
    assert HOUSE.decide("read", "home/+/kitchen").reason == (
        "allowed by read pattern 'home/#'; messages on topics that the deny pattern 'home/cameras/#' "
        "matches are withheld"
    )


@pytest.mark.parametrize(
    ("topic", "readable"),
    [
        ("home/lights/kitchen", True),
        ("home/locks/front", True),
        ("home/cameras/door", False),
        ("home/cameras", False),
        ("home/lights/secret", False),
    ],
)
def test_messages_on_denied_topics_are_never_delivered(topic: str, readable: bool) -> None:
    assert HOUSE.readable(topic) is readable


def test_deny_is_evaluated_before_allow_whatever_the_order() -> None:
    first = Allowlist([Rule("a/b", WRITE, deny=True), Rule("a/#", WRITE)])
    last = Allowlist([Rule("a/#", WRITE), Rule("a/b", WRITE, deny=True)])
    assert not first.decide("write", "a/b").allowed and not last.decide("write", "a/b").allowed


def test_a_deny_entry_grants_nothing_and_is_not_listed_as_allowed() -> None:
    only_deny = Allowlist([Rule("a/#", READ_WRITE, deny=True)])
    assert only_deny.patterns("read") == [] and only_deny.patterns("write") == []
    assert not only_deny.decide("read", "b").allowed and not only_deny.decide("write", "b").allowed


def test_a_deny_hash_pattern_does_not_reach_dollar_topics_either() -> None:
    rules = Allowlist([Rule("#", READ, deny=True), Rule("$SYS/#", READ)])
    assert rules.decide("read", "$SYS/broker/uptime").allowed
    assert rules.readable("$SYS/broker/uptime")


def test_a_shared_deny_pattern_is_refused_when_the_allowlist_is_built() -> None:
    with pytest.raises(ValueError, match=r"deny pattern '\$share/g/a/#' is a shared subscription"):
        Allowlist([Rule("$share/g/a/#", READ, deny=True)])


# ---- properties ------------------------------------------------------------------------------------

_PLAIN_RULE = st.builds(Rule, plain_filters(3), st.sampled_from([READ, WRITE, READ_WRITE]))
_DENY_RULE = st.builds(
    lambda pattern, permissions: Rule(pattern, permissions, deny=True),
    plain_filters(3),
    st.sampled_from([READ, WRITE, READ_WRITE]),
)
_TOPIC = plain_filters(3).flatmap(topic_matched_by)


@FAST
@given(st.lists(_PLAIN_RULE, max_size=4), _DENY_RULE, plain_filters(3), _TOPIC)
def test_adding_a_deny_entry_never_turns_a_deny_into_an_allow(
    rules: list[Rule], deny: Rule, topic_filter: str, topic: str
) -> None:
    before = Allowlist(rules)
    after = Allowlist([*rules, deny])
    for permission, request in (("read", topic_filter), ("write", topic), ("read", topic)):
        if after.decide(permission, request).allowed:  # type: ignore[arg-type]
            assert before.decide(permission, request).allowed  # type: ignore[arg-type]
    if after.readable(topic):
        assert before.readable(topic)


@FAST
@given(st.data(), st.lists(_PLAIN_RULE, max_size=4), _DENY_RULE)
def test_a_denied_topic_is_never_readable_or_writable(
    data: st.DataObject, rules: list[Rule], deny: Rule
) -> None:
    allowlist = Allowlist([*rules, deny])
    topic = data.draw(topic_matched_by(deny.pattern))
    assert matches(deny.pattern, topic)
    if "read" in deny.permissions:
        assert not allowlist.readable(topic)
        assert not allowlist.decide("read", topic).allowed
    if "write" in deny.permissions:
        assert not allowlist.decide("write", topic).allowed


@FAST
@given(st.data(), st.lists(_PLAIN_RULE, max_size=4), _DENY_RULE, plain_filters(3))
def test_a_withheld_filter_lets_through_only_topics_no_deny_pattern_matches(
    data: st.DataObject, rules: list[Rule], deny: Rule, topic_filter: str
) -> None:
    allowlist = Allowlist([*rules, deny])
    decision = allowlist.decide("read", topic_filter)
    if decision.allowed:
        topic = data.draw(topic_matched_by(topic_filter))
        denied = "read" in deny.permissions and matches(deny.pattern, topic)
        assert allowlist.readable(topic) is not denied
        if denied:
            assert deny.pattern in decision.withheld


# ---- config ----------------------------------------------------------------------------------------


def test_deny_defaults_to_false_and_loads_into_the_allowlist() -> None:
    config = parse_config(
        {
            "topics": [
                {"pattern": "a/#", "permissions": ["read", "write"]},
                {"pattern": "a/b/#", "permissions": ["write"], "deny": True},
            ]
        },
        "test.json",
    )
    assert [entry.deny for entry in config.topics] == [False, True]
    assert not config.allowlist().decide("write", "a/b/c").allowed


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ({"pattern": "$share/g/a", "deny": True}, "topics[0]: a deny entry cannot be a shared subscription"),
        ({"pattern": "a", "deny": "sometimes"}, "topics[0].deny: Input should be a valid boolean"),
        ({"pattern": "a", "deny": True, "rate_limit": "1/hour"}, "rate_limit cannot be set on a deny entry"),
    ],
)
def test_deny_config_errors_name_the_entry(entry: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError, match=r"test\.json") as raised:
        parse_config({"topics": [{"permissions": ["read", "write"], **entry}]}, "test.json")
    assert says in str(raised.value)


# ---- over MCP ----------------------------------------------------------------------------------------

ROOT = unique_root()


@pytest.fixture(scope="module", params=MODES)
async def client(
    request: pytest.FixtureRequest, broker: Mosquitto, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Client]:
    topics = [
        {"pattern": f"{ROOT}/home/#", "permissions": ["read", "write"]},
        {"pattern": f"{ROOT}/home/locks/#", "permissions": ["write"], "deny": True},
        {"pattern": f"{ROOT}/home/cameras/#", "permissions": ["read", "write"], "deny": True},
    ]
    config = write_full_config(tmp_path_factory.mktemp("deny"), broker, topics)
    async with connect(config, request.param) as connected:
        yield connected


async def test_publish_to_a_denied_topic_is_refused_over_mcp(client: Client) -> None:
    text = error_text(
        await client.call_tool("mqtt_publish", {"topic": f"{ROOT}/home/locks/front", "payload": "open"})
    )
    assert text.startswith(
        f"permission denied: publishing to '{ROOT}/home/locks/front' is refused by the deny pattern "
        f"'{ROOT}/home/locks/#'"
    )
    structured(await client.call_tool("mqtt_publish", {"topic": f"{ROOT}/home/lights", "payload": "on"}))


async def test_query_to_a_denied_request_topic_is_refused_over_mcp(client: Client) -> None:
    text = error_text(
        await client.call_tool(
            "mqtt_query", {"request_topic": f"{ROOT}/home/cameras/door", "payload": "snap", "timeout": 1}
        )
    )
    assert "is refused by the deny pattern" in text


async def test_reading_a_denied_filter_is_refused_over_mcp(client: Client) -> None:
    text = error_text(await client.call_tool("mqtt_read", {"topic": f"{ROOT}/home/cameras/+", "timeout": 1}))
    assert text.startswith(
        f"permission denied: reading '{ROOT}/home/cameras/+' is refused by the deny pattern"
    )


async def test_a_broad_subscription_never_delivers_messages_on_denied_topics(
    client: Client, broker: Mosquitto
) -> None:
    async with raw_client(broker) as device:
        await device.publish(f"{ROOT}/home/cameras/door", b"frame", qos=1, retain=True)
        await device.publish(f"{ROOT}/home/locks/state", b"locked", qos=1, retain=True)
    result = structured(
        await client.call_tool(
            "mqtt_subscribe", {"topic": f"{ROOT}/home/#", "timeout": 0.5, "max_messages": 5}
        )
    )
    assert [(m["topic"], m["payload"]) for m in result["messages"]] == [
        (f"{ROOT}/home/locks/state", "locked")
    ]
    with anyio.fail_after(5):
        read = structured(
            await client.call_tool("mqtt_read", {"topic": f"{ROOT}/home/+/door", "timeout": 0.3})
        )
    assert read["message"] is None and read["timed_out"] is True


async def test_the_resources_mark_deny_entries_and_offer_no_subscription_for_them(client: Client) -> None:
    allowed = json.loads((await client.read_resource("mcpmqtt://topics/allowed")).contents[0].text)  # type: ignore[union-attr]
    entries = {entry["pattern"]: entry for entry in allowed["topics"]}
    assert entries[f"{ROOT}/home/cameras/#"]["deny"] is True
    assert "deny" not in entries[f"{ROOT}/home/#"]
    examples = json.loads((await client.read_resource("mcpmqtt://topics/examples")).contents[0].text)  # type: ignore[union-attr]
    by_pattern = {entry["pattern"]: entry for entry in examples["examples"]}
    assert by_pattern[f"{ROOT}/home/cameras/#"]["deny"] is True
    assert "subscribe_with" not in by_pattern[f"{ROOT}/home/cameras/#"]
    assert "subscribe_with" in by_pattern[f"{ROOT}/home/#"]
