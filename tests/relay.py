"""A TCP relay for fault tests: it sits between the server and the broker and can freeze.

Frozen, it stops forwarding in both directions but closes nothing, which is what a dead NAT entry, a
pulled cable or a hung broker host look like to both ends: a half-open connection that only keepalive
can notice. Thawed, it forwards again, including whatever was held back. It counts the bytes the
clients sent, so that a test can wait until a packet has surely left the server (without relying on
timing) before it breaks something.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Self

_CHUNK = 65_536


class Relay:
    """Forwards every connection made to `port` (on 127.0.0.1) to `target_host:target_port`."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = "127.0.0.1"
        self.port = 0
        self.upstream_bytes = 0
        """Bytes received from clients so far (frozen or not), whether or not forwarded yet."""
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._upstream_grew = asyncio.Event()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def freeze(self) -> None:
        """Stop forwarding in both directions, on every connection, without closing any."""
        self._flowing.clear()

    def thaw(self) -> None:
        """Forward again, starting with what was held back."""
        self._flowing.set()

    async def wait_upstream(self, at_least: int) -> None:
        """Wait until clients have sent at least `at_least` bytes in all (see `upstream_bytes`)."""
        while self.upstream_bytes < at_least:
            self._upstream_grew.clear()
            await self._upstream_grew.wait()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            broker_reader, broker_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            client_writer.close()  # the broker is down: refuse the way a missing listener would
            return
        self._writers.update((client_writer, broker_writer))
        for reader, writer, upstream in (
            (client_reader, broker_writer, True),
            (broker_reader, client_writer, False),
        ):
            task = asyncio.create_task(self._pump(reader, writer, upstream))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: bool) -> None:
        with contextlib.suppress(OSError):
            async for chunk in _chunks(reader):
                if upstream:
                    self.upstream_bytes += len(chunk)
                    self._upstream_grew.set()
                await self._flowing.wait()
                writer.write(chunk)
                await writer.drain()
        # The other end closed or broke: pass that on too, but only while flowing (a frozen relay
        # tells nobody anything).
        await self._flowing.wait()
        writer.close()
        self._writers.discard(writer)


async def _chunks(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while chunk := await reader.read(_CHUNK):
        yield chunk
