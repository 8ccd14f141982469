"""The audit log: one JSON line per tool call, for the people answerable for what agents did.

Each line says when, which client, which tool, which topic, what payload (its size and SHA-256, the
payload itself only when configured), whether the call was allowed, and how it ended. Tool calls are
recorded in one place, where the server dispatches them (``AuditLog.tool_call``), so that every
tool, present and future, is covered without a line of its own; other operations (a resource read)
call ``AuditLog.record``.

Writing never holds up or fails a call: records go into a bounded queue that a thread of its own
writes out. When the queue is full a record is dropped and counted; when the file cannot be written
the error is logged once, and the writer keeps trying with the next record. Nothing in a record can
stop the writer: text that UTF-8 cannot encode (a lone surrogate, which JSON lets a client send) is
written as its JSON escape, and a record that still cannot be written is counted, reported, and
skipped.

One line is one record for every reader: besides the newline, ``str.splitlines()`` breaks lines at
U+2028, U+2029 and U+0085, which JSON leaves raw; they are written as JSON escapes too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import queue
import re
import threading
import time
from pathlib import Path
from typing import IO, Any, Final, Literal

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult

from mcpmqtt.errors import InvalidArgument, McpMqttError
from mcpmqtt.rules.payloads import encode_payload, iso_utc

log = logging.getLogger(__name__)

Verdict = Literal["allowed", "denied"]

_CAPACITY = 10_000
_STOP: Final = object()
_UNSAFE: Final = re.compile("[\u2028\u2029\u0085\ud800-\udfff]")
"""Characters that JSON leaves raw but that would split a line (for splitlines) or fail to encode."""


def audit_line(entry: dict[str, Any]) -> str:
    """One record as one line of JSON that any UTF-8 reader reads back as exactly that record."""
    text = json.dumps(entry, ensure_ascii=False, separators=(",", ":"), default=str)
    # JSON's structure is ASCII, so these can only stand inside strings, where an escape means the same.
    return _UNSAFE.sub(lambda found: f"\\u{ord(found.group()):04x}", text) + "\n"


class AuditLog:
    """An append-only JSONL file written by a background thread from a bounded queue."""

    def __init__(self, path: Path, include_payloads: bool = False, capacity: int = _CAPACITY) -> None:
        self.path = path.expanduser()
        self.include_payloads = include_payloads
        self._queue: queue.Queue[object] = queue.Queue(capacity)
        self._thread: threading.Thread | None = None
        self._file: IO[str] | None = None
        self._failing = False
        self.dropped = 0
        self.lost: dict[str, int] = {}
        """Records the writer could not turn into a line, by the kind of error."""

    def start(self) -> None:
        """Start the writer thread (once the server runs, so that merely building one opens nothing)."""
        self._thread = threading.Thread(target=self._write_all, name="mcpmqtt-audit", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 2.0) -> None:
        """Write out what is queued, within ``timeout`` seconds, and stop the writer."""
        if self._thread is None:
            return
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            log.warning("the audit log writer is stuck; %d queued records are lost", self._queue.qsize())
            return
        self._thread.join(timeout)
        self._thread = None

    def record(
        self,
        operation: str,
        *,
        topic: str | None,
        decision: Verdict,
        outcome: str,
        reason: str | None = None,
        context: Context[Any, Any] | None = None,
        sent: bytes | None = None,
        **details: Any,
    ) -> None:
        """Queue one line; never blocks, never raises.

        ``operation`` is the tool name (or e.g. ``"resources/read"``); ``reason`` the error prefix of a
        refusal; ``outcome`` is ``"ok"``, ``"timed_out"`` or an error prefix; ``sent`` the payload bytes
        published, if any (recorded as size and SHA-256). ``details`` are added to the line as they are.
        """
        entry: dict[str, Any] = {
            "time": iso_utc(time.time()),
            **_caller(context),
            "tool": operation,
            "topic": topic,
            "decision": decision,
            "reason": reason,
            "outcome": outcome,
        }
        if sent is not None:
            entry["payload_bytes"] = len(sent)
            entry["payload_sha256"] = hashlib.sha256(sent).hexdigest()
        entry.update(details)
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1:
                log.warning("the audit log %s cannot keep up; records are being dropped", self.path)

    def tool_call(
        self,
        tool: str,
        arguments: dict[str, Any],
        result: CallToolResult,
        error: McpMqttError | None,
        context: Context[Any, Any] | None,
    ) -> None:
        """Record a finished tool call: the error that ended it, if any, tells a refusal (the server
        said no) from a failure (the broker did); a success that ran out of time says ``timed_out``.
        Never raises: a fault here is logged, and the call's result stands.
        """
        try:
            self._tool_call(tool, arguments, result, error, context)
        except Exception:
            log.exception("could not make the audit record of a %s call", tool)

    def _tool_call(
        self,
        tool: str,
        arguments: dict[str, Any],
        result: CallToolResult,
        error: McpMqttError | None,
        context: Context[Any, Any] | None,
    ) -> None:
        decision: Verdict
        if error is not None:
            decision = "denied" if error.refusal else "allowed"
            reason, outcome = (error.prefix if error.refusal else None), error.prefix
        elif result.is_error:  # a fault of the server's own (the SDK's generic error result)
            decision, reason, outcome = "allowed", None, "error"
        else:
            decision, reason = "allowed", None
            timed_out = (result.structured_content or {}).get("timed_out") is True
            outcome = "timed_out" if timed_out else "ok"
        details: dict[str, Any] = {}
        if isinstance(arguments.get("response_topic"), str):
            details["response_topic"] = arguments["response_topic"]
        sent = _payload_bytes(arguments)
        if self.include_payloads and "payload" in arguments:  # as the agent gave it: text or JSON
            details["payload"] = arguments["payload"]
            details["payload_encoding"] = arguments.get("payload_encoding", "utf-8")
        topic = next(
            (
                arguments[key]
                for key in ("topic", "request_topic", "filter")
                if isinstance(arguments.get(key), str)
            ),
            None,
        )
        self.record(
            tool,
            topic=topic,
            decision=decision,
            reason=reason,
            outcome=outcome,
            context=context,
            sent=sent,
            **details,
        )

    # ---- the writer thread -----------------------------------------------------------------------

    def _write_all(self) -> None:
        while (entry := self._queue.get()) is not _STOP:
            try:
                self._write(audit_line(entry))  # type: ignore[arg-type]  # records, and _STOP
            except Exception as exc:  # the writer must outlive any record: it would lose all the rest
                self._lose(exc)
        self._close_file()
        for kind, count in self.lost.items():
            log.error(
                "%d audit records were lost (%s): the audit log %s is missing them", count, kind, self.path
            )

    def _lose(self, error: Exception) -> None:
        kind = type(error).__name__
        self.lost[kind] = self.lost.get(kind, 0) + 1
        if self.lost[kind] == 1:
            log.error(
                "an audit record could not be written to %s (%s: %s); the writer goes on, and records "
                "lost this way are counted and reported when the server stops",
                self.path,
                kind,
                error,
            )

    def _close_file(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    def _write(self, line: str) -> None:
        try:
            if self._file is None:
                self._file = self.path.open("a", encoding="utf-8")
            self._file.write(line)
            self._file.flush()  # whole lines on disk, for tail -f and for a crash
        except OSError as exc:
            if not self._failing:
                log.warning(
                    "cannot write the audit log %s (%s); tool calls go on, and their audit records "
                    "are lost until the file can be written",
                    self.path,
                    exc,
                )
            self._failing = True
            self._close_file()  # reopened for the next record: the path may have become writable
        else:
            if self._failing:
                log.warning("the audit log %s can be written again", self.path)
            self._failing = False


def _payload_bytes(arguments: dict[str, Any]) -> bytes | None:
    """The bytes a publish or query sends, or None when there is no payload or it does not decode."""
    if "payload" not in arguments:
        return None
    payload = arguments["payload"]
    encoding = arguments.get("payload_encoding", "utf-8")
    if encoding not in ("utf-8", "base64"):
        return None
    try:
        return encode_payload(payload, encoding)
    except InvalidArgument:
        return None


def _caller(context: Context[Any, Any] | None) -> dict[str, str | None]:
    """Who made the call, as far as MCP tells: the client's name and version, and the HTTP session."""
    client = session = None
    if context is not None:
        try:
            params = context.session.client_params
            headers = context.headers
        except ValueError:  # a call made outside any request (tests, nested invocations)
            pass
        else:
            if params is not None:
                client = f"{params.client_info.name}/{params.client_info.version}"
            if headers is not None:
                session = headers.get("mcp-session-id")
    return {"client": client, "session": session}
