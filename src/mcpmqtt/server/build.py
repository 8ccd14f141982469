"""The MCP server: its identity, its lifespan (the broker connection), and the one boundary every tool
call passes, where typed errors become the contract's error results and the audit log gets its record.

The tools live in tools.py, live.py and watches.py, the resources in resources.py, the subscription
handlers in subscribe.py; this module wires them to one Runtime (config, allowlist, broker).
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from functools import partial
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.request_state import RequestStateSecurity
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp_types import CallToolResult, InputRequiredResult
from pydantic import ValidationError

from mcpmqtt import __version__
from mcpmqtt.config import Config
from mcpmqtt.discovery import DeviceRegistry, DiscoveryIngest
from mcpmqtt.errors import InvalidArgument, McpMqttError
from mcpmqtt.mqtt import Broker, BrokerSettings
from mcpmqtt.observation import ShapeObserver
from mcpmqtt.rules.payloads import payload_text
from mcpmqtt.rules.policy import Allowlist
from mcpmqtt.rules.topics import overlaps
from mcpmqtt.server.approval_tool import register_approval_tool
from mcpmqtt.server.approvals import ApprovalQueue
from mcpmqtt.server.audit import AuditLog
from mcpmqtt.server.context import Runtime
from mcpmqtt.server.devices import console_devices, register_devices
from mcpmqtt.server.discovery_feed import DiscoveryFeed
from mcpmqtt.server.events import EventHub, TopicChanges
from mcpmqtt.server.history import register_history
from mcpmqtt.server.history_file import HistoryFile, flush, keep_written, open_history_file
from mcpmqtt.server.history_store import History
from mcpmqtt.server.labels import UNTRUSTED
from mcpmqtt.server.live import followed_patterns, register_live
from mcpmqtt.server.live_state import LiveState
from mcpmqtt.server.notifier import Notifier
from mcpmqtt.server.observed import register_observed
from mcpmqtt.server.prompts import register_prompts
from mcpmqtt.server.replays import REQUEST_STATE_TTL, SingleUseRequestState
from mcpmqtt.server.resources import register_resources
from mcpmqtt.server.results import error_result
from mcpmqtt.server.subscribe import SubscribeGate
from mcpmqtt.server.tools import register_tools
from mcpmqtt.server.topics_app import topics_app
from mcpmqtt.server.watch_state import WatchBook
from mcpmqtt.server.watches import register_watches
from mcpmqtt.sparkplug import SparkplugRegistry
from mcpmqtt.sparkplug.topic import PREFIX as SPARKPLUG_PREFIX

log = logging.getLogger(__name__)

INSTRUCTIONS = f"""\
This server connects you to an MQTT broker, fenced by an allowlist of topic patterns.
Read the resource mcpmqtt://topics/allowed first: it lists the patterns you may read (subscribe)
and write (publish), with what each topic is for; mcpmqtt://topics/examples shows concrete topics.
In patterns, + matches exactly one topic level and # matches any number of levels at the end.
To read you need ONE read pattern that covers your whole filter: with read access to sensors/+,
subscribe to sensors/+ or sensors/kitchen, not sensors/#.
Use mqtt_read for the current value of one topic (retained values arrive at once), mqtt_subscribe
to collect several messages over time, mqtt_publish to send, and mqtt_query for request/response.
{UNTRUSTED}"""
WATCH_INSTRUCTIONS = """
To wait longer than about 20 seconds for something, use mqtt_watch and collect its matches with
short mqtt_poll calls: hosts give up on long tool calls."""


def _describe_validation(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "arguments"
        message = item["msg"]
        if item["type"] == "missing":
            message = "required argument is missing"
        elif "input" in item and item["type"] != "extra_forbidden":
            message = f"{message} (got {item['input']!r:.80})"
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


ToolCallObserver = Callable[[str, dict[str, Any], CallToolResult, McpMqttError | None], None]
"""Told of every finished tool call: the tool's name, its arguments as given, its result, and the
error that ended it (a refusal or a failure), if any."""

_PAYLOAD_TOOLS = frozenset({"mqtt_publish", "mqtt_query"})
"""The tools whose `payload` takes any JSON value."""


class SharedLifespan:
    """The broker connection's lifetime, shared by everyone who enters it: the first entry starts it,
    the last exit stops it, and entries in between cost nothing.

    The SDK enters a server's lifespan once for Streamable HTTP and stdio, but once per connection
    for the legacy HTTP+SSE transport (`Server.run` per session). Per session, two sessions opened two
    broker connections with the same client id that took each other over, and the first session to
    close stopped the connection of all. So the HTTP app holds this for the whole process (from
    uvicorn's start-up to its shutdown) and each session's entry is a nested one.
    """

    def __init__(self, connection: Callable[[], AbstractAsyncContextManager[None]]) -> None:
        self._connection = connection
        self._holders = 0
        self._lock = anyio.Lock()
        self._stack: AsyncExitStack | None = None

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """The connection, running while this context is entered (by this holder or another)."""
        async with self._lock:
            if self._holders == 0:
                stack = AsyncExitStack()
                await stack.enter_async_context(self._connection())
                self._stack = stack
            self._holders += 1
        try:
            yield None
        finally:
            with anyio.CancelScope(shield=True):
                async with self._lock:
                    self._holders -= 1
                    if self._holders == 0 and self._stack is not None:
                        stack, self._stack = self._stack, None
                        await stack.aclose()


class McpMqttServer(MCPServer[Any]):
    """MCPServer with the one boundary every tool call passes.

    Tools raise the typed errors of `mcpmqtt.errors`; here they become error results whose text starts
    with the contract's prefix (the SDK would put its own words first), argument errors (wrong type,
    out of range, unknown name) become `invalid argument:`, and the audit log records the call with
    the error that ended it, if any.
    """

    def __init__(
        self,
        runtime: Runtime,
        audit: AuditLog | None,
        lifespan_holder: SharedLifespan,
        on_tool_call: ToolCallObserver | None = None,
        **settings: Any,
    ) -> None:
        super().__init__(**settings)
        self.runtime = runtime
        """For the HTTP app: the auth config, the allowlist, readiness."""
        self.audit = audit
        self.lifespan_holder = lifespan_holder
        """For the HTTP app: holds the broker connection for the whole process."""
        self.on_tool_call = on_tool_call
        self.events = EventHub()
        """Every finished tool call, for the console (no payloads)."""
        self.live_state: LiveState | None = None
        """The last value of every readable topic (None when live_state is off), for the console."""
        self.topic_changes = TopicChanges()
        """Told of every change of the live state, on the message path (keep listeners O(1))."""
        self.history_provider: Callable[[str], Sequence[float] | None] | None = None
        """Recent numeric values of a topic, for the console's sparklines; None: no history here."""
        self.devices_provider: Callable[[Allowlist], list[dict[str, Any]]] | None = None
        """The devices a viewer's allowlist may see, for the console; None: no discovery here."""
        self._arguments: dict[str, frozenset[str]] | None = None

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        error: McpMqttError | None = None
        try:
            result = await self._call_tool(name, arguments, context)
        except McpMqttError as exc:
            error, result = exc, error_result(exc)
        # Recorded here, where every tool call passes, so that no tool needs audit code of its own;
        # a call still waiting for the person's confirmation (InputRequiredResult) has not ended yet.
        if isinstance(result, CallToolResult):
            if self.audit is not None:
                self.audit.tool_call(name, arguments, result, error, context)
            if self.on_tool_call is not None:
                try:
                    self.on_tool_call(name, arguments, result, error)
                except Exception:  # an observer's fault must not change the call's result
                    log.exception("the tool call observer failed on a %s call", name)
            try:
                self.events.tool_call(name, arguments, result, error, context)
            except Exception:  # the feed is for watching; the call's result stands
                log.exception("could not make the feed event of a %s call", name)
        return result

    async def _call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None
    ) -> CallToolResult | InputRequiredResult:
        if self._arguments is None:
            tools = await self.list_tools()
            self._arguments = {t.name: frozenset(t.input_schema.get("properties", {})) for t in tools}
        known = self._arguments.get(name)
        if known is not None and (unknown := sorted(set(arguments) - known)):
            # An ignored argument would let a model believe it had set something it had not.
            raise InvalidArgument(
                f"{name} has no argument {', '.join(map(repr, unknown))}; "
                f"its arguments are {', '.join(sorted(known))}"
            )
        if name in _PAYLOAD_TOOLS and not isinstance(arguments.get("payload", ""), str):
            # A JSON value as payload is sent as its compact JSON text (rules/payloads.payload_text).
            text = payload_text(arguments["payload"], arguments.get("payload_encoding", "utf-8"))
            arguments = {**arguments, "payload": text}
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            if isinstance(exc.__cause__, McpMqttError):
                raise exc.__cause__ from None
            if isinstance(exc.__cause__, ValidationError):
                raise InvalidArgument(_describe_validation(exc.__cause__)) from None
            raise


