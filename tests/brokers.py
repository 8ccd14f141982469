"""Private RabbitMQ and NATS brokers with their MQTT listeners, on free loopback ports, for the broker matrix.

Like `tests/mosquitto.py` (Mosquitto) and `processes.amqtt` (amqtt), these never touch a broker already
running on the machine: each instance gets its own config, data and log folders in a work folder, its
own ports, and (RabbitMQ) its own Erlang node name. The broker runs in a process group of its own so
that `stop` ends it with every helper process it started; Erlang's shared `epmd` is the one exception.

`start` returns once an MQTT 3.1.1 CONNECT gets a CONNACK that accepts it and the broker says it has
finished starting (RabbitMQ opens its MQTT listener before the rest of its boot, which may still fail),
or raises with the end of the broker's output and log.

What these brokers do differently from Mosquitto is recorded in `docs/brokers.md`, from the tests in
`tests/test_broker_matrix.py`.
"""

import base64
import contextlib
import hashlib
import json
import os
import pathlib
import secrets
import signal
import socket
import subprocess
import time
from types import TracebackType
from typing import Self

from mosquitto import find_executable
from support import free_ports

STARTUP_TIMEOUT = 60.0
"""Seconds `start` waits for the first accepted MQTT CONNECT (RabbitMQ needs about 8 to 12)."""


