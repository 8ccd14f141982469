"""Start fast and light: over stdio the server imports neither the HTTP authentication stack (JWT), nor
jsonschema (until a payload_schema exists), nor amqtt or the demo.

Checked on the real process with `python -X importtime`, which lists every module it imports. The
MCP SDK itself imports starlette and uvicorn whatever we do; those are not ours to leave out.
"""

import json
import pathlib
import subprocess
import sys

import pytest
from mcp_client import INITIALIZE, write_config
from mosquitto import Mosquitto

NOT_ON_STDIO = (
    "jwt",
    "jsonschema",
    "amqtt",
    "mcpmqtt.demo",
    "mcpmqtt.transports.http",
    "mcpmqtt.transports.auth",
)


def imported_modules(config: pathlib.Path) -> set[str]:
    """The modules a stdio server imports until it has answered initialize."""
    process = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "mcpmqtt", "--config", str(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdin and process.stdout
        process.stdin.write(json.dumps(INITIALIZE) + "\n")
        process.stdin.flush()
        answer = json.loads(process.stdout.readline())
        assert answer["id"] == INITIALIZE["id"] and "result" in answer, answer
        process.stdin.close()  # end of input: the server stops
        process.stdin = None
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    return {
        line.rsplit("|", 1)[1].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }


@pytest.mark.parametrize("schema", [False, True], ids=["no payload_schema", "payload_schema"])
def test_stdio_server_imports_no_http_auth_jsonschema_amqtt_or_demo(
    broker: Mosquitto, tmp_path: pathlib.Path, schema: bool
) -> None:
    topics: list[dict[str, object]] = [{"pattern": "lab/#", "permissions": ["read", "write"]}]
    if schema:
        topics[0]["payload_schema"] = {"type": "object"}
    config, _ = write_config(tmp_path, broker, topics=topics)
    modules = imported_modules(config)
    assert "mcpmqtt.server.build" in modules  # the check sees our own imports
    loaded = sorted(m for m in modules for name in NOT_ON_STDIO if m == name or m.startswith(name + "."))
    if schema:  # a schema needs its validator, and only then
        assert "jsonschema" in modules
        loaded = [m for m in loaded if not m.startswith("jsonschema")]
    assert loaded == [], f"the stdio server imported {loaded}"
