"""Spans of time as people write them ("15m", "2h", "7d") and instants as an agent gives them (ISO-8601,
or a span back from now): for watch lifetimes, history windows and history buckets.

Pure: the caller passes "now", so the same text always means the same thing in a test.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

from mcpmqtt.errors import InvalidArgument

UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}
# One number and one lower-case unit, a space between them allowed: "1h30m" or "10 parsecs" is refused
# with the form that works rather than half understood, and "5M" is refused because it could be months.
_SPAN = re.compile(r"(\d+(?:\.\d+)?) ?([smhdw])")
_HOW = 'write a positive number and a unit: s, m, h, d or w (e.g. "90s", "15m", "2h", "7d")'


def _span_match(text: object) -> re.Match[str] | None:
    return _SPAN.fullmatch(text.strip()) if isinstance(text, str) else None


def parse_span(text: str) -> float:
    """Seconds in a span like "15m"; raises InvalidArgument for anything else ("-5m", "10 parsecs", "0s")."""
    match = _span_match(text)
    if match is None:
        raise InvalidArgument(f"{text!r} is not a span of time; {_HOW}")
    seconds = float(match[1]) * UNITS[match[2]]
    if not seconds > 0 or not math.isfinite(seconds):
        raise InvalidArgument(f"{text!r} is not a span of time greater than zero; {_HOW}")
    return seconds


def parse_instant(text: str, now: float) -> float:
    """A moment as seconds since the epoch: ISO-8601 ("2026-12-04T17:00:00Z"; without an offset, UTC)
    or a span back from `now` ("15m" is fifteen minutes ago)."""
    if _span_match(text):
        return now - parse_span(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidArgument(
            f"{text!r} is neither an ISO-8601 time (e.g. 2026-12-04T17:00:00Z) nor a span back from now; "
            f"for a span, {_HOW}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
