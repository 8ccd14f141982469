"""Watch benchmarks, in one run against a private Mosquitto:

    .venv/bin/python bench/bench_watch.py [--calls 300] [--mode auto]

  (1) publish-to-poll latency: a device publishes while an mqtt_poll waits on a watch of its topic;
      the time from the publish to the poll's result at the client;
  (2) publish-to-notification latency: the same publish, to the `notifications/resources/updated`
      of the watch's resource at a listening client (2026-07-28 `subscriptions/listen`);
  beside the SDK's own floor for a tool call (the toy server's `now`), measured in the same run.
Target: (1) at most 5 ms over the floor. Writes bench/results/watch.json.
"""

import argparse
import asyncio
import json
import pathlib
import sys
import tempfile
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_core import bench_sdk_floor, raw, summary  # noqa: E402
from mcp.client import Client  # noqa: E402
from mcp_client import connect, write_config  # noqa: E402
from mosquitto import Mosquitto  # noqa: E402

TOPIC = "lab/bench/watch"
SETTLE = 0.01
"""Seconds between sending the poll and publishing, so that the poll is waiting on the server (it is
not part of the measured interval, which starts at the publish)."""


async def bench_poll(client: Client, broker: Mosquitto, calls: int) -> list[float]:
    """Publish-to-result of a waiting mqtt_poll, one match per poll."""
    made = await client.call_tool("mqtt_watch", {"topic": TOPIC})
    assert made.structured_content is not None, made.content
    watch_id, cursor = made.structured_content["watch_id"], None
    samples = []
    async with raw(broker) as device:
        for i in range(calls + 50):
            arguments = {"watch_id": watch_id, "wait": 20, **({"cursor": cursor} if cursor else {})}
            poll = asyncio.create_task(client.call_tool("mqtt_poll", arguments))
            await asyncio.sleep(SETTLE)
            assert not poll.done(), "the poll returned before the publish"
            started = time.perf_counter()
            await device.publish(TOPIC, str(i).encode())
            result = await poll
            elapsed = time.perf_counter() - started
            assert result.structured_content is not None, result.content
            got = [m["payload"] for m in result.structured_content["messages"]]
            assert got == [str(i)], got
            cursor = result.structured_content["cursor"]
            if i >= 50:  # after the warm-up
                samples.append(elapsed)
    await client.call_tool("mqtt_unwatch", {"watch_id": watch_id})
    return samples


async def bench_notification(client: Client, broker: Mosquitto, calls: int) -> list[float]:
    """Publish-to-notification of the watch's resource, over subscriptions/listen."""
    made = await client.call_tool("mqtt_watch", {"topic": TOPIC})
    assert made.structured_content is not None, made.content
    watch_id, uri = made.structured_content["watch_id"], made.structured_content["resource"]
    samples = []
    async with raw(broker) as device, client.listen(resource_subscriptions=[uri]) as events:
        updates = aiter(events)
        for i in range(calls + 20):
            started = time.perf_counter()
            await device.publish(TOPIC, str(i).encode())
            await anext(updates)
            elapsed = time.perf_counter() - started
            polled = await client.call_tool("mqtt_poll", {"watch_id": watch_id, "wait": 0})
            assert polled.structured_content is not None and polled.structured_content["messages"]
            await client.call_tool(
                "mqtt_poll", {"watch_id": watch_id, "wait": 0, "cursor": polled.structured_content["cursor"]}
            )
            await asyncio.sleep(0.25)  # past the notify_interval window, so each publish notifies at once
            if i >= 20:
                samples.append(elapsed)
    await client.call_tool("mqtt_unwatch", {"watch_id": watch_id})
    return samples


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--notifications", type=int, default=100)
    parser.add_argument("--mode", default="auto", help='client mode: "auto" (2026-07-28) or "legacy"')
    args = parser.parse_args()
    results: dict[str, Any] = {}
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="mcpmqtt-bench-watch-"))
    with Mosquitto(workdir / "broker") as broker:
        results["sdk_floor"] = await bench_sdk_floor(args.calls, args.mode)
        config, _ = write_config(workdir, broker)
        data = json.loads(config.read_text())
        data["logging"] = {"level": "WARNING"}
        data["live_state"] = {"notify_interval": 0.2}
        config.write_text(json.dumps(data))
        async with connect(config, args.mode) as client:
            results["protocol"] = client.protocol_version
            results["publish_to_poll"] = summary(await bench_poll(client, broker, args.calls))
            if args.mode == "auto":
                results["publish_to_notification"] = summary(
                    await bench_notification(client, broker, args.notifications)
                )

    floor = results["sdk_floor"]["median_ms"]
    print(f"mcpmqtt watch benchmark (one run, private Mosquitto, protocol {results['protocol']})\n")
    print(
        f"SDK floor for a tool call (toy `now`): median {floor:.3f} ms, "
        f"p99 {results['sdk_floor']['p99_ms']:.3f} ms"
    )
    for name in ("publish_to_poll", "publish_to_notification"):
        if name in results:
            r = results[name]
            print(
                f"{name:24} median {r['median_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms "
                f"({r['median_ms'] / floor:.2f}x the floor; {r['median_ms'] - floor:+.3f} ms over it)"
            )
    over = results["publish_to_poll"]["median_ms"] - floor
    print(
        f"\ntarget: publish-to-poll at most 5 ms over the floor: "
        f"{'met' if over <= 5 else 'MISSED'} ({over:+.3f} ms)"
    )
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "watch.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
