"""Core benchmarks: mcpmqtt over stdio side by side with a raw aiomqtt client, in one run.

    .venv/bin/python bench/bench_core.py [--calls 500] [--messages 10000]

Measures, against a private Mosquitto started here:
  (a) mqtt_publish at QoS 1 vs a raw QoS 1 publish that waits for its PUBACK
  (b) mqtt_query vs a raw MQTT 5 request/response (same responder)
  (c) mqtt_subscribe collecting N messages vs a raw subscriber receiving them (rate and loss)
  and the server's start-up (initialize answered after process start; the SDK's toy server as the
  floor) and idle RSS. Prints medians, p99 and ratios; writes bench/results/core.json.
"""

import argparse
import asyncio
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import aiomqtt  # noqa: E402
import paho.mqtt.client as paho  # noqa: E402
from mcp.client import Client  # noqa: E402
from mcp_client import INITIALIZE, connect, write_config  # noqa: E402
from mosquitto import Mosquitto  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        "n": len(ordered),
    }


async def timed(calls: int, warmup: int, once: Callable[[int], Awaitable[None]]) -> list[float]:
    for i in range(warmup):
        await once(i)
    samples = []
    for i in range(calls):
        started = time.perf_counter()
        await once(i)
        samples.append(time.perf_counter() - started)
    return samples


def raw(broker: Mosquitto) -> aiomqtt.Client:
    import socket

    return aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=f"bench-raw-{uuid.uuid4().hex[:6]}",
        protocol=aiomqtt.ProtocolVersion.V5,
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
    )


def props(**values: Any) -> Properties:
    p = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    for key, value in values.items():
        setattr(p, key, value)
    return p


async def responder(broker: Mosquitto, ready: asyncio.Event) -> None:
    """Echo every request on lab/req/# to its Response Topic with its Correlation Data."""
    async with raw(broker) as client:
        await client.subscribe("lab/req/#", qos=0)
        ready.set()
        async for message in client.messages:
            p = message.properties
            if p is not None and getattr(p, "ResponseTopic", None):
                await client.publish(
                    p.ResponseTopic, message.payload, properties=props(CorrelationData=p.CorrelationData)
                )


async def bench_publish(client: Client, broker: Mosquitto, calls: int) -> dict[str, Any]:
    async def via_mcp(i: int) -> None:
        result = await client.call_tool(
            "mqtt_publish", {"topic": "lab/bench/pub", "payload": str(i), "qos": 1}
        )
        assert not result.is_error, result.content

    async with raw(broker) as direct:

        async def via_raw(i: int) -> None:
            await direct.publish("lab/bench/pub", str(i).encode(), qos=1)

        raw_samples = await timed(calls, 50, via_raw)
        mcp_samples = await timed(calls, 50, via_mcp)
    return {"mcp": summary(mcp_samples), "raw": summary(raw_samples)}


async def bench_query(client: Client, broker: Mosquitto, calls: int) -> dict[str, Any]:
    async def via_mcp(i: int) -> None:
        result = await client.call_tool(
            "mqtt_query", {"request_topic": "lab/req/x", "payload": str(i), "qos": 0}
        )
        assert not result.is_error and result.structured_content["response"] is not None, result.content  # type: ignore[index]

    async with raw(broker) as direct:
        waiting: dict[bytes, asyncio.Future[None]] = {}
        await direct.subscribe("bench/raw/reply", qos=1)

        async def listen() -> None:
            async for message in direct.messages:
                if message.properties is not None and (
                    f := waiting.pop(message.properties.CorrelationData, None)
                ):
                    f.set_result(None)

        listener = asyncio.create_task(listen())

        async def via_raw(i: int) -> None:
            correlation = uuid.uuid4().bytes
            waiting[correlation] = asyncio.get_running_loop().create_future()
            request = props(ResponseTopic="bench/raw/reply", CorrelationData=correlation)
            await direct.publish("lab/req/x", str(i).encode(), properties=request)
            await waiting[correlation]

        raw_samples = await timed(calls, 50, via_raw)
        listener.cancel()
    mcp_samples = await timed(calls, 50, via_mcp)
    return {"mcp": summary(mcp_samples), "raw": summary(raw_samples)}


PUBLISHER = """
import sys, time
import paho.mqtt.client as paho
host, port, topic, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
client.max_queued_messages_set(0)
client.connect(host, port)
client.loop_start()
payloads = [str(i).encode() for i in range(count)]
print(time.time(), flush=True)
for payload in payloads:
    info = client.publish(topic, payload, qos=0)
info.wait_for_publish(60)
client.disconnect()
client.loop_stop()
"""


