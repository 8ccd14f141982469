"""Firehose ingest: how fast the live-state cache takes in a broker publishing as fast as it can.

    .venv/bin/python bench/bench_firehose.py [--messages 200000] [--topics 1000] [--rounds 5]

One private Mosquitto, configured to keep every QoS 0 message for a slow subscriber (no limit on
queued messages or bytes: a figure bought by dropping messages would be worthless). For each
receiver in turn, on MQTT 5 and on 3.1.1:

  - raw paho-mqtt: its own network thread, an on_message that counts;
  - raw gmqtt: asyncio, an on_message that counts;
  - mcpmqtt: the broker adapter with the live-state cache following `fire/#`, as the server runs
    it. On 3.1.1 the cache has no subscription of its own (without subscription identifiers the
    broker's copies could not be told apart, see `Broker.follow`): it sees what a call's
    subscription reads, so there the receiver is a call subscribed to `fire/#` with the cache
    observing, and both must have every message.

A publisher in a process of its own (so that it never competes with a receiver for the GIL) sends
N QoS 0 messages with a sensor-like JSON payload over `fire/<i % topics>`, as fast as the broker
takes them: the PUBLISH packets are encoded before the clock starts and written with one sendall.
Each receiver runs in a fresh process too. The rate is messages/s from the first to the last
message received; a run counts only if received == sent (for mcpmqtt, by the per-topic message
counts the cache keeps). Receivers take turns in a rotating order, `--rounds` times, and the
median is reported. Writes bench/results/firehose.json.
"""

import argparse
import asyncio
import collections
import contextlib
import json
import pathlib
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from mosquitto import Mosquitto  # noqa: E402

CLIENTS = ("paho", "gmqtt", "mcpmqtt")
RAW_CLIENTS = ("paho", "gmqtt")
PROTOCOLS = ("5", "3.1.1")
FILTER = "fire/#"
STALL_SECONDS = 5.0
"""A receiver that got nothing new for this long after the publisher finished has lost messages."""


class FirehoseMosquitto(Mosquitto):
    """The tests' private Mosquitto, told to queue every QoS 0 message for a slow subscriber.

    Mosquitto drops QoS 0 messages for a connected client once `max_queued_messages` (the tests use
    100,000) or `max_queued_bytes` are in its queue; 0 means no limit. Later lines of the config
    override the tests' values.
    """

    UNLIMITED = "max_queued_messages 0, max_queued_bytes 0, max_inflight_bytes 0"

    def _more_listeners(self) -> str:
        settings = self.UNLIMITED.replace(", ", "\n")
        return f"\n# bench/bench_firehose.py: never drop a message for a slow subscriber.\n{settings}\n"


# ---- the publisher (its own process) ---------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _packet(header: int, body: bytes) -> bytes:
    return bytes([header]) + _varint(len(body)) + body


