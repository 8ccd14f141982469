"""A private Mosquitto broker on free loopback ports, for tests and benchmarks.

Tests never touch a broker already running on the machine: each `Mosquitto` writes its own config into a
work folder and listens on ports picked for it, so the suite passes the same on a laptop and in CI.

Listeners (all on 127.0.0.1):

- `port`: anonymous, everything allowed.
- `auth_port`: `password_file` + `acl_file`, the usual Mosquitto setup in the field.
- `dynsec_port`: the same user and rules through Mosquitto's dynamic-security plugin, the only built-in
  way to have Mosquitto 2.0 refuse a SUBSCRIBE (see below).

On both authenticated listeners user `agent` (password `agent-pass`) may publish and receive on
`allowed/#`, only receive on `readonly/#`, only publish on `writeonly/#`, and nothing else.

What Mosquitto 2.0.11 does, observed with paho-mqtt 2.2 (and aiomqtt 2.5.1 for CONNACK):

- Wrong password or no credentials: CONNACK 0x87 Not authorized under MQTT 5 (not 0x86), return code 5
  under 3.1.1 (paho reports it as reason code 135 too).
- Publish denied by the ACL, on either authenticated listener: the broker drops the message and keeps
  the connection. QoS 1 under MQTT 5 gets PUBACK 0x87 Not authorized; QoS 1 under 3.1.1 gets a plain
  PUBACK, indistinguishable from success; QoS 0 gets nothing, under either version.
- Subscribe to a filter the ACL does not cover (`forbidden/#`, even `#`):
  - `auth_port` (`acl_file`): SUBACK grants it, under MQTT 5 and 3.1.1 alike. `acl_file` rules apply to
    PUBLISH only (Mosquitto's default ACL check returns success for every SUBSCRIBE), so the broker
    filters each message at delivery: a client subscribed to `#` gets only what its read rules allow.
  - `dynsec_port`: SUBACK 0x87 Not authorized under MQTT 5, 0x80 (failure) under 3.1.1.
- Granted QoS 1 publishes with no subscriber get PUBACK 0x10 No matching subscribers under MQTT 5.
- Log lines (`log_timestamp true`, default timestamp format), one per filter:
  `<epoch>: <client_id> <qos> <filter>` for `log_type subscribe` (the QoS alone, without the MQTT 5
  subscription options), `<epoch>: <client_id> <filter>` for `log_type unsubscribe`. Only subscriptions
  the broker accepted are logged; every UNSUBSCRIBE is, even of a filter the client never held.
  Connections: `New client connected from <addr> as <client_id> (p5, c1, k60, u'agent').`, then
  `Client <client_id> disconnected.` or `Client <client_id> closed its connection.`; a bare TCP probe
  leaves `Client <unknown> closed its connection.`. The log is appended to across restarts.
- Run as root, Mosquitto drops privileges to user `mosquitto` unless the config names another user, so
  the config names the current user and the broker can read its 0600 files (the option does nothing
  for other users). Mosquitto 2.0.11 does not check the permissions of those files; later 2.0 releases
  warn about loose ones, hence the 0600.
"""

import base64
import collections
import hashlib
import json
import os
import pathlib
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import time
from types import TracebackType
from typing import Self

from support import free_ports

STARTUP_TIMEOUT = 10.0
"""Seconds `start` waits for every listener to accept TCP connections."""

ACL: dict[str, tuple[tuple[str, str], ...]] = {
    "agent": (("readwrite", "allowed/#"), ("read", "readonly/#"), ("write", "writeonly/#")),
}
"""Per user, the (access, pattern) rules of the authenticated listeners in `acl_file` terms."""

