"""Discovery's cost on the message path, in one run against a private Mosquitto:

    .venv/bin/python bench/bench_discovery.py [--messages 100000] [--rounds 5] [--configs 1000]

  (1) firehose ingest with discovery off and on: the broker adapter follows `lab/#` with the
      live-state cache, as the server runs it, and (on) with the discovery sink beside it; a
      publisher in a process of its own sends N QoS 0 messages to `lab/fire/x` as fast as the
      broker takes them. The rate is messages/s from the first publish to the last message the
      cache holds (it must hold all N). Off and on take turns, `--rounds` times; medians and bests
      (the figure least disturbed by other work on the machine) compared. The target (issue 13):
      on >= 80 % of off.
  (2) the same with retained Home Assistant configs arriving during the burst (`--configs`, a few
      hundred bytes of JSON each), all of which must be read, to show parsing stays off the path.
  Beside the rates, the CPU time this process spent per message (the receiver runs here, the
      publisher in a process of its own): on a machine busy with other work, wall-clock rates swing
      by a factor of three between rounds, CPU time per message much less, so the ratio of the
      median CPU times (off / on) is the steadier figure for the same target.
  (3) in process, without a broker: ns per message that the discovery sink's `offer` costs for
      ordinary topics, beside the live-state cache's, the figure least disturbed by machine load.
Writes bench/results/discovery.json.
"""

import argparse
import asyncio
import json
import pathlib
import statistics
import sys
import tempfile
import time
import uuid
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_core import publish_burst  # noqa: E402
from bench_firehose import FirehoseMosquitto  # noqa: E402

from mcpmqtt.discovery import DeviceRegistry, DiscoveryIngest, DiscoveryOptions  # noqa: E402
from mcpmqtt.mqtt import Broker, BrokerSettings, Received  # noqa: E402
from mcpmqtt.rules.policy import Allowlist, Rule  # noqa: E402
from mcpmqtt.server.discovery_feed import DiscoveryFeed  # noqa: E402
from mcpmqtt.server.live_state import LiveState  # noqa: E402

TOPIC = "lab/fire/x"


async def publish_configs(broker: FirehoseMosquitto, count: int) -> None:
    """`count` retained Home Assistant sensor configs under lab/ha, from a client of their own."""
    import aiomqtt

    async with aiomqtt.Client(
        broker.host, broker.port, identifier=f"configs-{uuid.uuid4().hex[:6]}"
    ) as client:
        for index in range(count):
            config = {
                "name": f"Sensor {index}",
                "stat_t": f"lab/sensors/{index}/state",
                "unit_of_meas": "°C",
                "dev_cla": "temperature",
                "val_tpl": "{{ value_json.temperature }}",
                "uniq_id": f"bench{index}",
                "dev": {"ids": [f"bench-device-{index // 4}"], "name": f"Device {index // 4}", "mf": "Bench"},
            }
            await client.publish(f"lab/ha/sensor/bench{index}/config", json.dumps(config), qos=0, retain=True)


async def ingest(broker: FirehoseMosquitto, count: int, discovery: bool, configs: int = 0) -> dict[str, Any]:
    """Messages/s the followed sinks take in; with discovery, how many devices it read."""
    adapter = Broker(BrokerSettings(broker.host, broker.port, f"bench-disc-{uuid.uuid4().hex[:6]}"))
    state = LiveState(10_000, 65_536)
    adapter.follow("lab/#", state)
    registry = DeviceRegistry(100_000)
    feed = None
    if discovery:
        allowlist = Allowlist([Rule("lab/#", frozenset({"read", "write"}))])
        options = DiscoveryOptions(home_assistant_prefix="lab/ha", max_devices=100_000)
        feed = DiscoveryFeed(DiscoveryIngest(options, registry, allowlist), 100_000)
        adapter.follow("lab/#", feed)
    task = asyncio.create_task(adapter.run())
    while not adapter.connected:  # noqa: ASYNC110 - a state flag, polled briefly
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # the follow subscriptions granted
    side = asyncio.create_task(publish_configs(broker, configs)) if configs else None
    cpu = time.process_time()
    started = await publish_burst(broker, TOPIC, count)
    deadline = time.monotonic() + 120
    while (entry := state.get(TOPIC)) is None or entry.messages < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"the cache lost messages: {entry.messages if entry else 0} of {count}")
        await asyncio.sleep(0.01)
    rate = count / (entry.last.received_at - started)
    cpu_per_message = (time.process_time() - cpu) / count * 1e6
    if side is not None:
        await side
    if feed is not None:
        for _ in range(1000):
            await feed.idle()
            if configs == 0 or len(registry) >= configs // 4:
                break
            await asyncio.sleep(0.01)
    await adapter.stop(task)
    return {"rate": rate, "cpu_us": cpu_per_message, "devices": len(registry)}


