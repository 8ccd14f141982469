"""The command line: `mcpmqtt`, `mcpmqtt serve`, `mcpmqtt demo`, `mcpmqtt check-config`, `mcpmqtt hash-key`.

stdout belongs to the MCP stdio transport, so everything a person reads goes to stderr (or the
log file), except the reports of `check-config` and `demo --tour`, which are the commands' output.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Literal

import anyio

from mcpmqtt import __version__
from mcpmqtt.config import (
    CONFIG_ENV_VAR,
    DEFAULT_CONFIG_PATH,
    Config,
    ConfigError,
    apikeys,
    default_config_path,
    load_config,
)
from mcpmqtt.config.http import HttpSettings, is_loopback
from mcpmqtt.logs import configure

EXIT_INVALID_CONFIG = 2
HTTP_HOST = "127.0.0.1"
HTTP_PORT = 8000
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _common(parser: argparse.ArgumentParser, *, top: bool, config: bool = True) -> None:
    default = (
        None if top else argparse.SUPPRESS
    )  # lets `mcpmqtt --config X serve` and `serve --config X` both work
    if config:
        parser.add_argument(
            "--config",
            type=Path,
            default=default,
            help=f"config file (default: ${CONFIG_ENV_VAR} or {DEFAULT_CONFIG_PATH})",
        )
    parser.add_argument(
        "--log-level", type=str.upper, choices=_LOG_LEVELS, default=default, help="overrides logging.level"
    )
    parser.add_argument("--logfile", type=Path, default=default, help="log to this file instead of stderr")
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=default,
        help="text (default) or json: one JSON object per line, with the HTTP request id",
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcpmqtt",
        description="An MCP server that gives LLM agents allowlisted access to an MQTT broker. "
        "Without a command it serves MCP on stdio.",
    )
    parser.add_argument("--version", action="version", version=f"mcpmqtt {__version__}")
    _common(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the MCP server (default: stdio)")
    _common(serve, top=False)
    serve.add_argument("--transport", choices=("stdio", "http", "sse"), default="stdio")
    # No defaults here (they are applied in main): given with stdio, they are refused, not ignored.
    serve.add_argument(
        "--host",
        help=f"HTTP bind address (default {HTTP_HOST}); any other than loopback needs http.api_keys or "
        "http.oauth in the config",
    )
    serve.add_argument("--port", type=int, help=f"HTTP port (default {HTTP_PORT})")
    serve.add_argument(
        "--workers",
        type=_positive,
        help="HTTP only: run this many server processes on the one port (default 1), each with its own "
        "broker connection; for sessionless 2026-07-28 clients (see docs/deploying.md)",
    )

    demo = commands.add_parser(
        "demo",
        help="run a broker, simulated devices and the server on this machine, no config needed",
        description="Run an embedded MQTT broker (Mosquitto if installed, else amqtt), simulated sensors, "
        "lights and a 3D printer, and the MCP server with a matching allowlist. See docs/demo.md.",
    )
    _common(demo, top=False, config=False)
    demo.add_argument(
        "--transport",
        choices=("http", "stdio"),
        default="http",
        help="http (default), or stdio for an agent host that starts the demo itself",
    )
    demo.add_argument("--host", help=f"HTTP bind address, loopback only (default {HTTP_HOST})")
    demo.add_argument("--port", type=int, help=f"HTTP port (default {HTTP_PORT}; with --tour, a free port)")
    demo.add_argument(
        "--broker",
        choices=("auto", "mosquitto", "amqtt"),
        default="auto",
        help="which broker to embed (default: mosquitto if installed, else amqtt)",
    )
    demo.add_argument("--broker-port", type=int, help="the broker's port (default: a free port)")
    demo.add_argument(
        "--tour", action="store_true", help="run every tool against the devices, print a transcript, exit"
    )

    check = commands.add_parser("check-config", help="validate a config and print what it allows")
    _common(check, top=False)

    hash_key = commands.add_parser(
        "hash-key",
        help="make an API key for the HTTP transports and the hash to put in the config",
        description="Without --stdin: make a random API key and print it and its hash (the key is shown "
        "this once; give it to the client). With --stdin: hash the key read from stdin. Put the hash "
        "in http.api_keys[].hash; the config never holds the key itself.",
    )
    hash_key.add_argument("--stdin", action="store_true", help="hash the key read from stdin")
    return parser


def _setup_logging(level: str, logfile: Path | None, log_format: Literal["text", "json"] | None) -> None:
    handler: logging.Handler = (
        logging.FileHandler(logfile.expanduser(), encoding="utf-8")
        if logfile
        else logging.StreamHandler(sys.stderr)
    )
    logging.basicConfig(level=level, handlers=[configure(handler, log_format or "text")], force=True)


def _check_config(config: Config, path: str) -> int:
    mqtt = config.mqtt
    auth = f", user {mqtt.username}" if mqtt.username else ", anonymous"
    if mqtt.tls is not None:
        auth += ", client certificate" if mqtt.tls.cert_file else ""
        auth += ", host name NOT checked" if mqtt.tls.insecure else ""
    scheme = ("ws" if mqtt.transport == "websockets" else "mqtt") + ("s" if mqtt.tls is not None else "")
    path_part = mqtt.websocket_path if mqtt.transport == "websockets" else ""
    print(f"config OK: {path}")
    print(f"broker: {scheme}://{mqtt.host}:{mqtt.port}{path_part} (MQTT {mqtt.protocol}{auth})")
    rules = config.allowlist().rules  # the entries, and the deny entry the server adds to fence its replies
    width = max(len(rule.pattern) for rule in rules)
    print("allowed topics:")
    for entry in rules:
        perms = ("deny " if entry.deny else "") + "+".join(sorted(entry.permissions))
        line = f"  {entry.pattern:<{width}}  {perms:<10}"
        print(f"{line}  {entry.description}".rstrip())
    limits = config.limits
    print(
        f"limits: payload ≤ {limits.max_payload_bytes:,} bytes, ≤ {limits.max_messages:,} messages "
        f"per call, timeouts ≤ {limits.max_timeout:g} s"
    )
    print(f"http: {_describe_http(config.http)}")
    print(f"history: {_describe_history(config)}")
    print(f"shared state: {_describe_state(config)}")
    return 0


def _describe_state(config: Config) -> str:
    """Where rate-limit windows are counted, in one line for check-config (never the Redis password)."""
    state = config.state
    if state.backend == "memory":
        return "in memory (each process counts its own rate limits)"
    from mcpmqtt.shared_state import redis_address  # imports no redis

    assert state.url is not None
    return f"Redis at {redis_address(state.url)}, keys {state.key_prefix}:*"


def _describe_history(config: Config) -> str:
    """Where the history is kept and its bounds, in one line for check-config."""
    history = config.history
    if not history.enabled:
        return "off"
    where = (
        f"file {history.path} (flushed every {history.flush_interval:g} s)" if history.path else "in memory"
    )
    return (
        f"{where}; ≤ {history.max_messages_per_topic:,} messages per topic, {history.max_age}, "
        f"≤ {history.max_bytes:,} bytes"
    )


def _describe_http(http: HttpSettings) -> str:
    """Who may call the HTTP transports, in one line for check-config."""
    parts = []
    for key in http.api_keys:
        narrowed = key.topics is not None or set(key.permissions) != {"read", "write"}
        parts.append(f"API key {key.name}{' (narrowed)' if narrowed else ''}")
    if http.oauth is not None:
        parts.append(f"OAuth tokens of {http.oauth.issuer}")
    if not parts:
        return "no authentication: loopback clients only"
    return ", ".join(parts)


def _refuse_host(host: str, who: str = "mcpmqtt demo", why: str = "the demo has no authentication") -> int:
    print(
        f"{who}: refusing to serve HTTP on {host}: {why}, so it serves only on loopback addresses "
        "(127.0.0.1, ::1, localhost)",
        file=sys.stderr,
    )
    return EXIT_INVALID_CONFIG


def _check_bind(host: str, http: HttpSettings) -> int | None:
    """Refuse a network-facing bind address without authentication; warn when no Host would pass."""
    if is_loopback(host):
        return None
    if not http.authenticated:
        return _refuse_host(
            host,
            "mcpmqtt",
            "no HTTP authentication is configured (set http.api_keys or http.oauth in the config, "
            "see docs/deploying.md)",
        )
    if not http.allowed_hosts:
        logging.getLogger("mcpmqtt.cli").warning(
            "serving on %s, but http.allowed_hosts is empty: requests are accepted only with the Host "
            "127.0.0.1, localhost or ::1%s; add the names clients use to http.allowed_hosts",
            host,
            "" if host in ("0.0.0.0", "::") else f" or {host}",
        )
    return None


def _refuse_address_with_stdio(args: argparse.Namespace, who: str) -> int | None:
    """Refuse --host or --port given with stdio: ignored, they would let a person believe the server
    listens there."""
    given = [option for option in ("host", "port", "workers") if getattr(args, option, None) is not None]
    if getattr(args, "transport", "stdio") != "stdio" or not given:
        return None
    flags = [f"--{option}" for option in given]
    options = " and ".join([", ".join(flags[:-1]), flags[-1]] if len(flags) > 1 else flags)
    print(
        f"{who}: {options} {'apply' if len(given) > 1 else 'applies'} to HTTP only; over stdio the "
        f"server talks on stdin and stdout. Drop {options}, or add --transport http",
        file=sys.stderr,
    )
    return EXIT_INVALID_CONFIG


def _hash_key(from_stdin: bool) -> int:
    """Print a new key and its hash, or the hash of the key on stdin."""
    if from_stdin:
        key = sys.stdin.readline().rstrip("\r\n")
        try:
            print(apikeys.hash_key(key))
        except ValueError as exc:
            print(f"mcpmqtt hash-key: {exc}", file=sys.stderr)
            return EXIT_INVALID_CONFIG
        return 0
    key = apikeys.new_key()
    print(f"key:  {key}")
    print(f"hash: {apikeys.hash_key(key)}")
    print(
        "Give the key to the client (sent as 'Authorization: Bearer <key>'); it is not shown again. "
        'Put the hash in the config: "http": {"api_keys": [{"name": "...", "hash": "<hash>"}]}',
        file=sys.stderr,
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    """The demo brings its own broker and config: no config file is read."""
    if args.config is not None:
        print("mcpmqtt demo: the demo brings its own config; --config does not apply", file=sys.stderr)
        return EXIT_INVALID_CONFIG
    if args.tour and args.transport == "stdio":
        print("mcpmqtt demo: the tour drives the server over HTTP; drop --transport stdio", file=sys.stderr)
        return EXIT_INVALID_CONFIG
    if (refused := _refuse_address_with_stdio(args, "mcpmqtt demo")) is not None:
        return refused
    host = args.host or HTTP_HOST
    if not is_loopback(host):
        return _refuse_host(host)
    _setup_logging(args.log_level or ("WARNING" if args.tour else "INFO"), args.logfile, args.log_format)
    if args.log_level is None:
        # What the devices do shows; the web server's and the SDK's routine lines would bury the banner.
        for name in ("uvicorn", "mcp"):
            logging.getLogger(name).setLevel(logging.WARNING)
    from mcpmqtt.demo.embedded import DemoStartError

    try:
        if args.tour:
            from mcpmqtt.demo.tour import run_tour

            return run_tour(host, args.port, args.broker, args.broker_port)
        from mcpmqtt.demo.runner import run_demo

        return run_demo(args.transport, host, args.port or HTTP_PORT, args.broker, args.broker_port)
    except DemoStartError as exc:
        print(f"mcpmqtt demo: {exc}", file=sys.stderr)
        return 1


def _serve_workers(
    args: argparse.Namespace, config: Config, transport: Literal["stdio", "http", "sse"], count: int
) -> int:
    """`serve --transport http --workers N`: N processes on one port (workers.py)."""
    from mcpmqtt.server.build import build_server
    from mcpmqtt.transports.http import http_server
    from mcpmqtt.workers import bind, for_worker, run_workers

    why = None
    if transport != "http":
        why = "it needs --transport http: an SSE stream and its posts must reach one process"
    elif config.history.enabled and config.history.path is not None:
        why = "every worker would write the one history.path file; drop history.path, or run one worker"
    if why is not None:
        print(f"mcpmqtt serve: --workers {count}: {why}", file=sys.stderr)
        return EXIT_INVALID_CONFIG
    host = args.host or HTTP_HOST
    port = HTTP_PORT if args.port is None else args.port
    if (refused := _check_bind(host, config.http)) is not None:
        return refused
    try:
        reserved = bind(host, port, listen=False)
    except OSError as exc:
        print(f"mcpmqtt serve: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        return 1

    def serve(index: int) -> int:
        try:
            web = http_server(build_server(for_worker(config, index)), "http", host, port)
        except (ConfigError, ValueError) as exc:
            print(f"mcpmqtt: {exc}", file=sys.stderr)
            return EXIT_INVALID_CONFIG
        anyio.run(web.serve, [bind(host, port, listen=True)])
        return 0

    return run_workers(count, reserved, serve)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command or "serve"
    if command == "demo":
        return _demo(args)
    if command == "hash-key":
        return _hash_key(args.stdin)
    if (refused := _refuse_address_with_stdio(args, "mcpmqtt serve")) is not None:
        return refused
    path: Path = (getattr(args, "config", None) or default_config_path()).expanduser()
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"mcpmqtt: {exc}", file=sys.stderr)
        return EXIT_INVALID_CONFIG
    if command == "check-config":
        try:
            return _check_config(config, str(path))
        except BrokenPipeError:  # `mcpmqtt check-config | head`: the reader had enough
            sys.stdout = None  # nothing left to flush at exit
            return 0

    _setup_logging(
        getattr(args, "log_level", None) or config.logging.level,
        getattr(args, "logfile", None) or config.logging.logfile,
        getattr(args, "log_format", None),
    )
    from mcpmqtt.server.build import build_server  # the MCP SDK is heavy; check-config does not need it

    transport: Literal["stdio", "http", "sse"] = getattr(args, "transport", "stdio")
    workers = getattr(args, "workers", None) or 1
    if workers > 1:
        return _serve_workers(args, config, transport, workers)
    try:
        server = build_server(config)
    except ConfigError as exc:  # e.g. a history file that is not a database
        print(f"mcpmqtt: {exc}", file=sys.stderr)
        return EXIT_INVALID_CONFIG
    if transport == "stdio":
        from mcpmqtt.transports.stdio import serve_stdio

        try:
            anyio.run(serve_stdio, server)
        except KeyboardInterrupt:  # the lifespan has disconnected from the broker by now
            return 130
        return 0
    host = args.host or HTTP_HOST
    port = HTTP_PORT if args.port is None else args.port
    if (refused := _check_bind(host, config.http)) is not None:
        return refused
    from mcpmqtt.transports.http import http_server

    try:
        web = http_server(server, transport, host, port)
    except ValueError as exc:  # e.g. a JWKS file that is no key set
        print(f"mcpmqtt: {exc}", file=sys.stderr)
        return EXIT_INVALID_CONFIG
    anyio.run(web.serve)
    return 0
