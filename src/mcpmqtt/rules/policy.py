"""The allowlist: which topics an agent may publish to, subscribe to and read.

Every tool call is decided here before anything reaches the broker, and every delivered message is
checked again before it reaches the agent. The rules (CONTRACT §3):

* Publish to a topic name needs a ``write`` pattern that matches it under MQTT rules.
* Subscribe or read with a filter needs ONE ``read`` pattern that covers it: every topic the filter
  can match, that pattern matches too. Checking the filter as if it were a topic would let the
  pattern ``sensors/+`` grant ``sensors/#``, which reads every level below ``sensors``. Several
  patterns that cover a filter only together are not enough either: the broker delivers on one
  subscription, and a later message must not depend on which patterns happen to exist.
* A shared subscription ``$share/<group>/<filter>`` needs a read pattern ``$share/<group>/<pattern>``
  with the same group whose pattern covers the filter: joining a group takes messages away from its
  other members, so it is granted explicitly, never by a plain pattern.
* Topics are validated before they are authorised, so a malformed topic is reported as such
  (``invalid topic:``) rather than as a refusal, and never reaches the broker, which would drop the
  connection of every agent sharing it.
* Deny entries are evaluated before any allow, as in Mosquitto: an operator can carve a hole out of a
  broad pattern (``actuators/#`` minus ``actuators/locks/#``) without listing everything else. A deny
  pattern that matches a topic refuses publishing to it; one that covers a whole filter refuses the
  subscription; one that covers only part of a filter lets the subscription through but withholds
  every message on its topics, since the rest of the filter is legitimately readable.

Refusals are values, not exceptions: the text says which rule failed and what is allowed, written
for a language model to act on. Pure logic: imports the topic rules and the standard library only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal, assert_never, get_args

from mcpmqtt.errors import InvalidTopic, PermissionDenied
from mcpmqtt.rules.topics import covers, filter_problem, matches_levels, name_problem, overlaps, split_shared

Permission = Literal["read", "write"]

_PERMISSIONS: frozenset[str] = frozenset(get_args(Permission))


@dataclass(frozen=True)
class Rule:
    """One allowlist entry: a topic filter and what it grants."""

    pattern: str
    permissions: frozenset[Permission]
    description: str = ""
    deny: bool = False
    """A deny entry refuses what its permissions name, before any allow entry is consulted."""


@dataclass(frozen=True)
class Decision:
    """The answer to one request: allowed or not, and why.

    When denied, ``error`` is the refusal to raise (``PermissionDenied`` or ``InvalidTopic``), its text
    written for the agent; when allowed, ``note`` names the rule that allowed it.
    """

    allowed: bool
    note: str = ""
    error: PermissionDenied | InvalidTopic | None = None
    rule: Rule | None = None
    withheld: tuple[str, ...] = ()
    """Deny patterns that overlap an allowed filter: messages on their topics are never delivered."""

    @property
    def reason(self) -> str:
        """The complete text: the refusal as the agent sees it, or what allowed the request."""
        return str(self.error) if self.error is not None else self.note

    def enforce(self) -> Decision:
        """This decision if allowed; raises its refusal otherwise."""
        if self.error is not None:
            raise self.error
        return self


def _denied(error: PermissionDenied | InvalidTopic) -> Decision:
    return Decision(False, error=error)


class Allowlist:
    """The configured rules, and the decisions they imply for publishing, subscribing and delivery."""

    def __init__(self, rules: Sequence[Rule], scope: str | None = None) -> None:
        """Check every rule now, so that a bad pattern stops the server at start-up, not at first use.

        ``scope`` says whose limit a narrowed allowlist is (``"the API key 'reader' is limited to
        reading 'sensors/+/temperature'"``), so that a refusal blames the key, not the server.
        Raises ValueError naming the pattern when it is not a valid topic filter, a permission is
        unknown, or a deny pattern is a shared subscription.
        """
        self.scope = scope
        for rule in rules:
            problem = filter_problem(rule.pattern)
            if problem is not None:
                raise ValueError(f"invalid pattern {rule.pattern!r}: {problem}")
            if rule.deny and split_shared(rule.pattern)[0] is not None:
                # A plain deny pattern already applies to shared subscriptions (to their inner filter);
                # a per-group one could not be enforced on delivery, where the group is unknown.
                raise ValueError(
                    f"deny pattern {rule.pattern!r} is a shared subscription; write the plain filter "
                    f"{split_shared(rule.pattern)[1]!r}, which denies it in every group"
                )
            unknown = set(rule.permissions) - _PERMISSIONS
            if unknown:
                raise ValueError(
                    f"pattern {rule.pattern!r} has unknown permissions {sorted(unknown)}; "
                    "use 'read' and/or 'write'"
                )
        self.rules: tuple[Rule, ...] = tuple(rules)
        allow = tuple(rule for rule in self.rules if not rule.deny)
        # A topic name starting with '$share/' can only be matched by a '$share/...' pattern, and such
        # a pattern describes a subscription, so it never grants publishing.
        self._write: tuple[tuple[Rule, list[str]], ...] = tuple(
            (rule, rule.pattern.split("/"))
            for rule in allow
            if "write" in rule.permissions and split_shared(rule.pattern)[0] is None
        )
        self._deny_write: tuple[tuple[Rule, list[str]], ...] = tuple(
            (rule, rule.pattern.split("/"))
            for rule in self.rules
            if rule.deny and "write" in rule.permissions
        )
        self._deny_read = tuple(rule for rule in self.rules if rule.deny and "read" in rule.permissions)
        self._deny_delivery: tuple[list[str], ...] = tuple(
            rule.pattern.split("/") for rule in self._deny_read
        )
        self._read = tuple(rule for rule in allow if "read" in rule.permissions)
        self._read_plain = tuple(rule for rule in self._read if split_shared(rule.pattern)[0] is None)
        self._read_shared = tuple(rule for rule in self._read if split_shared(rule.pattern)[0] is not None)
        # Messages of a shared subscription arrive on the inner filter's topics, without the prefix.
        self._delivery: tuple[list[str], ...] = tuple(
            split_shared(rule.pattern)[1].split("/") for rule in self._read
        )

    def patterns(self, permission: Permission) -> list[str]:
        """The patterns that grant ``permission``, in allowlist order (``$share`` patterns grant no write).

        Deny entries grant nothing and are not listed.
        """
        if permission == "write":
            return [rule.pattern for rule, _ in self._write]
        if permission == "read":
            return [rule.pattern for rule in self._read]
        assert_never(permission)

    def decide(self, permission: Permission, topic: str) -> Decision:
        """May ``topic`` be published to ("write": a topic name) or subscribed to ("read": a filter)?"""
        if permission == "write":
            return self._decide_write(topic)
        if permission == "read":
            return self._decide_read(topic)
        assert_never(permission)

    def readable(self, topic: str) -> bool:
        """Whether a delivered message on the concrete ``topic`` may reach the agent.

        The last line of defence, run on every message: one connection serves every agent, and a broker
        delivers each message once to a connection for all of its overlapping subscriptions (and brokers
        differ on '$' topics), so what arrives is judged again, against every read pattern. A topic
        that a deny-read pattern matches never passes, whichever filter brought it.
        """
        levels = topic.split("/")
        if any(matches_levels(pattern_levels, levels) for pattern_levels in self._deny_delivery):
            return False
        return any(matches_levels(pattern_levels, levels) for pattern_levels in self._delivery)

    def _decide_write(self, topic: str) -> Decision:
        problem = name_problem(topic)
        if problem is not None:
            return _denied(InvalidTopic(problem))
        levels = topic.split("/")
        for rule, pattern_levels in self._deny_write:
            if matches_levels(pattern_levels, levels):
                return _denied(
                    PermissionDenied(
                        f"publishing to {topic!r} is refused by the deny pattern "
                        f"{rule.pattern!r}{_about(rule)} (deny entries take precedence over write patterns); "
                        + self._what_is_allowed("write"),
                    )
                )
        for rule, pattern_levels in self._write:
            if matches_levels(pattern_levels, levels):
                return Decision(True, f"allowed by write pattern {rule.pattern!r}", rule=rule)
        return _denied(
            PermissionDenied(
                f"publishing to {topic!r} needs a write pattern that matches it; "
                + self._what_is_allowed("write"),
            )
        )

    def _decide_read(self, topic_filter: str) -> Decision:
        problem = filter_problem(topic_filter)
        if problem is not None:
            return _denied(InvalidTopic(problem))
        group, inner = split_shared(topic_filter)
        for rule in self._deny_read:
            if covers(rule.pattern, inner):
                return _denied(
                    PermissionDenied(
                        f"reading {topic_filter!r} is refused by the deny pattern "
                        f"{rule.pattern!r}{_about(rule)}, which covers every topic of that filter (deny "
                        "entries take precedence over read patterns); " + self._what_is_allowed("read"),
                    )
                )
        decision = (
            self._decide_shared(topic_filter, group, inner)
            if group is not None
            else self._decide_plain(inner)
        )
        withheld = tuple(rule.pattern for rule in self._deny_read if overlaps(rule.pattern, inner))
        if not decision.allowed or not withheld:
            return decision
        return replace(
            decision,
            note=f"{decision.note}; messages on topics that {_deny_patterns_match(withheld)} are withheld",
            withheld=withheld,
        )

    def _decide_plain(self, topic_filter: str) -> Decision:
        for rule in self._read_plain:
            if covers(rule.pattern, topic_filter):
                return Decision(True, f"allowed by read pattern {rule.pattern!r}", rule=rule)
        partial = [rule.pattern for rule in self._read_plain if overlaps(rule.pattern, topic_filter)]
        if partial:
            explanation = (
                " (a pattern must match every topic the filter can match; "
                f"{_listing(partial)} {'matches' if len(partial) == 1 else 'match'} only some of them, "
                "so narrow the filter, e.g. to a topic or a filter that one of those patterns covers)"
            )
        elif self._read:
            explanation = " (no read pattern matches any topic of that filter)"
        else:
            explanation = ""
        return _denied(
            PermissionDenied(
                f"no single read pattern covers the filter {topic_filter!r}{explanation}; "
                + self._what_is_allowed("read"),
            )
        )

    def _decide_shared(self, topic_filter: str, group: str, inner: str) -> Decision:
        for rule in self._read_shared:
            pattern_group, pattern_inner = split_shared(rule.pattern)
            if pattern_group == group and covers(pattern_inner, inner):
                return Decision(True, f"allowed by read pattern {rule.pattern!r}", rule=rule)
        shared = [rule.pattern for rule in self._read_shared]
        if shared:
            return _denied(
                PermissionDenied(
                    f"the shared subscription {topic_filter!r} needs a read pattern "
                    f"'$share/{group}/…' (the same group) whose filter covers {inner!r}; "
                    f"shared read patterns allowed: {_listing(shared)}",
                )
            )
        if self._decide_plain(inner).allowed:
            instead = f"subscribe to {inner!r} without the $share/ prefix instead"
        else:
            instead = self._what_is_allowed("read")
        return _denied(
            PermissionDenied(
                "shared subscriptions ($share/…) need a read pattern that starts with "
                f"$share/ and this server has none, so {topic_filter!r} is refused; {instead}",
            )
        )

    def _what_is_allowed(self, permission: Permission) -> str:
        """The end of a refusal: the patterns that would grant ``permission``, or that none do."""
        allowed = self.patterns(permission)
        if allowed:
            denied = [rule.pattern for rule in self.rules if rule.deny and permission in rule.permissions]
            except_denied = f" (except topics that {_deny_patterns_match(denied)})" if denied else ""
            return f"{permission} patterns allowed: {_listing(allowed)}{except_denied}"
        if self.scope is not None:
            return f"{self.scope}, which allows no {'publishing' if permission == 'write' else 'reading'}"
        if permission == "write":
            return "this server allows no publishing (the allowlist has no write patterns)"
        return "this server allows no subscribing or reading (the allowlist has no read patterns)"


def _about(rule: Rule) -> str:
    """What a deny entry fences off, when its description says: a refusal should say why."""
    return f" ({rule.description})" if rule.description else ""


def _listing(patterns: Sequence[str]) -> str:
    """Patterns quoted and comma-separated, as they would be typed."""
    return ", ".join(repr(pattern) for pattern in patterns)


def _deny_patterns_match(patterns: Sequence[str]) -> str:
    """ "the deny pattern 'a' matches" or "the deny patterns 'a', 'b' match", to end a clause."""
    if len(patterns) == 1:
        return f"the deny pattern {patterns[0]!r} matches"
    return f"the deny patterns {_listing(patterns)} match"
