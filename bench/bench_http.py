"""HTTP benchmark: many concurrent sessions calling tools on one mcpmqtt server over Streamable HTTP.

    .venv/bin/python bench/bench_http.py [--sessions 50] [--calls 100] [--era modern|legacy]
                                         [--interval 0] [--no-auth] [--workers N]
                                         [--rate-limit memory|redis]

Starts a private Mosquitto and `mcpmqtt serve --transport http` (with an API key unless --no-auth),
connects `--sessions` clients (and opens their sessions in the legacy era), then runs them at once,
each making `--calls` tool calls in a row (or one every `--interval` seconds on average):
mqtt_publish (QoS 1, retained) and mqtt_read of the topic it just published, alternately, so that
every read finds a value and returns at once. Reports p50 and p99 latency per call,
errors (HTTP errors, JSON-RPC errors and isError results), throughput, and the server's peak RSS
and CPU time (summed over the workers with --workers). Writes bench/results/http.json.

`--rate-limit` puts a limit too high to be reached on `lab/#`, so that every publish is counted:
`memory` in the server process, `redis` in a private redis-server (state.backend "redis"); the
difference between the two is what sharing the windows costs a call.

The clients speak JSON-RPC over HTTP themselves (httpx2, one keep-alive connection each) rather than
through an MCP SDK, so that the client side costs little of the machine the server runs on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import pathlib
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import httpx2  # noqa: E402
import psutil  # noqa: E402
from http_server import ServerProcess, config_for  # noqa: E402
from mosquitto import Mosquitto  # noqa: E402
from redis_server import RedisServer  # noqa: E402

from mcpmqtt.config import apikeys  # noqa: E402

MODERN = "2026-07-28"
LEGACY = "2025-11-25"
META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


class Session:
    """One client: its own connection, and a session id in the legacy era."""

    def __init__(self, url: str, key: str | None, era: str) -> None:
        self.url = url
        self.era = era
        headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
        if key is not None:
            headers["authorization"] = f"Bearer {key}"
        self.http = httpx2.AsyncClient(headers=headers, timeout=60, limits=httpx2.Limits(max_connections=1))
        self.ids = itertools.count(1)
        self.session_id: str | None = None

    async def open(self) -> None:
        """Connect (and, in the legacy era, open the session)."""
        if self.era == "modern":
            await self.call("mqtt_read", {"topic": "lab/bench/connect", "timeout": 0})
        else:
            params = {
                "protocolVersion": LEGACY,
                "capabilities": {},
                "clientInfo": {"name": "bench", "version": "1"},
            }
            response = await self.http.post(self.url, json=self._message("initialize", params))
            response.raise_for_status()
            self.session_id = response.headers["mcp-session-id"]
            notified = await self.http.post(
                self.url,
                json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                headers=self._headers(),
            )
            notified.raise_for_status()

    async def call(self, tool: str, arguments: dict[str, Any]) -> str | None:
        """Call a tool; None if it worked, else what went wrong."""
        params: dict[str, Any] = {"name": tool, "arguments": arguments}
        headers = self._headers()
        if self.era == "modern":
            params["_meta"] = META
            headers |= {"mcp-method": "tools/call", "mcp-name": tool}
        response = await self.http.post(self.url, json=self._message("tools/call", params), headers=headers)
        if response.status_code != 200:
            return f"HTTP {response.status_code}"
        answer = _answer(response)
        if "error" in answer:
            return f"JSON-RPC {answer['error'].get('code')}: {answer['error'].get('message')}"
        if answer["result"].get("isError"):
            return str(answer["result"]["content"][0]["text"])
        return None

    async def close(self) -> None:
        if self.session_id is not None:
            await self.http.delete(self.url, headers=self._headers())
        await self.http.aclose()

    def _message(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "id": next(self.ids), "method": method, "params": params}

    def _headers(self) -> dict[str, str]:
        if self.era == "modern":
            return {"mcp-protocol-version": MODERN}
        assert self.session_id is not None
        return {"mcp-protocol-version": LEGACY, "mcp-session-id": self.session_id}


def _answer(response: httpx2.Response) -> dict[str, Any]:
    """The JSON-RPC response, whether it came as JSON or as the one event of an SSE stream."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        for line in response.text.splitlines():
            if line.startswith("data:"):
                message: dict[str, Any] = json.loads(line[5:])
                if "id" in message:
                    return message
        raise ValueError("the event stream carried no response")
    result: dict[str, Any] = response.json()
    return result