def broker_settings(config: Config) -> BrokerSettings:
    """Broker connection settings from the config file."""
    mqtt = config.mqtt
    if mqtt.tls is not None and mqtt.tls.insecure:
        log.warning(
            "mqtt.tls.insecure is set: the broker's certificate is not checked against its host name %r, "
            "so anyone holding a certificate of the same CA could pose as the broker; use it for tests only",
            mqtt.host,
        )
    return BrokerSettings(
        host=mqtt.host,
        port=mqtt.port,
        client_id=mqtt.resolved_client_id(),
        username=mqtt.username,
        password=mqtt.resolved_password(),
        keepalive=mqtt.keepalive,
        protocol=mqtt.protocol,
        reply_topic_prefix=mqtt.reply_topic_prefix,
        tls=mqtt.tls.ssl_context() if mqtt.tls is not None else None,
        transport=mqtt.transport,
        websocket_path=mqtt.websocket_path,
        max_qos=mqtt.max_qos,
    )


def _sparkplug(config: Config) -> SparkplugRegistry | None:
    settings = config.sparkplug
    if not settings.enabled:
        return None
    return SparkplugRegistry(settings.max_edge_nodes, settings.max_devices_per_node, settings.max_metrics)


def _shapes(config: Config, notifier: Notifier) -> ShapeObserver | None:
    settings = config.shapes
    if not settings.enabled:
        return None
    return ShapeObserver(
        max_topics=settings.max_topics,
        sample_interval=settings.sample_interval,
        max_sample_bytes=settings.max_sample_bytes,
        max_schema_bytes=settings.max_schema_bytes,
        max_examples=settings.max_examples,
        listener=notifier.shape_changed,
    )