def mqtt_connect_accepted(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether an anonymous MQTT 3.1.1 CONNECT to host:port gets CONNACK "accepted" within `timeout`.

    Written out by hand (the packet is 25 bytes) so that waiting for a broker needs no client library.
    """
    client_id = f"mcpmqtt-probe-{secrets.token_hex(4)}".encode()
    # Protocol name "MQTT", level 4 (3.1.1), flags: clean session, keep alive 10 s; then the client id.
    body = b"\x00\x04MQTT\x04\x02\x00\x0a" + len(client_id).to_bytes(2, "big") + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"\x10" + bytes([len(body)]) + body)
            ack = b""
            while len(ack) < 4:
                chunk = sock.recv(4 - len(ack))
                if not chunk:
                    return False
                ack += chunk
            sock.sendall(b"\xe0\x00")  # DISCONNECT, so that the broker logs a clean goodbye
    except OSError:
        return False
    return ack[:2] == b"\x20\x02" and ack[3] == 0


class BrokerProcess:
    """A broker child process with an MQTT listener at `host`:`port`; subclasses say how to run it."""

    name = "broker"
    package = ""
    """The Debian package that brings the broker, named in the error when it is missing."""

    def __init__(self, workdir: pathlib.Path) -> None:
        self.workdir = workdir
        self.host = "127.0.0.1"
        self.port = 0  # set by subclasses
        self._output_path = workdir / "output.txt"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @classmethod
    def executable(cls) -> pathlib.Path | None:
        """The program that starts the broker, or None if it is not installed."""
        raise NotImplementedError

    def command(self) -> list[str]:
        """The command line; config files are written by `prepare`."""
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        """The environment of the broker process."""
        return dict(os.environ)

    def prepare(self) -> None:
        """Write config files into `workdir`."""

    def log_files(self) -> list[pathlib.Path]:
        """Files whose tail explains a failed start, besides the process output."""
        return []

    def booted(self) -> bool:
        """Whether the broker says it finished starting, for brokers that open their MQTT port early."""
        return True

    def start(self) -> None:
        """Start the broker and wait until it accepts an MQTT CONNECT; raise with its log if it does not."""
        if self._process is not None:
            raise RuntimeError(f"this {self.name} is already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        with self._output_path.open("ab") as output:
            self._process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                cwd=self.workdir,
                start_new_session=True,  # its own process group: stop() ends its helpers too
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not (self.booted() and mqtt_connect_accepted(self.host, self.port)):
            if self._process.poll() is not None:
                self.stop()  # helpers of its own may outlive it
                raise RuntimeError(f"{self.name} exited during startup.\n{self.diagnostics()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"{self.name} did not accept an MQTT CONNECT on {self.host}:{self.port} within "
                    f"{STARTUP_TIMEOUT:g} s.\n{self.diagnostics()}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM to the broker's whole process group, SIGKILL to what is left after 15 s."""
        process, self._process = self._process, None
        if process is None:
            return
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        _signal_group(process.pid, signal.SIGKILL)  # helpers that outlived the broker itself

    def diagnostics(self) -> str:
        """The end of the broker's output and logs, for startup errors."""
        parts = []
        for path in [self._output_path, *self.log_files()]:
            text = path.read_text(errors="replace") if path.exists() else "(missing)"
            parts.append(f"--- {path} (last lines) ---\n" + "\n".join(text.splitlines()[-30:]))
        return "\n".join(parts)


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group is gone already
        os.killpg(pgid, signum)


class RabbitMQ(BrokerProcess):
    """RabbitMQ with only its MQTT plugin (MQTT 3.1.1 in 3.10), anonymous MQTT clients allowed.

    Anonymous MQTT clients act as RabbitMQ's user `guest` (allowed from loopback only), whose topic
    permissions deny reading and writing topics under `denied/`: the way to make RabbitMQ refuse a
    SUBSCRIBE. The node has its own name, AMQP and distribution ports, and its data, logs, config,
    Erlang cookie (HOME) and plugin list in the work folder; the system's RabbitMQ config is not read.
    """

    name = "RabbitMQ"
    package = "rabbitmq-server"

    def __init__(self, workdir: pathlib.Path) -> None:
        super().__init__(workdir)
        self.port, self.amqp_port, self.dist_port = free_ports(3, self.host)
        self.node = f"mcpmqtt-test-{secrets.token_hex(4)}@localhost"

    @classmethod
    def executable(cls) -> pathlib.Path | None:
        found = find_executable("rabbitmq-server")
        if found is None:
            return None
        # Debian's rabbitmq-server on PATH is a wrapper that re-runs the real script as user rabbitmq,
        # which could not read our work folder; the real script sits beside the wrapper.
        resolved = found.resolve()
        if resolved.name == "rabbitmq-script-wrapper":
            return resolved.with_name("rabbitmq-server")
        return found

    def command(self) -> list[str]:
        executable = self.executable()
        if executable is None:
            raise RuntimeError("rabbitmq-server is not installed: apt-get install rabbitmq-server")
        return [str(executable)]

    def environment(self) -> dict[str, str]:
        base = self.workdir
        return {
            **os.environ,
            "HOME": str(base),  # the Erlang cookie goes here, not into the user's home
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": self.host,
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def prepare(self) -> None:
        base = self.workdir
        (base / "rabbitmq-env.conf").write_text("")  # instead of the system's, which names its node
        (base / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")  # no management plugin
        salt = secrets.token_bytes(4)
        password_hash = base64.b64encode(salt + hashlib.sha256(salt + b"guest").digest()).decode()
        denied = r"^(?!denied\.).*"  # routing keys: MQTT's `/` is `.` here
        definitions = {
            "users": [
                {
                    "name": "guest",
                    "password_hash": password_hash,
                    "hashing_algorithm": "rabbit_password_hashing_sha256",
                    "tags": [],
                }
            ],
            "vhosts": [{"name": "/"}],
            "permissions": [{"user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}],
            "topic_permissions": [
                {"user": "guest", "vhost": "/", "exchange": "amq.topic", "write": denied, "read": denied}
            ],
        }
        (base / "definitions.json").write_text(json.dumps(definitions, indent=2))
        (base / "rabbitmq.conf").write_text(
            f"""\
# Written by tests/brokers.py: a private RabbitMQ node for one test session.
listeners.tcp.default = {self.host}:{self.amqp_port}
mqtt.listeners.tcp.default = {self.host}:{self.port}
mqtt.allow_anonymous = true
mqtt.default_user = guest
mqtt.default_pass = guest
mqtt.vhost = /
load_definitions = {base / "definitions.json"}
log.file.level = info
"""
        )

    def log_files(self) -> list[pathlib.Path]:
        return [self.workdir / "log" / f"{self.node}.log"]

    def booted(self) -> bool:
        # The MQTT listener opens before the AMQP one, whose failure (a port in use) still stops the node.
        log = self.log_files()[0]
        return log.exists() and "Server startup complete" in log.read_text(errors="replace")


class NatsServer(BrokerProcess):
    """nats-server with JetStream (which its MQTT listener needs) and an MQTT listener.

    Anonymous clients may neither subscribe nor publish under `denied/` (NATS subjects `denied.>`):
    the way to make NATS refuse a SUBSCRIBE. User `admin` (password in `users`) may do everything, to
    observe what the broker does with the messages it refused to anonymous clients.
    """

    name = "NATS server"
    package = "nats-server"

    def __init__(self, workdir: pathlib.Path) -> None:
        super().__init__(workdir)
        self.port, self.client_port = free_ports(2, self.host)
        self.users = {"admin": "admin-pass"}
        self._config_path = workdir / "nats.conf"
        self._log_path = workdir / "nats.log"

    @classmethod
    def executable(cls) -> pathlib.Path | None:
        return find_executable("nats-server")

    def command(self) -> list[str]:
        executable = self.executable()
        if executable is None:
            raise RuntimeError("nats-server is not installed: apt-get install nats-server")
        return [str(executable), "-c", str(self._config_path)]

    def prepare(self) -> None:
        denied = {"deny": ["denied", "denied.>"]}
        denied_both = {"subscribe": denied, "publish": denied}
        # JSON is valid NATS config, and quotes the paths whatever they contain.
        config = {
            "listen": f"{self.host}:{self.client_port}",
            "server_name": f"mcpmqtt-test-{secrets.token_hex(4)}",  # JetStream needs one
            "log_file": str(self._log_path),
            "jetstream": {
                "store_dir": str(self.workdir / "jetstream"),
                "max_memory_store": 256 * 1024 * 1024,
                "max_file_store": 1024 * 1024 * 1024,
            },
            "mqtt": {"listen": f"{self.host}:{self.port}"},
            "authorization": {
                "users": [
                    {"user": "anonymous", "password": secrets.token_hex(16), "permissions": denied_both},
                    *({"user": user, "password": password} for user, password in self.users.items()),
                ]
            },
            "no_auth_user": "anonymous",  # MQTT clients without credentials act as this user
        }
        self._config_path.write_text(json.dumps(config, indent=2))

    def log_files(self) -> list[pathlib.Path]:
        return [self._log_path]
