"""Helpers for tests that need config sections beyond `mcp_client.write_config`, and a person to ask.

Each module gets topics under a root of its own, so that retained messages left on the shared
session broker by one module never reach another.
"""

import json
import pathlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from mcp.client import Client
from mcp.client.context import ClientRequestContext
from mcp_client import server_parameters, write_config
from mcp_types import ElicitRequestParams, ElicitResult
from mosquitto import Mosquitto


def unique_root() -> str:
    """A first topic level no other test uses."""
    return f"t{uuid.uuid4().hex[:8]}"


def write_full_config(
    directory: pathlib.Path,
    broker: Mosquitto,
    topics: list[dict[str, Any]],
    mqtt: dict[str, Any] | None = None,
    **sections: Any,
) -> pathlib.Path:
    """A config for the test broker with extra top-level sections (audit, prompts, logging, …)."""
    path, _ = write_config(directory, broker, topics=topics, **(mqtt or {}))
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(sections)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@dataclass
class Person:
    """The human behind an MCP client that supports elicitation: answers as told, remembers questions."""

    answer: Literal["accept", "decline", "cancel"] = "accept"
    asked: list[str] = field(default_factory=list)

    async def __call__(self, context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult:
        self.asked.append(params.message)
        return ElicitResult(action=self.answer, content={} if self.answer == "accept" else None)


@asynccontextmanager
async def connect_with(config: pathlib.Path, mode: str, person: Person | None) -> AsyncIterator[Client]:
    """`mcp_client.connect`, with a person answering elicitations (None: a client that cannot elicit)."""
    async with Client(server_parameters(config), mode=mode, elicitation_callback=person) as client:
        yield client
