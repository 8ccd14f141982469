"""Shared fixtures: a private Mosquitto broker (see `tests/mosquitto.py`), and anyio on asyncio.

Async tests need only `pytestmark = pytest.mark.anyio` in their module: the anyio plugin runs them on the
backend chosen by `anyio_backend` below.
"""

import pathlib
from collections.abc import Iterator

import pytest
from mosquitto import Mosquitto, find_mosquitto
from redis_server import RedisServer


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Asyncio only: aiomqtt and paho do not run on trio."""
    return "asyncio"


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """One broker shared by the whole session; tests must not stop or restart it (use `fresh_broker`)."""
    with _new_broker(tmp_path_factory.mktemp("broker")) as started:
        yield started


@pytest.fixture
def fresh_broker(tmp_path: pathlib.Path) -> Iterator[Mosquitto]:
    """A broker of the test's own, free to be restarted or killed."""
    with _new_broker(tmp_path / "broker") as started:
        yield started


def _new_broker(workdir: pathlib.Path) -> Mosquitto:
    # Fail rather than skip: a suite that skips its broker tests passes without testing anything.
    if find_mosquitto() is None:
        pytest.fail(
            "mosquitto is not installed: install Debian's mosquitto package (apt-get install mosquitto), "
            "or run scripts/test, which installs it",
            pytrace=False,
        )
    return Mosquitto(workdir)


@pytest.fixture
def redis_server(tmp_path: pathlib.Path) -> Iterator[RedisServer]:
    """A private Redis for one test (tests/redis_server.py); skips where redis-server is missing."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
