"""Spans of time as people write them ("90s", "15m", "1h", "7d"), for watch lifetimes and history windows."""

from __future__ import annotations

import math
import re

from mcpmqtt.errors import InvalidArgument

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}
_SPAN = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")


def parse_span(text: str) -> float:
    """The seconds a span like "15m" names; InvalidArgument for anything else, zero and negatives included.

    One number and one unit (s, m, h, d), so that "1h30m" or "10 parsecs" is refused with the form
    that works rather than half understood.
    """
    found = _SPAN.fullmatch(text.strip().lower()) if isinstance(text, str) else None
    seconds = float(found[1]) * _UNITS[found[2]] if found else math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise InvalidArgument(
            f"{text!r} is not a span of time; write a positive number and one unit: "
            '"90s", "15m", "2h" or "7d"'
        )
    return seconds
