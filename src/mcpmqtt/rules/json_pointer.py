"""JSON Pointers (RFC 6901), which name one value inside a JSON payload ("/temperature", "/a/0/b")."""

from __future__ import annotations

import re
from typing import Any

from mcpmqtt.errors import InvalidArgument

_BAD_ESCAPE = re.compile(r"~(?![01])")
_INDEX = re.compile(r"0|[1-9][0-9]*")

MISSING: Any = object()
"""What `resolve` returns when the document has no value at the pointer."""


def parse_pointer(text: str) -> tuple[str, ...]:
    """The reference tokens of a pointer; InvalidArgument when it is malformed.

    "" is the whole document. Every other pointer starts with "/"; "~0" stands for "~" and "~1" for "/".
    """
    if text == "":
        return ()
    if not text.startswith("/"):
        raise InvalidArgument(
            f"{text!r} is not a JSON Pointer: it must start with '/', e.g. '/temperature' or '/state/0'"
        )
    if _BAD_ESCAPE.search(text):
        raise InvalidArgument(
            f"{text!r} is not a JSON Pointer: '~' must be followed by 0 (for '~') or 1 (for '/')"
        )
    return tuple(token.replace("~1", "/").replace("~0", "~") for token in text[1:].split("/"))


def resolve(document: Any, tokens: tuple[str, ...]) -> Any:
    """The value at the pointer's tokens, or MISSING when the document has none there."""
    value = document
    for token in tokens:
        if isinstance(value, dict):
            if token not in value:
                return MISSING
            value = value[token]
        elif isinstance(value, list) and _INDEX.fullmatch(token) and int(token) < len(value):
            value = value[int(token)]
        else:
            return MISSING
    return value
