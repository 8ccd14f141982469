"""The MCP server: its identity, its lifespan (the broker connection), and the one boundary every tool
call passes, where typed errors become the contract's error results and the audit log gets its record.

The tools live in tools.py and live.py, the resources in resources.py; this module wires them to one
Runtime (config, allowlist, broker).
"""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp_types import CallToolResult, InputRequiredResult
from pydantic import ValidationError

from mcpmqtt import __version__
from mcpmqtt.config import Config
from mcpmqtt.errors import InvalidArgument, McpMqttError
from mcpmqtt.mqtt import Broker, BrokerSettings
from mcpmqtt.observation import ShapeObserver
from mcpmqtt.rules.topics import overlaps
from mcpmqtt.server.audit import AuditLog
from mcpmqtt.server.context import Runtime
from mcpmqtt.server.labels import UNTRUSTED
from mcpmqtt.server.live import followed_patterns, register_live
from mcpmqtt.server.live_state import LiveState
from mcpmqtt.server.notifier import Notifier
from mcpmqtt.server.observed import register_observed
from mcpmqtt.server.prompts import register_prompts
from mcpmqtt.server.resources import register_resources
from mcpmqtt.server.results import error_result
from mcpmqtt.server.tools import register_tools
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


class McpMqttServer(MCPServer[Any]):
    """MCPServer with the one boundary every tool call passes.

    Tools raise the typed errors of `mcpmqtt.errors`; here they become error results whose text starts
    with the contract's prefix (the SDK would put its own words first), argument errors (wrong type,
    out of range, unknown name) become `invalid argument:`, and the audit log records the call with
    the error that ended it, if any.
    """

    def __init__(self, runtime: Runtime, audit: AuditLog | None, **settings: Any) -> None:
        super().__init__(**settings)
        self.runtime = runtime
        """For the HTTP app: the auth config, the allowlist, readiness."""
        self.audit = audit
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
        if self.audit is not None and isinstance(result, CallToolResult):
            self.audit.tool_call(name, arguments, result, error, context)
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


def build_server(config: Config, broker: Broker | None = None) -> McpMqttServer:
    """The MCP server for one config; the broker connection starts and stops with its lifespan."""
    bus = InMemorySubscriptionBus()
    live = config.live_state
    notifier = Notifier(bus, live.notify_interval)
    state = (
        LiveState(live.max_topics, live.max_payload_bytes, notifier.topic_changed) if live.enabled else None
    )
    runtime = Runtime(
        config,
        config.allowlist(),
        broker or Broker(broker_settings(config)),
        sparkplug=_sparkplug(config),
        shapes=_shapes(config, notifier) if state is not None else None,
    )

    audit = AuditLog(config.audit.path, config.audit.include_payloads) if config.audit else None

    @asynccontextmanager
    async def lifespan(_: MCPServer[Any]) -> AsyncIterator[None]:
        if audit is not None:
            audit.start()
        task = asyncio.create_task(runtime.broker.run(), name="mqtt-connection")
        if state is not None:
            for pattern in followed_patterns(runtime):
                runtime.broker.follow(pattern, state)
                if runtime.shapes is not None:
                    runtime.broker.follow(pattern, runtime.shapes)
                if runtime.sparkplug is not None and overlaps(pattern, SPARKPLUG_PREFIX + "#"):
                    runtime.broker.follow(pattern, runtime.sparkplug)
        try:
            yield None
        finally:
            # Shielded: on Ctrl-C this runs inside a cancelled scope, and an interrupted stop would
            # drop the connection without its DISCONNECT. stop() bounds its own waits.
            with anyio.CancelScope(shield=True):
                await runtime.broker.stop(task)
                if audit is not None:  # write out the queued records; close() bounds its wait too
                    await asyncio.to_thread(audit.close)

    server = McpMqttServer(
        runtime,
        audit,
        name="mcpmqtt",
        title="MQTT for agents",
        instructions=INSTRUCTIONS,
        version=__version__,
        lifespan=lifespan,
        subscriptions=bus,
    )
    register_tools(server, runtime)
    register_resources(server, runtime)
    register_prompts(server, runtime)
    if state is not None:
        register_live(server, runtime, state, notifier)
    if runtime.sparkplug is not None:
        register_observed(server, runtime, runtime.sparkplug)
    return server
