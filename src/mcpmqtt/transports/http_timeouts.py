"""Deadlines for what a client sends: a request's head and its body (the slow-loris defence).

uvicorn closes an idle keep-alive connection, but once a client has sent one byte of a request it
waits for the rest forever: twenty connections trickling a header or a body held their sockets and
tasks for as long as they liked. Here:

- a request's head (request line and headers) must arrive whole within `http.header_timeout` of
  the connection's start or of the previous response's end, else the client gets 408 and the
  connection is closed (`timed_h11`, uvicorn's h11 protocol with a timer);
- a request's body must arrive whole within `http.body_timeout` of its head, else 408
  (`BodyDeadline`, in the ASGI app, which reads the body before the app does; behind the
  authentication, so that an unauthenticated client cannot make us buffer a body);
- a body left unread after the response (a request refused before its body was read) must have
  arrived within `http.body_timeout` of that response, else the connection is closed.
"""

from __future__ import annotations

import asyncio
import logging

import anyio
import h11
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

_HEAD_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s"
)


_HOOKS = ("connection_made", "data_received", "on_response_complete", "connection_lost")


def timed_h11(header_timeout: float, body_timeout: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with the head deadline and the deadline for bodies left unread.

    It overrides methods of uvicorn's protocol class (tested with uvicorn 0.55): a uvicorn without
    them gets its plain protocol back and a warning, and keeps the body deadline of `BodyDeadline`.
    """
    if not all(callable(getattr(H11Protocol, hook, None)) for hook in _HOOKS):
        log.warning("this uvicorn's h11 protocol is not the one known: no deadline for request headers")
        return H11Protocol

    class TimedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _waiting_for: str | None = None  # "head" or "leftover": what the deadline armed is for

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._rearm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._rearm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._rearm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._arm(None)
            super().connection_lost(exc)

        def _leftover(self) -> bool:
            """Whether the client is still sending the body of a request already answered."""
            return self.conn.our_state is h11.DONE and self.conn.their_state is h11.SEND_BODY

        def _rearm(self) -> None:
            """Arm the deadline for what the connection waits for now; one already running for the
            same thing goes on (a byte that arrives does not restart it)."""
            if self.transport.is_closing():
                self._arm(None)
            elif self._leftover():
                self._arm("leftover")
            elif self.conn.their_state is h11.IDLE:
                self._arm("head")
            else:
                self._arm(None)  # a request is being served; its body has a deadline of its own

        def _arm(self, waiting_for: str | None) -> None:
            if waiting_for == self._waiting_for:
                return
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            self._waiting_for = waiting_for
            if waiting_for == "head":
                self._deadline = self.loop.call_later(header_timeout, self._head_too_slow)
            elif waiting_for == "leftover":
                self._deadline = self.loop.call_later(body_timeout, self._leftover_too_slow)

        def _head_too_slow(self) -> None:
            self._deadline = self._waiting_for = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                log.info("closed a connection whose request head took over %g s", header_timeout)
                text = f"request timeout: the request's headers did not arrive within {header_timeout:g} s\n"
                self.transport.write(_HEAD_TIMEOUT_RESPONSE % (len(text), text.encode()))
                self.transport.close()

        def _leftover_too_slow(self) -> None:
            self._deadline = self._waiting_for = None
            if self._leftover() and not self.transport.is_closing():
                log.info("closed a connection whose unread request body took over %g s", body_timeout)
                self.transport.close()

    return TimedH11Protocol


class BodyDeadline:
    """Reads a request's body (at most `max_bytes`) within `timeout` seconds, then hands it to the
    app; 408 when it is slower, 413 when it is larger."""

    def __init__(self, app: ASGIApp, timeout: float, max_bytes: int) -> None:
        self.app = app
        self.timeout = timeout
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        read: list[Message] = []
        size = 0
        with anyio.move_on_after(self.timeout) as deadline:
            while True:
                message = await receive()
                read.append(message)
                if message["type"] != "http.request":
                    break
                size += len(message.get("body", b""))
                if size > self.max_bytes:
                    await _answer(send, 413, "request body too large")
                    return
                if not message.get("more_body", False):
                    break
        if deadline.cancelled_caught:
            log.info("answered 408: a request body took over %g s", self.timeout)
            await _answer(send, 408, f"request timeout: the body did not arrive within {self.timeout:g} s")
            return
        body = b"".join(m.get("body", b"") for m in read if m["type"] == "http.request")
        replay: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
        replay += [m for m in read if m["type"] != "http.request"]

        async def receive_read() -> Message:
            return replay.pop(0) if replay else await receive()

        await self.app(scope, receive_read, send)


async def _answer(send: Send, status: int, text: str) -> None:
    body = (text + "\n").encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
