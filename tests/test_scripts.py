"""scripts/run, the command a new user starts with: demo options work with or without the word `demo`,
other arguments go to `mcpmqtt`, and every hint the demo prints is a command that works.

The script runs from a copy of the repository's layout whose `.venv` points at the environment the
tests run in, so that it neither installs anything nor touches the real `.venv`.
"""

import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def run_script(tmp_path: pathlib.Path) -> pathlib.Path:
    """scripts/run in a folder of its own, set up as if `scripts/run` had already installed mcpmqtt."""
    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "run"
    shutil.copy2(ROOT / "scripts" / "run", script)
    venv_bin = tmp_path / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").symlink_to(sys.executable)
    (venv_bin / "mcpmqtt").symlink_to(pathlib.Path(sys.executable).parent / "mcpmqtt")
    (tmp_path / "pyproject.toml").write_text("")
    stamp = tmp_path / ".venv" / ".mcpmqtt-installed"
    stamp.write_text("")
    os.utime(tmp_path / "pyproject.toml", (0, 0))  # older than the stamp: nothing to install
    return script


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve_until_listening(command: list[str], port: int, tmp_path: pathlib.Path) -> str:
    """Run the command, wait until it serves MCP on `port`, stop it with SIGTERM; its stderr."""
    log = tmp_path / "stderr"
    with log.open("wb") as err:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 20
        while "Ctrl-C stops everything" not in log.read_text(encoding="utf-8"):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{command} did not start the demo:\n{log.read_text(encoding='utf-8')[-3000:]}")
            time.sleep(0.05)
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            for child in psutil.Process(process.pid).children(recursive=True):
                child.kill()
            process.kill()
            process.wait()
    return log.read_text(encoding="utf-8")


def test_the_port_hint_is_a_command_that_works(run_script: pathlib.Path, tmp_path: pathlib.Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = subprocess.run(
            [str(run_script), "--port", str(port)], capture_output=True, text=True, timeout=30
        )
    assert refused.returncode == 1
    hint = re.search(r"pass another (--port)\b", refused.stderr)
    assert hint is not None, refused.stderr
    other = _free_port()
    banner = _serve_until_listening([str(run_script), hint[1], str(other)], other, tmp_path)
    assert f"http://127.0.0.1:{other}/mcp" in banner


def test_demo_options_work_with_and_without_the_word_demo(run_script: pathlib.Path) -> None:
    for command in ([str(run_script), "--tour"], [str(run_script), "demo", "--tour", "--broker", "amqtt"]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=90)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert "tour passed" in done.stdout


def test_other_arguments_go_to_mcpmqtt(run_script: pathlib.Path, tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "missing.json"
    done = subprocess.run(
        [str(run_script), "check-config", "--config", str(missing)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and str(missing) in done.stderr
    version = subprocess.run([str(run_script), "--version"], capture_output=True, text=True, timeout=30)
    assert version.returncode == 0 and version.stdout.startswith("mcpmqtt ")
