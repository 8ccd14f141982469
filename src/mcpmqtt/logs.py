"""Log records that say which request they belong to, as text or as one JSON object per line.

Every HTTP request gets an id (the caller's `X-Request-Id` if it is a plain token, else a new one),
held in a context variable while the request is served. The MCP SDK carries context variables from
the HTTP request into the tool call it delivers, so the lines a tool logs carry the id too, and the
response header `X-Request-Id` lets a caller quote it. Outside a request the id is "-".

Log lines carry values from outside (Host and Origin headers, session ids, paths, topics, key names),
so no value may forge or split a record, nor drive a terminal that shows the log: both formats write
every character that could end a line (for any reader: `str.splitlines` also splits at U+0085, U+2028,
U+001C...), move a cursor (ESC) or not be encoded (a lone surrogate) as an escape such as `\x1b` or
`\u2028`. This is done here, once, for every logger (the SDK's and uvicorn's log through the same
handler). A text record is one line; a traceback's continuation lines start with spaces, so a line
at column 0 always begins a record. A JSON record is always one line.

At DEBUG, some of the SDK's loggers write whole MCP messages, tool arguments and payloads included;
their DEBUG records are dropped (see `_BODY_LOGGERS`), so that no level logs payloads.
"""

from __future__ import annotations

import json
import logging
import re
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

REQUEST_ID: ContextVar[str] = ContextVar("mcpmqtt_request_id", default="-")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
LogFormat = Literal["text", "json"]
# Every character that ends a line for some reader, moves a terminal's cursor, or cannot be encoded.
_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
# JSON escapes C0 itself; the rest of _UNSAFE it writes raw when ensure_ascii is off.
_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r"}
# Loggers of libraries that put whole MCP messages (tool arguments, payloads) in DEBUG records.
_BODY_LOGGERS = ("mcp.server.sse", "sse_starlette", "mcp.server.runner", "mcp.shared.jsonrpc_dispatcher")
_CONTINUATION = "    "


def escape(text: str) -> str:
    """`text` with the characters that could split a log line or drive a terminal written as escapes."""
    return _UNSAFE.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _indented(text: str) -> str:
    """A traceback or stack as continuation lines: each escaped, each starting with spaces."""
    return "\n".join(_CONTINUATION + escape(line) for line in text.split("\n"))


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record that passes the handler it is attached to."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class NoBodiesFilter(logging.Filter):
    """Drops the DEBUG records of the loggers that write whole MCP messages (see `_BODY_LOGGERS`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.INFO:
            return True
        return not any(record.name == name or record.name.startswith(name + ".") for name in _BODY_LOGGERS)


class TextFormatter(logging.Formatter):
    """`TEXT_FORMAT`, one line per record, with outside values escaped (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indented(super().formatStack(stack_info))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, request_id, message, and exc if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", REQUEST_ID.get()),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return _UNSAFE_IN_JSON.sub(_json_escaped, json.dumps(entry, ensure_ascii=False))


def _json_escaped(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def configure(handler: logging.Handler, log_format: LogFormat) -> logging.Handler:
    """Give `handler` the request id, the filter of message bodies and the chosen format."""
    handler.addFilter(RequestIdFilter())
    handler.addFilter(NoBodiesFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    return handler