async def run_session(
    session: Session, number: int, calls: int, interval: float, out: dict[str, list[Any]]
) -> None:
    """`calls` calls, alternately a retained QoS 1 publish and a read of what it published.

    With an interval, sessions start at random moments within it and wait 0.5 to 1.5 times it between
    calls, as independent agents would, rather than all calling at the same instant.
    """
    topic = f"lab/bench/{number}"
    if interval:
        await asyncio.sleep(random.uniform(0, interval))
    for i in range(calls):
        if i % 2 == 0:
            tool, arguments = "mqtt_publish", {"topic": topic, "payload": str(i), "qos": 1, "retain": True}
        else:
            tool, arguments = "mqtt_read", {"topic": topic, "timeout": 5}
        started = time.perf_counter()
        try:
            problem = await session.call(tool, arguments)
        except (httpx2.HTTPError, ValueError, KeyError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        out["latencies"].append(time.perf_counter() - started)
        if problem is not None:
            out["errors"].append(problem)
        if interval:
            await asyncio.sleep(interval * random.uniform(0.5, 1.5))


def tree(process: psutil.Process) -> list[psutil.Process]:
    """The server and its workers (none without --workers)."""
    return [process, *process.children()]


def rss(process: psutil.Process) -> int:
    return sum(p.memory_info().rss for p in tree(process))


def cpu_seconds(process: psutil.Process) -> float:
    return sum(t.user + t.system for t in (p.cpu_times() for p in tree(process)))


async def sample_rss(process: psutil.Process, peak: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], rss(process))
        await asyncio.sleep(0.05)


def percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--calls", type=int, default=100, help="calls per session")
    parser.add_argument("--era", choices=("modern", "legacy"), default="modern")
    parser.add_argument("--interval", type=float, default=0.0, help="seconds between a session's calls")
    parser.add_argument("--no-auth", action="store_true", help="serve without an API key")
    parser.add_argument("--workers", type=int, default=1, help="serve --workers N")
    parser.add_argument("--rate-limit", choices=("none", "memory", "redis"), default="none")
    args = parser.parse_args()

    key = None if args.no_auth else apikeys.new_key()
    http = {} if key is None else {"api_keys": [{"name": "bench", "hash": str(apikeys.hash_key(key))}]}
    with (
        tempfile.TemporaryDirectory() as folder,
        Mosquitto(pathlib.Path(folder) / "broker") as broker,
        contextlib.ExitStack() as stack,
    ):
        config = config_for(broker, http)
        config["logging"] = {"level": "WARNING"}  # an access-log line per call would be measured too
        if args.rate_limit != "none":
            limit = {"rate_limit": "100000000/day"}
            config["topics"] = [{**t, **limit} if t["pattern"] == "lab/#" else t for t in config["topics"]]
        if args.rate_limit == "redis":
            (pathlib.Path(folder) / "redis").mkdir()
            redis = RedisServer(pathlib.Path(folder) / "redis")
            redis.start()
            stack.callback(redis.stop)
            config["state"] = {"backend": "redis", "url": redis.url}
        workers = ("--workers", str(args.workers)) if args.workers > 1 else ()
        with ServerProcess(pathlib.Path(folder) / "server", config, args=workers) as server:
            server.wait_ready()
            assert server.process is not None
            process = psutil.Process(server.process.pid)
            idle_rss = rss(process)
            # Clients are made and connected before the clock starts: making an HTTP client costs
            # milliseconds of this process's CPU, which would otherwise show as server latency.
            sessions = [Session(server.url, key, args.era) for _ in range(args.sessions)]
            await asyncio.gather(*(session.open() for session in sessions))
            cpu_before = cpu_seconds(process)
            out: dict[str, list[Any]] = {"latencies": [], "errors": []}
            peak, stop = [idle_rss], asyncio.Event()
            sampler = asyncio.create_task(sample_rss(process, peak, stop))
            started = time.perf_counter()
            await asyncio.gather(
                *(run_session(s, n, args.calls, args.interval, out) for n, s in enumerate(sessions))
            )
            elapsed = time.perf_counter() - started
            await asyncio.gather(*(session.close() for session in sessions))
            stop.set()
            await sampler
            cpu_after = cpu_seconds(process)
    ordered = sorted(out["latencies"])
    result = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "sessions": args.sessions,
        "calls_per_session": args.calls,
        "era": args.era,
        "interval_s": args.interval,
        "auth": key is not None,
        "workers": args.workers,
        "rate_limit": args.rate_limit,
        "calls": len(ordered),
        "errors": len(out["errors"]),
        "error_examples": sorted(set(out["errors"]))[:5],
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": percentile(ordered, 0.99) * 1000,
        "max_ms": ordered[-1] * 1000,
        "calls_per_s": len(ordered) / elapsed,
        "server_rss_idle_mb": idle_rss / 1e6,
        "server_rss_peak_mb": peak[0] / 1e6,
        "server_cpu_s": cpu_after - cpu_before,
        "wall_s": elapsed,
    }
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "http.json").write_text(json.dumps(result, indent=2))
    auth = "API key" if result["auth"] else "no auth"
    print(
        f"{args.sessions} sessions x {args.calls} calls ({args.era}, {auth}, interval {args.interval:g} s, "
        f"{args.workers} worker(s), rate limit {args.rate_limit}): "
        f"{result['calls']} calls in {elapsed:.1f} s = {result['calls_per_s']:.0f} calls/s\n"
        f"  latency p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
        f"max {result['max_ms']:.1f} ms\n"
        f"  errors {result['errors']} {result['error_examples'] or ''}\n"
        f"  server RSS idle {result['server_rss_idle_mb']:.1f} MB, "
        f"peak {result['server_rss_peak_mb']:.1f} MB; server CPU {result['server_cpu_s']:.1f} s "
        f"({1000 * result['server_cpu_s'] / result['calls']:.2f} ms/call)"
    )


if __name__ == "__main__":
    asyncio.run(main())
