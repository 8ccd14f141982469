"""`mcpmqtt serve --workers N`: N server processes accepting connections on one HTTP port.

One process uses one core. Each worker listens on the port with its own socket, all of them with
SO_REUSEPORT, so that the kernel spreads new connections over the workers by a hash of their
addresses. (One listening socket shared by all workers, as uvicorn's own workers do, is balanced by
whichever worker wakes first: measured here, one of two workers took 49 of 50 connections.) The parent
binds the port first, without listening, so that it finds the port taken before anything starts and
holds it for the workers; only processes of the same user can join such a port. Each worker builds its
own server after the fork, so each has its own broker connection
under its own client id (a configured ``mqtt.client_id`` gets ``-1``, ``-2``, … appended: two clients
with one id would have the broker disconnect one of them, over and over).

The parent serves nothing: it passes SIGTERM and SIGINT on to the workers, which stop gracefully, and
waits. When a worker ends on its own, the parent stops the others and exits with its code, so a process
manager sees one service that failed and restarts it whole, rather than one that quietly lost capacity.

A 2026-07-28 request carries everything it needs and may land on any worker; a 2025-11-25 session lives
in the worker that created it, and the client's next connection may reach another, so those sessions
need one worker (or one replica per sticky route): see docs/deploying.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import traceback
from collections.abc import Callable
from types import FrameType

from mcpmqtt.config import Config

log = logging.getLogger(__name__)

BACKLOG = 2048
"""Connections the kernel queues before a worker accepts them (uvicorn's default)."""


def bind(host: str, port: int, *, listen: bool) -> socket.socket:
    """A socket on (host, port) that shares the port with the other workers; raises OSError if the port
    is taken. The parent's reservation does not listen (a listening one would be handed connections)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        if listen:
            sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def for_worker(config: Config, index: int) -> Config:
    """The config worker ``index`` (from 1) runs: a configured client id made its own."""
    if config.mqtt.client_id is None:
        return config  # each process makes a fresh random id after the fork
    mqtt = config.mqtt.model_copy(update={"client_id": f"{config.mqtt.client_id}-{index}"})
    return config.model_copy(update={"mqtt": mqtt})


def run_workers(count: int, reserved: socket.socket, serve: Callable[[int], int]) -> int:
    """Fork ``count`` workers that each run ``serve(index)``; return when all have ended.

    ``reserved`` is the parent's bound socket (see ``bind``), kept until the workers have ended.
    """
    children: dict[int, int] = {}
    stopping = False

    def stop(signum: int = signal.SIGTERM, frame: FrameType | None = None) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    # Before the forks, so that no signal finds the parent without them; each worker resets them.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for index in range(1, count + 1):
        if stopping:  # told to stop while starting: start no more, stop those started
            break
        pid = os.fork()
        if pid == 0:  # the worker: never return into the parent's code
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            reserved.close()
            code = 1
            try:
                code = serve(index)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        children[pid] = index
    result = 0
    while children:
        pid, status = os.wait()
        if (index := children.pop(pid, 0)) == 0:
            continue
        code = os.waitstatus_to_exitcode(status)
        if not stopping:
            log.error("worker %d (pid %d) ended with exit code %d; stopping the others", index, pid, code)
            result = code if code > 0 else 1  # killed by a signal: still a failure
            stop()
    reserved.close()
    return result
