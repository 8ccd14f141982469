"""The stdio transport: an answer for lines that are not JSON-RPC, and a stdin that Ctrl-C can stop.

The SDK's stdio reader drops a malformed line without a reply, so a host that sent a garbled
request would wait for an answer that never comes. JSON-RPC 2.0 says to answer with a Parse error
(or Invalid Request) whose id is null; this relay does that and passes everything else through.
"""

import asyncio
import os
import stat
import sys
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage
from mcp_types import INVALID_REQUEST, PARSE_ERROR, ErrorData, JSONRPCError
from pydantic import ValidationError

from mcpmqtt.server import sdk_compat

# One JSON-RPC message per line: big enough for the largest payload a config can allow, base64-encoded.
_MAX_LINE_BYTES = 512 * 1024 * 1024


def rejection(error: Exception) -> SessionMessage:
    """The JSON-RPC error reply for an input line that could not be read as a message."""
    not_json = isinstance(error, ValidationError) and any(e["type"] == "json_invalid" for e in error.errors())
    code, text = (
        (PARSE_ERROR, "Parse error: the line is not valid JSON")
        if not_json
        else (INVALID_REQUEST, "Invalid Request: the line is JSON but not a JSON-RPC 2.0 message")
    )
    return SessionMessage(JSONRPCError(jsonrpc="2.0", id=None, error=ErrorData(code=code, message=text)))


class _PipeLines:
    """stdin as lines that the event loop reads, so that reading can be cancelled.

    The SDK reads stdin on a worker thread; a blocked read cannot be cancelled, so Ctrl-C left the
    server waiting for the host's next line instead of shutting down.
    """

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    def __aiter__(self) -> "_PipeLines":
        return self

    async def __anext__(self) -> str:
        line = await self._reader.readline()
        if not line:
            raise StopAsyncIteration
        return line.decode("utf-8", errors="replace")


def _pollable(fd: int) -> bool:
    """Whether the event loop can watch `fd`: a pipe, a socket or a terminal.

    asyncio accepts any character device, but epoll refuses most of them (`/dev/null` among them) with
    an error that surfaces only in a callback, so the server would wait forever for a line.
    """
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)


async def _stdin_lines() -> _PipeLines | None:
    """stdin through the event loop when it is a pipe or terminal (as under an MCP host), else None."""
    if not _pollable(sys.stdin.fileno()):  # a file or /dev/null: the SDK's own reader handles it
        return None
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_MAX_LINE_BYTES)
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    except (ValueError, OSError):
        return None
    return _PipeLines(reader)


async def serve_stdio(server: MCPServer[Any]) -> None:
    """Serve `server` on stdin/stdout until stdin closes or the task is cancelled (Ctrl-C)."""
    lowlevel = sdk_compat.lowlevel(server)  # MCPServer.run_stdio_async does the same, minus the relay
    stdin = await _stdin_lines()
    async with stdio_server(stdin=stdin) as (read_stream, write_stream):  # type: ignore[arg-type]
        relay_send, relay_receive = anyio.create_memory_object_stream[SessionMessage | Exception](0)

        async def relay() -> None:
            async with relay_send:
                async for item in read_stream:
                    if isinstance(item, Exception):
                        await write_stream.send(rejection(item))
                    else:
                        await relay_send.send(item)

        async with anyio.create_task_group() as tg:
            tg.start_soon(relay)
            await lowlevel.run(relay_receive, write_stream, lowlevel.create_initialization_options())
