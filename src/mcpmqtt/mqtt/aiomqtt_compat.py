"""The one door to aiomqtt's private attributes, checked against the versions they were proven on.

aiomqtt owns the connection and its asyncio socket plumbing, but the adapter needs paho's packet
callbacks itself (aiomqtt drops the PUBACK reason code, and its message queue costs most of its
throughput) and aiomqtt's CONNACK future (it waits out its timeout when a broker closes the connection
before answering). Those are private names: they are read here only, on an aiomqtt release series the
test suite proved, and a release without them is refused with a message that says what to install,
never half-used.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
from dataclasses import dataclass
from typing import Any

import aiomqtt
import paho.mqtt.client as paho

PROVEN_ON = ("2.5.",)
"""aiomqtt release series whose internals the adapter was proven against (tests/test_broker.py)."""
_PRIVATE = ("_client", "_on_connect", "_on_disconnect", "_connected")


@dataclass(frozen=True)
class Internals:
    """What the adapter takes from one aiomqtt client."""

    paho: paho.Client
    """The paho client aiomqtt wraps."""
    on_connect: Any
    """aiomqtt's CONNACK callback, which the adapter's own wraps."""
    on_disconnect: Any
    """aiomqtt's disconnect callback, likewise."""
    connack: Any
    """aiomqtt's future for the CONNACK (an asyncio.Future[None])."""


class UnsupportedAiomqtt(RuntimeError):
    """The installed aiomqtt lacks the internals the adapter needs."""


def check(version: str | None = None) -> None:
    """Raise UnsupportedAiomqtt unless this aiomqtt is of a proven series and has what is needed."""
    version = version or importlib.metadata.version("aiomqtt")
    if not version.startswith(PROVEN_ON):
        raise UnsupportedAiomqtt(
            f"aiomqtt {version} is not a version mcpmqtt was proven with "
            f"({', '.join(f'{series}x' for series in PROVEN_ON)}); install a proven one, e.g. "
            "pip install 'aiomqtt>=2.5.1,<2.6'"
        )


def internals(client: aiomqtt.Client) -> Internals:
    """The private parts of `client` the adapter uses; UnsupportedAiomqtt if any is missing."""
    missing = [name for name in _PRIVATE if not hasattr(client, name)]
    if missing:
        raise UnsupportedAiomqtt(
            f"this aiomqtt has no {', '.join(missing)}; install a proven one: "
            "pip install 'aiomqtt>=2.5.1,<2.6'"
        )
    return Internals(client._client, client._on_connect, client._on_disconnect, client._connected)


def guard_socket_writes(client: aiomqtt.Client) -> None:
    """Make aiomqtt's "watch the socket for writing" skip a socket that closed before it ran.

    aiomqtt schedules `loop.add_writer(fileno, ...)` whenever paho queues a packet; a publish queued
    just as the connection breaks runs that after the socket closed, and the event loop reports
    "Exception in callback ... Bad file descriptor" (an error with a traceback in the log, a failure in
    a test). Here the same writer is added only while the socket is still open. What the writer does
    is aiomqtt's: write, and on a failure end the connection. Without the private parts, nothing is done.
    """
    loop = getattr(client, "_loop", None)
    disconnected = getattr(client, "_disconnected", None)
    if not isinstance(loop, asyncio.AbstractEventLoop) or not isinstance(disconnected, asyncio.Future):
        return

    def register_write(raw: paho.Client, userdata: Any, sock: Any) -> None:
        def write() -> None:
            try:
                raw.loop_write()
            except Exception as exc:  # a broken pipe: the connection is gone
                current = getattr(client, "_disconnected", disconnected)
                if not current.done():
                    current.set_exception(exc)

        def watch() -> None:
            if sock.fileno() != -1:  # -1: closed since this was scheduled
                loop.add_writer(sock.fileno(), write)

        loop.call_soon_threadsafe(watch)

    client._client.on_socket_register_write = register_write


def retrieve_disconnect(client: aiomqtt.Client) -> None:
    """Mark a lost connection's error as seen, for a client whose message stream nobody reads to the end.

    aiomqtt puts a lost connection into a future that only its message iterator awaits; a client that
    stops reading first (its task cancelled because a sibling failed, even while it connects) leaves
    "exception never retrieved" behind, which asyncio reports as an error. Call it right after making
    the client, before it connects. Without the private future (another aiomqtt), nothing is done.
    """
    disconnected = getattr(client, "_disconnected", None)
    if isinstance(disconnected, asyncio.Future):
        disconnected.add_done_callback(lambda done: done.cancelled() or done.exception())
