"""Soak: mixed calls from several MCP clients for a long time while the broker restarts every few minutes.

    .venv/bin/python bench/soak.py [--minutes 30] [--restart-every 180] [--clients 6]

Not part of CI (it runs for half an hour). One private Mosquitto with persistence on (a production broker
keeps sessions across a restart), one `mcpmqtt serve --transport http` process, and on the MQTT side a
small world of raw paho clients: a device publishing telemetry, a retained status, a request/response
service, and an observer holding a persistent QoS 1 session on everything the agents publish. Several SDK
clients over Streamable HTTP, in both protocol eras, call every tool in a random mix, one call at a time
each, until the time is up. Every few minutes the broker is stopped, left down a moment and started again.

It checks, and exits 1 unless all hold:
  - zero acknowledged publishes lost: every QoS 1 `mqtt_publish` that returned success reached the observer;
  - zero stuck calls: every call returned (result or error) within its own timeout plus a grace period;
  - no growth in broker subscriptions: the filters the server holds at the end are the ones it held
    after warm-up (its live-state cache and its private reply filter), according to the broker's log
    (a filter subscribed again by a later call is still one subscription at the broker);
  - no growth in server memory: resident memory at the end is within 15% of the figure after warm-up.
Calls that fail while the broker is down are expected (`broker unavailable:`) and counted by message.
Writes bench/results/soak.json.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import pathlib
import random
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import paho.mqtt.client as paho  # noqa: E402
from http_server import ServerProcess, config_for, http_client  # noqa: E402
from mcp.types import CallToolResult  # noqa: E402
from mosquitto import Mosquitto  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

TOPICS: list[dict[str, Any]] = [
    {"pattern": "soak/data/+", "permissions": ["read"], "description": "telemetry"},
    {"pattern": "soak/status", "permissions": ["read"], "description": "retained status"},
    {"pattern": "soak/out/#", "permissions": ["read", "write"], "description": "what agents publish"},
    {"pattern": "soak/rpc/request", "permissions": ["write"], "description": "requests"},
]
GRACE = 15.0
"""Seconds past a call's own timeout after which it counts as stuck."""


