"""MQTT topic rules (CONTRACT §3): one test per rule, case tables, and properties that pin the semantics.

The exactness oracle at the end compares ``covers`` with its definition (every topic the filter
matches, the pattern matches too) over every small pattern and filter, which catches false allows
and false denies alike.
"""

import itertools
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import FAST, plain_filters, topic_matched_by

from mcpmqtt.rules.topics import (
    MAX_TOPIC_BYTES,
    MAX_TOPIC_LEVELS,
    covers,
    filter_problem,
    matches,
    name_problem,
    overlaps,
    split_shared,
)

# Every check a topic name gets, a filter gets too: parametrize the shared rules over both.
BOTH_CHECKS = pytest.mark.parametrize("problem", [name_problem, filter_problem], ids=["name", "filter"])
Check = Callable[[str], str | None]


# --- Topic names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "topic",
    [
        "a",
        "sensors/kitchen/temperature",
        "/",
        "//",
        "a//b",
        "/leading",
        "trailing/",
        " spaced level ",
        "$SYS/broker/uptime",
        "$share/g/x",
        "Ünïcödé/温度/😀",
        "\u00a0",  # no-break space is printable, not a control character
        "\ufffd",  # the replacement character is a character, not a non-character
        "a" * MAX_TOPIC_BYTES,
    ],
)
def test_valid_topic_names(topic: str) -> None:
    assert name_problem(topic) is None


@pytest.mark.parametrize("topic", ["+", "#", "a/+", "a/#", "+/a", "a+", "a#b", "sensors/+/temperature"])
def test_topic_name_may_not_contain_wildcards(topic: str) -> None:
    problem = name_problem(topic)
    assert problem is not None
    assert "topic name and may not contain the wildcard" in problem


def test_wildcard_in_topic_name_problem_text() -> None:
    assert name_problem("a/+") == (
        "'a/+' is a topic name and may not contain the wildcard '+' (wildcards are for subscribe filters)"
    )


@BOTH_CHECKS
def test_topic_may_not_be_empty(problem: Check) -> None:
    assert problem("") in ("topic is empty", "topic filter is empty")


@BOTH_CHECKS
def test_topic_may_not_contain_the_null_character(problem: Check) -> None:
    text = problem("a/\x00")
    assert text is not None
    assert "the null character U+0000 at position 2" in text


@BOTH_CHECKS
@pytest.mark.parametrize(
    "char",
    ["\x01", "\x07", "\t", "\n", "\r", "\x1b", "\x1f", "\x7f", "\x80", "\x85", "\x9f"],
    ids=lambda char: f"U+{ord(char):04X}",
)
def test_topic_may_not_contain_c0_c1_or_del_control_characters(problem: Check, char: str) -> None:
    text = problem(f"ab{char}")
    assert text is not None
    assert f"the control character U+{ord(char):04X} at position 2" in text


@BOTH_CHECKS
@pytest.mark.parametrize(
    "char",
    ["\ufdd0", "\ufdef", "\ufffe", "\uffff", "\U0001fffe", "\U0001ffff", "\U0010fffe", "\U0010ffff"],
    ids=lambda char: f"U+{ord(char):04X}",
)
def test_topic_may_not_contain_unicode_non_characters(problem: Check, char: str) -> None:
    text = problem(f"a/{char}")
    assert text is not None
    assert f"the Unicode non-character U+{ord(char):04X}" in text


@BOTH_CHECKS
@pytest.mark.parametrize("topic", ["\ud800", "a/\udfff", "\ud83d\ude00"], ids=["high", "low", "pair"])
def test_topic_may_not_contain_a_lone_surrogate(problem: Check, topic: str) -> None:
    text = problem(topic)
    assert text is not None
    assert "lone surrogate" in text


def test_exactly_the_forbidden_code_points_are_refused() -> None:
    """Every code point, against Mosquitto's list written out independently."""

    def forbidden(code: int) -> bool:
        return (
            code <= 0x1F
            or 0x7F <= code <= 0x9F
            or 0xD800 <= code <= 0xDFFF
            or 0xFDD0 <= code <= 0xFDEF
            or code & 0xFFFE == 0xFFFE
        )

    wrong = [
        f"U+{code:04X}"
        for code in range(0x110000)
        if chr(code) not in "+#" and (name_problem(chr(code)) is not None) != forbidden(code)
    ]
    assert wrong == []


