"""Numbers over time from payloads: JSON Pointers (RFC 6901) into JSON payloads, and time buckets with
count, min, max, mean and last.

A payload that holds no number where the pointer points (text, a JSON object without that field, a
string, a boolean, NaN) is counted and skipped by the statistics: devices send odd payloads now and
then, and one must not spoil an agent's question about the rest. Pure: no I/O.
"""

from __future__ import annotations

import json
import json.scanner
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mcpmqtt.errors import InvalidArgument
from mcpmqtt.rules.json_pointer import Pointer, resolve
from mcpmqtt.rules.spans import parse_span

MAX_BUCKETS = 10_000
MIN_BUCKET_SECONDS = 1.0
# typeshed names the argument's type after the scanner; it is the decoder whose settings it takes.
_SCAN = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]
_JSON_SPACE = " \t\n\r"
_JSON_SPACE_SET = frozenset(_JSON_SPACE)


def parse_json(payload: bytes | bytearray) -> object:
    """json.loads, by its C scanner directly: a quarter faster for small payloads, which is what a
    bucketed question over many messages spends its time on. Decoded first, skipping json's
    encoding detection: JSON exchanged between systems is UTF-8 (RFC 8259 §8.1)."""
    text = payload.decode()
    start = len(text) - len(text.lstrip(_JSON_SPACE)) if text[:1] in _JSON_SPACE_SET else 0
    value, end = _SCAN(text, start)
    if end != len(text) and text[end:].strip(_JSON_SPACE):
        raise ValueError("more than one JSON value")
    return value


def number_in(payload: bytes | bytearray, pointer: Pointer) -> float | None:
    """The finite number at `pointer` in a JSON payload; None when there is none (never raises)."""
    try:
        value = resolve(parse_json(payload), pointer)
    except (ValueError, StopIteration, RecursionError):  # not JSON, not UTF-8, nothing there
        return None
    if type(value) is float:
        return value if math.isfinite(value) else None
    if type(value) is int:  # not bool, whose type is bool
        try:
            return float(value)
        except OverflowError:
            return None
    return None


def numbers_in(payloads: Iterable[bytes | bytearray], pointer: Pointer) -> list[float | None]:
    """`number_in` of each payload, in one loop with its lookups hoisted and a fast path for a pointer
    of one key into an object: a first bucketed question parses every message of its window, and
    the Python around the C parser was more than half of that."""
    scan, space, space_set, isfinite = _SCAN, _JSON_SPACE, _JSON_SPACE_SET, math.isfinite
    key = pointer[0] if len(pointer) == 1 else None
    found: list[float | None] = []
    append = found.append
    for payload in payloads:
        try:
            text = payload.decode()
            value, end = scan(text, len(text) - len(text.lstrip(space)) if text[:1] in space_set else 0)
            if end != len(text) and text[end:].strip(space):
                append(None)
                continue
        except (ValueError, StopIteration, RecursionError):
            append(None)
            continue
        if key is not None and type(value) is dict:
            value = value.get(key)
        elif pointer:
            value = resolve(value, pointer)
        if type(value) is float:
            append(value if isfinite(value) else None)
        elif type(value) is int:
            try:
                append(float(value))
            except OverflowError:
                append(None)
        else:
            append(None)
    return found


@dataclass(slots=True)
class Bucket:
    """The statistics of one time bucket: `count` messages, of which `numbers` held a number."""

    start: float
    count: int = 0
    numbers: int = 0
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf
    last: float | None = None
    last_at: float = -math.inf

    @property
    def mean(self) -> float | None:
        return self.total / self.numbers if self.numbers else None

    def add_numbers(self, values: Sequence[float], last_at: float) -> None:
        """Fold in `values`, in time order, the last of them received at `last_at`."""
        if not values:
            return
        self.numbers += len(values)
        self.total += sum(values)
        self.low = min(self.low, min(values))
        self.high = max(self.high, max(values))
        if last_at >= self.last_at:
            self.last, self.last_at = values[-1], last_at


@dataclass(frozen=True, slots=True)
class BucketPlan:
    """Buckets of `width` seconds aligned to the epoch (a "1m" bucket starts on the minute)."""

    origin: float
    width: float
    count: int

    def index(self, moment: float) -> int:
        return int((moment - self.origin) // self.width)


def plan_buckets(bucket: str, since: float, until: float) -> BucketPlan:
    """Buckets covering since to until (both included); InvalidArgument if narrower than 1 s or more
    than 10,000."""
    width = parse_span(bucket)
    if width < MIN_BUCKET_SECONDS:
        raise InvalidArgument(f'bucket {bucket!r} is shorter than 1 s; use "1s" or more')
    origin = math.floor(since / width) * width
    count = int((until - origin) // width) + 1
    if count > MAX_BUCKETS:
        raise InvalidArgument(
            f"bucket {bucket!r} over this window makes {count:,} buckets, more than {MAX_BUCKETS:,}; "
            "use a wider bucket or a shorter window (since/until)"
        )
    return BucketPlan(origin, width, count)


def aggregate(points: Iterable[tuple[float, float | None]], plan: BucketPlan) -> list[Bucket]:
    """The non-empty buckets, oldest first, of (moment, number or None) points inside the plan."""
    buckets: dict[int, Bucket] = {}
    accumulate(buckets, points, plan)
    return [buckets[index] for index in sorted(buckets)]


def accumulate(
    buckets: dict[int, Bucket], points: Iterable[tuple[float, float | None]], plan: BucketPlan
) -> None:
    """Add (moment, number or None) points to `buckets`, keyed by bucket index."""
    for moment, value in points:
        index = plan.index(moment)
        if not 0 <= index < plan.count:
            continue
        found = buckets.get(index)
        if found is None:
            found = buckets[index] = Bucket(plan.origin + index * plan.width)
        found.count += 1
        if value is None:
            continue
        found.numbers += 1
        found.total += value
        if value < found.low:
            found.low = value
        if value > found.high:
            found.high = value
        if moment >= found.last_at:
            found.last, found.last_at = value, moment
