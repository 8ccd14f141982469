"""`mcpmqtt serve --transport http --workers N`: N processes on one port, each its own broker client.

Real parts: the server as a subprocess (tests/http_server.py), the session Mosquitto, a responder
device, and SDK clients speaking the sessionless 2026-07-28 era, each over a fresh connection.
"""

import contextlib
import pathlib
import socket

import psutil
import pytest
from devices import responder
from http_server import ServerProcess, config_for, http_client
from mcp_client import structured
from mosquitto import Mosquitto
from server_config import unique_root
from support import eventually

from mcpmqtt.cli import main

pytestmark = pytest.mark.anyio

CONNECTIONS = 50
"""Held at once; the chance that a fair hash puts fewer than 10 on either of two workers is 2e-5."""
ATTEMPTS = 60
"""Fresh connections tried until both workers have answered; the kernel picks a worker for each."""


async def test_two_workers_share_one_port_and_both_take_calls(
    tmp_path: pathlib.Path, broker: Mosquitto
) -> None:
    root = unique_root()
    topics = [{"pattern": f"{root}/#", "permissions": ["read", "write"]}]
    config = config_for(broker, topics=topics)
    client_id = config["mqtt"]["client_id"]
    # Which worker served a query shows in its private reply topic, <prefix>/<random per process>/<id>.
    reply_bases: set[str] = set()
    with ServerProcess(tmp_path, config, args=("--workers", "2")) as server:
        server.wait_ready()
        async with responder(broker, f"{root}/svc") as seen:
            for _ in range(ATTEMPTS):
                async with http_client(server.url, mode="auto") as client:
                    arguments = {"request_topic": f"{root}/svc", "payload": "ping", "timeout": 5}
                    assert structured(await client.call_tool("mqtt_query", arguments))["response"] is not None
                reply_bases = {m.properties.ResponseTopic.rsplit("/", 1)[0] for m in seen if m.properties}
                if len(reply_bases) == 2:
                    break
        assert len(reply_bases) == 2, f"one worker served all {ATTEMPTS} connections: {reply_bases}"
        for index in (1, 2):  # each worker its own connection, under its own client id
            assert f" as {client_id}-{index} " in broker.log_text()
        server.send_signal()
        assert server.wait() == 0, server.stderr()[-2000:]


async def test_connections_are_spread_over_the_workers(tmp_path: pathlib.Path, broker: Mosquitto) -> None:
    """Each worker listens with SO_REUSEPORT. With one shared socket, a burst of connections went to
    whichever worker woke first, which accepted every one queued: 49 of 50 here."""
    with ServerProcess(tmp_path, config_for(broker), args=("--workers", "2")) as server:
        assert server.process is not None
        workers = psutil.Process(server.process.pid).children()

        def listening(worker: psutil.Process) -> bool:
            return any(c.status == "LISTEN" and c.laddr.port == server.port for c in worker.net_connections())

        await eventually(lambda: all(listening(w) for w in workers))  # /healthz answered from one
        # A burst: all connected (the kernel completes the handshakes) before a worker accepts one.
        with contextlib.ExitStack() as stack:
            for _ in range(CONNECTIONS):
                stack.enter_context(socket.create_connection(("127.0.0.1", server.port)))

            def held() -> list[int]:
                return [
                    sum(
                        1
                        for c in w.net_connections()
                        if c.status == "ESTABLISHED" and c.laddr.port == server.port
                    )
                    for w in workers
                ]

            await eventually(lambda: sum(held()) == CONNECTIONS)
            assert min(held()) >= 10, held()


def test_a_worker_that_dies_stops_the_others_and_the_server_fails(
    tmp_path: pathlib.Path, broker: Mosquitto
) -> None:
    """A process manager must see the failure (and restart the whole), not a server with half its cores."""
    with ServerProcess(tmp_path, config_for(broker), args=("--workers", "2")) as server:
        assert server.process is not None
        workers = psutil.Process(server.process.pid).children()
        assert len(workers) == 2
        workers[0].kill()
        assert server.wait() == 1
        assert "worker" in server.stderr() and "stopping the others" in server.stderr()
        _, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--transport", "sse"], "--workers 2: it needs --transport http"),
        (["--transport", "stdio"], "--workers applies to HTTP only"),
    ],
)
def test_workers_are_refused_where_a_stream_is_bound_to_one_process(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"topics": [{"pattern": "a/#", "permissions": ["read"]}]}', encoding="utf-8")
    assert main(["serve", *args, "--workers", "2", "--config", str(path)]) == 2
    assert says in capsys.readouterr().err


def test_workers_are_refused_with_a_history_file(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.json"
    path.write_text(
        '{"topics": [{"pattern": "a/#", "permissions": ["read"]}], "history": {"path": "h.db"}}',
        encoding="utf-8",
    )
    assert main(["serve", "--transport", "http", "--workers", "2", "--config", str(path)]) == 2
    assert "every worker would write the one history.path file" in capsys.readouterr().err
