"""Concrete example topics for each allowlist pattern, so that a model sees how + and # expand.

Pure: every example is checked against the pattern with the same matcher the policy uses, so the
resource can never teach a model something the server would then refuse.
"""

from __future__ import annotations

from typing import Any

from mcpmqtt.rules.policy import Rule
from mcpmqtt.rules.topics import matches, name_problem, split_shared

_PLUS_SAMPLES = ("room1", "device-42")
_HASH_SAMPLES: tuple[tuple[str, ...], ...] = ((), ("status",), ("a", "b"))


def _expand(levels: list[str], plus: str) -> list[str]:
    """Topics matching a filter: each + becomes `plus`, a trailing # becomes 0, 1 or 2 levels."""
    fixed = [plus if level == "+" else level for level in levels]
    if fixed and fixed[-1] == "#":
        head = fixed[:-1]
        return ["/".join([*head, *tail]) for tail in _HASH_SAMPLES if head or tail]
    return ["/".join(fixed)]


def _concrete(levels: list[str]) -> list[str]:
    return ["x" if level in ("+", "#") else level for level in levels]


def _near_misses(levels: list[str]) -> list[str]:
    """Topics a model might wrongly expect to match."""
    misses: list[str] = []
    if "+" in levels:
        i = levels.index("+")
        misses.append("/".join([*_concrete(levels[:i]), "a", "b", *_concrete(levels[i + 1 :])]))
    if levels and levels[-1] != "#":
        misses.append("/".join(_concrete(levels)) + "/more")
    if levels and levels[0] in ("+", "#"):
        misses.append("$SYS/broker/uptime")
    return misses


def _note(pattern: str) -> str:
    notes = []
    if "+" in pattern.split("/"):
        notes.append("+ stands for exactly one level (any name, even an empty one)")
    if pattern.endswith("#"):
        notes.append("# stands for the level before it and any number of levels below")
    if not notes:
        notes.append("an exact topic: no wildcards")
    return "; ".join(notes)


def examples_for(rule: Rule) -> dict[str, Any]:
    """Example topics that match `rule.pattern`, and near misses that do not."""
    group, inner = split_shared(rule.pattern)
    levels = inner.split("/")
    candidates = {t for plus in _PLUS_SAMPLES for t in _expand(levels, plus) if name_problem(t) is None}
    matching = sorted(t for t in candidates if matches(inner, t))
    missing = [t for t in _near_misses(levels) if name_problem(t) is None and not matches(inner, t)]
    entry: dict[str, Any] = {
        "pattern": rule.pattern,
        "permissions": sorted(rule.permissions),
        "meaning": _note(inner),
        "example_topics": matching,
        "does_not_match": missing,
    }
    if rule.deny:
        entry["deny"] = True  # these topics are refused, not offered
    elif "read" in rule.permissions:
        entry["subscribe_with"] = [
            rule.pattern,
            *(t for t in matching[:1] if group is None and t != rule.pattern),
        ]
    if group is not None:
        entry["shared_subscription_group"] = group
    return entry
