"""Buckets through the column cache give what parsing every message gives, as the history moves on."""

from hypothesis import given
from hypothesis import strategies as st
from strategies import FAST

from mcpmqtt.mqtt import Received
from mcpmqtt.rules.json_pointer import parse_pointer
from mcpmqtt.rules.series import plan_buckets
from mcpmqtt.server.history_series import SeriesCache, bucket_window
from mcpmqtt.server.history_store import History

PAYLOADS = st.sampled_from(
    [b'{"t": 1}', b'{"t": -2.5}', b'{"t": "x"}', b"7", b"off", b'{"t": 1e3}', b'{"u": 4}', b"", b"[1]"]
)
STEPS = st.lists(
    st.tuples(st.sampled_from(["a", "b"]), PAYLOADS, st.floats(min_value=0, max_value=30)), max_size=60
)


def fields(buckets: list) -> list[tuple[object, ...]]:  # type: ignore[type-arg]
    return [(b.start, b.count, b.numbers, b.low, b.high, b.total, b.last) for b in buckets]


@given(
    STEPS,
    st.integers(min_value=1, max_value=8),
    st.sampled_from(["1s", "7s", "1m"]),
    st.sampled_from(["", "/t"]),
)
@FAST
def test_cached_buckets_equal_parsing_every_message(
    steps: list[tuple[str, bytes, float]], per_topic: int, bucket: str, field: str
) -> None:
    """Ask after every few messages (the cache catches up and cuts what the bounds dropped), and compare
    with the uncached answer over the same snapshot."""
    history = History(per_topic, 1e9, 1 << 40)
    cache = SeriesCache(1 << 30)
    pointer = parse_pointer(field)
    at = 1_800_000_000.0
    for number, (topic, payload, step) in enumerate(steps):
        at += step
        history.offer(Received(topic, payload, 0, False, at, None))
        if number % 3 == 0:
            snapshots = history.snapshot(lambda _: True)
            since = 1_800_000_000.0 + (number * 7) % 40  # windows starting later and earlier
            plan = plan_buckets(bucket, since, at)
            cached = bucket_window(snapshots, since, at, pointer, plan, cache)
            plain = bucket_window(snapshots, since, at, pointer, plan, None)
            assert fields(cached) == fields(plain)


def test_cache_is_bounded_in_bytes_and_forgets_the_least_recently_used() -> None:
    history = History(1000, 1e9, 1 << 40)
    for i in range(100):
        for topic in ("a", "b"):
            history.offer(Received(topic, b"%d" % i, 0, False, 1_800_000_000.0 + i, None))
    cache = SeriesCache(100 * 32 + 10)  # room for one topic's column (100 messages, 100 numbers)
    plan = plan_buckets("1m", 1_800_000_000.0, 1_800_000_100.0)
    for topic in ("a", "b"):
        snapshots = history.snapshot(lambda name, topic=topic: name == topic)  # type: ignore[misc]
        bucket_window(snapshots, 1_800_000_000.0, 1_800_000_100.0, (), plan, cache)
    assert len(cache) == 1 and cache.bytes <= cache.max_bytes
