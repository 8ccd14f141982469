"""MQTT topic rules: what a valid topic name or filter is, and which topics a filter matches.

MQTT has two kinds of topic strings. A topic *name* is where a message is published (and the
request and response topics of a query); it is concrete. A topic *filter* is what a client
subscribes to; a level of exactly ``+`` matches any one level (even an empty one), and a last level
of exactly ``#`` matches the parent level and any number of levels below it. A filter whose first
level is a wildcard never matches a topic whose first level starts with ``$`` (``$SYS/...``): those
are the broker's own topics and are reached only by writing the ``$`` level out.

Why this module exists, and why it is strict:

* A broker disconnects the whole client for one malformed topic (a wildcard in a name, ``#`` that
  is not the last level, a NUL, a control character or a Unicode non-character), which would cut off
  every agent sharing the connection. So every topic is checked here before a byte is sent, with the
  same rules Mosquitto applies.
* The allowlist is a security boundary. ``matches`` answers "may a message on this topic pass?",
  and ``covers`` answers "may this subscription be made?": every topic the filter can match must be
  matched by the pattern. Confusing the two (treating the filter ``sensors/#`` as a topic that the
  pattern ``sensors/+`` matches) would let an agent read far more than allowed.
* Nothing is normalised: no trimming, no case folding, ``//`` is an empty level. The broker compares
  topics byte for byte, so any normalisation here would authorise one topic and deliver another.

Pure stdlib, no I/O: policy and server code import it, never the other way round.
"""

import re
from collections.abc import Sequence

MAX_TOPIC_BYTES = 65_535
"""MQTT encodes a topic's length in two bytes, so a topic is at most 65,535 bytes of UTF-8."""

MAX_TOPIC_LEVELS = 128
"""Topics with more levels than this are refused: brokers limit the depth of their topic tree."""

_SHARE_PREFIX = "$share/"
_WILDCARDS = ("+", "#")
_SHOWN_CHARS = 80

# Mosquitto's UTF-8 check refuses these code points in any topic and drops the connection: C0 and C1
# control characters (U+0000 included), DEL, the non-characters U+FDD0..U+FDEF and U+xFFFE/U+xFFFF in
# every plane. Lone surrogates cannot be encoded as UTF-8 at all, so they are refused here as well.
_FORBIDDEN_CHAR = re.compile(
    "[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef"
    + "".join(chr(plane << 16 | 0xFFFE) + chr(plane << 16 | 0xFFFF) for plane in range(17))
    + "]"
)


def name_problem(topic: str) -> str | None:
    """Why ``topic`` is not a valid MQTT topic name (publish, request or response topic); None if it is.

    The text is a clause that reads after "invalid topic: ". Never raises for any ``str``.
    """
    problem = _string_problem(topic, "topic")
    if problem is not None:
        return problem
    for wildcard in _WILDCARDS:
        if wildcard in topic:
            return (
                f"{_show(topic)} is a topic name and may not contain the wildcard {wildcard!r} "
                "(wildcards are for subscribe filters)"
            )
    return None


def filter_problem(topic_filter: str) -> str | None:
    """Why ``topic_filter`` is not a valid MQTT topic filter (subscribe, read, pattern); None if it is.

    On top of the rules for names, ``+`` must be a whole level and ``#`` a whole last level, and a
    shared subscription must read ``$share/<group>/<filter>`` with a plain group name and a valid
    filter. Never raises for any ``str``.
    """
    problem = _string_problem(topic_filter, "topic filter")
    if problem is not None:
        return problem
    if not topic_filter.startswith(_SHARE_PREFIX):
        return _wildcard_problem(topic_filter)
    shown = _show(topic_filter)
    group, slash, inner = topic_filter[len(_SHARE_PREFIX) :].partition("/")
    if not group:
        return f"{shown} is a shared subscription with an empty group name; write '$share/<group>/<filter>'"
    if not slash:
        return f"{shown} is a shared subscription without a filter; write '$share/<group>/<filter>'"
    if "+" in group or "#" in group:
        return (
            f"{shown} is a shared subscription whose group name {group!r} contains a wildcard; "
            "the group name is a plain word, as in '$share/<group>/<filter>'"
        )
    if not inner:
        return f"{shown} is a shared subscription with an empty filter; write '$share/<group>/<filter>'"
    inner_problem = _wildcard_problem(inner)
    if inner_problem is not None:
        return f"in the shared subscription {shown}: {inner_problem}"
    return None


