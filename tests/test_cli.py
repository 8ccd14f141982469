"""The command line (CONTRACT §1), run as a real subprocess: exit codes, which stream says what, and
that a bad config or an unsafe bind address stops the server before it starts.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mcpmqtt import __version__

ORIGINAL = Path(__file__).parent / "fixtures" / "original_config.json"
ORIGINAL_PATTERNS = [t["pattern"] for t in json.loads(ORIGINAL.read_text(encoding="utf-8"))["topics"]]
MINIMAL_TOPICS = [{"pattern": "sensors/+/temperature", "permissions": ["read"]}]
SECRET = "s3cret-value"
TIMEOUT = 30


def _run(*args: str, home: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`mcpmqtt ARGS` with HOME in a scratch dir (no stray default config) and stdin closed."""
    environment = {k: v for k, v in os.environ.items() if k != "MCPMQTT_CONFIG"}
    environment["HOME"] = str(home)
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "mcpmqtt", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=environment,
        stdin=subprocess.DEVNULL,
        timeout=TIMEOUT,
        check=False,
    )


def _write(tmp_path: Path, data: Any, name: str = "config.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_version_prints_the_version_and_exits_0(tmp_path: Path) -> None:
    done = _run("--version", home=tmp_path)
    assert done.returncode == 0
    assert done.stdout.strip() == f"mcpmqtt {__version__}"


def test_help_lists_serve_and_check_config(tmp_path: Path) -> None:
    done = _run("--help", home=tmp_path)
    assert done.returncode == 0
    assert "serve" in done.stdout
    assert "check-config" in done.stdout
    assert "--config" in done.stdout


def test_check_config_on_the_original_config_exits_0_and_prints_every_pattern(tmp_path: Path) -> None:
    done = _run("check-config", "--config", str(ORIGINAL), home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"config OK: {ORIGINAL}" in done.stdout
    pattern_lines = [line.split() for line in done.stdout.splitlines() if line.startswith("  ")]
    assert [(words[0], words[1]) for words in pattern_lines] == [
        ("sensors/+/temperature", "read"),
        ("sensors/+/humidity", "read"),
        ("actuators/#", "write"),
        ("status/system", "read"),
        ("commands/+/request", "write"),
        ("commands/+/response", "read"),
    ]
    assert [words[0] for words in pattern_lines] == ORIGINAL_PATTERNS


def test_check_config_lists_the_deny_entry_that_fences_the_reply_topics(tmp_path: Path) -> None:
    path = _write(tmp_path, {"topics": [{"pattern": "#", "permissions": ["read"]}]})
    done = _run("check-config", "--config", str(path), home=tmp_path)
    assert done.returncode == 0
    [line] = [line for line in done.stdout.splitlines() if "mcpmqtt/replies/#" in line]
    assert "deny read+write" in line and "private reply topics" in line


def test_check_config_on_an_invalid_file_exits_2_naming_the_file_and_the_field(tmp_path: Path) -> None:
    path = _write(tmp_path, {"mqtt": {"hots": "broker.local"}, "topics": MINIMAL_TOPICS})
    done = _run("check-config", "--config", str(path), home=tmp_path)
    assert done.returncode == 2
    assert str(path) in done.stderr
    assert "mqtt.hots" in done.stderr
    assert done.stdout == ""


def test_check_config_on_a_missing_file_exits_2_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "missing.json"
    done = _run("check-config", "--config", str(path), home=tmp_path)
    assert done.returncode == 2
    assert f"config file not found: {path}" in done.stderr


def test_check_config_without_a_config_names_the_default_path(tmp_path: Path) -> None:
    done = _run("check-config", home=tmp_path)
    assert done.returncode == 2
    assert str(tmp_path / ".config" / "mcpmqtt" / "config.json") in done.stderr


def test_check_config_uses_the_file_named_by_mcpmqtt_config(tmp_path: Path) -> None:
    done = _run("check-config", home=tmp_path, env={"MCPMQTT_CONFIG": str(ORIGINAL)})
    assert done.returncode == 0, done.stderr
    assert f"config OK: {ORIGINAL}" in done.stdout


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--config", "{missing}"], id="top-level-config"),
        pytest.param(["serve", "--config", "{missing}"], id="serve-config"),
    ],
)
def test_server_with_a_missing_config_exits_2_without_writing_to_stdout(
    tmp_path: Path, args: list[str]
) -> None:
    missing = tmp_path / "missing.json"
    done = _run(*(a.format(missing=missing) for a in args), home=tmp_path)
    assert done.returncode == 2
    assert str(missing) in done.stderr
    assert done.stdout == "", "stdout is the MCP channel: nothing but protocol messages may go there"


def test_server_with_an_invalid_config_exits_2_without_writing_to_stdout(tmp_path: Path) -> None:
    path = _write(tmp_path, {"topics": []})
    done = _run("--config", str(path), home=tmp_path)
    assert done.returncode == 2
    assert str(path) in done.stderr
    assert "topics" in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10"])
def test_http_on_a_non_loopback_address_is_refused_before_it_starts(tmp_path: Path, host: str) -> None:
    done = _run(
        "serve",
        "--transport",
        "http",
        "--host",
        host,
        "--port",
        "1",
        "--config",
        str(ORIGINAL),
        home=tmp_path,
    )
    assert done.returncode == 2
    assert host in done.stderr
    assert "loopback" in done.stderr
    assert "authentication" in done.stderr
    assert "Uvicorn running" not in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["serve", "--port", "8123"], "mcpmqtt serve: --port applies to HTTP only"),
        (
            ["serve", "--transport", "stdio", "--host", "127.0.0.1"],
            "mcpmqtt serve: --host applies to HTTP only",
        ),
        (["serve", "--host", "::1", "--port", "1"], "mcpmqtt serve: --host and --port apply to HTTP only"),
    ],
)
def test_host_or_port_with_stdio_is_refused_not_ignored(tmp_path: Path, args: list[str], says: str) -> None:
    done = _run(*args, "--config", str(ORIGINAL), home=tmp_path)
    assert done.returncode == 2
    assert says in done.stderr and "add --transport http" in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize(
    ("mqtt", "exit_code"),
    [
        pytest.param({"username": "agent", "password": SECRET}, 0, id="valid"),
        pytest.param({"username": "agent", "password": SECRET, "password_env": "X"}, 2, id="two-sources"),
        pytest.param({"username": "agent", "password": SECRET, "pasword": SECRET}, 2, id="unknown-key"),
        pytest.param({"username": "agent", "password": SECRET, "port": SECRET}, 2, id="bad-port"),
    ],
)
def test_check_config_never_prints_the_password(tmp_path: Path, mqtt: dict[str, str], exit_code: int) -> None:
    path = _write(tmp_path, {"mqtt": mqtt, "topics": MINIMAL_TOPICS})
    done = _run("check-config", "--config", str(path), home=tmp_path)
    assert done.returncode == exit_code, done.stderr
    assert SECRET not in done.stdout
    assert SECRET not in done.stderr
