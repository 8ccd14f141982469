"""Firehose ingest with payload-shape inference on and off: what observation costs per message.

    .venv/bin/python bench/bench_shapes.py [--messages 200000] [--topics 1000] [--rounds 3]

The firehose of bench_firehose.py (one private Mosquitto that never drops a QoS 0 message, a
publisher in its own process sending sensor-like JSON over `fire/<i % topics>` as fast as the broker
takes it), received on MQTT 5 by the broker adapter with the live-state cache following `fire/#`, as
the server runs it, in two configurations taking turns:

  - off: the live-state cache alone (shapes.enabled: false);
  - on:  the cache and the ShapeObserver following the same filter, with the server's default
         bounds (one sample per topic per second, at most 200 inferred per flush), and its flushes
         scheduled on the event loop as in the server.

A run counts only if every message reached the cache. The ratio on/off of the median rates is the
figure issue 13 asks for (>= 80 %). Writes bench/results/shapes.json.
"""

import argparse
import asyncio
import json
import pathlib
import platform
import statistics
import sys
import tempfile
import time
import uuid
from typing import Any

BENCH = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import bench_firehose as firehose  # noqa: E402

MODES = ("off", "on")
FILTER = firehose.FILTER


async def receive(host: str, port: int, messages: int, topics: int, shapes_on: bool) -> dict[str, Any]:
    from mcpmqtt.config import ShapesSettings
    from mcpmqtt.mqtt import Broker, BrokerSettings
    from mcpmqtt.observation import ShapeObserver
    from mcpmqtt.server.live_state import LiveState

    counter = firehose.Counter(messages)
    adapter = Broker(BrokerSettings(host, port, f"shapes-bench-{uuid.uuid4().hex[:6]}", protocol="5"))

    def first_message(topic: str, is_new: bool) -> None:
        counter.first = time.time()
        state.listener = None

    state = LiveState(max(10_000, topics), 65_536, first_message)
    adapter.follow(FILTER, state)
    settings = ShapesSettings()
    observer = ShapeObserver(
        max_topics=settings.max_topics,
        sample_interval=settings.sample_interval,
        max_sample_bytes=settings.max_sample_bytes,
        max_schema_bytes=settings.max_schema_bytes,
        max_examples=settings.max_examples,
        listener=lambda topic: None,  # the server's notifier, with no subscriber to send to
    )
    if shapes_on:
        adapter.follow(FILTER, observer)
    task = asyncio.create_task(adapter.run())
    while not adapter.connected:  # noqa: ASYNC110 - a state flag, polled briefly
        await asyncio.sleep(0.01)

    def cached() -> int:
        return sum(entry.messages for _, entry in state.matching(FILTER))

    cpu = await firehose.until_done(counter, cached)
    counter.last = max((entry.last.received_at for _, entry in state.matching(FILTER)), default=counter.last)
    result = counter.result(cpu)
    shaped = [observer.shape_of(name) for name, _ in state.matching(FILTER)]
    result["topics_with_schema"] = sum(1 for record in shaped if record and record["schema"])
    result["samples"] = sum(record["samples"] for record in shaped if record)
    await adapter.stop(task)
    return result


async def run_one(broker: Any, mode: str, messages: int, topics: int) -> dict[str, Any]:
    return await firehose.receive_firehose(broker, __file__, [mode], messages, topics, f"shapes {mode}")


async def orchestrate(args: argparse.Namespace) -> None:
    runs: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="mcpmqtt-bench-shapes-") as workdir,
        firehose.FirehoseMosquitto(pathlib.Path(workdir) / "broker") as broker,
    ):
        for number in range(args.rounds):
            for mode in MODES if number % 2 == 0 else MODES[::-1]:  # each goes first in turn
                result = await run_one(broker, mode, args.messages, args.topics)
                result.update(round=number + 1, mode=mode)
                runs.append(result)
                lost = f"LOST {result['lost']:,}" if result["lost"] else "0 lost"
                print(
                    f"  round {number + 1}  shapes {mode:3}  {result['msg_per_s']:>9,.0f} msg/s"
                    f"  {result['cpu_us_per_msg']:5.1f} µs CPU/msg  {lost}"
                    f"  schemas {result['topics_with_schema']:,}  samples {result['samples']:,}",
                    flush=True,
                )
    medians: dict[str, float | None] = {}
    cpu: dict[str, float] = {}
    for mode in MODES:
        valid = [r["msg_per_s"] for r in runs if r["mode"] == mode and r["lost"] == 0]
        medians[mode] = statistics.median(valid) if valid else None
        cpu[mode] = statistics.median(r["cpu_us_per_msg"] for r in runs if r["mode"] == mode)
    on, off = medians["on"], medians["off"]
    ratio = on / off if on and off else None
    print(f"\nFirehose {args.messages:,} messages over {args.topics:,} topics, MQTT 5, {args.rounds} rounds")
    for mode in MODES:
        shown = f"{medians[mode]:,.0f} msg/s" if medians[mode] else "no valid run"
        print(f"  shapes {mode}: median {shown}, {cpu[mode]:.1f} µs CPU/msg")
    print(f"  on/off rate: {ratio:.0%}" if ratio is not None else "  on/off rate: n/a")
    # The rate can be the publisher's or the broker's; the receiver's CPU per message is its own cost.
    print(f"  CPU per message on/off: {cpu['on'] / cpu['off']:.0%}")
    out = BENCH / "results"
    out.mkdir(exist_ok=True)
    (out / "shapes.json").write_text(
        json.dumps(
            {
                "messages": args.messages,
                "topics": args.topics,
                "rounds": args.rounds,
                "python": platform.python_version(),
                "median_msg_per_s": medians,
                "on_vs_off": ratio,
                "median_cpu_us_per_msg": cpu,
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
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--receiver", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--host", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver:
        on = args.receiver == "on"
        result = asyncio.run(receive(args.host, args.port, args.messages, args.topics, on))
        print(json.dumps(result), flush=True)
    else:
        asyncio.run(orchestrate(args))


if __name__ == "__main__":
    main()