def split_shared(topic_filter: str) -> tuple[str | None, str]:
    """``(group, inner_filter)`` for a valid ``$share/<group>/<filter>``, ``(None, topic_filter)`` otherwise.

    The broker delivers messages of a shared subscription on topics that the inner filter matches,
    without the ``$share/<group>/`` prefix, so the inner filter is what authorisation looks at.
    """
    if not topic_filter.startswith(_SHARE_PREFIX):
        return None, topic_filter
    group, _, inner = topic_filter[len(_SHARE_PREFIX) :].partition("/")
    return group, inner


def matches(topic_filter: str, topic: str) -> bool:
    """Whether the filter matches the concrete topic name under MQTT rules (no ``$share`` handling)."""
    return matches_levels(topic_filter.split("/"), topic.split("/"))


def matches_levels(filter_levels: Sequence[str], topic_levels: Sequence[str]) -> bool:
    """``matches`` on topics already split at ``/``: callers that check many topics split patterns once."""
    if filter_levels[0] in _WILDCARDS and topic_levels[0].startswith("$"):
        return False
    topic_depth = len(topic_levels)
    for index, level in enumerate(filter_levels):
        if level == "#":
            # '#' is always last and matches the parent too: 'a/#' matches 'a'.
            return True
        if index == topic_depth or (level != "+" and level != topic_levels[index]):
            return False
    return len(filter_levels) == topic_depth


def covers(pattern: str, topic_filter: str) -> bool:
    """Whether every topic that ``topic_filter`` can match is also matched by ``pattern``.

    This is the test for a subscription: it is allowed only if the pattern covers the whole filter,
    not merely some topic of it. Both are valid filters without ``$share`` (the caller strips it).
    """
    pattern_levels = pattern.split("/")
    filter_levels = topic_filter.split("/")
    # The filter can reach '$' topics only through a literal '$' first level; a pattern with a wildcard
    # first level matches none of those. (A wildcard first level in the filter excludes '$' topics just
    # as the pattern's does, and a literal first level in the pattern never covers a wildcard one.)
    if (
        pattern_levels[0] in _WILDCARDS
        and filter_levels[0] not in _WILDCARDS
        and filter_levels[0].startswith("$")
    ):
        return False
    for index, level in enumerate(filter_levels):
        if index == len(pattern_levels):
            # The filter matches topics deeper than the pattern can reach.
            return False
        pattern_level = pattern_levels[index]
        if pattern_level == "#":
            return True
        if level == "#":
            # The filter matches its parent and every topic below it; only '#' in the pattern does the
            # same. At the first level there is no parent (no topic has zero levels), so '+/#' matches
            # every topic that '#' matches. The empty topic counts as a parent like any other (so
            # '/+/#' does not cover '/#'): it is no valid name, but assuming that only errs to refusing.
            return index == 0 and pattern_levels == ["+", "#"]
        if pattern_level != "+" and pattern_level != level:
            return False
    # The filter has no '#': its topics have exactly its depth. The pattern either has that depth too
    # or one more level that is '#', which matches its parent.
    depth = len(filter_levels)
    return len(pattern_levels) == depth or (len(pattern_levels) == depth + 1 and pattern_levels[-1] == "#")