class World:
    """The raw MQTT side: device, status, responder and observer, each a paho client that reconnects."""

    def __init__(self, broker: Mosquitto) -> None:
        self.broker = broker
        self.received: set[str] = set()
        self._lock = threading.Lock()
        self._clients: list[paho.Client] = []
        self._stop = threading.Event()
        self._device_thread = threading.Thread(target=self._device, daemon=True)

    def _client(self, name: str, *, persistent: bool = False) -> paho.Client:
        protocol = paho.MQTTv311 if persistent else paho.MQTTv5
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"soak-{name}-{uuid.uuid4().hex[:6]}",
            protocol=protocol,
            **({"clean_session": False} if persistent else {}),
        )
        client.reconnect_delay_set(0.2, 2)
        self._clients.append(client)
        return client

    def start(self) -> None:
        observer = self._client("observer", persistent=True)
        observer.on_connect = lambda c, *_: c.subscribe("soak/out/#", qos=1)
        observer.on_message = self._observe
        responder = self._client("responder")
        responder.on_connect = lambda c, *_: c.subscribe("soak/rpc/request", qos=1)
        responder.on_message = self._answer
        self.device = self._client("device")
        for client in (observer, responder, self.device):
            client.connect(self.broker.host, self.broker.port, keepalive=10)
            client.loop_start()
        self._device_thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._device_thread.join()
        for client in self._clients:
            client.disconnect()
            client.loop_stop()

    def _observe(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.received.add(message.payload.decode())

    def _answer(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        asked = message.properties
        topic = getattr(asked, "ResponseTopic", None)
        if not topic:
            return
        reply = Properties(PacketTypes.PUBLISH)
        if correlation := getattr(asked, "CorrelationData", None):
            reply.CorrelationData = correlation
        client.publish(topic, b"pong:" + message.payload, qos=1, properties=reply)

    def _device(self) -> None:
        """Telemetry on ten topics every 50 ms and a retained status every 10 s, whatever the broker does."""
        tick = 0
        while not self._stop.wait(0.05):
            self.device.publish(f"soak/data/{tick % 10}", f'{{"t": {tick}}}')
            if tick % 200 == 0:
                self.device.publish("soak/status", f'{{"up": {tick}}}', qos=1, retain=True)
            tick += 1


class Tally:
    """What the clients saw."""

    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.stuck: list[str] = []
        self.acknowledged: set[str] = set()
        self.slowest = 0.0


async def agent(number: int, url: str, mode: str, until: float, tally: Tally) -> None:
    """One MCP client calling a random mix of tools, one at a time, until `until`."""
    rng = random.Random(number)
    sequence = 0
    async with http_client(url, mode=mode) as client:
        while time.monotonic() < until:
            sequence += 1
            payload = f"agent{number}-{sequence}"
            choices: list[tuple[str, dict[str, Any], float]] = [
                ("mqtt_publish", {"topic": f"soak/out/{number}", "payload": payload, "qos": 1}, 0),
                ("mqtt_read", {"topic": "soak/status", "timeout": 2}, 2),
                ("mqtt_subscribe", {"topic": "soak/data/+", "timeout": 2, "max_messages": 5}, 2),
                ("mqtt_query", {"request_topic": "soak/rpc/request", "payload": payload, "timeout": 3}, 3),
                ("mqtt_last", {"topic": "soak/data/3"}, 0),
                ("mqtt_list_topics", {"filter": "soak/#"}, 0),
            ]
            name, arguments, timeout = rng.choice(choices)
            started = time.monotonic()
            try:
                with_deadline = asyncio.wait_for(client.call_tool(name, arguments), timeout + GRACE)
                result: CallToolResult = await with_deadline
            except TimeoutError:
                tally.stuck.append(f"{name} {arguments}")
                continue
            took = time.monotonic() - started
            tally.slowest = max(tally.slowest, took - timeout)
            tally.calls[name] += 1
            if result.is_error:
                text = getattr(result.content[0], "text", "") if result.content else ""
                tally.errors[f"{name}: {text[:70]}"] += 1
            elif name == "mqtt_publish":
                tally.acknowledged.add(payload)
            await asyncio.sleep(rng.uniform(0, 0.05))


async def warm_up(url: str) -> None:
    """One call of each waiting tool, so that what the server keeps for good (the live-state cache's
    filters, the private reply filter of `mqtt_query`) is in place before the subscriptions are counted."""
    async with http_client(url) as client:
        for name, arguments in (
            ("mqtt_query", {"request_topic": "soak/rpc/request", "payload": "warm", "timeout": 5}),
            ("mqtt_subscribe", {"topic": "soak/data/+", "timeout": 5}),
        ):
            result = await client.call_tool(name, arguments)
            assert not result.is_error, result.content


def rss_kib(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


async def restarter(broker: Mosquitto, every: float, until: float, restarts: list[float]) -> None:
    while until - time.monotonic() > every:
        await asyncio.sleep(every)
        started = time.monotonic()
        await asyncio.to_thread(broker.restart, 2.0)
        restarts.append(time.monotonic() - started)


async def sampler(pid: int, until: float, samples: list[tuple[float, int]], start: float) -> None:
    while time.monotonic() < until:
        samples.append((time.monotonic() - start, rss_kib(pid)))
        await asyncio.sleep(10)


async def soak(arguments: argparse.Namespace, workdir: pathlib.Path) -> dict[str, Any]:
    with Mosquitto(workdir / "broker", persistent=True) as broker:
        world = World(broker)
        world.start()
        config = config_for(broker, topics=TOPICS, keepalive=5)
        config["logging"] = {"level": "WARNING"}
        with ServerProcess(workdir / "server", config) as server:
            server.wait_ready()
            assert server.process is not None
            pid, client_id = server.process.pid, server.client_id
            await warm_up(server.url)
            filters_at_start = sorted(broker.active_filters(client_id))
            start = time.monotonic()
            until = start + arguments.minutes * 60
            tally, restarts, samples = Tally(), [], []
            modes = ("auto", "legacy")
            await asyncio.gather(
                *(agent(n, server.url, modes[n % 2], until, tally) for n in range(arguments.clients)),
                restarter(broker, arguments.restart_every, until, restarts),
                sampler(pid, until, samples, start),
            )
            await asyncio.sleep(5)  # let the observer drain what is queued for it
            filters_at_end = sorted(broker.active_filters(client_id))
            rss_end = rss_kib(pid)
        world.stop()
    warm = [kib for at, kib in samples if at >= min(300, arguments.minutes * 30)]
    rss_warm = warm[0] if warm else samples[0][1]
    lost = sorted(tally.acknowledged - world.received)
    return {
        "minutes": arguments.minutes,
        "clients": arguments.clients,
        "broker_restarts": len(restarts),
        "calls": dict(tally.calls),
        "calls_total": sum(tally.calls.values()),
        "errors": dict(tally.errors.most_common()),
        "acknowledged_publishes": len(tally.acknowledged),
        "acknowledged_lost": len(lost),
        "lost_examples": lost[:10],
        "stuck_calls": len(tally.stuck),
        "stuck_examples": tally.stuck[:10],
        "slowest_past_own_timeout_s": round(tally.slowest, 2),
        "broker_filters_start": filters_at_start,
        "broker_filters_end": filters_at_end,
        "rss_kib_after_warmup": rss_warm,
        "rss_kib_max": max(kib for _, kib in samples),
        "rss_kib_end": rss_end,
    }


def verdict(report: dict[str, Any]) -> list[str]:
    """What failed, in words; empty when the soak passed."""
    failures = []
    if report["acknowledged_lost"]:
        failures.append(f"{report['acknowledged_lost']} acknowledged publishes never reached the observer")
    if report["stuck_calls"]:
        failures.append(f"{report['stuck_calls']} calls did not return within their timeout + {GRACE} s")
    if report["broker_filters_end"] != report["broker_filters_start"]:
        failures.append("the server's broker subscriptions at the end differ from those at the start")
    if report["rss_kib_end"] > report["rss_kib_after_warmup"] * 1.15:
        failures.append("server memory grew by more than 15% after warm-up")
    if not report["broker_restarts"]:
        failures.append("the broker was never restarted: run longer than --restart-every")
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--restart-every", type=float, default=180.0, help="seconds between restarts")
    parser.add_argument("--clients", type=int, default=6)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mcpmqtt-soak-") as directory:
        report = asyncio.run(soak(arguments, pathlib.Path(directory)))
    failures = verdict(report)
    report["passed"] = not failures
    report["failures"] = failures
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "soak.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
