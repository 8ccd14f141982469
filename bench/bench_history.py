"""History benchmarks, side by side in one run:

    .venv/bin/python bench/bench_history.py [--messages 200000] [--topics 1000] [--rounds 3]

  (1) ingest: the firehose of bench_firehose.py (its broker with no queue limits, its publisher in a
      process of its own, `--messages` QoS 0 sensor readings over `--topics` topics) into a receiver
      process running the broker adapter as the server does, in three ways taking turns: the live
      state alone; the live state and the history in memory; the live state and the history with its
      SQLite file flushed every second. A run counts only with zero loss: every message in the live
      state's counts and in the history (and, for the file, every row written after the last flush).
  (2) memory: 1,000,000 messages (the same readings over 1,000 topics) offered to a history bounded to
      10 MB (`max_bytes`), in memory and with the file (flushed every 10,000 messages): the process's
      RSS before and after, in a fresh process each.
  (3) mqtt_history with bucket="1m" and field="/temperature" over a 100,000-message window (one topic,
      and 100 topics of 1,000), called in the server (McpMqttServer.call_tool: argument validation, the
      allowlist, the tool, the result's validation; no transport): the first call (which parses every
      payload) and the p50 of the next 30, with 100 new messages arriving before each (so the bound
      drops 100 and the cache catches up, as in a running server).
Writes bench/results/history.json.
"""

import argparse
import asyncio
import contextlib
import gc
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import psutil  # noqa: E402
from bench_firehose import (  # noqa: E402
    FILTER,
    Counter,
    FirehoseMosquitto,
    payload,
    receive_firehose,
    topic,
    until_done,
)
from mosquitto import Mosquitto  # noqa: E402

KINDS = ("live", "memory", "file")

# ---- (1) ingest, in a receiver process ---------------------------------------------------------------


async def receive(kind: str, host: str, port: int, messages: int, topics: int, folder: str) -> dict[str, Any]:
    from mcpmqtt.mqtt import Broker, BrokerSettings
    from mcpmqtt.server.history_file import flush, keep_written, open_history_file
    from mcpmqtt.server.history_store import History
    from mcpmqtt.server.live_state import LiveState

    counter = Counter(messages)
    adapter = Broker(BrokerSettings(host, port, f"bench-history-{uuid.uuid4().hex[:6]}"))

    def first_message(topic: str, is_new: bool) -> None:
        counter.first = time.time()
        state.listener = None

    state = LiveState(max(10_000, topics), 65_536, first_message)
    adapter.follow(FILTER, state)
    history = store = flusher = None
    if kind != "live":
        history = History(10**9, 1e9, 1 << 40, track_changes=kind == "file")
        adapter.follow(FILTER, history)
        if kind == "file":
            store = open_history_file(history, pathlib.Path(folder) / f"history-{uuid.uuid4().hex[:6]}.db")
            flusher = asyncio.create_task(keep_written(history, store, 1.0))
    task = asyncio.create_task(adapter.run())
    while not adapter.connected:  # noqa: ASYNC110 - a state flag, polled briefly
        await asyncio.sleep(0.01)

    def live_total() -> int:
        return sum(entry.messages for _, entry in state.matching(FILTER))

    def kept() -> int:
        return min(live_total(), history.messages) if history is not None else live_total()

    cpu = await until_done(counter, kept)
    counter.last = max((entry.last.received_at for _, entry in state.matching(FILTER)), default=counter.last)
    result = counter.result(cpu)
    result["live_state_messages"] = live_total()
    if history is not None:
        result["history_messages"] = history.messages
        result["lost"] = max(result["lost"], messages - history.messages)
    if store is not None and flusher is not None and history is not None:
        flusher.cancel()
        await asyncio.gather(flusher, return_exceptions=True)
        started = time.monotonic()
        await flush(history, store)
        result["last_flush_s"] = time.monotonic() - started
        result["file_rows"] = len(store.rows())
        result["lost"] = max(result["lost"], messages - result["file_rows"])
        store.close()
    await adapter.stop(task)
    return result


async def ingest_once(
    broker: Mosquitto, kind: str, messages: int, topics: int, folder: str
) -> dict[str, Any]:
    return await receive_firehose(
        broker, __file__, [kind, "--folder", folder], messages, topics, f"the {kind} receiver"
    )


# ---- (2) memory, in a fresh process -------------------------------------------------------------------