@BOTH_CHECKS
@pytest.mark.parametrize(
    ("topic", "valid"),
    [
        ("a" * 65_535, True),
        ("a" * 65_536, False),
        ("é" * 32_767 + "a", True),  # 'é' is 2 bytes of UTF-8: 65,535 bytes in 32,768 characters
        ("é" * 32_768, False),  # 65,536 bytes in 32,768 characters
        ("😀" * 16_383 + "abc", True),  # 4-byte characters: 65,532 + 3 bytes
        ("😀" * 16_384, False),
    ],
    ids=["ascii-65535", "ascii-65536", "2-byte-65535", "2-byte-65536", "4-byte-65535", "4-byte-65536"],
)
def test_topic_is_at_most_65535_utf8_bytes(problem: Check, topic: str, valid: bool) -> None:
    text = problem(topic)
    assert (text is None) is valid
    if not valid:
        assert text is not None
        assert "65,536 bytes of UTF-8; MQTT allows at most 65,535" in text


@BOTH_CHECKS
@pytest.mark.parametrize(
    ("topic", "valid"),
    [
        ("/".join(["a"] * 128), True),
        ("/".join(["a"] * 129), False),
        ("/" * 127, True),  # 128 empty levels
        ("/" * 128, False),
    ],
    ids=["128-levels", "129-levels", "128-empty-levels", "129-empty-levels"],
)
def test_topic_is_at_most_128_levels(problem: Check, topic: str, valid: bool) -> None:
    assert MAX_TOPIC_LEVELS == 128
    text = problem(topic)
    assert (text is None) is valid
    if not valid:
        assert text is not None
        assert "has 129 levels; at most 128 are allowed" in text


def test_problem_text_shows_the_topic_escaped_and_reads_after_invalid_topic() -> None:
    assert name_problem("a/b\x07") == (
        "topic 'a/b\\x07' contains the control character U+0007 at position 3 (counting from 0)"
    )


def test_problem_text_shortens_a_long_topic() -> None:
    text = name_problem("x" * 70_000)
    assert text is not None
    assert "'" + "x" * 80 + "'… (70,000 characters)" in text
    assert len(text) < 200


# --- Topic filters -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "topic_filter",
    [
        "#",
        "+",
        "+/+",
        "a/+/b",
        "a/#",
        "+/#",
        "/#",
        "/+",
        "+/",
        "a//b",
        "$SYS/#",
        "$SYS/+/uptime",
        "$share",  # only '$share/' introduces a shared subscription
        "$share/group/a/#",
        "$share/group/#",
        "$share/group/+",
        "$share/group/$SYS/#",
    ],
)
def test_valid_topic_filters(topic_filter: str) -> None:
    assert filter_problem(topic_filter) is None


@pytest.mark.parametrize(
    ("topic_filter", "says"),
    [
        ("a#", "'#' inside the level 'a#'"),
        ("#a", "'#' inside the level '#a'"),
        ("a/b#/c", "'#' inside the level 'b#'"),
        ("+a", "'+' inside the level '+a'"),
        ("a+", "'+' inside the level 'a+'"),
        ("a/+b/c", "'+' inside the level '+b'"),
        ("++", "'+' inside the level '++'"),
        ("##", "'#' inside the level '##'"),
        ("+#", "'#' inside the level '+#'"),
    ],
)
def test_wildcard_must_be_a_whole_level(topic_filter: str, says: str) -> None:
    problem = filter_problem(topic_filter)
    assert problem is not None
    assert says in problem


@pytest.mark.parametrize("topic_filter", ["a/#/b", "#/a", "#/#", "#/", "+/#/+"])
def test_hash_must_be_the_last_level(topic_filter: str) -> None:
    problem = filter_problem(topic_filter)
    assert problem is not None
    assert "'#' before its last level" in problem


