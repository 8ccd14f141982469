"""JSON Pointers (RFC 6901), which name one value inside a JSON payload ("/temperature", "/a/0/b"): the
`field` of watch conditions and of history buckets."""

from __future__ import annotations

import re

from mcpmqtt.errors import InvalidArgument

Pointer = tuple[str, ...]
"""A parsed JSON Pointer: its reference tokens, unescaped; () is the whole document."""

_BAD_ESCAPE = re.compile(r"~(?![01])")
_INDEX = re.compile(r"0|[1-9][0-9]*")

MISSING: object = object()
"""What `resolve` returns when the document has no value at the pointer."""


def parse_pointer(text: str) -> Pointer:
    """The tokens of a JSON Pointer ("/temperature", "/sensors/0/value"); InvalidArgument if malformed."""
    if text == "":
        return ()
    if not text.startswith("/"):
        raise InvalidArgument(
            f"field {text!r} is not a JSON Pointer (RFC 6901): it starts with '/', as in \"/temperature\" "
            'or "/sensors/0/value"; leave field out for a payload that is a plain number'
        )
    tokens = text[1:].split("/")
    for token in tokens:
        if _BAD_ESCAPE.search(token):
            raise InvalidArgument(
                f"field {text!r} is not a JSON Pointer (RFC 6901): '~' must be followed by 0 or 1 "
                "(write ~0 for '~' and ~1 for '/' inside a key)"
            )
    # RFC 6901 §4: ~1 first, then ~0, so that "~01" becomes "~1" and not "/".
    return tuple(token.replace("~1", "/").replace("~0", "~") for token in tokens)


def resolve(document: object, pointer: Pointer) -> object:
    """The value at `pointer` in decoded JSON, or `MISSING` if there is none."""
    for token in pointer:
        if isinstance(document, dict):
            document = document.get(token, MISSING)
        elif isinstance(document, list) and _INDEX.fullmatch(token) and int(token) < len(document):
            document = document[int(token)]
        else:
            return MISSING
        if document is MISSING:
            return MISSING
    return document
