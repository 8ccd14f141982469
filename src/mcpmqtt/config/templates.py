"""Prompt templates as operators write them: `{name}` placeholders, and the built-in prompts' names.

Pure, and apart from prompts.py, so that loading a config does not import the MCP SDK (which costs
most of a second): `check-config` and `hash-key` start fast.
"""

import re
from collections.abc import Mapping

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
"""``{name}`` in a template. Other braces are text, so a template can show a JSON payload as is."""

TITLES = {
    "explore_topics": "Explore the allowed MQTT topics",
    "read_sensors": "Read and summarise sensors",
    "device_request": "Send one request to a device",
}
BUILTIN_PROMPTS = frozenset(TITLES)


def placeholders(template: str) -> list[str]:
    """The argument names a template uses, in order of first use."""
    return list(dict.fromkeys(PLACEHOLDER.findall(template)))


def fill(template: str, values: Mapping[str, str]) -> str:
    """The template with every ``{name}`` replaced by its value (all names known: checked at load)."""
    return PLACEHOLDER.sub(lambda found: values[found.group(1)], template)
