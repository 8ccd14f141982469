"""The allowlist decision (CONTRACT §3): one test per rule, permission tables, and properties.

The tables use one allowlist, shaped like a real deployment, so that each row reads as
"with this allowlist, this request is (not) allowed".
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import FAST, plain_filters, topic_matched_by

from mcpmqtt.rules.policy import Allowlist, Decision, Permission, Rule
from mcpmqtt.rules.topics import matches, split_shared


def verdict(decision: Decision) -> tuple[bool, str]:
    """Whether allowed, and the text the agent reads."""
    return decision.allowed, decision.reason


READ: frozenset[Permission] = frozenset({"read"})
WRITE: frozenset[Permission] = frozenset({"write"})
READ_WRITE: frozenset[Permission] = frozenset({"read", "write"})


def allowlist(*rules: tuple[str, frozenset[Permission]]) -> Allowlist:
    return Allowlist([Rule(pattern, permissions) for pattern, permissions in rules])


PLANT = allowlist(
    ("sensors/+/temperature", READ),
    ("actuators/#", WRITE),
    ("commands/+/request", WRITE),
    ("commands/+/response", READ),
    ("status/#", READ_WRITE),
    ("$SYS/broker/#", READ),
    ("$share/workers/jobs/#", READ),
)


# --- Publishing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "allowed"),
    [
        # topic                          allowed
        ("actuators/valve", True),
        ("actuators", True),  # 'actuators/#' matches its parent
        ("actuators/valve/1/open", True),
        ("commands/pump/request", True),
        ("commands//request", True),  # '+' matches an empty level
        ("status/online", True),
        ("commands/pump/response", False),  # read only
        ("sensors/kitchen/temperature", False),  # read only
        ("lights/kitchen", False),
        ("Actuators/valve", False),  # no case folding
        (" actuators/valve", False),  # no trimming
        ("commands/pump/x/request", False),
        ("$SYS/broker/uptime", False),
        ("jobs/1", False),  # a $share pattern never grants publishing
        ("$share/workers/jobs/1", False),
    ],
)
def test_publish_needs_a_write_pattern_that_matches_the_topic(topic: str, allowed: bool) -> None:
    assert PLANT.decide("write", topic).allowed is allowed


def test_write_denial_names_the_topic_and_lists_the_write_patterns() -> None:
    rules = allowlist(("actuators/#", WRITE), ("commands/+/request", WRITE), ("sensors/#", READ))
    assert verdict(rules.decide("write", "lights/kitchen")) == (
        False,
        "permission denied: publishing to 'lights/kitchen' needs a write pattern that matches it; "
        "write patterns allowed: 'actuators/#', 'commands/+/request'",
    )


def test_server_without_write_patterns_allows_no_publishing() -> None:
    decision = allowlist(("sensors/#", READ)).decide("write", "sensors/a")
    assert not decision.allowed
    assert decision.reason.startswith("permission denied: publishing to 'sensors/a'")
    assert "this server allows no publishing" in decision.reason


def test_allowed_decision_names_the_rule() -> None:
    decision = PLANT.decide("write", "actuators/valve")
    assert (*verdict(decision), decision.rule) == (
        True,
        "allowed by write pattern 'actuators/#'",
        PLANT.rules[1],
    )


# --- Validation comes before authorisation ----------------------------------------------------------


@pytest.mark.parametrize(
    ("permission", "topic", "says"),
    [
        ("write", "actuators/+", "may not contain the wildcard '+'"),
        ("write", "actuators/#", "may not contain the wildcard '#'"),
        ("write", "", "topic is empty"),
        ("write", "actuators/\x00", "the null character U+0000"),
        ("write", "actuators/\ufffe", "the Unicode non-character U+FFFE"),
        ("write", "actuators/\ud800", "lone surrogate"),
        ("write", "actuators/" + "a" * 65_526, "65,536 bytes"),
        ("read", "status/#/x", "'#' before its last level"),
        ("read", "status/a#", "'#' inside the level 'a#'"),
        ("read", "status/+a", "'+' inside the level '+a'"),
        ("read", "status/\x1b", "the control character U+001B"),
        ("read", "", "topic filter is empty"),
        ("read", "/".join(["status"] * 129), "129 levels"),
    ],
)
def test_topic_is_validated_before_it_is_authorised(permission: Permission, topic: str, says: str) -> None:
    # Each topic would be allowed by 'actuators/#' or 'status/#' if it were valid, or is refused as
    # invalid rather than as not allowed.
    decision = PLANT.decide(permission, topic)
    assert not decision.allowed
    assert decision.reason.startswith("invalid topic: ")
    assert says in decision.reason
    assert decision.rule is None


# --- Subscribing and reading ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic_filter", "allowed"),
    [
        # filter                            allowed
        ("sensors/kitchen/temperature", True),
        ("sensors/+/temperature", True),
        ("sensors//temperature", True),
        ("sensors/#", False),
        ("sensors/+/+", False),
        ("sensors/kitchen/#", False),
        ("#", False),
        ("commands/+/response", True),
        ("commands/pump/response", True),
        ("commands/pump/request", False),  # write only
        ("status", True),
        ("status/#", True),
        ("status/+/x/#", True),
        ("actuators/valve", False),  # write only
        ("Sensors/kitchen/temperature", False),  # no case folding
        ("sensors/kitchen/temperature ", False),  # no trimming
        ("$SYS/broker/uptime", True),
        ("$SYS/broker/#", True),
        ("$SYS/#", False),
        ("jobs/#", False),  # a $share pattern grants only the shared subscription
        ("$share/workers/jobs/#", True),
        ("$share/workers/jobs/a/+", True),
    ],
)
def test_subscribe_needs_one_read_pattern_that_covers_the_filter(topic_filter: str, allowed: bool) -> None:
    assert PLANT.decide("read", topic_filter).allowed is allowed


def test_plus_pattern_does_not_allow_hash_filter() -> None:
    # The filter 'sensors/#' also matches 'sensors' and 'sensors/a/b', which 'sensors/+' does not.
    decision = allowlist(("sensors/+", READ)).decide("read", "sensors/#")
    assert not decision.allowed


def test_read_denial_says_the_pattern_covers_only_part_of_the_filter() -> None:
    assert verdict(allowlist(("test/+", READ)).decide("read", "test/#")) == (
        False,
        "permission denied: no single read pattern covers the filter 'test/#' (a pattern must match every "
        "topic the filter can match; 'test/+' matches only some of them, so narrow the filter, e.g. to a "
        "topic or a filter that one of those patterns covers); read patterns allowed: 'test/+'",
    )


def test_read_denial_when_no_pattern_matches_any_topic_of_the_filter() -> None:
    decision = allowlist(("test/+", READ), ("other/#", READ), ("lights/#", WRITE)).decide("read", "lights/#")
    assert decision.reason == (
        "permission denied: no single read pattern covers the filter 'lights/#' (no read pattern matches "
        "any topic of that filter); read patterns allowed: 'test/+', 'other/#'"
    )


def test_server_without_read_patterns_allows_no_reading() -> None:
    decision = allowlist(("actuators/#", WRITE)).decide("read", "actuators/#")
    assert decision.reason == (
        "permission denied: no single read pattern covers the filter 'actuators/#'; "
        "this server allows no subscribing or reading (the allowlist has no read patterns)"
    )


def test_patterns_that_cover_a_filter_only_together_do_not_allow_it() -> None:
    # Together these match every topic of 'a/#'; no one of them does.
    rules = allowlist(("a", READ), ("a/+", READ), ("a/+/#", READ))
    assert not rules.decide("read", "a/#").allowed
    assert allowlist(("a/#", READ)).decide("read", "a/#").allowed


# --- '$' topics -------------------------------------------------------------------------------------


def test_dollar_topics_are_reachable_only_through_a_pattern_with_that_dollar_level() -> None:
    everything = allowlist(("#", READ_WRITE), ("+/#", READ_WRITE), ("+/+/+", READ_WRITE))
    assert not everything.decide("read", "$SYS/broker/uptime").allowed
    assert not everything.decide("read", "$SYS/#").allowed
    assert not everything.decide("write", "$SYS/broker/uptime").allowed
    assert not everything.readable("$SYS/broker/uptime")

    sys = allowlist(("$SYS/#", READ_WRITE))
    assert sys.decide("read", "$SYS/broker/uptime").allowed
    assert sys.decide("read", "$SYS/#").allowed
    assert sys.decide("write", "$SYS/x").allowed
    assert sys.readable("$SYS/broker/uptime")
    assert not sys.decide("read", "$sys/x").allowed


# --- Shared subscriptions ---------------------------------------------------------------------------


def test_shared_subscription_is_refused_without_a_share_pattern() -> None:
    decision = allowlist(("jobs/#", READ)).decide("read", "$share/workers/jobs/a")
    assert decision.reason == (
        "permission denied: shared subscriptions ($share/…) need a read pattern that starts with $share/ "
        "and this server has none, so '$share/workers/jobs/a' is refused; "
        "subscribe to 'jobs/a' without the $share/ prefix instead"
    )
    decision = allowlist(("other/#", READ)).decide("read", "$share/workers/jobs/a")
    assert decision.reason.endswith("is refused; read patterns allowed: 'other/#'")


@pytest.mark.parametrize(
    ("topic_filter", "allowed"),
    [
        ("$share/workers/jobs/#", True),
        ("$share/workers/jobs", True),
        ("$share/workers/jobs/+/done", True),
        ("$share/others/jobs/#", False),  # another group
        ("$share/Workers/jobs/#", False),
        ("$share/workers/#", False),  # the inner filter is not covered
        ("$share/workers/other", False),
    ],
)
def test_shared_subscription_needs_a_share_pattern_with_the_same_group_that_covers_it(
    topic_filter: str, allowed: bool
) -> None:
    assert PLANT.decide("read", topic_filter).allowed is allowed


def test_shared_subscription_denial_names_the_group_and_the_shared_patterns() -> None:
    assert PLANT.decide("read", "$share/others/jobs/#").reason == (
        "permission denied: the shared subscription '$share/others/jobs/#' needs a read pattern "
        "'$share/others/…' (the same group) whose filter covers 'jobs/#'; "
        "shared read patterns allowed: '$share/workers/jobs/#'"
    )


@pytest.mark.parametrize(
    "topic_filter", ["$share/workers", "$share//jobs", "$share/+/jobs", "$share/workers/"]
)
def test_malformed_shared_subscription_is_an_invalid_topic(topic_filter: str) -> None:
    decision = PLANT.decide("read", topic_filter)
    assert decision.reason.startswith("invalid topic: ")


def test_messages_of_a_shared_subscription_are_rechecked_against_the_inner_pattern() -> None:
    shared = allowlist(("$share/workers/jobs/#", READ))
    assert shared.readable("jobs/1")
    assert shared.readable("jobs")
    assert not shared.readable("other/1")
    assert not shared.readable("$share/workers/jobs/1")


# --- Delivery ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "readable"),
    [
        ("sensors/kitchen/temperature", True),
        ("sensors/kitchen/humidity", False),
        ("commands/pump/response", True),
        ("commands/pump/request", False),  # write only
        ("actuators/valve", False),  # write only
        ("status", True),
        ("status/a/b", True),
        ("$SYS/broker/uptime", True),
        ("$SYS/other", False),
        ("jobs/1", True),  # through '$share/workers/jobs/#'
        ("Status/a", False),
    ],
)
def test_every_delivered_message_is_checked_against_the_read_patterns(topic: str, readable: bool) -> None:
    assert PLANT.readable(topic) is readable


# --- The allowlist itself ---------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["a/#/b", "a#", "+a", "", "$share/g", "$share/+/x", "a/\x00"])
def test_invalid_pattern_is_refused_when_the_allowlist_is_built(pattern: str) -> None:
    with pytest.raises(ValueError, match=r"^invalid pattern ") as raised:
        allowlist(("ok/#", READ), (pattern, READ))
    assert repr(pattern) in str(raised.value)


def test_unknown_permission_is_refused_when_the_allowlist_is_built() -> None:
    with pytest.raises(ValueError, match=r"pattern 'a/#' has unknown permissions \['Read'\]"):
        Allowlist([Rule("a/#", frozenset({"Read"}))])  # type: ignore[arg-type]


def test_patterns_lists_what_grants_each_permission_in_allowlist_order() -> None:
    assert PLANT.patterns("write") == ["actuators/#", "commands/+/request", "status/#"]
    assert PLANT.patterns("read") == [
        "sensors/+/temperature",
        "commands/+/response",
        "status/#",
        "$SYS/broker/#",
        "$share/workers/jobs/#",
    ]
    assert allowlist(("$share/g/x", READ_WRITE)).patterns("write") == []


def test_rules_are_kept_as_given() -> None:
    rules = [Rule("a/#", READ, "everything under a"), Rule("b", WRITE)]
    assert Allowlist(rules).rules == tuple(rules)


# --- Properties --------------------------------------------------------------------------------------


def _filter() -> st.SearchStrategy[str]:
    """Plain filters, and now and then a shared one in one of two groups."""
    shared = st.builds(
        lambda group, inner: f"$share/{group}/{inner}", st.sampled_from(["g", "h"]), plain_filters(3)
    )
    return st.one_of(plain_filters(3), plain_filters(3), shared)


_RULE = st.builds(
    Rule,
    _filter(),
    st.sampled_from([READ, WRITE, READ_WRITE]),
)
_RULES = st.lists(_RULE, max_size=5)


@FAST
@given(st.data(), _RULES, _filter())
def test_every_topic_of_an_allowed_filter_is_readable(
    data: st.DataObject, rules: list[Rule], topic_filter: str
) -> None:
    allowed = Allowlist(rules)
    if allowed.decide("read", topic_filter).allowed:
        _, inner = split_shared(topic_filter)
        for _ in range(5):
            topic = data.draw(topic_matched_by(inner))
            assert matches(inner, topic)
            assert allowed.readable(topic), topic


@FAST
@given(
    _RULES,
    _RULE,
    st.one_of(
        st.tuples(st.just("read"), _filter()),
        st.tuples(
            st.just("write"), st.one_of(plain_filters(3).flatmap(topic_matched_by), st.text(max_size=6))
        ),
        st.tuples(st.just("read"), st.text(max_size=6)),
    ),
)
def test_adding_a_rule_never_turns_an_allow_into_a_deny(
    rules: list[Rule], extra: Rule, request: tuple[Permission, str]
) -> None:
    permission, topic = request
    before = Allowlist(rules)
    after = Allowlist([*rules, extra])
    if before.decide(permission, topic).allowed:
        assert after.decide(permission, topic).allowed
    # Delivery is judged the same way: only concrete topics (the "write" requests) are delivered.
    if permission == "write" and before.readable(topic):
        assert after.readable(topic)


@FAST
@given(_RULES, _filter())
def test_every_refusal_starts_with_a_prefix_and_lists_what_is_allowed(
    rules: list[Rule], topic_filter: str
) -> None:
    allowed = Allowlist(rules)
    permissions: tuple[Permission, ...] = ("read", "write")
    for permission in permissions:
        decision = allowed.decide(permission, topic_filter)
        if decision.allowed:
            assert decision.rule is not None
            assert repr(decision.rule.pattern) in decision.reason
        else:
            assert decision.rule is None
            assert decision.reason.startswith(("permission denied: ", "invalid topic: "))
