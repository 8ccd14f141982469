"""Per-pattern publish guardrails: payload size, a JSON Schema, a rate limit, and a person's confirmation.

The allowlist says whether an agent may publish to a topic at all; guardrails bound what it may send
there and how often, because a model that is allowed to write to ``actuators/#`` can still send a
malformed command, or the same command a thousand times. Every write entry of the config whose
pattern matches the topic contributes its guardrails, and all of them must pass: an operator who
adds a narrow entry with a stricter limit gets that limit, whatever broader entries say.

The same checks apply to ``mqtt_query``'s request, which is a publish. Whether a person has to
confirm is decided here; asking is the server's business (MCP elicitation, in confirmation.py).

Pure logic: topic matching, JSON, jsonschema and a clock; no I/O.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urljoin

from mcpmqtt.errors import InvalidArgument, McpMqttError, PayloadTooLarge, PermissionDenied
from mcpmqtt.rules.topics import matches_levels

if TYPE_CHECKING:  # jsonschema is imported when a payload_schema is used, not at start-up
    from jsonschema.protocols import Validator
    from referencing import Registry

RATE_UNITS: Mapping[str, int] = {"second": 1, "minute": 60, "hour": 3600, "day": 86_400}
_RATE = re.compile(r"\s*([0-9]+)\s*/\s*(second|minute|hour|day)\s*")
_SHOWN_CHARS = 200
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})
MAX_JSON_DEPTH = 64
"""Arrays and objects nested deeper than this are refused on topics with a payload_schema."""


@dataclass(frozen=True)
class Rate:
    """A rate limit: at most ``count`` publishes in any window of ``seconds``."""

    count: int
    seconds: int
    text: str


def parse_rate(text: str) -> Rate:
    """``"10/minute"`` → Rate(10, 60); raises ValueError saying what is accepted."""
    found = _RATE.fullmatch(text)
    if found is None or int(found.group(1)) < 1:
        raise ValueError(
            f"{text!r} is not a rate limit; write a whole number of publishes (1 or more), '/', and "
            f"one of {', '.join(RATE_UNITS)}, as in '10/minute'"
        )
    count, unit = int(found.group(1)), found.group(2)
    return Rate(count, RATE_UNITS[unit], f"{count}/{unit}")


def schema_problem(schema: dict[str, Any]) -> str | None:
    """Why ``schema`` is not a usable JSON Schema; None if it is.

    Checked when the config is loaded, so that a typo in a schema stops the server instead of
    refusing every publish later. References must stay inside the schema: nothing is fetched.
    """
    from jsonschema import Draft202012Validator, SchemaError
    from jsonschema.validators import validator_for
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012, specification_with

    try:
        validator_for(schema, default=Draft202012Validator).check_schema(schema)
    except SchemaError as exc:
        return f"not a valid JSON Schema: {exc.message} (at {exc.json_path} in the schema)"
    spec = specification_with(str(schema.get("$schema", "")), default=DRAFT202012)
    root = spec.create_resource(schema)
    uri = root.id() or "urn:mcpmqtt:payload_schema"
    registry: Registry[Any] = Registry().with_resource(uri, root).crawl()
    try:
        _check_refs(schema, registry, uri)
    except _BadRef as exc:
        return str(exc)
    return None


class _BadRef(Exception):
    """A ``$ref`` that cannot be followed; the message says which and why."""


def _check_refs(node: Any, registry: Registry[Any], base_uri: str) -> None:
    """Resolve every ``$ref`` in a schema, however deep, as a validator would (raises _BadRef).

    Keywords whose values are data, not schemas (``const``, ``enum``, ``default``, ``examples``), are
    skipped: a ``"$ref"`` key in them is just data.
    """
    from referencing.exceptions import Unresolvable

    if isinstance(node, dict):
        if isinstance(node.get("$id"), str):
            base_uri = urljoin(base_uri, node["$id"])  # relative references start from here below
        ref = node.get("$ref")
        if isinstance(ref, str):
            if not ref.startswith("#"):
                raise _BadRef(
                    f"the $ref {ref!r} points outside the schema; remote schemas are never fetched, so "
                    "put the definition under $defs and refer to it as '#/$defs/<name>'"
                )
            try:
                registry.resolver(base_uri=base_uri).lookup(ref)
            except Unresolvable:
                raise _BadRef(f"the $ref {ref!r} cannot be resolved within the schema") from None
        for key, value in node.items():
            if key not in _DATA_KEYWORDS:
                _check_refs(value, registry, base_uri)
    elif isinstance(node, list):
        for item in node:
            _check_refs(item, registry, base_uri)


def _validator(schema: dict[str, Any]) -> Validator:
    from jsonschema import Draft202012Validator
    from jsonschema.validators import validator_for

    cls: type[Validator] = validator_for(schema, default=Draft202012Validator)
    return cls(schema)


@dataclass(frozen=True)
class Guardrail:
    """The guardrails of one config entry; every field is optional."""

    pattern: str
    max_payload_bytes: int | None = None
    payload_schema: dict[str, Any] | None = None
    rate_limit: Rate | None = None
    confirm: bool | Literal["console"] = False
    """True: a person confirms, at the MCP client or in the console; "console": in the console only."""

    @property
    def active(self) -> bool:
        """Whether this entry guards anything at all."""
        return (
            self.max_payload_bytes is not None
            or self.payload_schema is not None
            or self.rate_limit is not None
            or self.confirm is not False
        )


@dataclass
class _Entry:
    """A guardrail ready to apply: its pattern split once, its schema compiled, its window of publishes."""

    guardrail: Guardrail
    levels: list[str]
    validator: Validator | None
    recent: deque[float] = field(default_factory=deque)

    def wait(self, now: float) -> float:
        """Seconds until this entry's rate limit lets one more publish through; 0 if it does now."""
        rate = self.guardrail.rate_limit
        if rate is None:
            return 0.0
        while self.recent and self.recent[0] <= now - rate.seconds:
            self.recent.popleft()
        if len(self.recent) < rate.count:
            return 0.0
        return self.recent[0] + rate.seconds - now