def _string(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def payload(i: int) -> bytes:
    """A small sensor reading, different for every message."""
    return b'{"seq":%d,"temperature":%.1f,"humidity":%d}' % (i, 18 + (i % 70) / 10, 40 + i % 20)


def topic(i: int, topics: int) -> str:
    return f"fire/{i % topics}"


def publish(host: str, port: int, messages: int, topics: int) -> dict[str, float]:
    """Send `messages` QoS 0 PUBLISH packets (MQTT 3.1.1) as fast as the broker reads them.

    Returns the wall-clock start and the moment the broker had taken all of them (its PINGRESP to a
    PINGREQ sent after the last PUBLISH: Mosquitto handles a connection's packets in order).
    """
    burst = b"".join(_packet(0x30, _string(topic(i, topics)) + payload(i)) for i in range(messages))
    connect = b"\x00\x04MQTT\x04\x02\x00\x3c" + _string(f"firehose-pub-{uuid.uuid4().hex[:6]}")
    with socket.create_connection((host, port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(_packet(0x10, connect))
        if sock.recv(4) != b"\x20\x02\x00\x00":
            raise RuntimeError("the broker refused the publisher's CONNECT")
        started = time.time()
        sock.sendall(burst + b"\xc0\x00")  # the burst, then PINGREQ
        answer = b""
        while len(answer) < 2:
            chunk = sock.recv(2 - len(answer))
            if not chunk:
                raise RuntimeError("the broker closed the publisher's connection")
            answer += chunk
        finished = time.time()
        if answer != b"\xd0\x00":
            raise RuntimeError(f"expected PINGRESP, got {answer!r}")
        sock.sendall(b"\xe0\x00")  # DISCONNECT
    return {"started": started, "finished": finished}


# ---- the receivers (each in its own process) ----------------------------------------------------


class Counter:
    """What every receiver records: how many arrived, when the first and the last did."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.first = 0.0
        self.last = 0.0

    def result(self, cpu_seconds: float) -> dict[str, Any]:
        span = self.last - self.first
        return {
            "received": self.count,
            "lost": self.expected - self.count,
            "msg_per_s": (self.count - 1) / span if span > 0 else 0.0,
            "cpu_us_per_msg": cpu_seconds / max(self.count, 1) * 1e6,
        }


def ready() -> None:
    """Tell the orchestrator that the subscription is acknowledged: the publisher may start."""
    print("ready", flush=True)


async def until_done(counter: Counter, count: Callable[[], int] | None = None) -> float:
    """Poll until every message arrived, or nothing new came for STALL_SECONDS (loss); returns the
    CPU time the process used meanwhile. Polled, so that no receiver pays for it per message."""
    cpu = time.process_time()
    ready()
    seen, quiet_since = -1, time.monotonic()
    while True:
        await asyncio.sleep(0.05)
        if count is not None:
            counter.count = count()
        if counter.count >= counter.expected:
            return time.process_time() - cpu
        if counter.count != seen:
            seen, quiet_since = counter.count, time.monotonic()
        elif time.monotonic() - quiet_since > (STALL_SECONDS if seen > 0 else 60):
            counter.last = time.time()
            return time.process_time() - cpu


def receive_paho(host: str, port: int, protocol: str, messages: int) -> dict[str, Any]:
    """paho's own network thread and an on_message that counts: paho at its leanest."""
    import paho.mqtt.client as paho

    counter = Counter(messages)
    subscribed = threading.Event()

    def on_message(client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        counter.count += 1
        if counter.count == 1:
            counter.first = time.time()
        elif counter.count == messages:
            counter.last = time.time()

    version = paho.MQTTv5 if protocol == "5" else paho.MQTTv311
    client = paho.Client(
        paho.CallbackAPIVersion.VERSION2, f"firehose-paho-{uuid.uuid4().hex[:6]}", protocol=version
    )
    client.on_message = on_message
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect(host, port)
    client.loop_start()
    try:
        client.subscribe(FILTER, qos=1)
        if not subscribed.wait(30):
            raise RuntimeError("paho: no SUBACK")
        cpu = asyncio.run(until_done(counter))
    finally:
        client.disconnect()
        client.loop_stop()
    return counter.result(cpu)


async def receive_gmqtt(host: str, port: int, protocol: str, messages: int) -> dict[str, Any]:
    """gmqtt on asyncio and an on_message that counts."""
    from gmqtt import Client  # type: ignore[import-untyped]
    from gmqtt.mqtt.constants import MQTTv50, MQTTv311  # type: ignore[import-untyped]

    counter = Counter(messages)
    subscribed = asyncio.Event()

    def on_message(client: Any, topic: str, payload: bytes, qos: int, properties: Any) -> int:
        counter.count += 1
        if counter.count == 1:
            counter.first = time.time()
        elif counter.count == messages:
            counter.last = time.time()
        return 0

    client = Client(f"firehose-gmqtt-{uuid.uuid4().hex[:6]}")
    client.on_message = on_message
    client.on_subscribe = lambda *_: subscribed.set()
    await client.connect(host, port, version=MQTTv50 if protocol == "5" else MQTTv311)
    try:
        client.subscribe(FILTER, qos=1)
        await asyncio.wait_for(subscribed.wait(), 30)
        cpu = await until_done(counter)
    finally:
        await client.disconnect()
    return counter.result(cpu)


async def receive_mcpmqtt(host: str, port: int, protocol: str, messages: int, topics: int) -> dict[str, Any]:
    """The adapter with the live-state cache following FILTER; zero loss by the cache's own counts."""
    from mcpmqtt.mqtt import Broker, BrokerSettings, Inbox
    from mcpmqtt.server.live_state import LiveState

    counter = Counter(messages)
    client_id = f"firehose-mcpmqtt-{uuid.uuid4().hex[:6]}"
    adapter = Broker(BrokerSettings(host, port, client_id, protocol="5" if protocol == "5" else "3.1.1"))

    def first_message(topic: str, is_new: bool) -> None:
        counter.first = time.time()
        state.listener = None  # only the first: the server's own listener (notifications) is not measured

    state = LiveState(max(10_000, topics), 65_536, first_message)
    adapter.follow(FILTER, state)  # MQTT 5: subscribed before `connected` is set; 3.1.1: observes
    task = asyncio.create_task(adapter.run())
    while not adapter.connected:  # noqa: ASYNC110 - a state flag, polled briefly
        await asyncio.sleep(0.01)

    def cached() -> int:
        return sum(entry.messages for _, entry in state.matching(FILTER))

    call = Inbox(messages)  # MQTT 3.1.1 only: the call whose subscription the cache observes
    async with contextlib.nullcontext() if protocol == "5" else adapter.subscription(FILTER, call):
        cpu = await until_done(counter, cached)
    counter.last = max((entry.last.received_at for _, entry in state.matching(FILTER)), default=counter.last)
    result = counter.result(cpu)
    expected = collections.Counter(topic(i, topics) for i in range(messages))
    result["topics_wrong"] = sum(
        1 for name, count in expected.items() if (entry := state.get(name)) is None or entry.messages != count
    )
    if protocol != "5":
        result["call_received"] = len(call.messages)
        result["lost"] = max(result["lost"], messages - len(call.messages))
    await adapter.stop(task)
    return result


def receiver_main(args: argparse.Namespace) -> None:
    if args.receiver == "paho":
        result = receive_paho(args.host, args.port, args.protocol, args.messages)
    elif args.receiver == "gmqtt":
        result = asyncio.run(receive_gmqtt(args.host, args.port, args.protocol, args.messages))
    else:
        result = asyncio.run(receive_mcpmqtt(args.host, args.port, args.protocol, args.messages, args.topics))
    print(json.dumps(result), flush=True)


# ---- the orchestrator ---------------------------------------------------------------------------


async def receive_firehose(
    broker: Mosquitto, script: str, receiver: list[str], messages: int, topics: int, what: str
) -> dict[str, Any]:
    """Start `script --receiver ...receiver` in a process of its own, wait for its "ready" line, send it
    the firehose from a publisher process, and return the receiver's figures (its last output line,
    JSON) with the publisher's rate. Every firehose benchmark's receivers follow this protocol."""
    common = ["--host", broker.host, "--port", str(broker.port), "--messages", str(messages)]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        script,
        "--receiver",
        *receiver,
        "--topics",
        str(topics),
        *common,
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 60)
    if line.strip() != b"ready":
        await process.wait()
        raise RuntimeError(f"{what} did not get ready: {line!r}")
    publisher = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--publisher", "--topics", str(topics), *common, stdout=subprocess.PIPE
    )
    published_out, _ = await publisher.communicate()
    out, _ = await process.communicate()
    if process.returncode or publisher.returncode:
        raise RuntimeError(f"{what}: a process failed")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    published = json.loads(published_out)
    result["publish_msg_per_s"] = messages / (published["finished"] - published["started"])
    return result


async def run_one(
    broker: Mosquitto, client: str, protocol: str, messages: int, topics: int
) -> dict[str, Any]:
    """One receiver process, then one publisher process; the receiver's figures."""
    return await receive_firehose(
        broker, __file__, [client, "--protocol", protocol], messages, topics, f"{client} (MQTT {protocol})"
    )


async def orchestrate(args: argparse.Namespace) -> None:
    runs: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="mcpmqtt-bench-firehose-") as workdir,
        FirehoseMosquitto(pathlib.Path(workdir) / "broker") as broker,
    ):
        for number in range(args.rounds):
            order = CLIENTS[number % 3 :] + CLIENTS[: number % 3]  # each goes first in turn
            for protocol in PROTOCOLS:
                for client in order:
                    result = await run_one(broker, client, protocol, args.messages, args.topics)
                    result.update(round=number + 1, client=client, protocol=protocol)
                    runs.append(result)
                    lost = f"LOST {result['lost']:,}" if result["lost"] else "0 lost"
                    rate, cpu = result["msg_per_s"], result["cpu_us_per_msg"]
                    print(
                        f"  round {number + 1}  MQTT {protocol:5}  {client:8} {rate:>9,.0f} msg/s"
                        f"  {cpu:5.1f} µs CPU/msg  {lost}",
                        flush=True,
                    )

    table: dict[str, dict[str, Any]] = {}
    for protocol in PROTOCOLS:
        rows: dict[str, Any] = {}
        for client in CLIENTS:
            mine = [r for r in runs if r["client"] == client and r["protocol"] == protocol]
            valid = [r["msg_per_s"] for r in mine if r["lost"] == 0 and not r.get("topics_wrong")]
            rows[client] = {
                "median_msg_per_s": statistics.median(valid) if valid else None,
                "runs_msg_per_s": [round(r["msg_per_s"]) for r in mine],
                "runs_with_loss": len(mine) - len(valid),
                "median_cpu_us_per_msg": statistics.median(r["cpu_us_per_msg"] for r in mine),
            }
        fastest = max(
            (c for c in RAW_CLIENTS if rows[c]["median_msg_per_s"]),
            key=lambda c: rows[c]["median_msg_per_s"],
            default=None,
        )
        ours = rows["mcpmqtt"]["median_msg_per_s"]
        ratio = ours / rows[fastest]["median_msg_per_s"] if fastest and ours else None
        table[protocol] = {"clients": rows, "fastest_raw": fastest, "mcpmqtt_vs_fastest_raw": ratio}

    print(
        f"\nFirehose: {args.messages:,} QoS 0 messages over {args.topics:,} topics, {args.rounds} rounds "
        "(median of runs without loss)\n"
    )
    print("| MQTT | receiver | msg/s (median) | each run | runs with loss | CPU µs/msg |")
    print("| --- | --- | --- | --- | --- | --- |")
    for protocol, entry in table.items():
        for client, row in entry["clients"].items():
            median = f"{row['median_msg_per_s']:,.0f}" if row["median_msg_per_s"] else "no valid run"
            each = ", ".join(f"{rate:,}" for rate in row["runs_msg_per_s"])
            print(
                f"| {protocol} | {client} | {median} | {each} | {row['runs_with_loss']} | "
                f"{row['median_cpu_us_per_msg']:.1f} |"
            )
    for protocol, entry in table.items():
        ratio = entry["mcpmqtt_vs_fastest_raw"]
        shown = f"{ratio:.0%}" if ratio is not None else "n/a"
        print(f"MQTT {protocol}: mcpmqtt = {shown} of the fastest raw client ({entry['fastest_raw']})")
    print(
        f"broker: Mosquitto with {FirehoseMosquitto.UNLIMITED} (no QoS 0 message dropped for a slow reader)"
    )
    publish_rates = [r["publish_msg_per_s"] for r in runs]
    print(f"publisher: median {statistics.median(publish_rates):,.0f} msg/s accepted by the broker")

    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "firehose.json").write_text(
        json.dumps(
            {
                "messages": args.messages,
                "topics": args.topics,
                "rounds": args.rounds,
                "python": platform.python_version(),
                "summary": table,
                "runs": runs,
            },
            indent=2,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--topics", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    # Internal: the child processes.
    parser.add_argument("--receiver", choices=CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--publisher", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--protocol", choices=PROTOCOLS, default="5", help=argparse.SUPPRESS)
    parser.add_argument("--host", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publisher:
        print(json.dumps(publish(args.host, args.port, args.messages, args.topics)), flush=True)
    elif args.receiver:
        receiver_main(args)
    else:
        asyncio.run(orchestrate(args))


if __name__ == "__main__":
    main()