def offer_cost(count: int = 200_000) -> dict[str, float]:
    """ns per `offer` of ordinary (non-discovery) messages: the live-state cache and the discovery sink."""
    allowlist = Allowlist([Rule("#", frozenset({"read"}))])
    feed = DiscoveryFeed(DiscoveryIngest(DiscoveryOptions(), DeviceRegistry(100), allowlist), 100)
    messages = [Received(f"lab/fire/{i % 1000}", b'{"seq":%d}' % i, 0, False, 0.0) for i in range(count)]
    costs: dict[str, list[float]] = {"live_state": [], "discovery": []}
    for _ in range(5):
        for name, sink in (("live_state", LiveState(10_000, 65_536)), ("discovery", feed)):
            started = time.perf_counter()
            for message in messages:
                sink.offer(message)
            costs[name].append((time.perf_counter() - started) / count * 1e9)
    return {name: min(values) for name, values in costs.items()}


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--configs", type=int, default=1000)
    args = parser.parse_args()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="mcpmqtt-bench-discovery-"))
    rates: dict[str, list[float]] = {"off": [], "on": [], "on_with_configs": []}
    cpu: dict[str, list[float]] = {"off": [], "on": [], "on_with_configs": []}
    devices = 0
    with FirehoseMosquitto(workdir / "broker") as broker:
        for _ in range(args.rounds):  # take turns, so that machine load hits all alike
            for mode, discovery, configs in (
                ("off", False, 0),
                ("on", True, 0),
                ("on_with_configs", True, args.configs),
            ):
                run = await ingest(broker, args.messages, discovery, configs)
                rates[mode].append(run["rate"])
                cpu[mode].append(run["cpu_us"])
                devices = run["devices"] if configs else devices
    medians = {mode: statistics.median(values) for mode, values in rates.items()}
    bests = {mode: max(values) for mode, values in rates.items()}
    cpu_medians = {mode: statistics.median(values) for mode, values in cpu.items()}
    costs = offer_cost()
    ratio = medians["on"] / medians["off"]
    results = {
        "messages": args.messages,
        "rounds": args.rounds,
        "configs": args.configs,
        "rates_msg_per_s": rates,
        "median_msg_per_s": medians,
        "best_msg_per_s": bests,
        "best_on_over_off": bests["on"] / bests["off"],
        "cpu_us_per_message": cpu,
        "median_cpu_us_per_message": cpu_medians,
        "cpu_capacity_on_over_off": cpu_medians["off"] / cpu_medians["on"],
        "on_over_off": ratio,
        "on_with_configs_over_off": medians["on_with_configs"] / medians["off"],
        "devices_read_with_configs": devices,
        "offer_ns_per_message": costs,
    }
    print("mcpmqtt discovery benchmark (one run, private Mosquitto)\n")
    print(f"firehose of {args.messages:,} messages, median of {args.rounds} rounds:")
    print(f"  discovery off {medians['off']:,.0f} msg/s")
    print(f"  discovery on  {medians['on']:,.0f} msg/s ({ratio:.0%} of off; target >= 80%)")
    print(
        f"  best of the rounds: off {bests['off']:,.0f} msg/s, on {bests['on']:,.0f} msg/s "
        f"({bests['on'] / bests['off']:.0%} of off)"
    )
    print(
        f"  CPU per message (median): off {cpu_medians['off']:.2f} us, on {cpu_medians['on']:.2f} us: "
        f"capacity with discovery on {cpu_medians['off'] / cpu_medians['on']:.0%} of off"
    )
    print(
        f"  discovery on, {args.configs} retained configs arriving meanwhile: "
        f"{medians['on_with_configs']:,.0f} msg/s ({results['on_with_configs_over_off']:.0%} of off; "
        f"{devices} devices read; CPU {cpu_medians['on_with_configs']:.2f} us per firehose message)"
    )
    print(
        f"offer, per ordinary message (in process, best of 5): live state {costs['live_state']:.0f} ns, "
        f"discovery sink {costs['discovery']:.0f} ns"
    )
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "discovery.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
