"""Watch conditions: which messages on a watched filter are worth waking an agent for.

A condition is `{field?, op, value?}`. `field` is a JSON Pointer into a JSON payload; without it the
condition looks at the payload itself, as text, which counts as a number when it reads as one
("21.5"). Numbers compare as numbers wherever both sides read as numbers, so `== 20` matches "20.0".
A message without the field (or not JSON, when a field is named) never matches and never moves the
baseline of `changed`.

`changed` compares each topic's value with the one before it on the same topic; the first value seen
on a topic is its baseline, not a change, so a watch made on a status topic does not fire on the
status it finds. Pure: no I/O, so every rule here has a unit test.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from mcpmqtt.errors import InvalidArgument
from mcpmqtt.rules.json_pointer import MISSING, parse_pointer, resolve

Op = Literal[">", ">=", "<", "<=", "==", "!=", "changed", "contains"]
OPS: tuple[str, ...] = get_args(Op)
Scalar = str | float | int | bool

_ORDERING = {">", ">=", "<", "<="}
_NUMBER = re.compile(r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*")
_SHORT = 256  # longer values are remembered for `changed` by a digest, not kept whole
_MAX_BASELINES = 10_000  # topics whose last value `changed` remembers; the oldest is forgotten first


def as_number(value: Any) -> float | None:
    """`value` as a finite float if it is a number or reads as one; booleans are not numbers."""
    if isinstance(value, bool):
        return None
    if not (isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value))):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float (JSON allows any number of digits)
        return None
    return number if math.isfinite(number) else None


def _equal(a: Any, b: Any) -> bool:
    na, nb = as_number(a), as_number(b)
    if na is not None and nb is not None:
        return na == nb
    if isinstance(a, bool) or isinstance(b, bool):  # True == 1 in Python, not in JSON
        return a is b
    return bool(a == b)


def _fingerprint(value: Any) -> Any:
    """What `changed` remembers of a value: small, and equal exactly when `_equal` would say so."""
    if (number := as_number(value)) is not None:
        return number
    if isinstance(value, bool) or value is None:
        return ("literal", value)
    if isinstance(value, str | bytes | bytearray) and len(value) <= _SHORT:
        return (type(value).__name__, bytes(value) if not isinstance(value, str) else value)
    data = value.encode() if isinstance(value, str) else value
    if not isinstance(data, bytes | bytearray):
        data = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    return ("digest", hashlib.blake2b(data, digest_size=16).digest())


@dataclass(frozen=True)
class Condition:
    """A checked condition; make it with `parse_condition`."""

    op: Op
    field: str | None = None
    value: Scalar | None = None
    tokens: tuple[str, ...] | None = None
    """The field's parsed pointer; None for the payload itself."""

    def describe(self) -> str:
        """The condition as a person would write it, e.g. '/temperature > 25'."""
        subject = self.field if self.field is not None else "payload"
        if self.op == "changed":
            return f"{subject} changed"
        return f"{subject} {self.op} {json.dumps(self.value)}"

    def value_of(self, payload: bytes | bytearray) -> Any:
        """The value the condition looks at in a payload, or MISSING."""
        if self.tokens is None:
            try:
                return bytes(payload).decode("utf-8")
            except UnicodeDecodeError:
                return bytes(payload)
        try:
            document = json.loads(payload)
        except (ValueError, RecursionError):
            return MISSING
        return resolve(document, self.tokens)

    def holds(self, value: Any) -> bool:
        """Whether a value (from `value_of`) satisfies the condition; `changed` is the watch's to judge."""
        if value is MISSING:
            return False
        op = self.op
        if op in _ORDERING:
            number, limit = as_number(value), as_number(self.value)
            if number is None or limit is None:
                return False
            if op == ">":
                return number > limit
            if op == ">=":
                return number >= limit
            if op == "<":
                return number < limit
            return number <= limit
        if op == "==":
            return _equal(value, self.value)
        if op == "!=":
            return not _equal(value, self.value)
        if op == "contains":
            if isinstance(value, str):
                return str(self.value) in value
            if isinstance(value, list):
                return any(_equal(item, self.value) for item in value)
            return False
        return True  # "changed": every present value is a candidate


def parse_condition(op: str, field: str | None = None, value: Any = None) -> Condition:
    """A checked condition, or InvalidArgument saying what is wrong and what would be right."""
    if op not in OPS:
        raise InvalidArgument(f"unknown condition op {op!r}; use one of {', '.join(OPS)}")
    tokens = parse_pointer(field) if field is not None else None
    if op == "changed":
        if value is not None:
            raise InvalidArgument("condition op 'changed' takes no value; leave value out")
    elif value is None:
        raise InvalidArgument(f"condition op {op!r} needs a value to compare with")
    elif isinstance(value, dict | list):
        raise InvalidArgument(
            f"condition value must be a number, text or true/false, not {type(value).__name__}"
        )
    elif op in _ORDERING and as_number(value) is None:
        raise InvalidArgument(f"condition op {op!r} compares numbers; value must be a number, not {value!r}")
    elif op == "contains" and not isinstance(value, str):
        raise InvalidArgument(
            f"condition op 'contains' looks for text; value must be a string, not {value!r}"
        )
    return Condition(op, field, value, tokens)  # type: ignore[arg-type]  # op is one of OPS


@dataclass
class Evaluator:
    """Judges each message of one watch: the condition, and for `changed` each topic's last value."""

    condition: Condition | None
    _last: OrderedDict[str, Any] = field(default_factory=OrderedDict)

    def baseline(self, topic: str, payload: bytes | bytearray) -> None:
        """A topic's current value (a retained message replayed at subscribe): remembered, never a match."""
        if self.condition is not None and self.condition.op == "changed":
            value = self.condition.value_of(payload)
            if value is not MISSING:
                self._remember(topic, _fingerprint(value))

    def matches(self, topic: str, payload: bytes | bytearray) -> bool:
        """Whether a new message on `topic` satisfies the condition (no condition: every message does)."""
        condition = self.condition
        if condition is None:
            return True
        value = condition.value_of(payload)
        if condition.op != "changed":
            return condition.holds(value)
        if value is MISSING:
            return False
        fingerprint = _fingerprint(value)
        before = self._last.get(topic, MISSING)
        self._remember(topic, fingerprint)
        return before is not MISSING and before != fingerprint

    def _remember(self, topic: str, fingerprint: Any) -> None:
        self._last[topic] = fingerprint
        self._last.move_to_end(topic)
        if len(self._last) > _MAX_BASELINES:
            self._last.popitem(last=False)