_DYNSEC_ACL_TYPES = {
    "read": ("publishClientReceive", "subscribePattern"),
    "write": ("publishClientSend",),
    "readwrite": ("publishClientReceive", "subscribePattern", "publishClientSend"),
}
_SBIN_DIRS = "/usr/sbin:/usr/local/sbin:/opt/homebrew/sbin"
_SUBSCRIBE = re.compile(r"\d+: (?P<client>\S+) [0-2] (?P<filter>.+)")
_UNSUBSCRIBE = re.compile(r"\d+: (?P<client>\S+) (?P<filter>.+)")
_BROKER_STARTING = re.compile(r"\d+: mosquitto version \S+ starting")
# A client's connection began or ended: either way it holds no subscription from an earlier connection
# (our clients use sessions that end with their connection).
_CONNECTION_EDGE = re.compile(
    r"\d+: (?:New client connected from \S+ as (?P<connected>\S+) \("
    r"|Client (?P<ended>\S+) |Socket error on client (?P<socket_error>\S+?), )"
)


def find_executable(name: str) -> pathlib.Path | None:
    """`name` on PATH, or in an sbin folder (where Debian puts servers; not on a user's PATH)."""
    found = shutil.which(name) or shutil.which(name, path=_SBIN_DIRS)
    return pathlib.Path(found) if found else None


def find_mosquitto() -> pathlib.Path | None:
    """The `mosquitto` binary."""
    return find_executable("mosquitto")


