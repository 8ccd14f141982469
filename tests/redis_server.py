"""A private Redis on a free loopback port, for the shared-state tests; stopped and started at will.

Like the Mosquitto fixture, it never touches a Redis already running on the machine: it writes
nothing to disk (`--save "" --appendonly no`) and works in its own folder. Tests skip, naming Debian's
package, where `redis-server` is not installed (scripts/test installs it when run as root).
"""

import pathlib
import shutil
import subprocess

import pytest
from processes import wait_listening
from support import free_port


class RedisServer:
    """One redis-server on `port`; `stop()` and `start()` again keep the port (and lose the data)."""

    def __init__(self, workdir: pathlib.Path) -> None:
        binary = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/sbin:/usr/bin")
        if binary is None:
            pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = self.workdir / "redis.log"
        command = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        command += ["--dir", str(self.workdir), "--logfile", str(log)]
        log.touch()
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True
        )
        wait_listening(self.process, self.port, "redis-server", log)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
