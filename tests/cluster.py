"""A 3-node NATS cluster with MQTT listeners and HAProxy in front of two mcpmqtt HTTP replicas.

The harness of `tests/test_cluster.py` and of the setup `docs/deploying.md` explains:

- Three `nats-server` nodes (Debian's `nats-server`) on loopback, each with its own client, MQTT and
  cluster ports (all free ports), its own JetStream store and a `server_name` (the MQTT layer keeps its
  sessions and retained messages in JetStream, which in a cluster needs both). Each node lists the
  cluster ports of all three as `routes`; a node ignores the route to itself.
- Two replicas of `mcpmqtt serve --transport http` (`tests/http_server.py`), replica i connected to
  node i, so that a message published through one replica crosses the cluster to reach the other.
- HAProxy (Debian's `haproxy`) on a free port in front of the replicas: requests that carry an
  `Mcp-Session-Id` (2025-11-25 sessions) go to the replica that named that session in its answer to
  `initialize` (a stick table learns it from the response); requests without one (sessionless
  2026-07-28 clients) go round robin. A replica that stops answering is taken
  out by the health check on `/readyz`, and a request whose connection fails is sent to the other.

Every process runs in a work folder of its own and is stopped with the harness.
"""

from __future__ import annotations

import contextlib
import csv
import json
import pathlib
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx2
from brokers import NatsServer
from http_server import ServerProcess, config_for
from mosquitto import find_executable
from support import free_ports

CLUSTER_STARTUP_TIMEOUT = 60.0


class NatsNode(NatsServer):
    """One node of the cluster: a `NatsServer` with a cluster listener and routes to its peers."""

    name = "NATS cluster node"

    def __init__(self, workdir: pathlib.Path, cluster_name: str, cluster_port: int, peers: list[int]) -> None:
        super().__init__(workdir)
        self.cluster_name = cluster_name
        self.cluster_port = cluster_port
        self.peers = peers

    def prepare(self) -> None:
        super().prepare()
        config = json.loads(self._config_path.read_text())
        config["cluster"] = {
            "name": self.cluster_name,
            "listen": f"{self.host}:{self.cluster_port}",
            "routes": [f"nats-route://{self.host}:{port}" for port in self.peers],
        }
        self._config_path.write_text(json.dumps(config, indent=2))

    @property
    def running(self) -> bool:
        """Whether the node's process is alive (a test may have killed it)."""
        if self._process is not None and self._process.poll() is not None:
            self._process = None  # it died: `start` may run it again
        return self._process is not None

    def kill(self) -> None:
        """SIGKILL, as a crash: no goodbye to the peers or the clients."""
        process, self._process = self._process, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGKILL)
            process.wait()


class NatsCluster:
    """Three NATS nodes routed to one another; `start` returns once every node accepts MQTT CONNECTs."""

    def __init__(self, workdir: pathlib.Path, size: int = 3) -> None:
        ports = free_ports(size, "127.0.0.1")
        name = f"mcpmqtt-test-{secrets.token_hex(3)}"
        self.nodes = [NatsNode(workdir / f"node{i}", name, port, ports) for i, port in enumerate(ports)]

    def start(self) -> None:
        # JetStream (and with it MQTT) waits for a quorum of peers: the nodes must start together.
        errors: list[BaseException] = []

        def start(node: NatsNode) -> None:
            try:
                node.start()
            except BaseException as exc:  # reported below, with the node's log
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(node,)) for node in self.nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            self.stop()
            raise errors[0]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


HAPROXY_CONFIG = """\
global
    maxconn 1000
    stats socket {socket} mode 600

defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    # A request whose connection to a replica fails goes to the other replica.
    retries 3
    option redispatch 1

frontend mcp
    bind {host}:{port}
    default_backend replicas

backend replicas
    # Without a session (2026-07-28 clients, and every initialize): round robin.
    balance roundrobin
    # 2025-11-25 sessions: the replica that answered initialize names the session in its response's
    # Mcp-Session-Id header; remember which replica that was, and send the session's requests there.
    stick-table type string len 64 size 100k expire 2h
    stick store-response res.hdr(mcp-session-id)
    stick match req.hdr(mcp-session-id)
    option httpchk GET /readyz
    http-check expect status 200
    default-server check inter 500ms fall 2 rise 2
{servers}
"""