class Guardrails:
    """The guardrails of every write entry, and the publishes each has let through lately.

    One instance per process: rate limits count every agent's publishes together, since they protect
    the devices, not the agents' fairness.
    """

    def __init__(self, guardrails: Sequence[Guardrail], clock: Callable[[], float] = time.monotonic) -> None:
        self._entries = [
            _Entry(g, g.pattern.split("/"), _validator(g.payload_schema) if g.payload_schema else None)
            for g in guardrails
            if g.active
        ]
        self._clock = clock
        self.confirms = any(entry.guardrail.confirm for entry in self._entries)
        """Whether any entry asks for a person's confirmation (most configs: none, and nothing to look up)."""

    def _applying(self, topic: str) -> list[_Entry]:
        levels = topic.split("/")
        return [entry for entry in self._entries if matches_levels(entry.levels, levels)]

    def check(self, topic: str, payload: bytes) -> McpMqttError | None:
        """Why publishing ``payload`` to ``topic`` is refused now, or None.

        Size, schema and rate; the rate is only looked at here, and counted by ``take``.
        """
        applying = self._applying(topic)
        for entry in applying:
            limit = entry.guardrail.max_payload_bytes
            if limit is not None and len(payload) > limit:
                return PayloadTooLarge(
                    f"the payload is {len(payload):,} bytes; publishing to {topic!r} "
                    f"allows at most {limit:,} bytes (max_payload_bytes of the pattern "
                    f"{entry.guardrail.pattern!r})"
                )
        for entry in applying:
            if entry.validator is not None:
                problem = _schema_violation(entry, topic, payload)
                if problem is not None:
                    return problem
        return self._rate_problem(applying, self._clock())

    def confirming_patterns(self, topic: str) -> list[str]:
        """The patterns with ``confirm`` that apply to ``topic``: a person must agree to each publish."""
        applying = self._applying(topic)
        return [entry.guardrail.pattern for entry in applying if entry.guardrail.confirm is not False]

    def console_only(self, topic: str) -> bool:
        """Whether an entry applying to ``topic`` says ``confirm: "console"`` (no elicitation will do)."""
        return any(entry.guardrail.confirm == "console" for entry in self._applying(topic))

    def take(self, topic: str) -> PermissionDenied | None:
        """Count one publish to ``topic`` against every rate limit that applies, or say why not.

        Either all applying limits count it or none does, so a refused publish costs nothing.
        """
        applying = self._applying(topic)
        now = self._clock()
        problem = self._rate_problem(applying, now)
        if problem is None:
            for entry in applying:
                if entry.guardrail.rate_limit is not None:
                    entry.recent.append(now)
        return problem

    def rate_limits(self, topic: str) -> list[tuple[str, Rate]]:
        """The (pattern, rate) of every rate limit that applies to ``topic``, for windows kept elsewhere."""
        return [
            (entry.guardrail.pattern, entry.guardrail.rate_limit)
            for entry in self._applying(topic)
            if entry.guardrail.rate_limit is not None
        ]

    @staticmethod
    def _rate_problem(applying: list[_Entry], now: float) -> PermissionDenied | None:
        for entry in applying:
            wait = entry.wait(now)
            if wait > 0:
                rate = entry.guardrail.rate_limit
                assert rate is not None  # only a rate limit makes anyone wait
                return rate_refusal(entry.guardrail.pattern, rate, wait)
        return None


