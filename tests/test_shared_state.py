"""Shared state in Redis (state.backend "redis"): replicas count one rate-limit window between them.

Real parts throughout: a private redis-server (tests/redis_server.py), the session Mosquitto, and
two server processes over stdio, one talked to in each protocol era, as two replicas would be.
"""

import json
import pathlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import aiomqtt
import anyio
import pytest
from devices import raw_client, start_collector
from mcp.client import Client
from mcp_client import connect, error_text, structured
from mosquitto import Mosquitto
from pydantic import ValidationError
from redis_server import RedisServer
from server_config import unique_root, write_full_config
from support import eventually

from mcpmqtt.cli import main
from mcpmqtt.config import Config

pytestmark = pytest.mark.anyio


def _config(tmp_path: pathlib.Path, broker: Mosquitto, redis: RedisServer, root: str) -> pathlib.Path:
    topics = [{"pattern": f"{root}/#", "permissions": ["read", "write"], "rate_limit": "10/minute"}]
    state = {"backend": "redis", "url": redis.url, "key_prefix": root, "timeout": 1}
    # No client_id: each replica makes its own, as it must (one id would have the broker drop the other).
    return write_full_config(tmp_path, broker, topics, {"client_id": None}, state=state)


@asynccontextmanager
async def replicas(config: pathlib.Path) -> AsyncIterator[tuple[Client, Client]]:
    """Two server processes on one config; the first spoken to in the legacy era, the second in auto."""
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(connect(config, "legacy"))
        second = await stack.enter_async_context(connect(config, "auto"))
        yield first, second


async def test_two_replicas_share_one_rate_limit(
    tmp_path: pathlib.Path, broker: Mosquitto, redis_server: RedisServer
) -> None:
    root = unique_root()
    lamp = {"topic": f"{root}/lamp", "payload": "x"}
    reached = f"permission denied: rate limit 10/minute for '{root}/#' reached"
    async with replicas(_config(tmp_path, broker, redis_server, root)) as (first, second):
        for client in (first, second):  # a dry run looks at the shared window and spends nothing
            assert structured(await client.call_tool("mqtt_publish", {**lamp, "dry_run": True}))["dry_run"]
        for n in range(10):
            client = first if n % 2 else second
            structured(await client.call_tool("mqtt_publish", {**lamp, "payload": str(n)}))
        for client in (first, second):
            refused = error_text(await client.call_tool("mqtt_publish", lamp))
            assert refused.startswith(reached), refused
            dry = error_text(await client.call_tool("mqtt_publish", {**lamp, "dry_run": True}))
            assert dry.startswith(reached), dry


async def test_redis_down_refuses_naming_redis_and_recovers_when_it_returns(
    tmp_path: pathlib.Path, broker: Mosquitto, redis_server: RedisServer
) -> None:
    root = unique_root()
    received: list[aiomqtt.Message] = []
    async with (
        replicas(_config(tmp_path, broker, redis_server, root)) as (first, second),
        raw_client(broker) as watcher,
        anyio.create_task_group() as tg,
    ):
        await start_collector(tg, watcher, f"{root}/#", received)
        structured(await first.call_tool("mqtt_publish", {"topic": f"{root}/lamp", "payload": "before"}))

        redis_server.stop()
        for client in (first, second):
            refused = error_text(
                await client.call_tool("mqtt_publish", {"topic": f"{root}/lamp", "payload": "down"})
            )
            assert refused.startswith(
                f"broker unavailable: shared state unavailable: Redis at 127.0.0.1:{redis_server.port}"
            ), refused
            assert "nothing was published" in refused

        redis_server.start()  # same port, empty: the servers reconnect by themselves
        for client in (first, second):
            structured(await client.call_tool("mqtt_publish", {"topic": f"{root}/lamp", "payload": "after"}))
        await eventually(lambda: len(received) >= 3)
        # Each server's publishes reach the broker in order, so a "down" sent by either would have
        # arrived before its "after".
        assert [m.payload for m in received] == [b"before", b"after", b"after"]
        tg.cancel_scope.cancel()


def test_the_redis_backend_needs_a_url(tmp_path: pathlib.Path) -> None:
    topics = [{"pattern": "a/#", "permissions": ["write"]}]
    with pytest.raises(ValidationError, match="the redis backend needs url"):
        Config.model_validate({"topics": topics, "state": {"backend": "redis"}})
    with pytest.raises(ValidationError, match="url must start with redis://"):
        Config.model_validate({"topics": topics, "state": {"backend": "redis", "url": "http://x"}})
    assert Config.model_validate({"topics": topics}).state.backend == "memory"


def test_check_config_says_where_state_is_shared_and_never_the_password(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.json"
    state = {"backend": "redis", "url": "redis://:hunter2@10.0.1.20:6390/0", "key_prefix": "plant"}
    path.write_text(json.dumps({"topics": [{"pattern": "a/#", "permissions": ["write"]}], "state": state}))
    assert main(["check-config", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "shared state: Redis at 10.0.1.20:6390, keys plant:*" in out
    assert "hunter2" not in out