@pytest.mark.parametrize(
    ("topic_filter", "says"),
    [
        ("$share/", "empty group name"),
        ("$share//x", "empty group name"),
        ("$share/g", "without a filter"),
        ("$share/g/", "empty filter"),
        ("$share/+/x", "group name '+' contains a wildcard"),
        ("$share/#/x", "group name '#' contains a wildcard"),
        ("$share/g+/x", "group name 'g+' contains a wildcard"),
        ("$share/g#", "without a filter"),
        ("$share/g/a#", "in the shared subscription '$share/g/a#': 'a#' has '#' inside the level"),
        ("$share/g/#/a", "'#' before its last level"),
    ],
)
def test_shared_subscription_must_be_share_group_filter(topic_filter: str, says: str) -> None:
    problem = filter_problem(topic_filter)
    assert problem is not None
    assert says in problem


@pytest.mark.parametrize(
    ("topic_filter", "split"),
    [
        ("$share/g/a/#", ("g", "a/#")),
        ("$share/workers/#", ("workers", "#")),
        ("$share/g/$share/h/x", ("g", "$share/h/x")),
        ("a/#", (None, "a/#")),
        ("$share", (None, "$share")),
        ("$SYS/#", (None, "$SYS/#")),
    ],
)
def test_split_shared_separates_group_and_inner_filter(
    topic_filter: str, split: tuple[str | None, str]
) -> None:
    assert split_shared(topic_filter) == split


# --- Matching a topic name against a filter -----------------------------------------------------------


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        # filter                      topic                         matches
        ("a/b", "a/b", True),
        ("a/b", "a/c", False),
        ("a/+", "a/b", True),
        ("a/+", "a/b/c", False),
        ("a/+", "a", False),
        ("+/+", "/", True),
        ("+", "/", False),
        ("/+", "/a", True),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("a/#", "ab", False),
        ("a/#", "b/a", False),
        ("#", "anything/at/all", True),
        ("+/#", "a", True),
        ("a/+/c", "a//c", True),
        ("a/+/#", "a", False),
        ("a/+/#", "a/b", True),
        ("$SYS/#", "$SYS/broker/uptime", True),
        ("#", "$SYS/broker/uptime", False),
        ("+/broker/uptime", "$SYS/broker/uptime", False),
        ("a/#", "a/$b", True),
        ("sensors/+/temperature", "sensors/kitchen/temperature", True),
        ("sensors/+/temperature", "sensors/kitchen/humidity", False),
    ],
)
def test_matches_table(topic_filter: str, topic: str, expected: bool) -> None:
    assert matches(topic_filter, topic) is expected


def test_plus_matches_exactly_one_level() -> None:
    assert matches("a/+/c", "a/b/c")
    assert not matches("a/+/c", "a/c")
    assert not matches("a/+/c", "a/b/b/c")


def test_plus_matches_an_empty_level() -> None:
    assert matches("a/+/c", "a//c")
    assert matches("+", "")
    assert matches("+/+", "/")
    assert matches("a/+", "a/")


def test_hash_matches_the_parent_level() -> None:
    assert matches("a/#", "a")
    assert matches("a/b/#", "a/b")
    assert not matches("a/b/#", "a")


def test_hash_matches_any_number_of_levels() -> None:
    for topic in ["a/b", "a/b/c", "a/b/c/d/e/f", "a//", "a/"]:
        assert matches("a/#", topic), topic


@pytest.mark.parametrize("topic_filter", ["#", "+", "+/#", "+/broker/#", "+/+/+"])
def test_wildcard_first_level_never_matches_dollar_topics(topic_filter: str) -> None:
    for topic in ["$SYS", "$SYS/broker", "$SYS/broker/uptime", "$/x", "$"]:
        assert not matches(topic_filter, topic), topic


def test_dollar_topics_match_a_filter_that_writes_the_dollar_level_out() -> None:
    assert matches("$SYS/#", "$SYS/broker/uptime")
    assert matches("$SYS/+/uptime", "$SYS/broker/uptime")
    assert not matches("$SYS/#", "$sys/broker/uptime")


def test_dollar_rule_applies_to_the_first_level_only() -> None:
    assert matches("a/+", "a/$SYS")
    assert matches("a/#", "a/$SYS/x")


