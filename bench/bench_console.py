"""The operator console's cost: ingest with a console open against the same load without one.

    .venv/bin/python bench/bench_console.py [--topics 1000] [--rate 100] [--seconds 20] [--messages 100000]

A private Mosquitto (queuing every QoS 0 message, as bench_firehose.py's) and `mcpmqtt serve
--transport http` following `fire/#` into its live state, in a process of its own. Two phases, each
run without a console and then with one open (an SSE client reading /console/events, as the page
does, in this process):

1. steady: `--rate` messages a second in all over `--topics` topics for `--seconds`; each payload
   carries its send time, so the console client measures how far behind each value it shows is
   (the page shows what the stream brings). Also the server's CPU time, and at the end whether the
   console shows every topic's last value.
2. firehose: `--messages` messages as fast as the broker takes them (bench_firehose.py's publisher,
   in its own process), then one marker message; the ingest rate is messages / (marker seen by the
   server, asked with mqtt_last every 20 ms, - first message sent), checked complete by the live
   state's per-topic counts; and the server's CPU time per message meanwhile, which the machine's
   other load moves less than the rate.

Prints the figures and the ratios; writes bench/results/console.json.
"""

import argparse
import json
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import anyio
import httpx2
import paho.mqtt.client as paho
import psutil

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_firehose import FirehoseMosquitto  # noqa: E402
from http_server import ServerProcess, config_for, http_client  # noqa: E402

MARKER_TOPIC = "fire/end/marker"  # outside fire/+, which the counts cover


class ConsoleReader(threading.Thread):
    """Reads the console's event stream as the page would, and measures each value's lag."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.client = httpx2.Client(base_url=base, headers={"origin": base}, timeout=None)
        response = self.client.post("/console/session", json={})
        response.raise_for_status()
        self.lags: list[float] = []
        self.values: dict[str, str] = {}
        self.connected = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        with self.client.stream("GET", "/console/events") as response:
            name = None
            for line in response.iter_lines():
                if self.stop.is_set():
                    return
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: ") and name in ("snapshot", "topics"):
                    now = time.time()
                    data = json.loads(line[6:])
                    for value in data["topics"] if name == "snapshot" else data:
                        self.values[value["topic"]] = value["value"]
                        if name == "topics" and value["value"].startswith('{"t":'):
                            self.lags.append(now - json.loads(value["value"])["t"])
                    self.connected.set()


def steady(host: str, port: int, topics: int, rate: float, seconds: float) -> dict[str, str]:
    """Publish `rate` messages/s over `topics` topics for `seconds`; the last payload of each topic."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-console-steady")
    client.connect(host, port)
    client.loop_start()
    last: dict[str, str] = {}
    started = time.monotonic()
    for i in range(int(rate * seconds)):
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        topic = f"fire/{i % topics}"
        last[topic] = json.dumps({"t": time.time(), "seq": i}, separators=(",", ":"))
        client.publish(topic, last[topic])
    client.loop_stop()
    client.disconnect()
    return last


async def last_marker(url: str, after: float) -> float:
    """When the server's live state had the marker published at `after` (polled every 20 ms)."""
    async with http_client(url) as client:
        while True:
            result = await client.call_tool("mqtt_last", {"topic": MARKER_TOPIC})
            message = (result.structured_content or {}).get("message")
            if message is not None and float(message["payload"]) == after:
                return time.time()
            await anyio.sleep(0.02)


async def counted(url: str, topics: int) -> int:
    async with http_client(url) as client:
        result = await client.call_tool("mqtt_list_topics", {"filter": "fire/+", "limit": min(topics, 1000)})
        return sum(t["messages"] for t in (result.structured_content or {})["topics"])