async def publish_burst(broker: Mosquitto, topic: str, count: int) -> float:
    """Publish `count` numbered QoS 0 messages as fast as possible; returns the wall-clock start.

    paho in a process of its own, so that the publisher never competes with a receiver for the GIL
    (in-process it held every receiver near 7,000 msg/s).
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PUBLISHER,
        broker.host,
        str(broker.port),
        topic,
        str(count),
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    started = float(await process.stdout.readline())
    await process.wait()
    return started


async def bench_subscribe(client: Client, client_id: str, broker: Mosquitto, count: int) -> dict[str, Any]:
    """Messages/s from the first publish until (ingest) the server holds the last one, by its own
    received_at, and (end to end) the tool result with all of them is back at the client."""
    topic_filter = "lab/fire/#"
    before = broker.subscribe_events(client_id).count(("subscribe", topic_filter))
    call = asyncio.create_task(
        client.call_tool("mqtt_subscribe", {"topic": topic_filter, "max_messages": count, "timeout": 120})
    )
    while broker.subscribe_events(client_id).count(("subscribe", topic_filter)) == before:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    started = await publish_burst(broker, "lab/fire/x", count)
    result = await call
    end_to_end = time.time() - started
    assert not result.is_error, result.content
    messages = result.structured_content["messages"]  # type: ignore[index]
    last = datetime.fromisoformat(messages[-1]["received_at"]).timestamp()
    payloads = {int(m["payload"]) for m in messages}
    return {
        "messages": count,
        "mcp": {
            "ingest_msg_per_s": count / (last - started),
            "end_to_end_msg_per_s": count / end_to_end,
            "lost": count - len(payloads),
        },
        "raw_aiomqtt": await raw_aiomqtt_receive(broker, count),
        "raw_paho": await raw_paho_receive(broker, count),
    }


async def raw_aiomqtt_receive(broker: Mosquitto, count: int) -> dict[str, Any]:
    received: list[int] = []
    finished: list[float] = []
    done = asyncio.Event()
    async with raw(broker) as subscriber:
        await subscriber.subscribe("lab/rawfire/#", qos=1)

        async def listen() -> None:
            async for message in subscriber.messages:
                received.append(int(message.payload))  # type: ignore[arg-type]
                if len(received) == count:
                    finished.append(time.time())
                    done.set()

        listener = asyncio.create_task(listen())
        started = await publish_burst(broker, "lab/rawfire/x", count)
        await asyncio.wait_for(done.wait(), 120)
        listener.cancel()
    return {"msg_per_s": count / (finished[0] - started), "lost": count - len(set(received))}


async def raw_paho_receive(broker: Mosquitto, count: int) -> dict[str, Any]:
    """paho's own network thread and an on_message callback: the leanest Python receive path."""
    received: list[int] = []
    finished: list[float] = []
    done = threading.Event()

    def on_message(client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        received.append(int(message.payload))
        if len(received) == count:
            finished.append(time.time())
            done.set()

    subscriber = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    subscriber.on_message = on_message
    subscriber.connect(broker.host, broker.port)
    subscriber.loop_start()
    try:
        subscriber.subscribe("lab/pahofire/#", qos=1)
        await asyncio.sleep(0.3)  # SUBACK
        started = await publish_burst(broker, "lab/pahofire/x", count)
        await asyncio.to_thread(done.wait, 120)
    finally:
        subscriber.disconnect()
        subscriber.loop_stop()
    return {"msg_per_s": count / (finished[0] - started), "lost": count - len(set(received))}


def _startup_once(command: list[str]) -> tuple[float, int]:
    """Seconds from process start to the initialize answer, and the idle RSS in kB a second later."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert process.stdin and process.stdout
    process.stdin.write((json.dumps(INITIALIZE) + "\n").encode())
    process.stdin.flush()
    process.stdout.readline()
    elapsed = time.perf_counter() - started
    time.sleep(1.0)  # let the broker connection settle: this is the idle footprint
    status = pathlib.Path(f"/proc/{process.pid}/status").read_text()
    rss_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
    process.kill()
    process.wait()
    return elapsed, rss_kb


def startup(commands: dict[str, list[str]], runs: int) -> dict[str, dict[str, float]]:
    """Start-up of each command, interleaved run by run so that load on the machine hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    rss: dict[str, list[int]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            elapsed, rss_kb = _startup_once(command)
            times[name].append(elapsed)
            rss[name].append(rss_kb)
    return {
        name: {
            "median_s": statistics.median(times[name]),
            "min_s": min(times[name]),
            "idle_rss_mb": statistics.median(rss[name]) / 1024,
        }
        for name in commands
    }


async def bench_sdk_floor(calls: int, mode: str) -> dict[str, Any]:
    """The SDK's own cost of one tool call over stdio: an async no-op tool (bench/noop_server.py)."""
    from mcp.client.stdio import StdioServerParameters

    noop = StdioServerParameters(command=sys.executable, args=[str(ROOT / "bench" / "noop_server.py")])
    async with Client(noop, mode=mode) as client:

        async def once(_: int) -> None:
            await client.call_tool("noop", {})

        return summary(await timed(calls, 50, once))


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--startups", type=int, default=7)
    parser.add_argument("--mode", default="auto", help='client mode: "auto" (2026-07-28) or "legacy"')
    args = parser.parse_args()

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="mcpmqtt-bench-"))
    with Mosquitto(workdir / "broker") as broker:
        config, client_id = write_config(workdir, broker)
        starts = startup(
            {
                "mcpmqtt": [sys.executable, "-m", "mcpmqtt", "--config", str(config)],
                "toy": [sys.executable, str(ROOT / "examples" / "toy_mcp.py")],
            },
            args.startups,
        )
        results: dict[str, Any] = {"startup": starts["mcpmqtt"], "startup_sdk_floor": starts["toy"]}
        results["sdk_floor"] = await bench_sdk_floor(args.calls, args.mode)
        ready = asyncio.Event()
        service = asyncio.create_task(responder(broker, ready))
        await ready.wait()
        async with connect(config, args.mode) as client:
            results["protocol"] = client.protocol_version
            results["publish_qos1"] = await bench_publish(client, broker, args.calls)
            results["query"] = await bench_query(client, broker, args.calls)
            results["subscribe"] = await bench_subscribe(client, client_id, broker, args.messages)
        service.cancel()

    report(results)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "core.json").write_text(json.dumps(results, indent=2))


