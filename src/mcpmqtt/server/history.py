"""The tool `mqtt_history`: what was said on a topic filter in a window of time, as messages or as
numbers per time bucket.

The caller's allowlist decides as for mqtt_subscribe (one read pattern must cover the filter), and every
topic answered from is checked again. The loop only copies the kept messages of the matching topics
(C-speed list copies); selecting, parsing and bucketing run in a worker thread, so that a large window
never holds up the message path or other calls.
"""

import time
from bisect import bisect_left, bisect_right
from typing import Annotated, Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult
from pydantic import Field

from mcpmqtt.errors import InvalidArgument
from mcpmqtt.mqtt import Received
from mcpmqtt.rules.json_pointer import Pointer, parse_pointer
from mcpmqtt.rules.payloads import iso_utc
from mcpmqtt.rules.series import BucketPlan, plan_buckets
from mcpmqtt.rules.spans import parse_instant
from mcpmqtt.rules.topics import covers, matches, split_shared
from mcpmqtt.server.context import Runtime
from mcpmqtt.server.history_series import SeriesCache, bucket_window
from mcpmqtt.server.history_store import Entry, History, TopicSnapshot
from mcpmqtt.server.labels import UNTRUSTED, labelled
from mcpmqtt.server.messages import to_message
from mcpmqtt.server.results import HistoryBucket, HistoryResult, ok_result
from mcpmqtt.server.topics_app import HISTORY_APP_META

HISTORY_DESCRIPTION = (
    "What was published on a topic filter in a window of time, from the server's history, at once "
    '(no waiting). since and until take ISO-8601 times or a span back from now: "15m", "2h", "7d". '
    "Without bucket: the messages, oldest first (the newest `limit` of the window; truncated says "
    'older ones were left out). With bucket ("1m", "1h"): per time bucket the count of messages and '
    "min, max, mean and last of the number at field, a JSON Pointer into JSON payloads such as "
    '"/temperature" (leave field out when the payload is a plain number); payloads without a number '
    "there are counted, not averaged. Use bucket for trends over many messages. The history holds "
    "what arrived on the readable patterns since the server started (and, with a history file, before), "
    f"within its configured bounds. {UNTRUSTED}"
)


def _at(entry: Entry) -> float:
    return entry[0]


def _window(snapshot: TopicSnapshot, since: float, until: float) -> list[Entry]:
    """The snapshot's messages received from `since` to `until`, both included, oldest first."""
    entries = snapshot.entries
    if snapshot.ordered:
        return entries[bisect_left(entries, since, key=_at) : bisect_right(entries, until, key=_at)]
    return [entry for entry in entries if since <= entry[0] <= until]


def select_messages(
    snapshots: list[TopicSnapshot], since: float, until: float, limit: int, max_bytes: int
) -> tuple[list[Received], bool]:
    """The newest `limit` messages of the window whose payloads fit in `max_bytes`, oldest first; and
    whether any of the window was left out."""
    found: list[tuple[float, str, Entry]] = []
    total = 0
    for snapshot in snapshots:
        window = _window(snapshot, since, until)
        total += len(window)
        found.extend((entry[0], snapshot.topic, entry) for entry in window[-limit:])
    found.sort(key=lambda item: item[0])
    kept: list[Received] = []
    size = 0
    for _, topic, (at, payload, qos, retain, props) in reversed(found[-limit:]):
        size += len(payload)
        if size > max_bytes:
            break
        kept.append(Received(topic, payload, qos, retain, at, props))
    kept.reverse()
    return kept, len(kept) < total


def bucket_numbers(
    snapshots: list[TopicSnapshot],
    since: float,
    until: float,
    pointer: Pointer,
    plan: BucketPlan,
    cache: SeriesCache | None,
) -> list[HistoryBucket]:
    """The window's numbers at `pointer`, aggregated per bucket over all the snapshots' topics."""
    return [
        HistoryBucket(
            start=iso_utc(bucket.start),
            count=bucket.count,
            min=bucket.low if bucket.numbers else None,
            max=bucket.high if bucket.numbers else None,
            mean=bucket.mean,
            last=bucket.last,
        )
        for bucket in bucket_window(snapshots, since, until, pointer, plan, cache)
    ]