def firehose(server: ServerProcess, host: str, port: int, messages: int, topics: int) -> dict[str, float]:
    before = anyio.run(counted, server.url, topics)
    command = [sys.executable, str(ROOT / "bench" / "bench_firehose.py"), "--publisher"]
    command += ["--host", host, "--port", str(port), "--messages", str(messages), "--topics", str(topics)]
    sent = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    marker = time.time()
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-console-marker")
    client.connect(host, port)
    client.loop_start()
    client.publish(MARKER_TOPIC, repr(marker), qos=1).wait_for_publish()
    client.loop_stop()
    client.disconnect()
    seen = anyio.run(last_marker, server.url, marker)
    ingested = anyio.run(counted, server.url, topics) - before
    return {
        "messages": messages,
        "ingested": ingested,
        "seconds": seen - sent["started"],
        "rate": messages / (seen - sent["started"]),
    }


def run(
    args: argparse.Namespace, broker: FirehoseMosquitto, console: bool, workdir: pathlib.Path
) -> dict[str, Any]:
    config = config_for(broker, topics=[{"pattern": "fire/#", "permissions": ["read"]}])
    config["live_state"] = {"max_topics": args.topics * 2}
    with ServerProcess(workdir / ("console" if console else "plain"), config) as server:
        server.wait_ready()
        reader = ConsoleReader(server.base) if console else None
        if reader is not None:
            reader.start()
            reader.connected.wait(10)
        process = psutil.Process(server.process.pid)  # type: ignore[union-attr]
        cpu_before = process.cpu_times()
        last = steady(broker.host, broker.port, args.topics, args.rate, args.seconds)
        cpu_after = process.cpu_times()
        time.sleep(1.0)  # the most a value may be behind
        sent = int(args.rate * args.seconds)
        figures: dict[str, Any] = {
            "steady_cpu_seconds": (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system),
            "steady_ingested": f"{anyio.run(counted, server.url, args.topics)} of {sent}",
        }
        if reader is not None:
            lags = sorted(reader.lags)
            figures["lag_max"] = lags[-1]
            figures["lag_p99"] = lags[int(len(lags) * 0.99)]
            figures["lag_median"] = lags[len(lags) // 2]
            figures["values_seen"] = len(lags)
            figures["topics_current_after_1s"] = (
                f"{sum(reader.values.get(t) == v for t, v in last.items())} of {len(last)}"
            )
        cpu_before = process.cpu_times()
        figures["firehose"] = firehose(server, broker.host, broker.port, args.messages, args.topics)
        cpu_after = process.cpu_times()
        cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
        figures["firehose"]["server_cpu_us_per_message"] = cpu / args.messages * 1e6
        if reader is not None:
            reader.stop.set()
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--topics", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3, help="pairs of runs, in alternating order")
    args = parser.parse_args()
    runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = pathlib.Path(tmp)
        with FirehoseMosquitto(workdir / "broker") as broker:
            for round_ in range(args.rounds):
                for console in (False, True) if round_ % 2 == 0 else (True, False):
                    runs[console].append(run(args, broker, console, workdir / f"{round_}"))
    plain_rate = statistics.median(r["firehose"]["rate"] for r in runs[False])
    console_rate = statistics.median(r["firehose"]["rate"] for r in runs[True])
    result = {
        "args": vars(args),
        "machine": {"python": platform.python_version(), "cpus": psutil.cpu_count()},
        "without_console": runs[False],
        "with_console": runs[True],
        "steady_ingested": [r["steady_ingested"] for r in runs[False] + runs[True]],
        "steady_cpu_ratio": statistics.median(r["steady_cpu_seconds"] for r in runs[True])
        / statistics.median(r["steady_cpu_seconds"] for r in runs[False]),
        "steady_lag_max": max(r["lag_max"] for r in runs[True]),
        "firehose_rate_median": {"without_console": plain_rate, "with_console": console_rate},
        "firehose_rate_drop": 1 - console_rate / plain_rate,
        "firehose_server_cpu_per_message_ratio": statistics.median(
            r["firehose"]["server_cpu_us_per_message"] for r in runs[True]
        )
        / statistics.median(r["firehose"]["server_cpu_us_per_message"] for r in runs[False]),
    }
    out = ROOT / "bench" / "results" / "console.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if not k.startswith("with")}, indent=2))


if __name__ == "__main__":
    main()
