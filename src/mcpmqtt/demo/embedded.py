"""A private MQTT broker for the demo: a child process on a loopback port, gone when the demo ends.

Mosquitto when it is installed, since it speaks MQTT 5 (what the server is built for); otherwise amqtt,
a pure-Python broker that comes with this package and speaks only MQTT 3.1.1 (the server and the
devices fall back to it). Either runs as a subprocess rather than in the demo's event loop, so the
broker's work never delays an agent's call and one signal stops it.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

BrokerChoice = Literal["auto", "mosquitto", "amqtt"]
BrokerKind = Literal["mosquitto", "amqtt"]

HOST = "127.0.0.1"
STARTUP_TIMEOUT = 15.0
"""Seconds to wait for the broker to accept connections; amqtt's first start compiles its modules."""

# Debian installs mosquitto in /usr/sbin, which is not on a normal user's PATH.
_SBIN_DIRS = os.pathsep.join(("/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin"))
_PR_SET_PDEATHSIG = 1


class DemoStartError(Exception):
    """The demo cannot start; the message says why and what to do instead."""


@dataclass(frozen=True)
class EmbeddedBroker:
    """A running demo broker."""

    kind: BrokerKind
    port: int
    program: str
    """What runs, for people: the Mosquitto binary or the amqtt version."""
    log_path: Path
    process: subprocess.Popen[bytes]
    host: str = HOST

    @property
    def protocol(self) -> Literal["5", "3.1.1"]:
        """The MQTT version the broker speaks (amqtt knows only 3.1.1)."""
        return "5" if self.kind == "mosquitto" else "3.1.1"

    @property
    def url(self) -> str:
        """Where clients reach the broker, for people."""
        return f"mqtt://{self.host}:{self.port}"

    def stop_now(self) -> None:
        """Stop the broker and delete its files, for a process about to exit without unwinding."""
        stop(self.process)
        shutil.rmtree(self.log_path.parent, ignore_errors=True)


def find_mosquitto() -> Path | None:
    """The `mosquitto` binary, on PATH or in an sbin folder."""
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path=_SBIN_DIRS)
    return Path(found) if found else None


def free_port(host: str = HOST) -> int:
    """A TCP port that nothing listens on right now."""
    with _socket_for(host) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def ensure_free(host: str, port: int, option: str) -> None:
    """Raise DemoStartError, naming the command-line `option` to change, if host:port is taken."""
    with _socket_for(host) as probe:
        if os.name == "posix":  # as servers do: a port in TIME_WAIT is free to listen on
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise DemoStartError(
                f"cannot listen on {host}:{port}: {exc.strerror}; pass another {option}"
            ) from None


def _socket_for(host: str) -> socket.socket:
    return socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)


@contextlib.contextmanager
def embedded_broker(choice: BrokerChoice = "auto", port: int | None = None) -> Iterator[EmbeddedBroker]:
    """Start a broker (on `port`, or a free one), yield it once it accepts connections, stop it after."""
    mosquitto = find_mosquitto() if choice != "amqtt" else None
    if choice == "mosquitto" and mosquitto is None:
        raise DemoStartError(
            "mosquitto is not installed (looked on PATH and in /usr/sbin): install it "
            "(apt-get install mosquitto, brew install mosquitto) or use --broker amqtt"
        )
    kind: BrokerKind = "amqtt" if mosquitto is None else "mosquitto"
    if port is None:
        port = free_port()
    else:
        ensure_free(HOST, port, "--broker-port, or leave it out to use a free port")
    with tempfile.TemporaryDirectory(prefix="mcpmqtt-demo-") as folder:
        workdir = Path(folder)
        log_path = workdir / f"{kind}.log"
        if mosquitto is not None:
            command, program = _mosquitto(mosquitto, workdir, port, log_path), f"Mosquitto ({mosquitto})"
        else:
            command, program = _amqtt(workdir, port), f"amqtt {importlib.metadata.version('amqtt')}"
        with log_path.open("ab") as output:
            # A session of its own: Ctrl-C in a terminal signals the whole foreground process group,
            # and a broker in that group would die before the devices and the server had stopped,
            # which they would take for a failure. The demo stops the broker itself, last.
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        broker = EmbeddedBroker(kind, port, program, log_path, process)
        try:
            _wait_until_listening(broker)
            yield broker
        finally:
            stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if the broker lingers; returns once the process is gone."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _die_with_parent() -> None:
    # Runs in the child before exec: if the demo is killed outright (SIGKILL, no chance to clean up),
    # Linux sends the broker SIGTERM, so that no broker outlives its demo.
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _mosquitto(binary: Path, workdir: Path, port: int, log_path: Path) -> list[str]:
    # Run as root, Mosquitto switches to user `mosquitto`, which could not write to our private folder.
    user = "user root\n" if getattr(os, "geteuid", lambda: -1)() == 0 else ""
    config = workdir / "mosquitto.conf"
    config.write_text(
        f"# The mcpmqtt demo's private broker.\n{user}"
        "persistence false\n"
        "set_tcp_nodelay true\n"
        f"log_dest file {log_path}\n"
        "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
        f"listener {port} {HOST}\n"
        "allow_anonymous true\n",
        encoding="utf-8",
    )
    return [str(binary), "-c", str(config)]


def _amqtt(workdir: Path, port: int) -> list[str]:
    config = workdir / "amqtt.yaml"
    config.write_text(
        "listeners:\n"
        "  default:\n"
        "    type: tcp\n"
        f"    bind: {HOST}:{port}\n"
        "plugins:\n"
        "  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
        "    allow_anonymous: true\n",
        encoding="utf-8",
    )
    return [sys.executable, "-m", "amqtt.scripts.broker_script", "-c", str(config)]


def _wait_until_listening(broker: EmbeddedBroker) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if broker.process.poll() is not None:
            raise DemoStartError(f"the {broker.kind} broker exited during startup:\n{_tail(broker.log_path)}")
        try:
            socket.create_connection((broker.host, broker.port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise DemoStartError(
                    f"the {broker.kind} broker did not accept connections on {broker.host}:{broker.port} "
                    f"within {STARTUP_TIMEOUT:g} s:\n{_tail(broker.log_path)}"
                ) from None
            time.sleep(0.05)


def _tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
