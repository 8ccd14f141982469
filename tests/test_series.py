"""The pure parts of history: spans of time, instants, JSON Pointers (RFC 6901) and time buckets."""

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import FAST

from mcpmqtt.errors import InvalidArgument
from mcpmqtt.rules.json_pointer import MISSING, parse_pointer, resolve
from mcpmqtt.rules.series import (
    MAX_BUCKETS,
    BucketPlan,
    aggregate,
    number_in,
    numbers_in,
    parse_json,
    plan_buckets,
)
from mcpmqtt.rules.spans import UNITS, parse_instant, parse_span

NOW = 1_800_000_000.0

# ---- spans and instants -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("2h", 7200), ("7d", 604_800), ("1w", 604_800), ("1.5h", 5400)],
)
def test_span_is_a_positive_number_and_a_unit(text: str, seconds: float) -> None:
    assert parse_span(text) == seconds


@pytest.mark.parametrize(
    "text", ["-5m", "10 parsecs", "0s", "0m", "5", "m", "5  m", "5M", "", "1e3s", "nan s"]
)
def test_span_refuses_what_is_not_a_positive_span(text: str) -> None:
    with pytest.raises(InvalidArgument, match="span of time") as caught:
        parse_span(text)
    assert str(caught.value).startswith("invalid argument: ")
    assert "15m" in str(caught.value)  # says how to write one


@given(st.integers(min_value=1, max_value=10**6), st.sampled_from(sorted(UNITS)))
@FAST
def test_span_of_any_count_and_unit_is_count_times_unit(count: int, unit: str) -> None:
    assert parse_span(f"{count}{unit}") == count * UNITS[unit]


def test_instant_is_iso_8601_or_a_span_back_from_now() -> None:
    assert parse_instant("15m", NOW) == NOW - 900
    assert parse_instant("2027-01-15T08:00:00Z", NOW) == NOW
    assert parse_instant("2027-01-15T09:00:00+01:00", NOW) == NOW
    assert parse_instant("2027-01-15T08:00:00", NOW) == NOW  # no offset: UTC


@pytest.mark.parametrize("text", ["-5m", "yesterday", "10 parsecs", "2027-13-01"])
def test_instant_refuses_what_is_neither(text: str) -> None:
    with pytest.raises(InvalidArgument, match=r"ISO-8601|span"):
        parse_instant(text, NOW)


# ---- JSON Pointer --------------------------------------------------------------------------------------

DOCUMENT = {
    "foo": ["bar", "baz"],
    "": 0,
    "a/b": 1,
    "c%d": 2,
    "e^f": 3,
    "g|h": 4,
    "i\\j": 5,
    'k"l': 6,
    " ": 7,
    "m~n": 8,
}


@pytest.mark.parametrize(
    ("pointer", "expected"),
    [  # RFC 6901 §5, every example
        ("", DOCUMENT),
        ("/foo", ["bar", "baz"]),
        ("/foo/0", "bar"),
        ("/", 0),
        ("/a~1b", 1),
        ("/c%d", 2),
        ("/e^f", 3),
        ("/g|h", 4),
        ("/i\\j", 5),
        ('/k"l', 6),
        ("/ ", 7),
        ("/m~0n", 8),
    ],
)
def test_pointer_resolves_the_rfc_examples(pointer: str, expected: object) -> None:
    assert resolve(DOCUMENT, parse_pointer(pointer)) == expected


def test_pointer_unescapes_tilde_one_before_tilde_zero() -> None:
    assert parse_pointer("/~01") == ("~1",)  # not "/"


@pytest.mark.parametrize("pointer", ["/foo/2", "/foo/-", "/foo/01", "/foo/x", "/nope", "/foo/0/deeper"])
def test_pointer_to_nothing_is_missing_not_an_error(pointer: str) -> None:
    assert resolve(DOCUMENT, parse_pointer(pointer)) is MISSING


@pytest.mark.parametrize("pointer", ["temperature", "/a~2b", "/a~", "~1"])
def test_malformed_pointer_is_an_invalid_argument(pointer: str) -> None:
    with pytest.raises(InvalidArgument, match="JSON Pointer"):
        parse_pointer(pointer)


_KEYS = st.text(max_size=6)


@given(st.lists(_KEYS, min_size=1, max_size=4), st.integers())
@FAST
def test_pointer_escaped_from_any_keys_finds_the_value_under_them(keys: list[str], value: int) -> None:
    document: object = value
    for key in reversed(keys):
        document = {key: document}
    pointer = "".join("/" + key.replace("~", "~0").replace("/", "~1") for key in keys)
    assert parse_pointer(pointer) == tuple(keys)
    assert resolve(document, parse_pointer(pointer)) == value


# ---- numbers in payloads ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "pointer", "expected"),
    [
        (b"21.5", (), 21.5),
        (b" 7 ", (), 7.0),
        (b'{"temperature": 19}', ("temperature",), 19.0),
        (b'{"t": {"v": [1, 2.5]}}', ("t", "v", "1"), 2.5),
        (b'{"temperature": "19"}', ("temperature",), None),  # a string is not a number
        (b'{"on": true}', ("on",), None),  # nor is a boolean
        (b'{"temperature": 19}', (), None),  # an object where a number is wanted
        (b"21.5", ("temperature",), None),
        (b"NaN", (), None),
        (b"Infinity", (), None),
        (b"1" + b"0" * 400, (), None),  # an integer too large for a float
        (b"on", (), None),
        (b"\xff\xfe", (), None),
        (b"[" * 100_000, (), None),  # deeper than the parser recurses
        (b"", (), None),
        (b" \n\t", (), None),
        (b"1 2", (), None),  # two values: not JSON
        (b"[1] x", (), None),
        (b"\n 3.5 \r\n", (), 3.5),
        (b"\xc2\xa03", (), None),  # a no-break space is not JSON whitespace
    ],
)
def test_number_in_payload_or_none(payload: bytes, pointer: tuple[str, ...], expected: float | None) -> None:
    assert number_in(payload, pointer) == expected