def register_history(server: MCPServer[Any], runtime: Runtime, history: History, followed: list[str]) -> None:
    """Add mqtt_history, answering from `history`, which follows the patterns `followed`."""
    # Bucketed questions keep the numbers they parsed (server/history_series.py), within a quarter of
    # the history's own bound.
    cache = SeriesCache(history.max_bytes // 4)

    @server.tool(
        description=HISTORY_DESCRIPTION,
        meta=HISTORY_APP_META,  # hosts that render MCP Apps show the result as a table and chart
        **labelled(
            "MQTT message history", read_only=True, destructive=False, idempotent=True, open_world=False
        ),
    )
    async def mqtt_history(
        topic: Annotated[
            str, Field(description="An MQTT topic filter you may read: a topic, or a pattern with + or #.")
        ],
        since: Annotated[
            str,
            Field(
                description="Start of the window: ISO-8601 (2026-12-04T08:00:00Z) or a span back from "
                'now ("2h").'
            ),
        ],
        until: Annotated[
            str | None, Field(description="End of the window, same forms as since; default now.")
        ] = None,
        limit: Annotated[
            int, Field(ge=1, le=runtime.limits.max_messages, description="At most this many messages.")
        ] = 100,
        field: Annotated[
            str | None,
            Field(
                description='With bucket: a JSON Pointer to the number in JSON payloads, e.g. "/temperature".'
            ),
        ] = None,
        bucket: Annotated[
            str | None,
            Field(description='Aggregate per time bucket of this span ("1m", "15m", "1h"); at least 1 s.'),
        ] = None,
    ) -> Annotated[CallToolResult, HistoryResult]:
        """Messages, or numbers per bucket, of a topic filter in a window of time."""
        policy = runtime.policy()
        policy.decide("read", topic).enforce()
        now = time.time()
        start = parse_instant(since, now)
        end = parse_instant(until, now) if until is not None else now
        if end < start:
            raise InvalidArgument(
                f"until ({iso_utc(end)}) is before since ({iso_utc(start)}); give since the earlier time"
            )
        if field is not None and bucket is None:
            raise InvalidArgument(
                'field applies to buckets only; add bucket (e.g. "1m"), or leave field out to get '
                "the messages"
            )
        pointer = parse_pointer(field) if field is not None else ()
        plan = plan_buckets(bucket, start, end) if bucket is not None else None
        inner = split_shared(topic)[1]
        snapshots = history.snapshot(lambda name: matches(inner, name) and policy.readable(name))
        kept_from = max(start, now - history.max_age)  # older ones are due to expire, not to be shown
        result = HistoryResult(
            topic=topic,
            since=iso_utc(start),
            until=iso_utc(end),
            dropped=sum(snapshot.dropped for snapshot in snapshots),
            note=_note(runtime, followed, inner),
        )
        if plan is None:
            messages, truncated = await anyio.to_thread.run_sync(
                select_messages, snapshots, kept_from, end, limit, runtime.limits.max_result_bytes
            )
            result.messages = [to_message(message) for message in messages]
            result.truncated = truncated
        else:
            result.field = field or ""
            result.buckets = await anyio.to_thread.run_sync(
                bucket_numbers, snapshots, kept_from, end, pointer, plan, cache
            )
        return ok_result(result)


def _note(runtime: Runtime, followed: list[str], topic_filter: str) -> str | None:
    """Why the history may hold less than was published on the filter, if it may."""
    if not any(covers(pattern, topic_filter) for pattern in followed):
        return (
            "the history keeps only topics of read patterns with live: true; topics of this filter "
            "outside them are not kept (use mqtt_subscribe for those)"
        )
    if runtime.broker.protocol != "5":
        return "the broker speaks MQTT 3.1.1, so the history holds only what calls have read"
    return None
