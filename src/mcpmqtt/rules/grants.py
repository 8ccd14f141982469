"""Narrowing the allowlist for one caller: an API key or a token may be granted a subset of it.

A grant is a list of patterns and the permissions it keeps. Its allowlist holds each granted pattern
with the permissions that (a) the grant keeps and (b) the server's allowlist gives every topic of it,
that is, the permissions of the allowlist patterns that cover the granted pattern. So a grant can
only take away: what the narrowed allowlist allows to publish, subscribe or deliver, the full one
allows too, since "covers" is transitive (a read filter the granted pattern covers is covered by the
allowlist pattern that covers the granted one). Every deny entry of the allowlist stays in force in
the narrowed one, unchanged. A granted pattern that no allowlist pattern covers is a config error
rather than silently nothing, because it means the config says two different things.

Pure logic, like policy.py: imports the topic rules and the policy only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mcpmqtt.rules.policy import Allowlist, Permission, Rule
from mcpmqtt.rules.topics import covers, split_shared

BOTH: frozenset[Permission] = frozenset({"read", "write"})


@dataclass(frozen=True)
class Grant:
    """What one key or token is narrowed to: patterns (None: every allowlist pattern) and permissions."""

    patterns: tuple[str, ...] | None = None
    permissions: frozenset[Permission] = BOTH

    @property
    def narrows(self) -> bool:
        """Whether this grant takes anything away at all."""
        return self.patterns is not None or self.permissions != BOTH


def _within(allowed: str, pattern: str) -> bool:
    """Whether the allowlist pattern `allowed` covers `pattern`, shared subscriptions included
    (a `$share/<group>/…` pattern is covered only by one of the same group)."""
    allowed_group, allowed_inner = split_shared(allowed)
    group, inner = split_shared(pattern)
    return allowed_group == group and covers(allowed_inner, inner)


def grant_problems(allowlist: Allowlist, grant: Grant) -> list[tuple[int, str]]:
    """Why `grant` is not a subset of `allowlist`: (index of the granted pattern, explanation) pairs."""
    problems: list[tuple[int, str]] = []
    for index, pattern in enumerate(grant.patterns or ()):
        covering = _covering(allowlist, pattern)
        if not covering:
            why = "no allow entry of `topics` covers every topic it matches"
            problems.append((index, f"{pattern!r} is not within the allowlist: {why}"))
        elif not _permissions(covering, grant.permissions):
            given = " and ".join(sorted({p for rule in covering for p in rule.permissions}))
            kept = " and ".join(sorted(grant.permissions))
            problems.append(
                (index, f"{pattern!r}: the allowlist gives it only {given}; the grant keeps only {kept}")
            )
    return problems


def limits_of(grant: Grant) -> str:
    """What a grant keeps, in words for a refusal: "reading 'sensors/+/temperature'"."""
    verbs = {"read": "reading", "write": "publishing to"}
    doing = " and ".join(verbs[permission] for permission in sorted(grant.permissions))
    where = "the allowlist's topics" if grant.patterns is None else ", ".join(map(repr, grant.patterns))
    return f"{doing} {where}"


def narrow(allowlist: Allowlist, grants: Iterable[Grant], scope: str | None = None) -> Allowlist:
    """The allowlist for a caller holding `grants` (the union of what each grants).

    A grant without patterns keeps every allowlist rule (with its own permissions). `scope` says whose
    limit this is, for refusals (see Allowlist). Raises ValueError if a grant is not within the
    allowlist (grant_problems lists why, for config errors).
    """
    rules: list[Rule] = []
    for grant in grants:
        if problems := grant_problems(allowlist, grant):
            raise ValueError("; ".join(text for _, text in problems))
        if grant.patterns is None:
            rules.extend(_kept(rule, grant.permissions) for rule in allowlist.rules if not rule.deny)
            continue
        for pattern in grant.patterns:
            covering = _covering(allowlist, pattern)
            permissions = _permissions(covering, grant.permissions)
            rules.append(Rule(pattern, permissions, _description(covering, permissions)))
    denied = [rule for rule in allowlist.rules if rule.deny]
    return Allowlist([*(rule for rule in _merged(rules) if rule.permissions), *denied], scope)


def _covering(allowlist: Allowlist, pattern: str) -> list[Rule]:
    """The allow entries that cover `pattern` (deny entries grant nothing)."""
    return [rule for rule in allowlist.rules if not rule.deny and _within(rule.pattern, pattern)]


def _permissions(covering: Sequence[Rule], kept: frozenset[Permission]) -> frozenset[Permission]:
    given = frozenset(p for rule in covering for p in rule.permissions)
    return given & kept


def _kept(rule: Rule, kept: frozenset[Permission]) -> Rule:
    return Rule(rule.pattern, rule.permissions & kept, rule.description)


def _description(covering: Sequence[Rule], permissions: frozenset[Permission]) -> str:
    """The description of the first covering pattern that gives one of `permissions`: what the
    topics are for does not change because a caller may use fewer of them."""
    for rule in covering:
        if rule.permissions & permissions and rule.description:
            return rule.description
    return ""


def _merged(rules: Sequence[Rule]) -> list[Rule]:
    """One rule per pattern (several grants may name the same one), permissions joined, order kept."""
    merged: dict[str, Rule] = {}
    for rule in rules:
        if (seen := merged.get(rule.pattern)) is not None:
            rule = Rule(
                rule.pattern, seen.permissions | rule.permissions, seen.description or rule.description
            )
        merged[rule.pattern] = rule
    return list(merged.values())
