"""Child processes that tests start: free ports, waiting until one listens, and amqtt brokers."""

import contextlib
import pathlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator

import pytest
from support import free_port


def wait_listening(
    process: subprocess.Popen[str], port: int, what: str, log: pathlib.Path, timeout: float = 20
) -> None:
    """Return once `port` accepts connections; fail the test with the end of `log` if it dies.

    The process must write its output to the file `log`, not to a pipe: a pipe nobody reads fills up
    (64 KiB) during a long test session and then blocks the process mid-test.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                process.wait()
                pytest.fail(f"{what} did not listen on {port}: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)


@contextlib.contextmanager
def amqtt(workdir: pathlib.Path, listener: str = "tcp", plugins: Iterable[str] = ()) -> Iterator[int]:
    """An amqtt broker (MQTT 3.1.1 only; `listener` "tcp" or "ws") on a free port, for one block.

    `plugins` names more amqtt plugin classes to load with their defaults, e.g.
    "amqtt.plugins.topic_checking.TopicTabooPlugin", which refuses SUBSCRIBEs to `prohibited`.
    """
    port = free_port()
    config = workdir / "amqtt.yaml"
    config.write_text(
        f"listeners:\n  default:\n    type: {listener}\n    bind: 127.0.0.1:{port}\n"
        "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n"
        + "".join(f"  {plugin}: {{}}\n" for plugin in plugins)
    )
    command = [str(pathlib.Path(sys.executable).parent / "amqtt"), "-c", str(config)]
    log = workdir / "amqtt.log"
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=output, text=True)
    wait_listening(process, port, "amqtt", log)
    try:
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)
