"""Command payloads as JSON Schemas: built from what devices announce, combined per topic, put in words,
and checked against a payload.

An MQTT payload is bytes; a JSON Schema describes JSON values. Every schema here describes the payload
TEXT as a JSON string, in standard JSON Schema 2020-12 terms:

* plain text payloads (`ON`, `true`, `auto`) are a string with `enum`, `pattern` or length limits;
* payloads that are JSON (`{"state": "ON"}`, and numbers written as text, `42`) are a string with
  `contentMediaType: application/json` and a `contentSchema` that the parsed payload must satisfy.

JSON Schema treats content keywords as annotations; `payload_problem` asserts them, which is what a
device that parses the payload does too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

JSON = "application/json"


def text_choices(values: Sequence[str]) -> dict[str, Any]:
    """Exactly one of these texts."""
    return {"type": "string", "enum": list(dict.fromkeys(values))}


def json_content(content: dict[str, Any]) -> dict[str, Any]:
    """A payload that is JSON and satisfies `content` once parsed."""
    return {"type": "string", "contentMediaType": JSON, "contentSchema": content}


def number_range(
    minimum: float | None, maximum: float | None, *, integer: bool = False, step: float | None = None
) -> dict[str, Any]:
    """The content schema of a number in [minimum, maximum] (either end open when None)."""
    schema: dict[str, Any] = {"type": "integer" if integer else "number"}
    if minimum is not None:
        schema["minimum"] = minimum
    if maximum is not None:
        schema["maximum"] = maximum
    if step is not None and step > 0 and step != 1:
        schema["multipleOf"] = step
    return schema


def number_text(
    minimum: float | None, maximum: float | None, *, integer: bool = False, step: float | None = None
) -> dict[str, Any]:
    """A number written as text, e.g. `42` or `21.5`, in [minimum, maximum]."""
    return json_content(number_range(minimum, maximum, integer=integer, step=step))


def combine(schemas: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The schema of a topic several entities command (zigbee2mqtt's `<device>/set`).

    Unknown (None) wins: a topic is constrained only when every entity on it is. JSON object payloads
    merge into one object whose keys are those of every entity, any of them, at least one; anything
    else becomes a choice between the entities' schemas.
    """
    if not schemas or any(schema is None for schema in schemas):
        return None
    unique = list({json.dumps(schema, sort_keys=True): schema for schema in schemas if schema}.values())
    if len(unique) == 1:
        return unique[0]
    contents = [schema.get("contentSchema") for schema in unique if schema.get("contentMediaType") == JSON]
    if len(contents) == len(unique) and all(_is_object(content) for content in contents):
        properties: dict[str, Any] = {}
        for content in contents:
            properties.update(content["properties"])  # type: ignore[index]
        return json_content(
            {"type": "object", "properties": properties, "minProperties": 1, "additionalProperties": False}
        )
    return {"anyOf": unique}


def _is_object(content: object) -> bool:
    return isinstance(content, dict) and content.get("type") == "object" and "properties" in content


def summary(schema: dict[str, Any]) -> str:
    """The payloads a schema allows, in words, for an error message or a description."""
    if "anyOf" in schema:
        return " or ".join(summary(part) for part in schema["anyOf"])
    if schema.get("contentMediaType") == JSON:
        return _content_summary(schema.get("contentSchema", {}))
    if "enum" in schema:
        return _one_of(schema["enum"])
    if "pattern" in schema:
        return f"text matching {schema['pattern']}"
    limits = [f"at least {schema['minLength']}" if "minLength" in schema else ""]
    limits.append(f"at most {schema['maxLength']}" if "maxLength" in schema else "")
    said = " and ".join(part for part in limits if part)
    return f"text of {said} characters" if said else "any text"


def _one_of(values: Sequence[object]) -> str:
    shown = [json.dumps(value, ensure_ascii=False) for value in values]
    if len(shown) == 1:
        return shown[0]
    return f"one of {', '.join(shown)}"


def _content_summary(content: dict[str, Any]) -> str:
    if "enum" in content:
        return _one_of(content["enum"])
    if "anyOf" in content:
        return " or ".join(_content_summary(part) for part in content["anyOf"])
    kind = content.get("type")
    if kind in ("integer", "number"):
        word = "an integer" if kind == "integer" else "a number"
        low, high = content.get("minimum"), content.get("maximum")
        if low is not None and high is not None:
            return f"{word} from {low:g} to {high:g}"
        if low is not None:
            return f"{word} of at least {low:g}"
        if high is not None:
            return f"{word} of at most {high:g}"
        return word
    if kind == "object":
        fields = [
            f'"{key}" ({_content_summary(value)})' for key, value in content.get("properties", {}).items()
        ]
        return "a JSON object with " + ("any of " + ", ".join(fields) if fields else "any keys")
    if kind == "array":
        return "a JSON array"
    if kind == "boolean":
        return "true or false"
    if kind == "string":
        return "a JSON string"
    return "JSON"


def payload_problem(schema: dict[str, Any], payload: bytes) -> str | None:
    """Why `payload` does not fit `schema`, in words; None when it fits."""
    from jsonschema import Draft202012Validator  # only when enforcement is on and a topic is guarded

    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return "is not UTF-8 text"
    if "anyOf" in schema:
        problems = [payload_problem(part, payload) for part in schema["anyOf"]]
        return None if any(problem is None for problem in problems) else "fits none of the allowed forms"
    outer = {key: value for key, value in schema.items() if key not in ("contentMediaType", "contentSchema")}
    error = next(iter(Draft202012Validator(outer).iter_errors(text)), None)
    if error is not None:
        return f"{json.dumps(text, ensure_ascii=False)[:80]} is not {summary(schema)}"
    if schema.get("contentMediaType") != JSON:
        return None
    try:
        document = json.loads(text)
    except ValueError:
        return "is not JSON"
    error = next(iter(Draft202012Validator(schema.get("contentSchema", {})).iter_errors(document)), None)
    if error is None:
        return None
    where = "/".join(str(part) for part in error.absolute_path)
    return f"{'at /' + where + ' ' if where else ''}{error.message[:160]}"