def report(r: dict[str, Any]) -> None:
    print(f"mcpmqtt core benchmark (protocol {r['protocol']}, one run, private Mosquitto)\n")
    header = ("mcp median", "raw median", "diff", "ratio", "mcp p99", "raw p99")
    print(
        f"{'':30} {header[0]:>11} {header[1]:>11} {header[2]:>9} {header[3]:>7} {header[4]:>9} {header[5]:>9}"
    )
    for name in ("publish_qos1", "query"):
        m, w = r[name]["mcp"], r[name]["raw"]
        diff = m["median_ms"] - w["median_ms"]
        print(
            f"{name:30} {m['median_ms']:9.3f}ms {w['median_ms']:9.3f}ms {diff:+7.3f}ms "
            f"{m['median_ms'] / w['median_ms']:6.2f}x {m['p99_ms']:7.3f}ms {w['p99_ms']:7.3f}ms"
        )
    floor = r["sdk_floor"]["median_ms"]
    print(f"{'sdk floor (no-op tool call)':30} {floor:9.3f}ms")
    for name in ("publish_qos1", "query"):
        own = r[name]["mcp"]["median_ms"] - r[name]["raw"]["median_ms"] - floor
        print(f"  mcpmqtt's own cost in {name}: {own:+.3f} ms (mcp - raw - sdk floor)")
    s = r["subscribe"]
    m, a, p = s["mcp"], s["raw_aiomqtt"], s["raw_paho"]
    print(
        f"\nmqtt_subscribe of {s['messages']:,} messages: ingest {m['ingest_msg_per_s']:,.0f} msg/s, "
        f"end to end (result back at the client) {m['end_to_end_msg_per_s']:,.0f} msg/s, lost {m['lost']}\n"
        f"raw receive: aiomqtt {a['msg_per_s']:,.0f} msg/s (lost {a['lost']}), "
        f"paho {p['msg_per_s']:,.0f} msg/s (lost {p['lost']}); "
        f"ingest / aiomqtt {m['ingest_msg_per_s'] / a['msg_per_s']:.2f}x, "
        f"ingest / paho {m['ingest_msg_per_s'] / p['msg_per_s']:.2f}x"
    )
    st, toy = r["startup"], r["startup_sdk_floor"]
    print(
        f"initialize answered after start: mcpmqtt {st['median_s']:.3f} s median (min {st['min_s']:.3f}), "
        f"SDK toy server {toy['median_s']:.3f} s: {1000 * (st['median_s'] - toy['median_s']):+.0f} ms; "
        f"idle RSS mcpmqtt {st['idle_rss_mb']:.1f} MB, toy {toy['idle_rss_mb']:.1f} MB: "
        f"{st['idle_rss_mb'] - toy['idle_rss_mb']:+.1f} MB"
    )


if __name__ == "__main__":
    asyncio.run(main())
