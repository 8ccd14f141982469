"""`mcpmqtt serve` over HTTP as a subprocess on a free port, and SDK clients that carry a bearer token."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from types import TracebackType
from typing import Any, Self

import httpx2
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_client import TEST_TOPICS
from mosquitto import Mosquitto
from support import free_port

STARTUP_TIMEOUT = 20.0


def config_for(
    broker: Mosquitto,
    http: dict[str, Any] | None = None,
    topics: list[dict[str, Any]] | None = None,
    **mqtt: Any,
) -> dict[str, Any]:
    """A config for the test broker's anonymous listener (override with mqtt keys), with an `http` section."""
    config: dict[str, Any] = {
        "mqtt": {
            "host": broker.host,
            "port": broker.port,
            "client_id": f"mcpmqtt-http-{uuid.uuid4().hex[:8]}",
            **mqtt,
        },
        "topics": topics or TEST_TOPICS,
        "logging": {"level": "INFO"},
    }
    if http is not None:
        config["http"] = http
    return config


class ServerProcess:
    """`python -m mcpmqtt serve --transport T --host H --port P --config C`, started and stopped."""

    def __init__(
        self,
        workdir: pathlib.Path,
        config: dict[str, Any],
        *,
        transport: str = "http",
        host: str = "127.0.0.1",
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.config = config
        self.client_id: str = config["mqtt"]["client_id"]
        self.host = host
        self.port = port or free_port(host if host not in ("0.0.0.0", "::") else "127.0.0.1")
        self.transport = transport
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / f"{self.client_id}.json"
        self.config_path.write_text(json.dumps(config), encoding="utf-8")
        self.stderr_path = workdir / f"{self.client_id}.stderr"
        self._args = args
        self._env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.process: subprocess.Popen[str] | None = None
        self.stdout = ""

    @property
    def base(self) -> str:
        """The URL of the server, as a client on this machine reaches it."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "localhost") else self.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/mcp"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        command = [sys.executable, "-m", "mcpmqtt", "serve", "--transport", self.transport]
        command += ["--host", self.host, "--port", str(self.port), "--config", str(self.config_path)]
        with self.stderr_path.open("w") as stderr:
            self.process = subprocess.Popen(
                [*command, *self._args],
                stdout=subprocess.PIPE,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                text=True,
                env=self._env,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            try:
                if httpx2.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx2.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server did not start:\n{self.stderr()[-3000:]}")
            time.sleep(0.05)

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until /readyz says the broker is connected."""
        deadline = time.monotonic() + timeout
        while httpx2.get(f"{self.base}/readyz", timeout=1).status_code != 200:
            if time.monotonic() > deadline:
                raise TimeoutError(f"not ready within {timeout} s:\n{self.stderr()[-2000:]}")
            time.sleep(0.05)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def send_signal(self, number: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(number)

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for the process to exit; its exit status."""
        assert self.process is not None
        try:
            self.stdout, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.stdout, _ = self.process.communicate()
            raise
        return self.process.returncode

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers; stdout must have stayed empty (it is not the MCP channel here,
        but nothing of ours writes there)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        with suppress(subprocess.TimeoutExpired):
            self.wait(timeout=15)
        assert self.stdout == "", f"the server wrote to stdout: {self.stdout[:500]!r}"


def bearer(token: str | None, **headers: str) -> dict[str, str]:
    return {**({"authorization": f"Bearer {token}"} if token is not None else {}), **headers}


@asynccontextmanager
async def http_client(url: str, token: str | None = None, mode: str = "auto") -> AsyncIterator[Client]:
    """The SDK's client over Streamable HTTP, sending `Authorization: Bearer <token>` when given."""
    async with (
        httpx2.AsyncClient(headers=bearer(token), timeout=httpx2.Timeout(30, read=60)) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,  # type: ignore[arg-type]
    ):
        yield client


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}
"""A handshake-era initialize, for raw HTTP requests."""

MCP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


def post(url: str, body: Any = INITIALIZE, **headers: str) -> httpx2.Response:
    """One raw POST to the MCP endpoint (no MCP client: to see status codes and headers)."""
    return httpx2.post(url, json=body, headers={**MCP_HEADERS, **headers}, timeout=10)