def overlaps(filter_a: str, filter_b: str) -> bool:
    """Whether some topic is matched by both filters (both valid, neither ``$share``).

    Used to explain a refusal: a pattern that overlaps a filter without covering it means the agent
    should narrow the filter, not look for another pattern.
    """
    levels_a = filter_a.split("/")
    levels_b = filter_b.split("/")
    first_a, first_b = levels_a[0], levels_b[0]
    if (first_a in _WILDCARDS and first_b.startswith("$")) or (
        first_b in _WILDCARDS and first_a.startswith("$")
    ):
        return False
    for level_a, level_b in zip(levels_a, levels_b, strict=False):
        if level_a == "#" or level_b == "#":
            return True
        if level_a != level_b and level_a != "+" and level_b != "+":
            return False
    if len(levels_a) == len(levels_b):
        return True
    # The shorter filter matches only topics of its own depth; the longer one reaches them only if its
    # next level is a '#' that matches the parent.
    longer = levels_a if len(levels_a) > len(levels_b) else levels_b
    return longer[min(len(levels_a), len(levels_b))] == "#"


def text_problem(text: str, kind: str) -> str | None:
    """Why ``text`` cannot travel as an MQTT UTF-8 string (a content type, a user property); None if it can.

    The same characters as in topics are refused, since Mosquitto drops the connection for them in
    any string, and the same size, since every MQTT string has a two-byte length. May be empty.
    """
    forbidden = _FORBIDDEN_CHAR.search(text)
    if forbidden is not None:
        return (
            f"{kind} {_show(text)} contains {_describe(forbidden.group())} "
            f"at position {forbidden.start()} (counting from 0)"
        )
    size = len(text.encode("utf-8"))  # cannot fail: lone surrogates were refused above
    if size > MAX_TOPIC_BYTES:
        return f"{kind} {_show(text)} is {size:,} bytes of UTF-8; MQTT allows at most {MAX_TOPIC_BYTES:,}"
    return None


def _string_problem(text: str, kind: str) -> str | None:
    """The rules names and filters share: not empty, encodable, no forbidden characters, bounded size."""
    if not text:
        return f"{kind} is empty"
    problem = text_problem(text, kind)
    if problem is not None:
        return problem
    depth = text.count("/") + 1
    if depth > MAX_TOPIC_LEVELS:
        return f"{kind} {_show(text)} has {depth} levels; at most {MAX_TOPIC_LEVELS} are allowed"
    return None


def _wildcard_problem(topic_filter: str) -> str | None:
    """Where a (non-shared) filter puts a wildcard somewhere MQTT does not allow one."""
    levels = topic_filter.split("/")
    last = len(levels) - 1
    for index, level in enumerate(levels):
        if level in _WILDCARDS:
            if level == "#" and index != last:
                return (
                    f"{_show(topic_filter)} has '#' before its last level; "
                    "'#' must be the whole last level, as in 'a/#'"
                )
        elif "#" in level:
            return (
                f"{_show(topic_filter)} has '#' inside the level {level!r}; "
                "'#' must be the whole last level, as in 'a/#'"
            )
        elif "+" in level:
            return (
                f"{_show(topic_filter)} has '+' inside the level {level!r}; "
                "'+' must be a whole level, as in 'a/+/b'"
            )
    return None


def _describe(char: str) -> str:
    """Name a forbidden character the way the Unicode standard does, so the agent can find it."""
    code = f"U+{ord(char):04X}"
    if char == "\x00":
        return f"the null character {code}"
    if "\ud800" <= char <= "\udfff":
        return f"the lone surrogate {code}, which cannot be encoded as UTF-8"
    if char <= "\x9f":
        return f"the control character {code}"
    return f"the Unicode non-character {code}"


def _show(text: str) -> str:
    """The text quoted with escapes, shortened when long: error messages stay readable."""
    if len(text) <= _SHOWN_CHARS:
        return repr(text)
    return f"{text[:_SHOWN_CHARS]!r}… ({len(text):,} characters)"