def build_server(
    config: Config, broker: Broker | None = None, *, on_tool_call: ToolCallObserver | None = None
) -> McpMqttServer:
    """The MCP server for one config; the broker connection starts and stops with its lifespan.

    `on_tool_call` is told of every finished tool call, allowed or refused (the demo prints them).
    """
    audit = AuditLog(config.audit.path, config.audit.include_payloads) if config.audit else None
    approvals = ApprovalQueue(config.approvals.ttl, config.approvals.max_pending, audit)
    discovery = config.discovery
    devices = DeviceRegistry(discovery.max_devices) if discovery.enabled else None
    bus = InMemorySubscriptionBus()
    live = config.live_state
    notifier = Notifier(bus, live.notify_interval)
    runtime = Runtime(
        config,
        config.allowlist(),
        broker or Broker(broker_settings(config)),
        approvals=approvals,
        devices=devices,
        sparkplug=_sparkplug(config),
        shapes=_shapes(config, notifier) if live.enabled else None,
    )
    topic_changes = TopicChanges(notifier.topic_changed)
    state = (
        LiveState(live.max_topics, live.max_payload_bytes, topic_changes, config.mqtt.reply_topic_prefix)
        if live.enabled
        else None
    )
    feed = None
    if devices is not None:

        def last_payload(topic: str) -> bytes | None:
            """A device's availability retained before its config: the live state already has it."""
            entry = state.get(topic) if state is not None else None
            return bytes(entry.last.payload) if entry is not None else None

        ingest = DiscoveryIngest(discovery.options(), devices, runtime.allowlist, last_payload)
        feed = DiscoveryFeed(ingest, discovery.max_pending)

    gate = SubscribeGate(notifier)
    watches = (
        WatchBook(runtime.broker, config.watches, notifier.resource_changed, notifier.forget)
        if config.watches.enabled
        else None
    )
    history, history_file = _history(config)
    followed = followed_patterns(runtime)

    @asynccontextmanager
    async def connection() -> AsyncIterator[None]:
        if audit is not None:
            audit.start()
        task = asyncio.create_task(runtime.broker.run(), name="mqtt-connection")
        for pattern in followed:
            for sink in (state, history, feed, runtime.shapes):
                if sink is not None:
                    runtime.broker.follow(pattern, sink)
            # Only on patterns that can carry Sparkplug B: the registry decodes what it is given.
            if (
                runtime.sparkplug is not None
                and state is not None
                and overlaps(pattern, SPARKPLUG_PREFIX + "#")
            ):
                runtime.broker.follow(pattern, runtime.sparkplug)
        flusher = None
        if history is not None and history_file is not None:
            flusher = asyncio.create_task(
                keep_written(history, history_file, config.history.flush_interval), name="history-flush"
            )
        try:
            yield None
        finally:
            # Shielded: on Ctrl-C this runs inside a cancelled scope, and an interrupted stop would
            # drop the connection without its DISCONNECT. stop() bounds its own waits.
            with anyio.CancelScope(shield=True):
                if watches is not None:
                    await watches.close()
                await runtime.broker.stop(task)
                for close in runtime.on_close:
                    await close()
                if audit is not None:  # write out the queued records; close() bounds its wait too
                    await asyncio.to_thread(audit.close)
                if flusher is not None and history is not None and history_file is not None:
                    flusher.cancel()
                    await asyncio.gather(flusher, return_exceptions=True)
                    await flush(history, history_file)  # what arrived since the last flush
                    history_file.close()

    shared = SharedLifespan(connection)

    def lifespan(_: MCPServer[Any]) -> AbstractAsyncContextManager[None]:
        return shared.hold()

    server = McpMqttServer(
        runtime,
        audit,
        shared,
        on_tool_call,
        name="mcpmqtt",
        title="MQTT for agents",
        instructions=INSTRUCTIONS + (WATCH_INSTRUCTIONS if watches is not None else ""),
        version=__version__,
        lifespan=lifespan,
        subscriptions=bus,
        request_state_security=RequestStateSecurity.ephemeral(ttl=REQUEST_STATE_TTL),
        extensions=[topics_app(history=history is not None)]
        if state is not None or history is not None
        else [],
    )
    # Outermost, so that it sees the sealed state as the client sent it: one answer, one publish.
    server.middleware.insert(0, SingleUseRequestState(REQUEST_STATE_TTL))
    server.live_state, server.topic_changes = state, topic_changes
    register_tools(server, runtime)
    register_resources(server, runtime)
    register_prompts(server, runtime)
    if any(topic.confirm is not False for topic in config.topics):
        register_approval_tool(server, runtime, approvals)
    if state is not None:
        register_live(server, runtime, state, gate)
    if watches is not None:
        register_watches(server, runtime, watches, gate)
    gate.register(server)
    if history is not None:
        register_history(server, runtime, history, followed)
        server.history_provider = history.recent_numbers
    if devices is not None:
        register_devices(server, runtime, devices, _observed(runtime.shapes))
        server.devices_provider = partial(console_devices, devices)
    if runtime.sparkplug is not None:
        register_observed(server, runtime, runtime.sparkplug)
    return server


def _history(config: Config) -> tuple[History | None, HistoryFile | None]:
    """The history and its file, if configured; the file is opened and read here, so that one that
    cannot be used stops the server before it serves (ConfigError naming it)."""
    settings = config.history
    if not settings.enabled:
        return None, None
    history = History(
        settings.max_messages_per_topic,
        settings.max_age_seconds,
        settings.max_bytes,
        track_changes=settings.path is not None,
    )
    if settings.path is None:
        return history, None
    return history, open_history_file(history, settings.path)


def _observed(shapes: ShapeObserver | None) -> Callable[[str], dict[str, Any] | None] | None:
    """mqtt_describe's `observed`: the shape observation of a topic, when shapes are on."""
    if shapes is None:
        return None

    def observed(topic: str) -> dict[str, Any] | None:
        record = shapes.shape_of(topic)
        return dict(record) if record is not None else None

    return observed
