"""Live-state benchmarks, in one run against a private Mosquitto:

    .venv/bin/python bench/bench_live.py [--messages 10000] [--calls 500]

  (1) the cache's cost on the message path: messages/s a call's subscription ingests with the cache
      off, and on (the cache following a wider pattern, so each message arrives twice), same run;
  (2) latency of mqtt_last and resources/read of a topic resource over stdio, beside the SDK's own
      floor for a tool call (the toy server's `now`).
Writes bench/results/live.json.
"""

import argparse
import asyncio
import json
import pathlib
import sys
import tempfile
import uuid
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_core import bench_sdk_floor, publish_burst, summary, timed  # noqa: E402
from mcp_client import connect, write_config  # noqa: E402
from mosquitto import Mosquitto  # noqa: E402

from mcpmqtt.mqtt import Broker, BrokerSettings, Inbox  # noqa: E402
from mcpmqtt.server.live_state import LiveState  # noqa: E402
from mcpmqtt.server.notifier import topic_uri  # noqa: E402


async def ingest(broker: Mosquitto, count: int, cache: bool) -> float:
    """Messages/s a call's subscription ingests, with or without the cache following `lab/#`."""
    adapter = Broker(BrokerSettings(broker.host, broker.port, f"bench-live-{uuid.uuid4().hex[:6]}"))
    state = LiveState(10_000, 65_536)
    if cache:
        adapter.follow("lab/#", state)
    task = asyncio.create_task(adapter.run())
    while not adapter.connected:  # noqa: ASYNC110 - a state flag, polled briefly
        await asyncio.sleep(0.01)
    inbox = Inbox(count)
    async with adapter.subscription("lab/fire/#", inbox):
        started = await publish_burst(broker, "lab/fire/x", count)
        await inbox.wait_full(120)
    rate = count / (inbox.messages[-1].received_at - started)
    if cache:  # the cache's copies come on their own subscription, just behind the call's
        for _ in range(500):
            entry = state.get("lab/fire/x")
            if entry is not None and entry.messages == count:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the cache lost messages")
    await adapter.stop(task)
    return rate


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="mcpmqtt-bench-live-"))
    with Mosquitto(workdir / "broker") as broker:
        rates: dict[str, list[float]] = {"off": [], "on": []}
        for _ in range(3):  # alternate, so that machine load hits both alike
            for mode in ("off", "on"):
                rates[mode].append(await ingest(broker, args.messages, cache=mode == "on"))
        results["ingest_msg_per_s"] = {mode: max(values) for mode, values in rates.items()}

        results["sdk_floor"] = await bench_sdk_floor(args.calls, "auto")
        config, _ = write_config(workdir, broker)
        async with connect(config, "auto") as client:
            import aiomqtt

            async with aiomqtt.Client(broker.host, broker.port) as device:
                await device.publish("lab/bench/last", b"42", qos=1, retain=True)
            for _ in range(100):  # until the cache has the retained value
                seen = await client.call_tool("mqtt_last", {"topic": "lab/bench/last"})
                if seen.structured_content and seen.structured_content["message"] is not None:
                    break
                await asyncio.sleep(0.05)

            async def last(_: int) -> None:
                await client.call_tool("mqtt_last", {"topic": "lab/bench/last"})

            async def read(_: int) -> None:
                await client.read_resource(topic_uri("lab/bench/last"))

            results["mqtt_last"] = summary(await timed(args.calls, 50, last))
            results["resources_read"] = summary(await timed(args.calls, 50, read))

    off, on = results["ingest_msg_per_s"]["off"], results["ingest_msg_per_s"]["on"]
    print("mcpmqtt live-state benchmark (one run, private Mosquitto)\n")
    print(
        f"ingest of {args.messages:,} messages by a call: cache off {off:,.0f} msg/s, on {on:,.0f} msg/s "
        f"({on / off:.2f}x; each message then arrives twice, once per subscription)"
    )
    floor = results["sdk_floor"]["median_ms"]
    for name in ("mqtt_last", "resources_read"):
        r = results[name]
        print(
            f"{name:16} median {r['median_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms "
            f"(SDK floor for a tool call {floor:.3f} ms; own cost {r['median_ms'] - floor:+.3f} ms)"
        )
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "live.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
