"""Log records that say which request they belong to, as text or as one JSON object per line.

Every HTTP request gets an id (the caller's `X-Request-Id` if it is a plain token, else a new one),
held in a context variable while the request is served. The MCP SDK carries context variables from
the HTTP request into the tool call it delivers, so the lines a tool logs carry the id too, and the
response header `X-Request-Id` lets a caller quote it. Outside a request the id is "-".
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Literal

REQUEST_ID: ContextVar[str] = ContextVar("mcpmqtt_request_id", default="-")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
LogFormat = Literal["text", "json"]


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record that passes the handler it is attached to."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


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
        return json.dumps(entry, ensure_ascii=False)


def configure(handler: logging.Handler, log_format: LogFormat) -> logging.Handler:
    """Give `handler` the request id filter and the chosen format."""
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    return handler