@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    )
)
@FAST
def test_number_in_never_raises_and_is_finite(document: object) -> None:
    payload = json.dumps(document).encode()
    value = number_in(payload, ())
    assert value is None or math.isfinite(value)


# ---- buckets ----------------------------------------------------------------------------------------


def test_buckets_align_to_the_epoch_grid_and_cover_both_ends() -> None:
    plan = plan_buckets("1m", NOW + 30, NOW + 150)
    assert plan == BucketPlan(origin=NOW, width=60, count=3)


@pytest.mark.parametrize(
    ("bucket", "since", "message"),
    [("500s", 0, None), ("0.5s", NOW - 60, "shorter than 1 s"), ("1s", NOW - 86_400, "more than 10,000")],
)
def test_bucket_bounds(bucket: str, since: float, message: str | None) -> None:
    if message is None:
        assert plan_buckets(bucket, NOW - 3600, NOW).count <= MAX_BUCKETS
        return
    with pytest.raises(InvalidArgument, match=message):
        plan_buckets(bucket, since, NOW)


def test_bucket_of_a_bad_span_is_an_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match="span of time"):
        plan_buckets("-1m", NOW - 60, NOW)


def test_aggregate_counts_everything_and_computes_over_numbers_only() -> None:
    plan = plan_buckets("1m", NOW, NOW + 119)
    points = [(NOW + 1, 3.0), (NOW + 2, None), (NOW + 3, 1.0), (NOW + 4, 2.0), (NOW + 61, None)]
    first, second = aggregate(points, plan)
    assert (first.start, first.count, first.numbers, first.low, first.high, first.mean, first.last) == (
        NOW,
        4,
        3,
        1.0,
        3.0,
        2.0,
        2.0,
    )
    assert (second.start, second.count, second.numbers, second.mean, second.last) == (
        NOW + 60,
        1,
        0,
        None,
        None,
    )


def test_aggregate_last_is_the_latest_number_whatever_the_order_of_points() -> None:
    plan = plan_buckets("1m", NOW, NOW + 59)
    (bucket,) = aggregate([(NOW + 5, 9.0), (NOW + 1, 4.0)], plan)  # two topics, merged out of order
    assert bucket.last == 9.0


@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=3599.999),
            st.one_of(st.none(), st.floats(min_value=-1e6, max_value=1e6)),
        ),
        max_size=60,
    ),
    st.sampled_from(["1s", "7s", "1m", "5m", "1h"]),
)
@FAST
def test_aggregate_keeps_every_point_once_and_stats_bound_the_numbers(
    points: list[tuple[float, float | None]], bucket: str
) -> None:
    plan = plan_buckets(bucket, NOW, NOW + 3600)
    shifted = [(NOW + offset, value) for offset, value in points]
    buckets = aggregate(shifted, plan)
    assert sum(b.count for b in buckets) == len(points)
    assert sum(b.numbers for b in buckets) == sum(value is not None for _, value in points)
    assert [b.start for b in buckets] == sorted({b.start for b in buckets})
    for b in buckets:
        inside = [v for t, v in shifted if b.start <= t < b.start + plan.width and v is not None]
        assert b.numbers == len(inside)
        if inside:
            assert b.low == min(inside) and b.high == max(inside)
            assert b.mean is not None and b.low - 1e-6 <= b.mean <= b.high + 1e-6


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)
_SPACE = st.text(alphabet=" \t\n\r\u00a0\u2028", max_size=3)


@given(st.one_of(_JSON_VALUES.map(json.dumps), st.text(max_size=12)), _SPACE, _SPACE)
@FAST
def test_payload_parser_agrees_with_json_loads(text: str, before: str, after: str) -> None:
    """The direct scanner accepts exactly what json.loads accepts, and reads the same value."""
    payload = (before + text + after).encode()
    try:
        expected: object = json.loads(payload.decode())
    except ValueError:
        expected = "refused"
    try:
        got: object = parse_json(payload)
    except (ValueError, StopIteration):
        got = "refused"
    assert got == expected or (got != got and expected != expected)


@given(
    st.lists(
        st.one_of(
            _JSON_VALUES.map(lambda value: json.dumps(value).encode()),
            st.binary(max_size=8),
            st.sampled_from([b'{"t": 2}', b'{"t": [1]}', b"[3, 4]", b'{"t": 1e400}', b"NaN"]),
        ),
        max_size=20,
    ),
    st.sampled_from(["", "/t", "/1", "/t/0", "/0/t"]),
)
@FAST
def test_numbers_in_many_payloads_is_number_in_of_each(payloads: list[bytes], field: str) -> None:
    pointer = parse_pointer(field)
    assert numbers_in(payloads, pointer) == [number_in(payload, pointer) for payload in payloads]