class Mosquitto:
    """A private Mosquitto broker for one test session, on free loopback ports."""

    def __init__(self, workdir: pathlib.Path, *, persistent: bool = False) -> None:
        """`persistent` keeps retained messages, sessions and their queued messages on disk across a
        `restart()` (Mosquitto saves them when stopped with SIGTERM), as a production broker would."""
        self.workdir = workdir
        self.persistent = persistent
        self.host = "127.0.0.1"
        self.port, self.auth_port, self.dynsec_port = free_ports(3, self.host)
        self.users = {"agent": "agent-pass"}
        self.log_path = workdir / "mosquitto.log"
        self._output_path = workdir / "mosquitto.out"
        self._config_path = workdir / "mosquitto.conf"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the broker and wait until every listener accepts TCP connections."""
        if self._process is not None:
            raise RuntimeError("this Mosquitto is already started; stop() it first")
        binary = find_mosquitto()
        if binary is None:
            raise RuntimeError(
                "mosquitto is not installed: run `apt-get install mosquitto` (or scripts/test)"
            )
        if not self._config_path.exists():
            self._write_config(binary)
        # Config errors are printed before the log file opens, so keep the process output too.
        with self._output_path.open("ab") as output:
            self._process = subprocess.Popen(
                [str(binary), "-c", str(self._config_path)],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        self._wait_until_listening(self._process)

    def stop(self) -> None:
        """Stop the broker: SIGTERM, then SIGKILL if it lingers. Does nothing when not running."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """Kill the broker with SIGKILL, as a crash would: no DISCONNECT, no clean socket shutdown."""
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait()

    def restart(self, downtime: float = 0.0) -> None:
        """Stop, stay down for `downtime` seconds, start again on the same ports.

        This blocks; from an async test run it in a worker thread
        (`await anyio.to_thread.run_sync(broker.restart, 1.0)`) so that clients keep running meanwhile.
        """
        self.stop()
        time.sleep(downtime)
        self.start()

    def log_text(self) -> str:
        """The broker's log so far, across restarts."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, text: str, timeout: float = 5.0) -> None:
        """Block until `text` appears in the log, e.g. `Client <id> disconnected.` after a client left.

        From an async test, run it in a worker thread (`anyio.to_thread.run_sync`).
        """
        deadline = time.monotonic() + timeout
        while text not in self.log_text():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{text!r} did not appear in {self.log_path} within {timeout} s")
            time.sleep(0.01)

    def subscribe_events(self, client_id_prefix: str) -> list[tuple[str, str]]:
        """("subscribe" | "unsubscribe", filter) in log order, for clients whose id starts with the prefix.

        Lines are told apart by shape, so an UNSUBSCRIBE of a filter that starts with a digit 0-2 and a
        space reads as a SUBSCRIBE; client ids must not contain spaces.
        """
        events = []
        for line in self._client_lines(client_id_prefix):
            if match := _SUBSCRIBE.fullmatch(line):
                events.append(("subscribe", match["filter"]))
            elif match := _UNSUBSCRIBE.fullmatch(line):
                events.append(("unsubscribe", match["filter"]))
        return events

    def active_filters(self, client_id_prefix: str) -> collections.Counter[str]:
        """Net SUBSCRIBE minus UNSUBSCRIBE count per filter, over the current connections of the clients.

        Counting starts afresh for a client whenever it connects or disconnects, and for all clients when
        the broker starts, since the broker then drops their subscriptions (for sessions that end with
        the connection, which is what our clients use). Only nonzero counts are kept: empty means nothing
        was left behind; 2 means the filter was subscribed twice (the broker holds it once); negative
        means an UNSUBSCRIBE of a filter the client did not hold.
        """
        _require_prefix(client_id_prefix)
        per_client: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        for line in self.log_text().splitlines():
            if _BROKER_STARTING.fullmatch(line):
                per_client.clear()
            elif edge := _CONNECTION_EDGE.match(line):
                per_client.pop(edge["connected"] or edge["ended"] or edge["socket_error"], None)
            elif (match := _SUBSCRIBE.fullmatch(line)) and match["client"].startswith(client_id_prefix):
                per_client[match["client"]][match["filter"]] += 1
            elif (match := _UNSUBSCRIBE.fullmatch(line)) and match["client"].startswith(client_id_prefix):
                per_client[match["client"]][match["filter"]] -= 1
        total: collections.Counter[str] = collections.Counter()
        for counts in per_client.values():
            total.update(counts)
        return collections.Counter({name: count for name, count in total.items() if count})

    def _client_lines(self, client_id_prefix: str) -> list[str]:
        """Log lines that start with the id of a client whose id has the prefix."""
        _require_prefix(client_id_prefix)
        return [
            line
            for line in self.log_text().splitlines()
            if (match := _UNSUBSCRIBE.fullmatch(line)) and match["client"].startswith(client_id_prefix)
        ]

    def _write_config(self, binary: pathlib.Path) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        password_file = self.workdir / "passwords"
        acl_file = self.workdir / "acl"
        dynsec_file = self.workdir / "dynamic-security.json"
        passwd = shutil.which("mosquitto_passwd") or shutil.which("mosquitto_passwd", path=str(binary.parent))
        if passwd is None:
            raise RuntimeError("mosquitto_passwd is missing: it comes with Debian's mosquitto package")
        for number, (user, password) in enumerate(self.users.items()):
            create = ["-c"] if number == 0 else []
            subprocess.run([passwd, "-b", *create, str(password_file), user, password], check=True)
        acl_file.write_text(
            "".join(
                f"user {user}\n" + "".join(f"topic {access} {pattern}\n" for access, pattern in rules)
                for user, rules in ACL.items()
            )
        )
        dynsec_file.write_text(json.dumps(self._dynsec_config(), indent=2))
        for secret in (password_file, acl_file, dynsec_file):
            secret.chmod(0o600)
        self._config_path.write_text(
            f"""\
# Written by tests/mosquitto.py: a private broker for one test session.
per_listener_settings true
user {pwd.getpwuid(os.geteuid()).pw_name}
{self._persistence()}
set_tcp_nodelay true
# Tests send 10,000-message bursts to slow readers: keep them all (defaults: 20 in flight, 1000 queued).
max_inflight_messages 0
max_queued_messages 100000
log_dest file {self.log_path}
log_type error
log_type warning
log_type notice
log_type information
log_type subscribe
log_type unsubscribe
connection_messages true
log_timestamp true

listener {self.port} {self.host}
allow_anonymous true

listener {self.auth_port} {self.host}
allow_anonymous false
password_file {password_file}
acl_file {acl_file}

listener {self.dynsec_port} {self.host}
allow_anonymous false
plugin {_find_dynsec_plugin(binary)}
plugin_opt_config_file {dynsec_file}
{self._more_listeners()}"""
        )

    def _persistence(self) -> str:
        if not self.persistent:
            return "persistence false"
        return f"persistence true\npersistence_location {self.workdir}/\nautosave_interval 1800"

    def _more_listeners(self) -> str:
        """Config of more listeners, for subclasses (tests/mosquitto_tls.py); ports in `listening_ports`."""
        return ""

    @property
    def listening_ports(self) -> set[int]:
        """The ports `start` waits for."""
        return {self.port, self.auth_port, self.dynsec_port}

    def _dynsec_config(self) -> dict[str, object]:
        """The dynamic-security plugin's own file: one role per user in ACL, everything else denied."""
        clients = []
        for user, password in self.users.items():
            salt = secrets.token_bytes(12)
            iterations = 101  # what mosquitto_ctrl uses
            digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
            clients.append(
                {
                    "username": user,
                    "roles": [{"rolename": user}] if user in ACL else [],
                    "password": base64.b64encode(digest).decode(),
                    "salt": base64.b64encode(salt).decode(),
                    "iterations": iterations,
                }
            )
        roles = [
            {
                "rolename": user,
                "acls": [
                    {"acltype": acl_type, "topic": pattern, "priority": 0, "allow": True}
                    for access, pattern in rules
                    for acl_type in _DYNSEC_ACL_TYPES[access]
                ],
            }
            for user, rules in ACL.items()
        ]
        return {
            "defaultACLAccess": {
                "publishClientSend": False,
                "publishClientReceive": False,
                "subscribe": False,
                "unsubscribe": True,
            },
            "clients": clients,
            "groups": [],
            "roles": roles,
        }

    def _wait_until_listening(self, process: subprocess.Popen[bytes]) -> None:
        waiting = set(self.listening_ports)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while waiting:
            if process.poll() is not None:
                self._process = None
                raise RuntimeError(f"mosquitto exited during startup.\n{self._diagnostics()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"mosquitto did not listen on {sorted(waiting)} within {STARTUP_TIMEOUT} s.\n"
                    f"{self._diagnostics()}"
                )
            for port in list(waiting):
                try:
                    socket.create_connection((self.host, port), timeout=0.2).close()
                except OSError:
                    continue
                waiting.discard(port)
            if waiting:
                time.sleep(0.02)

    def _diagnostics(self) -> str:
        """The end of the broker's output and log, for startup errors."""
        output = self._output_path.read_text(errors="replace") if self._output_path.exists() else ""
        log_tail = "\n".join(self.log_text().splitlines()[-20:])
        return f"--- output ({self._output_path}) ---\n{output}--- log tail ({self.log_path}) ---\n{log_tail}"


def _require_prefix(client_id_prefix: str) -> None:
    # Broker messages ("Config loaded from ...") have the same shape as an UNSUBSCRIBE line.
    if not client_id_prefix:
        raise ValueError("client_id_prefix must not be empty")


def _find_dynsec_plugin(binary: pathlib.Path) -> pathlib.Path:
    """Mosquitto's dynamic-security plugin, in a lib folder beside the binary's (e.g. /usr/lib/<arch>)."""
    prefix = binary.resolve().parent.parent
    name = "mosquitto_dynamic_security.so"
    for pattern in (f"lib/{name}", f"lib/*/{name}", f"lib64/{name}", f"lib/mosquitto/{name}"):
        for found in sorted(prefix.glob(pattern)):
            return found
    raise RuntimeError(
        f"{name} was not found under {prefix}/lib: install Mosquitto 2.0 or later "
        "(Debian's mosquitto package)"
    )
