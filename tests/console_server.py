"""A real `mcpmqtt serve --transport http` with the operator console, for the console's tests: keys of
every kind, topics of every kind, and helpers to sign in, read the event stream and act."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
from http_server import ServerProcess, config_for
from mosquitto import Mosquitto

from mcpmqtt.config import apikeys

KEYS = {
    "ops": {"approve": True},
    "viewer": {},
    "sensors": {"approve": True, "topics": ["{root}/sensors/#"]},
    "agent": {},
}
"""Key name → its entry: ops approves; viewer sees all and approves nothing; sensors is narrowed."""


def console_topics(root: str) -> list[dict[str, Any]]:
    return [
        {"pattern": f"{root}/sensors/#", "permissions": ["read"]},
        {"pattern": f"{root}/lab/#", "permissions": ["read", "write"]},
        {"pattern": f"{root}/door/#", "permissions": ["write"], "confirm": True},
    ]


@dataclass
class ConsoleServer:
    process: ServerProcess
    root: str
    keys: dict[str, str]
    """Key name → the key itself."""

    @property
    def base(self) -> str:
        return self.process.base

    @property
    def console(self) -> str:
        return f"{self.base}/console"

    def signed_in(self, key: str | None) -> httpx2.Client:
        """An HTTP client holding a console session for the key named `key` (None: no key)."""
        client = httpx2.Client(base_url=self.base, headers={"origin": self.base}, timeout=10)
        body = {"key": self.keys[key]} if key is not None else {}
        response = client.post("/console/session", json=body)
        assert response.status_code == 200, response.text
        client.headers["x-csrf-token"] = response.json()["csrf"]
        return client


def start_console_server(
    workdir: pathlib.Path, broker: Mosquitto, root: str, *, keys: bool = True, **approvals: Any
) -> ConsoleServer:
    plain = {name: apikeys.new_key() for name in KEYS}
    http: dict[str, Any] = {}
    if keys:
        http["api_keys"] = [
            {
                "name": name,
                "hash": str(apikeys.hash_key(plain[name], log_n=10)),
                **{k: ([p.format(root=root) for p in v] if k == "topics" else v) for k, v in entry.items()},
            }
            for name, entry in KEYS.items()
        ]
    config = config_for(broker, http=http, topics=console_topics(root))
    config["approvals"] = {"wait": 0, **approvals}
    process = ServerProcess(workdir, config)
    process.start()
    process.wait_ready()
    return ConsoleServer(process, root, plain)


def stream_events(client: httpx2.Client, until: int = 1) -> Iterator[tuple[str, Any]]:
    """(event, data) of the console's event stream, read until `until` events have arrived."""
    count = 0
    with client.stream("GET", "/console/events", timeout=httpx2.Timeout(10)) as response:
        assert response.status_code == 200, response.read()
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: ") and name is not None:
                yield name, json.loads(line[6:])
                count += 1
                if count >= until:
                    return