@pytest.mark.parametrize(
    ("topic_filter", "topic"),
    [
        ("Sensors/#", "sensors/a"),
        ("sensors/#", "Sensors/a"),
        ("sensors/a", " sensors/a"),
        ("sensors/a", "sensors/a "),
        ("sensors/ a", "sensors/a"),
        ("a/b", "a//b"),
        ("a//b", "a/b"),
        ("a/b", "a/b/"),
        ("a/b", "/a/b"),
        ("é", "e\u0301"),  # no Unicode normalisation either
    ],
)
def test_no_normalisation_of_case_whitespace_or_double_slash(topic_filter: str, topic: str) -> None:
    assert not matches(topic_filter, topic)
    assert not covers(topic_filter, topic)


# --- Covering a filter with a pattern -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "topic_filter", "expected"),
    [
        # pattern          filter            covers
        ("sensors/+", "sensors/a", True),
        ("sensors/+", "sensors/+", True),
        ("sensors/+", "sensors/#", False),
        ("test/+", "test/#", False),
        ("sensors/#", "sensors/+", True),
        ("sensors/#", "sensors/#", True),
        ("sensors/#", "sensors", True),
        ("sensors/#", "sensors/+/x/#", True),
        ("sensors/a", "sensors/+", False),
        ("a/#", "a", True),
        ("a/#", "a/+", True),
        ("a/#", "a/#", True),
        ("a/#", "a/+/#", True),
        ("a/+/#", "a/#", False),
        ("a/+/#", "a/+", True),
        ("a/+/#", "a/b/c", True),
        ("a/+", "a", False),
        ("a", "a/#", False),
        ("#", "+/x", True),
        ("#", "#", True),
        ("#", "a/b/c", True),
        ("#", "$SYS/#", False),
        ("#", "$SYS", False),
        ("+/#", "#", True),
        ("+/#", "$SYS/x", False),
        ("+/x", "$SYS/x", False),
        ("+/+", "$SYS/x", False),
        ("+", "x", True),
        ("+/+", "/", True),
        ("+", "+/+", False),
        ("+", "#", False),
        ("+/+/#", "#", False),
        ("+/+/#", "+/#", False),
        ("/+/#", "/#", False),  # '/#' matches its parent '' level by level, though '' is no valid name
        ("$SYS/#", "$SYS/+/uptime", True),
        ("$SYS/#", "$SYS", True),
        ("$SYS/#", "+/x", False),
        ("$SYS/#", "#", False),
        ("$SYS/+", "$SYS/#", False),
        ("a/b", "a/b", True),
        ("a/b", "a/c", False),
    ],
)
def test_covers_table(pattern: str, topic_filter: str, expected: bool) -> None:
    assert covers(pattern, topic_filter) is expected


def test_plus_pattern_does_not_cover_hash_filter() -> None:
    # 'sensors/#' also matches 'sensors' and 'sensors/a/b', which 'sensors/+' does not.
    assert matches("sensors/+", "sensors/#")  # the wrong question says yes ...
    assert not covers("sensors/+", "sensors/#")  # ... the right one says no


def test_hash_pattern_covers_its_parent_level() -> None:
    assert covers("a/#", "a")
    assert not covers("a/+/#", "a/#")


def test_plus_hash_pattern_covers_everything_hash_covers() -> None:
    # At the first level there is no parent to match: no topic has zero levels.
    assert covers("+/#", "#")
    assert covers("#", "+/#")


def test_dollar_filters_are_covered_only_by_a_pattern_with_that_dollar_level() -> None:
    for pattern in ["#", "+/#", "+/+", "+/broker/uptime", "$sys/#", "$SYSTEM/#"]:
        assert not covers(pattern, "$SYS/broker/uptime"), pattern
    assert covers("$SYS/#", "$SYS/broker/uptime")
    assert covers("$SYS/+/uptime", "$SYS/broker/uptime")


