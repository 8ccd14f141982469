"""The examples resource (CONTRACT §5): concrete topics for each pattern that the server would accept,
and near misses that it would not, so that the resource never teaches a model something false.
"""

from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mcpmqtt.config import load_config
from mcpmqtt.rules.examples import examples_for
from mcpmqtt.rules.policy import Permission, Rule
from mcpmqtt.rules.topics import filter_problem, matches, name_problem

ORIGINAL = Path(__file__).parent / "fixtures" / "original_config.json"
ORIGINAL_RULES = load_config(ORIGINAL).allowlist().rules

READ: frozenset[Permission] = frozenset({"read"})


@st.composite
def patterns(draw: st.DrawFn) -> str:
    """Valid filters built from a few levels, so that + and # meet empty and repeated levels."""
    levels = draw(st.lists(st.sampled_from(["a", "b", "", "+"]), max_size=5))
    if draw(st.booleans()):
        levels.append("#")
    pattern = "/".join(levels)
    # The only invalid filter these levels can make is the empty one; map it to "+" rather than discard it.
    return pattern if filter_problem(pattern) is None else "+"


def _assert_examples_match(pattern: str, entry: dict[str, Any]) -> None:
    assert entry["example_topics"], f"no example topics for {pattern!r}"
    for topic in entry["example_topics"]:
        assert matches(pattern, topic), f"{topic!r} is shown as an example of {pattern!r} but does not match"
    for topic in entry["does_not_match"]:
        assert not matches(pattern, topic), f"{topic!r} is shown as a near miss of {pattern!r} but matches"


@pytest.mark.parametrize("rule", ORIGINAL_RULES, ids=[r.pattern for r in ORIGINAL_RULES])
def test_original_config_examples_match_and_near_misses_do_not(rule: Rule) -> None:
    entry = examples_for(rule)
    _assert_examples_match(rule.pattern, entry)
    for topic in entry["example_topics"]:
        assert name_problem(topic) is None, f"example {topic!r} is not a valid topic name"
    assert entry["pattern"] == rule.pattern
    assert entry["permissions"] == sorted(rule.permissions)


def test_original_temperature_pattern_shows_how_plus_expands() -> None:
    entry = examples_for(ORIGINAL_RULES[0])
    assert entry["example_topics"] == ["sensors/device-42/temperature", "sensors/room1/temperature"]
    assert "sensors/a/b/temperature" in entry["does_not_match"]
    assert entry["subscribe_with"] == ["sensors/+/temperature", "sensors/device-42/temperature"]


def test_hash_pattern_examples_include_the_parent_level() -> None:
    # 'actuators/#' matches 'actuators' itself; a model should see that.
    assert "actuators" in examples_for(ORIGINAL_RULES[2])["example_topics"]


def test_only_readable_patterns_suggest_what_to_subscribe_with() -> None:
    write_only = examples_for(Rule("actuators/#", frozenset({"write"})))
    assert "subscribe_with" not in write_only


@pytest.mark.parametrize("pattern", ["+", "+/#", "#"])
def test_wildcard_first_level_lists_a_dollar_topic_as_a_near_miss(pattern: str) -> None:
    assert "$SYS/broker/uptime" in examples_for(Rule(pattern, READ))["does_not_match"]


@given(patterns())
@settings(max_examples=300, deadline=None)
def test_generated_pattern_examples_match_and_near_misses_do_not(pattern: str) -> None:
    _assert_examples_match(pattern, examples_for(Rule(pattern, READ)))


@given(patterns())
@example("/#")
@settings(max_examples=300, deadline=None)
def test_generated_pattern_examples_are_valid_topic_names(pattern: str) -> None:
    entry = examples_for(Rule(pattern, READ))
    for topic in entry["example_topics"]:
        assert name_problem(topic) is None, f"example {topic!r} of {pattern!r}: {name_problem(topic)}"
    for topic_filter in entry["subscribe_with"]:
        assert filter_problem(topic_filter) is None, f"subscribe_with {topic_filter!r} of {pattern!r}"


@given(patterns())
@example("+/a/#")
@example("+/+")
@settings(max_examples=300, deadline=None)
def test_generated_pattern_near_misses_are_valid_topic_names(pattern: str) -> None:
    for topic in examples_for(Rule(pattern, READ))["does_not_match"]:
        assert name_problem(topic) is None, f"near miss {topic!r} of {pattern!r}: {name_problem(topic)}"


@pytest.mark.parametrize(
    ("pattern", "inner"),
    [
        ("$share/grp/sensors/+/temperature", "sensors/+/temperature"),
        ("$share/grp/actuators/#", "actuators/#"),
        ("$share/g/status/system", "status/system"),
    ],
)
def test_shared_pattern_gives_examples_of_the_inner_filter(pattern: str, inner: str) -> None:
    entry = examples_for(Rule(pattern, READ))
    _assert_examples_match(inner, entry)
    assert not any(topic.startswith("$share") for topic in entry["example_topics"])
    assert entry["shared_subscription_group"] == pattern.split("/")[1]
    # A concrete topic would be a plain subscription, which this pattern does not grant.
    assert entry["subscribe_with"] == [pattern]
