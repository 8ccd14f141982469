"""Proof by third parties (issue 4.5), over Streamable HTTP:

- the official MCP conformance suite, every scenario that needs no fixture tools (DESIGN.md), with
  tests/fixtures/conformance-expected-failures.yaml naming and explaining what is left;
- the MCP Inspector CLI, in both protocol eras, through an API key;
- the TypeScript SDK's client (`@modelcontextprotocol/client` 2.x): lists tools, publishes, reads.

The Node programs are installed once into `.node/` (tests/node.py); the first run downloads them.
"""

from __future__ import annotations

import json
import pathlib
import secrets
import subprocess
from collections.abc import Iterator

import pytest
from http_server import ServerProcess, config_for
from mcp_client import TOOLS
from mosquitto import Mosquitto
from node import INSPECTOR, node, npx

from mcpmqtt.config import apikeys

HERE = pathlib.Path(__file__).parent
EXPECTED_FAILURES = HERE / "fixtures" / "conformance-expected-failures.yaml"
SCENARIOS = [
    "server-initialize",
    "server-session-lifecycle",
    "ping",
    "tools-list",
    "resources-list",
    "prompts-list",
    "resources-subscribe",
    "resources-unsubscribe",
    "sep-2164-resource-not-found",
    "dns-rebinding-protection",
    "caching",
    "server-sse-multiple-streams",
    "http-header-validation",
    "server-stateless",
]
KEY = apikeys.new_key()


@pytest.fixture(scope="module")
def open_server(broker: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A loopback server without authentication: the conformance suite sends no credentials."""
    with ServerProcess(tmp_path_factory.mktemp("conformance"), config_for(broker)) as started:
        started.wait_ready()
        yield started


@pytest.fixture(scope="module")
def keyed_server(broker: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    http = {"api_keys": [{"name": "third-party", "hash": str(apikeys.hash_key(KEY, log_n=10))}]}
    with ServerProcess(tmp_path_factory.mktemp("third-party"), config_for(broker, http)) as started:
        started.wait_ready()
        yield started


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_conformance_scenario(open_server: ServerProcess, scenario: str, tmp_path: pathlib.Path) -> None:
    tools = node()
    command = [tools.conformance, "server", "--url", open_server.url, "--scenario", scenario]
    done = subprocess.run(
        [*command, "--expected-failures", str(EXPECTED_FAILURES)],
        capture_output=True,
        text=True,
        env=tools.env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, f"{scenario}:\n{done.stdout[-6000:]}\n{done.stderr[-2000:]}"


@pytest.mark.inspector
@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_mcp_inspector_over_http(keyed_server: ServerProcess, era: str) -> None:
    base = [npx(), "-y", INSPECTOR, "--cli", keyed_server.url, "--transport", "http"]
    base += ["--header", f"Authorization: Bearer {KEY}"]
    if era == "modern":
        base += ["--protocol-era", "modern"]

    def run(*args: str) -> dict[str, object]:
        done = subprocess.run([*base, *args], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        result: dict[str, object] = json.loads(done.stdout)
        return result

    listed = run("--method", "tools/list")
    assert {tool["name"] for tool in listed["tools"]} == TOOLS  # type: ignore[attr-defined]
    topic = f"lab/inspector/{era}/{secrets.token_hex(3)}"
    published = run(
        "--method", "tools/call", "--tool-name", "mqtt_publish", "--tool-arg", f"topic={topic}", "payload=hi"
    )
    assert published["structuredContent"] == {"topic": topic, "qos": 0, "retain": False, "bytes": 2}
    read = run(
        "--method", "tools/call", "--tool-name", "mqtt_read", "--tool-arg", "topic=lab/none", "timeout=0.1"
    )
    assert read["structuredContent"] == {"topic": "lab/none", "message": None, "timed_out": True}


def test_mcp_inspector_without_the_key_is_refused(keyed_server: ServerProcess) -> None:
    done = subprocess.run(
        [npx(), "-y", INSPECTOR, "--cli", keyed_server.url, "--transport", "http", "--method", "tools/list"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert '"auth_required"' in done.stderr  # the 401 made it look for credentials it was not given


TS_CLIENT = """\
// Written by tests/test_conformance.py: the TypeScript SDK's client against mcpmqtt over HTTP.
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";

const [url, key, era, topic] = process.argv.slice(2);
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${key}` } },
});
const options = era === "modern" ? { versionNegotiation: { mode: { pin: "2026-07-28" } } } : {};
const client = new Client({ name: "mcpmqtt-tests", version: "1.0.0" }, options);
await client.connect(transport);
const tools = (await client.listTools()).tools.map((tool) => tool.name).sort();
const publish = { topic, payload: "from TypeScript", qos: 1, retain: true };
const published = await client.callTool({ name: "mqtt_publish", arguments: publish });
const read = await client.callTool({ name: "mqtt_read", arguments: { topic, timeout: 5 } });
console.log(JSON.stringify({ tools, published: published.structuredContent, read: read.structuredContent }));
await client.close();
"""


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_typescript_sdk_client_lists_publishes_and_reads(keyed_server: ServerProcess, era: str) -> None:
    tools = node()
    script = tools.folder / "mcpmqtt-ts-client.mjs"  # beside node_modules, where its import resolves
    script.write_text(TS_CLIENT)
    topic = f"lab/typescript/{era}/{secrets.token_hex(3)}"
    done = subprocess.run(
        [tools.node, str(script), keyed_server.url, KEY, era, topic],
        capture_output=True,
        text=True,
        env=tools.env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(result["tools"]) == TOOLS
    assert result["published"] == {"topic": topic, "qos": 1, "retain": True, "bytes": 15}
    assert result["read"]["message"]["payload"] == "from TypeScript"
    assert result["read"]["message"]["retain"] is True
