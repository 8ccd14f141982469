"""The JSON Schema of the config file, generated from the pydantic models in `mcpmqtt.config`.

    python -m mcpmqtt.config.schema            # print it
    python -m mcpmqtt.config.schema --write    # write schema/config.schema.json (from the repo root)

The committed `schema/config.schema.json` is what editors use to complete and check config files;
`tests/test_config_schema.py` fails when it differs from a fresh generation, so whoever changes the
models regenerates it with the second command.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mcpmqtt.config import Config, LoggingSettings, TopicEntry

SCHEMA_PATH = Path("schema") / "config.schema.json"
DIALECT = "https://json-schema.org/draft/2020-12/schema"  # the dialect pydantic generates
SCHEMA_ID = "urn:mcpmqtt:config"
TITLE = "mcpmqtt config file"
DESCRIPTION = (
    "The config file of mcpmqtt, an MCP server that gives LLM agents allowlisted access to MQTT. "
    "Every key is described in docs/configuration.md."
)
REGENERATE = "python -m mcpmqtt.config.schema --write"

JsonObject = dict[str, Any]


def _allow_null(field: JsonObject) -> None:
    if any(option.get("type") == "null" for option in field.get("anyOf", [])):
        return  # the model says so already
    choice = {key: field.pop(key) for key in ("type", "enum", "format") if key in field}
    field["anyOf"] = [choice, {"type": "null"}]


def _any_case(field: JsonObject) -> None:
    if "enum" not in field:
        raise ValueError("expected a list of choices (enum)")
    choices: list[str] = field.pop("enum")
    # ECMA-262 regexes (the ones JSON Schema uses) have no case-insensitive flag: spell each letter out.
    spellings = (
        "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in value)
        for value in choices
    )
    # The enum stays for editors to offer as completions; the pattern admits the other spellings.
    field["anyOf"] = [{"enum": choices}, {"pattern": f"^(?:{'|'.join(spellings)})$"}]


# What the loader accepts beyond the models' types, through `mode="before"` validators that a schema
# cannot see. Both are documented in docs/configuration.md, and tests/test_config_schema.py checks
# that the loader really accepts them. Without these, an editor would flag valid configs (the original
# mcpMQTT format allows `"description": null`).
_LENIENCY: list[tuple[type[BaseModel], str, Callable[[JsonObject], None]]] = [
    (TopicEntry, "description", _allow_null),
    (LoggingSettings, "level", _any_case),
]


def _check_every_model_forbids_extras(schema: JsonObject) -> None:
    # The models, not every object: a free-form field such as a payload's JSON Schema is open on purpose.
    for name, model in [("Config", schema), *schema["$defs"].items()]:
        if "properties" in model and model.get("additionalProperties") is not False:
            raise ValueError(f"{name} allows unknown keys, which the loader refuses")


def config_schema() -> JsonObject:
    """The JSON Schema (draft 2020-12) of the config file, as the loader reads it."""
    generated = Config.model_json_schema(mode="validation")
    definitions: dict[str, JsonObject] = generated["$defs"]
    for model, name, widen in _LENIENCY:
        try:
            widen(definitions[model.__name__]["properties"][name])
        except (KeyError, ValueError) as exc:
            raise ValueError(f"{model.__name__}.{name} changed ({exc}): update _LENIENCY") from None
    _check_every_model_forbids_extras(generated)
    for generic in ("title", "description"):  # "Config", "The whole config file.": ours say more
        generated.pop(generic, None)
    return {"$schema": DIALECT, "$id": SCHEMA_ID, "title": TITLE, "description": DESCRIPTION, **generated}


def render() -> str:
    """The schema as the committed file holds it: two-space indents, UTF-8, a final newline."""
    return json.dumps(config_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print the schema, or write it to schema/config.schema.json with --write."""
    parser = argparse.ArgumentParser(
        prog="python -m mcpmqtt.config.schema",
        description="Print the JSON Schema of the mcpmqtt config file, generated from the models.",
    )
    parser.add_argument(
        "--write",
        action="store_true",
        help=f"write it to {SCHEMA_PATH} under the current directory (run from the repository root)",
    )
    args = parser.parse_args(argv)
    text = render()
    if not args.write:
        sys.stdout.write(text)
        return 0
    if not SCHEMA_PATH.parent.is_dir():
        print(
            f"{parser.prog}: no {SCHEMA_PATH.parent}/ folder here; run this from the repository root",
            file=sys.stderr,
        )
        return 2
    SCHEMA_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {SCHEMA_PATH}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