# --- Overlap of two filters ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filter_a", "filter_b", "expected"),
    [
        ("test/+", "test/#", True),
        ("a/b", "a/+", True),
        ("a/b", "a/c", False),
        ("a", "a/#", True),
        ("a", "a/+", False),
        ("a/+", "+/b", True),
        ("#", "$SYS/#", False),
        ("+/x", "$SYS/x", False),
        ("$SYS/#", "$SYS/x", True),
        ("#", "+", True),
    ],
)
def test_overlaps_table(filter_a: str, filter_b: str, expected: bool) -> None:
    assert overlaps(filter_a, filter_b) is expected
    assert overlaps(filter_b, filter_a) is expected


# --- Properties --------------------------------------------------------------------------------------

ORACLE_FILTER_LEVELS = ["a", "b", "", "$s", "+"]
ORACLE_TOPIC_LEVELS = ["a", "b", "", "$s", "z"]  # 'z' stands for any other literal


def _oracle_filters() -> list[str]:
    """Every valid filter of depth 1 to 3 over the oracle's levels, '#' included."""
    filters = []
    for depth in range(1, 4):
        for body in itertools.product(ORACLE_FILTER_LEVELS, repeat=depth - 1):
            for last in [*ORACLE_FILTER_LEVELS, "#"]:
                candidate = "/".join([*body, last])
                if filter_problem(candidate) is None:
                    filters.append(candidate)
    return filters


def _oracle_topics() -> list[str]:
    """Every topic of 1 to 4 levels over the oracle's levels: one level deeper than any filter.

    The empty topic (one empty level) is included although it is not a valid name: ``covers`` works
    level by level and does not rely on it being impossible, which only ever errs towards refusing
    (``'/+/#'`` does not cover ``'/#'``, whose parent would be the empty topic).
    """
    return [
        "/".join(levels)
        for depth in range(1, 5)
        for levels in itertools.product(ORACLE_TOPIC_LEVELS, repeat=depth)
    ]


def test_covers_and_overlaps_equal_their_definitions_on_every_small_filter() -> None:
    """Exactness oracle: covers(P, F) iff topics(F) ⊆ topics(P); overlaps(A, B) iff they share a topic."""
    filters = _oracle_filters()
    topics = _oracle_topics()
    matched = {f: frozenset(t for t in topics if matches(f, t)) for f in filters}
    wrong_covers = [
        (pattern, topic_filter)
        for pattern in filters
        for topic_filter in filters
        if covers(pattern, topic_filter) != (matched[topic_filter] <= matched[pattern])
    ]
    wrong_overlaps = [
        (a, b) for a in filters for b in filters if overlaps(a, b) != bool(matched[a] & matched[b])
    ]
    assert wrong_covers == []
    assert wrong_overlaps == []


@FAST
@given(st.data(), plain_filters(), plain_filters())
def test_covers_implies_every_topic_of_the_filter_matches_the_pattern(
    data: st.DataObject, pattern: str, topic_filter: str
) -> None:
    topic = data.draw(topic_matched_by(topic_filter))
    assert matches(topic_filter, topic)
    if covers(pattern, topic_filter):
        assert matches(pattern, topic)


@FAST
@given(st.data(), plain_filters())
def test_a_filter_covers_itself_and_matches_every_topic_made_from_it(
    data: st.DataObject, topic_filter: str
) -> None:
    assert covers(topic_filter, topic_filter)
    assert covers("#", topic_filter) is not topic_filter.startswith("$")
    assert matches(topic_filter, data.draw(topic_matched_by(topic_filter)))


_ANY_TEXT = st.text(
    st.one_of(
        st.characters(),
        st.characters(categories=["Cs"]),  # lone surrogates, which st.characters() leaves out
        st.sampled_from("/+#$\x00\x1f\x7f\x9f\ufdd0\ufffe\U0001ffffé"),
    )
)


@FAST
@given(_ANY_TEXT)
def test_problem_functions_never_raise(text: str) -> None:
    for problem in (name_problem, filter_problem):
        result = problem(text)
        assert result is None or isinstance(result, str)


@FAST
@given(_ANY_TEXT, st.sampled_from(["+", "#", "\x00"]), st.integers(min_value=0))
def test_topic_name_with_wildcard_or_null_is_always_a_problem(text: str, bad: str, where: int) -> None:
    where %= len(text) + 1
    assert name_problem(text[:where] + bad + text[where:]) is not None