def rate_refusal(pattern: str, rate: Rate, wait: float) -> PermissionDenied:
    """The refusal of a publish that the rate limit of ``pattern`` stops for ``wait`` more seconds."""
    return PermissionDenied(
        f"rate limit {rate.text} for {pattern!r} reached; try again in {math.ceil(wait)} s"
    )


def _schema_violation(entry: _Entry, topic: str, payload: bytes) -> McpMqttError | None:
    """Why ``payload`` fails the entry's schema, or None if it satisfies it."""
    from jsonschema.exceptions import best_match
    from referencing.exceptions import Unresolvable

    assert entry.validator is not None
    pattern = entry.guardrail.pattern
    needs = f"publishing to {topic!r} needs a JSON payload (the pattern {pattern!r} has a payload_schema)"
    try:
        document = _parse_json(payload.decode("utf-8"))
    except UnicodeDecodeError:
        return InvalidArgument(f"{needs}, and the payload is not UTF-8 text")
    except _Unchecked as exc:
        return InvalidArgument(f"{needs}, and {exc}")
    except ValueError as exc:
        return InvalidArgument(f"{needs}, and the payload is not JSON: {exc}")
    try:
        error = best_match(entry.validator.iter_errors(document))
    except Unresolvable as exc:  # missed at load, e.g. under a property named "enum"
        return PermissionDenied(
            f"the payload_schema of the pattern {pattern!r} cannot be applied "
            f"({exc}); ask the operator to fix the config"
        )
    if error is None:
        return None
    return InvalidArgument(
        f"the payload does not satisfy the payload_schema of the pattern {pattern!r}: "
        f"at {error.json_path}: {_shorten(error.message)}"
    )


class _Unchecked(ValueError):
    """JSON that could be parsed but not checked faithfully; the message ends the refusal."""


def _parse_json(text: str) -> Any:
    """The payload as the schema sees it, refusing what it could not see as the device does.

    Duplicate keys: parsers disagree on which one wins (Python's takes the last, many take the
    first), so a payload with ``{"brightness": 999, "brightness": 10}`` would be checked as 10 and
    perhaps applied as 999. Deep nesting: the parser and the validator recurse, and fail without a
    useful word past about a thousand levels; no device payload needs more than MAX_JSON_DEPTH.
    """
    too_deep = f"the payload nests arrays and objects deeper than {MAX_JSON_DEPTH} levels"
    try:
        document = json.loads(text, parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise _Unchecked(f"{too_deep}; a payload_schema checks flatter JSON only") from None
    if _deeper_than(document, MAX_JSON_DEPTH):
        raise _Unchecked(f"{too_deep}; a payload_schema checks flatter JSON only")
    return document


def _deeper_than(document: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` levels deep (walked without recursion)."""
    pending: list[tuple[Any, int]] = [(document, 0)]
    while pending:
        node, depth = pending.pop()
        if isinstance(node, dict | list):
            if depth == limit:
                return True
            children = node.values() if isinstance(node, dict) else node
            pending.extend((child, depth + 1) for child in children)
    return False


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise _Unchecked(
                f"the key {key!r} appears twice in one object; JSON parsers disagree on which one "
                "counts, so send each key once"
            )
        document[key] = value
    return document


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _shorten(text: str) -> str:
    """A schema message quotes the offending value, which may be the whole payload."""
    return text if len(text) <= _SHOWN_CHARS else f"{text[:_SHOWN_CHARS]}…"
