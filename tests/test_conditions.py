"""Watch conditions, JSON Pointers and spans of time: the pure rules behind mqtt_watch."""

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcpmqtt.errors import InvalidArgument
from mcpmqtt.rules.conditions import Evaluator, as_number, parse_condition
from mcpmqtt.rules.json_pointer import MISSING, parse_pointer, resolve
from mcpmqtt.rules.spans import parse_span

# ---- spans ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("1h", 3600), ("7d", 604_800), ("1.5h", 5400), (" 2h ", 7200), ("10 m", 600)],
)
def test_a_span_is_a_number_and_one_unit(text: str, seconds: float) -> None:
    assert parse_span(text) == seconds


@pytest.mark.parametrize(
    "text", ["-5m", "10 parsecs", "0s", "1h30m", "", "h", "5", "1e3s", "nan s", "infd", "2H"]
)
def test_a_bad_span_is_refused_with_the_form_that_works(text: str) -> None:
    with pytest.raises(InvalidArgument, match=r'^invalid argument: .* "15m"'):
        parse_span(text)


# ---- JSON Pointers ---------------------------------------------------------------------------------

DOC = {"a": {"b": [10, {"c": 3}]}, "x/y": 1, "m~n": 2, "": 5}


@pytest.mark.parametrize(
    ("pointer", "value"),
    [("", DOC), ("/a/b/0", 10), ("/a/b/1/c", 3), ("/x~1y", 1), ("/m~0n", 2), ("/", 5)],
)
def test_a_pointer_names_one_value(pointer: str, value: Any) -> None:
    assert resolve(DOC, parse_pointer(pointer)) == value


@pytest.mark.parametrize("pointer", ["/nope", "/a/b/2", "/a/b/01", "/a/b/-", "/a/b/0/deeper", "/a/b/x"])
def test_a_pointer_to_nothing_is_missing(pointer: str) -> None:
    assert resolve(DOC, parse_pointer(pointer)) is MISSING


@pytest.mark.parametrize(("pointer", "says"), [("temperature", "starts with '/'"), ("/a~2", "'~' must be")])
def test_a_malformed_pointer_is_refused(pointer: str, says: str) -> None:
    with pytest.raises(InvalidArgument, match=says):
        parse_pointer(pointer)


@given(st.lists(st.text(max_size=5), max_size=4))
def test_pointer_escapes_round_trip(tokens: list[str]) -> None:
    pointer = "".join("/" + t.replace("~", "~0").replace("/", "~1") for t in tokens)
    assert parse_pointer(pointer) == tuple(tokens)


# ---- conditions ------------------------------------------------------------------------------------


def matches(payload: bytes | str, op: str, value: Any = None, field: str | None = None) -> bool:
    data = payload.encode() if isinstance(payload, str) else payload
    return Evaluator(parse_condition(op, field, value)).matches("t", data)


@pytest.mark.parametrize(
    ("payload", "op", "value", "field", "expected"),
    [
        ("21.5", ">", 20, None, True),
        ("19", ">", 20, None, False),
        ("20", ">=", 20, None, True),
        ("20", "<", 20, None, False),
        ("19.9", "<=", 20, None, True),
        ('{"temperature": 26}', ">", 25, "/temperature", True),
        ('{"temperature": "26"}', ">", 25, "/temperature", True),  # a string that reads as a number
        ('{"temperature": "warm"}', ">", 25, "/temperature", False),
        ('{"humidity": 40}', ">", 25, "/temperature", False),  # no such field: never a match
        ("not json", ">", 25, "/temperature", False),
        ('{"state": "finished"}', "==", "finished", "/state", True),
        ("finished", "==", "finished", None, True),
        ("20.0", "==", 20, None, True),  # numbers compare as numbers
        ('{"on": true}', "==", True, "/on", True),
        ('{"on": 1}', "==", True, "/on", False),  # JSON's true is not 1
        ('{"state": "idle"}', "!=", "finished", "/state", True),
        ('{"other": 1}', "!=", "finished", "/state", False),  # absent is not "different"
        ("error: jammed", "contains", "jam", None, True),
        ('{"tags": ["a", "b"]}', "contains", "b", "/tags", True),
        ('{"tags": {"b": 1}}', "contains", "b", "/tags", False),
        (b"\xff\xfe", "==", "x", None, False),  # binary payload: no text to compare, no error
        ("nan", ">", 1, None, False),
        ('{"t": 1' + "0" * 400 + "}", ">", 1, "/t", False),  # too large for a float: no match, no error
    ],
)
def test_condition_ops(payload: str, op: str, value: Any, field: str | None, expected: bool) -> None:
    assert matches(payload, op, value, field) is expected


def test_no_condition_matches_every_message() -> None:
    assert Evaluator(None).matches("t", b"anything")


def test_changed_fires_on_a_new_value_per_topic_not_on_the_first() -> None:
    watch = Evaluator(parse_condition("changed", "/state"))
    seen = [
        watch.matches(topic, json.dumps({"state": state}).encode())
        for topic, state in [
            ("a", "idle"),
            ("a", "idle"),
            ("b", "printing"),
            ("a", "printing"),
            ("b", "printing"),
        ]
    ]
    assert seen == [False, False, False, True, False]


def test_a_retained_value_is_the_baseline_of_changed_and_never_a_match() -> None:
    watch = Evaluator(parse_condition("changed"))
    watch.baseline("p/state", b"printing")
    assert not watch.matches("p/state", b"printing")
    assert watch.matches("p/state", b"finished")


def test_changed_compares_numbers_as_numbers_and_long_values_by_digest() -> None:
    watch = Evaluator(parse_condition("changed"))
    watch.baseline("t", b"20")
    assert not watch.matches("t", b"20.0")
    long = b"x" * 10_000
    assert watch.matches("t", long) and not watch.matches("t", long)
    assert watch.matches("t", long + b"y")


def test_changed_ignores_messages_without_the_field() -> None:
    watch = Evaluator(parse_condition("changed", "/state"))
    watch.baseline("t", b'{"state": "idle"}')
    assert not watch.matches("t", b'{"other": 1}')
    assert not watch.matches("t", b"garbage")
    assert watch.matches("t", b'{"state": "done"}')


@pytest.mark.parametrize(
    ("op", "value", "field", "says"),
    [
        ("~", 1, None, "unknown condition op '~'; use one of >, >="),
        (">", None, None, "needs a value"),
        (">", "warm", None, "compares numbers"),
        ("changed", 3, None, "takes no value"),
        ("contains", 3, None, "must be a string"),
        ("==", [1], None, "not list"),
        ("==", 1, "temperature", "starts with '/'"),
    ],
)
def test_bad_conditions_are_refused_precisely(op: str, value: Any, field: str | None, says: str) -> None:
    with pytest.raises(InvalidArgument, match=says):
        parse_condition(op, field, value)


def test_a_condition_describes_itself() -> None:
    assert parse_condition(">", "/temperature", 25).describe() == "/temperature > 25"
    assert parse_condition("changed").describe() == "payload changed"


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_a_number_reads_back_as_itself(number: float) -> None:
    assert as_number(repr(number)) == number
    assert as_number(number) == number
    assert as_number(True) is None