class HAProxy:
    """Debian's haproxy with `HAPROXY_CONFIG`, in the foreground (`-db`), on a free port."""

    package = "haproxy"

    def __init__(self, workdir: pathlib.Path, backends: list[tuple[str, int]]) -> None:
        self.host = "127.0.0.1"
        (self.port,) = free_ports(1, self.host)
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "haproxy.cfg"
        self.output_path = workdir / "haproxy.out"
        servers = "\n".join(f"    server r{i} {host}:{port}" for i, (host, port) in enumerate(backends))
        self.socket_path = workdir / "haproxy.sock"
        self.config_path.write_text(
            HAPROXY_CONFIG.format(host=self.host, port=self.port, servers=servers, socket=self.socket_path)
        )
        self._process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def executable() -> pathlib.Path | None:
        return find_executable("haproxy")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/mcp"

    def start(self) -> None:
        executable = self.executable()
        if executable is None:
            raise RuntimeError("haproxy is not installed: apt-get install haproxy")
        with self.output_path.open("ab") as output:
            self._process = subprocess.Popen(
                [str(executable), "-db", "-f", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(httpx2.HTTPError):
                if httpx2.get(f"http://{self.host}:{self.port}/healthz", timeout=1).status_code == 200:
                    return
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"haproxy did not start:\n{self.output_path.read_text(errors='replace')}")
            time.sleep(0.05)

    def servers_up(self) -> set[str]:
        """The backend servers HAProxy's health check counts as up (`show stat` on its stats socket)."""
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(str(self.socket_path))
            conn.sendall(b"show stat\n")
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
        rows = list(csv.reader(answer.decode().lstrip("# ").splitlines()))
        header, records = rows[0], [dict(zip(rows[0], row, strict=False)) for row in rows[1:] if row]
        assert "status" in header, answer
        return {
            r["svname"]
            for r in records
            if r["pxname"] == "replicas"
            and r["svname"] not in ("BACKEND", "FRONTEND")
            and r["status"] == "UP"
        }

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class Deployment:
    """The whole setup: the NATS cluster, one replica per node (of the first `replicas`), HAProxy."""

    def __init__(self, workdir: pathlib.Path, topics: list[dict[str, Any]], replicas: int = 2) -> None:
        self.cluster = NatsCluster(workdir / "nats")
        self.audit_paths = [workdir / f"audit{i}.jsonl" for i in range(replicas)]
        self.replicas = [
            ServerProcess(
                workdir / f"replica{i}",
                config_for(
                    node,  # type: ignore[arg-type]  # host and port are all config_for reads
                    topics=topics,
                    protocol="3.1.1",  # all NATS speaks; skips the MQTT 5 attempt on every reconnect
                )
                | {"audit": {"path": str(self.audit_paths[i])}},
            )
            for i, node in enumerate(self.cluster.nodes[:replicas])
        ]
        self.haproxy = HAProxy(workdir / "haproxy", [(r.host, r.port) for r in self.replicas])

    def start(self) -> None:
        self.cluster.start()
        try:
            for replica in self.replicas:
                replica.start()
                replica.wait_ready(20)
            self.haproxy.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.haproxy.stop()
        for replica in self.replicas:
            replica.stop()
        self.cluster.stop()

    def restore(self, timeout: float = 60) -> None:
        """Bring back whatever a test killed (nodes, replicas) and wait until HAProxy routes to every
        replica again, so that each test starts from the whole setup."""
        for node in self.cluster.nodes:
            if not node.running:
                node.start()
        for replica in self.replicas:
            if replica.process is None or replica.process.poll() is not None:
                replica.start()
            replica.wait_ready(timeout)
        deadline = time.monotonic() + timeout
        wanted = {f"r{i}" for i in range(len(self.replicas))}
        while self.haproxy.servers_up() != wanted:
            if time.monotonic() > deadline:
                raise TimeoutError(f"HAProxy sees only {self.haproxy.servers_up()} up")
            time.sleep(0.1)  # HAProxy's own check interval decides; there is no event to wait on

    def calls_served(self, index: int, topic_prefix: str) -> int:
        """How many tool calls on topics under `topic_prefix` replica `index` recorded in its audit log."""
        path = self.audit_paths[index]
        if not path.exists():
            return 0
        records = [json.loads(line) for line in path.read_text().splitlines() if line]
        return sum(str(record.get("topic", "")).startswith(topic_prefix + "/") for record in records)


@contextlib.contextmanager
def deployment(workdir: pathlib.Path, topics: list[dict[str, Any]]) -> Iterator[Deployment]:
    started = Deployment(workdir, topics)
    started.start()
    try:
        yield started
    finally:
        started.stop()