def memory_bound(
    kind: str, folder: str, messages: int = 1_000_000, bound: int = 10 * 1024 * 1024
) -> dict[str, Any]:
    from mcpmqtt.mqtt import Received
    from mcpmqtt.server.history_file import open_history_file
    from mcpmqtt.server.history_store import History

    history = History(10**9, 1e9, bound, track_changes=kind == "file")
    store = (
        open_history_file(history, pathlib.Path(folder) / f"bound-{uuid.uuid4().hex[:6]}.db")
        if kind == "file"
        else None
    )
    names = [topic(i, 1000) for i in range(1000)]
    gc.collect()
    process = psutil.Process()
    before = process.memory_info().rss
    peak = before
    started = time.perf_counter()
    for i in range(messages):
        history.offer(Received(names[i % 1000], payload(i), 0, False, time.time(), None))
        if i % 10_000 == 9_999:
            if store is not None:
                store.write(history.take_changes())
            peak = max(peak, process.memory_info().rss)
    elapsed = time.perf_counter() - started
    gc.collect()
    after = process.memory_info().rss
    if store is not None:
        store.close()
    return {
        "messages": messages,
        "bound_bytes": bound,
        "rss_before_mb": before / 2**20,
        "rss_after_mb": after / 2**20,
        "rss_peak_mb": max(peak, after) / 2**20,
        "rss_growth_mb": (after - before) / 2**20,
        "kept_messages": history.messages,
        "counted_bytes": history.bytes,
        "dropped": history.dropped,
        "us_per_offer": elapsed / messages * 1e6,
    }


# ---- (3) mqtt_history with bucket, in the server --------------------------------------------------------


async def query_times(topics: int, window: int = 100_000, calls: int = 30) -> dict[str, Any]:
    from mcpmqtt.config import Config
    from mcpmqtt.mqtt import Broker, BrokerSettings, Received
    from mcpmqtt.server.build import McpMqttServer, SharedLifespan
    from mcpmqtt.server.context import Runtime
    from mcpmqtt.server.history import register_history
    from mcpmqtt.server.history_store import History

    config = Config.model_validate({"topics": [{"pattern": "fire/#", "permissions": ["read"]}]})
    runtime = Runtime(config, config.allowlist(), Broker(BrokerSettings("127.0.0.1", 1, "bench")))
    history = History(window // topics, 1e9, 1 << 40)
    # No broker connection: the history is filled here, and the tool reads only the history.
    server = McpMqttServer(runtime, None, SharedLifespan(contextlib.nullcontext), name="bench")
    register_history(server, runtime, history, ["fire/#"])
    names = [f"fire/{i}" for i in range(topics)]
    start = time.time() - window * 0.005
    for i in range(window):  # 200 messages/s for the last ~8 minutes
        history.offer(Received(names[i % topics], payload(i), 0, False, start + i * 0.005, None))
    arguments = {"topic": "fire/#", "since": "1h", "bucket": "1m", "field": "/temperature"}

    async def once() -> float:
        began = time.perf_counter()
        result = await server.call_tool("mqtt_history", arguments)
        elapsed = time.perf_counter() - began
        assert not result.is_error, result.content  # type: ignore[union-attr]
        counted = sum(b["count"] for b in result.structured_content["buckets"])  # type: ignore[union-attr]
        assert counted == window, counted
        return elapsed * 1000

    first = await once()
    warm = []
    for call in range(calls):
        for j in range(100):  # new messages arrive; the per-topic bound drops as many old ones
            i = window + call * 100 + j
            history.offer(Received(names[i % topics], payload(i), 0, False, time.time(), None))
        warm.append(await once())
    messages_mode = []
    for _ in range(10):
        began = time.perf_counter()
        await server.call_tool("mqtt_history", {"topic": "fire/#", "since": "1h", "limit": 100})
        messages_mode.append((time.perf_counter() - began) * 1000)
    return {
        "topics": topics,
        "window_messages": window,
        "first_call_ms": first,
        "warm_p50_ms": statistics.median(warm),
        "warm_max_ms": max(warm),
        "messages_limit_100_p50_ms": statistics.median(messages_mode),
    }


# ---- the orchestrator -------------------------------------------------------------------------------


def child(args: list[str]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


async def orchestrate(args: argparse.Namespace) -> None:
    results: dict[str, Any] = {"messages": args.messages, "topics": args.topics, "rounds": args.rounds}
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mcpmqtt-bench-history-") as folder:
        with FirehoseMosquitto(pathlib.Path(folder) / "broker") as broker:
            for number in range(args.rounds):
                order = KINDS[number % 3 :] + KINDS[: number % 3]  # each goes first in turn
                for kind in order:
                    result = await ingest_once(broker, kind, args.messages, args.topics, folder)
                    result.update(round=number + 1, kind=kind)
                    runs.append(result)
                    lost = f"LOST {result['lost']:,}" if result["lost"] else "0 lost"
                    print(
                        f"  round {number + 1}  {kind:7} {result['msg_per_s']:>9,.0f} msg/s  "
                        f"{result['cpu_us_per_msg']:5.1f} µs CPU/msg  {lost}",
                        flush=True,
                    )
        ingest: dict[str, Any] = {}
        for kind in KINDS:
            valid = [r["msg_per_s"] for r in runs if r["kind"] == kind and r["lost"] == 0]
            ingest[kind] = {
                "median_msg_per_s": statistics.median(valid) if valid else None,
                "runs_msg_per_s": [round(r["msg_per_s"]) for r in runs if r["kind"] == kind],
                "runs_with_loss": sum(1 for r in runs if r["kind"] == kind and r["lost"]),
                "median_cpu_us_per_msg": statistics.median(
                    r["cpu_us_per_msg"] for r in runs if r["kind"] == kind
                ),
            }
        live = ingest["live"]["median_msg_per_s"]
        for kind in ("memory", "file"):
            mine = ingest[kind]["median_msg_per_s"]
            ingest[kind]["vs_live"] = mine / live if mine and live else None
        results["ingest"] = ingest
        results["ingest_runs"] = runs
        results["memory"] = {
            kind: child(["--memory", kind, "--folder", folder]) for kind in ("memory", "file")
        }
    results["query"] = [child(["--query", str(topics)]) for topics in (1, 100)]

    print(
        f"\nHistory: ingest of {args.messages:,} messages over {args.topics:,} topics, {args.rounds} rounds\n"
    )
    print("| receiver | msg/s (median) | each run | vs live state alone | CPU µs/msg | runs with loss |")
    print("| --- | --- | --- | --- | --- | --- |")
    for kind, row in ingest.items():
        median = f"{row['median_msg_per_s']:,.0f}" if row["median_msg_per_s"] else "no valid run"
        ratio = f"{row['vs_live']:.2f}x" if row.get("vs_live") else "1.00x"
        each = ", ".join(f"{rate:,}" for rate in row["runs_msg_per_s"])
        print(
            f"| {kind} | {median} | {each} | {ratio} | {row['median_cpu_us_per_msg']:.1f} | "
            f"{row['runs_with_loss']} |"
        )
    print(
        "\n| memory bound: 1,000,000 messages, 10 MB | RSS before | after | growth | peak | kept | µs/offer |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for kind, row in results["memory"].items():
        print(
            f"| {kind} | {row['rss_before_mb']:.1f} MB | {row['rss_after_mb']:.1f} MB | "
            f"{row['rss_growth_mb']:+.1f} MB | {row['rss_peak_mb']:.1f} MB | {row['kept_messages']:,} | "
            f"{row['us_per_offer']:.2f} |"
        )
    print(
        "\n| mqtt_history, bucket 1m over 100,000 messages | first call | next calls p50 | max "
        "| no bucket, limit 100, p50 |"
    )
    print("| --- | --- | --- | --- | --- |")
    for row in results["query"]:
        print(
            f"| {row['topics']} topic(s) | {row['first_call_ms']:.1f} ms | {row['warm_p50_ms']:.1f} ms | "
            f"{row['warm_max_ms']:.1f} ms | {row['messages_limit_100_p50_ms']:.1f} ms |"
        )
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "history.json").write_text(json.dumps(results, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--topics", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    # Internal: the child processes.
    parser.add_argument("--receiver", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--memory", choices=("memory", "file"), help=argparse.SUPPRESS)
    parser.add_argument("--query", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--host", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver:
        result = asyncio.run(
            receive(args.receiver, args.host, args.port, args.messages, args.topics, args.folder)
        )
    elif args.memory:
        result = memory_bound(args.memory, args.folder)
    elif args.query:
        result = asyncio.run(query_times(args.query))
    else:
        asyncio.run(orchestrate(args))
        return
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
