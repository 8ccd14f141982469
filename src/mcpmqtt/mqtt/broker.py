"""The broker facade: one shared MQTT connection for every agent of this process. Knows nothing of MCP.

Three parts, each in its module: the connection (connection.py: connect, reconnect, protocol fallback,
packets and acknowledgements), the routing (routing.py: one broker subscription per filter, shared and
reference counted, and where each message goes), and request/response (replies.py). This class puts
them together behind the operations the server uses: `publish`, `subscription`, `follow`, `request`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

from mcpmqtt.errors import BrokerRefused, InvalidArgument, InvalidTopic, McpMqttError
from mcpmqtt.mqtt.connection import Connection
from mcpmqtt.mqtt.inbox import Inbox, Sink
from mcpmqtt.mqtt.properties import PublishProperties
from mcpmqtt.mqtt.received import Received
from mcpmqtt.mqtt.replies import Reply, ReplyRouter, reply_check, wait_until
from mcpmqtt.mqtt.routing import Routing, Subscription
from mcpmqtt.mqtt.settings import BrokerSettings
from mcpmqtt.rules.topics import filter_problem, name_problem, split_shared

log = logging.getLogger(__name__)


def _log_refusal(topic_filter: str, ack: asyncio.Future[Any]) -> None:
    if ack.cancelled() or ack.exception() is not None:
        return  # the connection dropped: the subscription is restored on the next one
    if ack.result().is_failure:
        log.warning("broker refused the subscription to %r: %s", topic_filter, ack.result())


class Broker:
    """The process's one MQTT connection: publish, subscribe, request/response, reconnect."""

    def __init__(self, settings: BrokerSettings) -> None:
        self.settings = settings
        self._routing = Routing(v5=settings.protocol == "5")
        self._connection = Connection(
            settings,
            restore=self._restore_subscriptions,
            protocol_changed=self._routing.protocol_changed,
            route=self._routing.route,
            subscribed=self._subscribed,
            lost=self._lost,
        )
        # SUBSCRIBE packet id -> the subscription and the sink that the retained replay is for.
        self._joins: dict[int, tuple[Subscription, Sink]] = {}
        self._reply_base = f"{settings.reply_topic_prefix}/{secrets.token_hex(8)}"
        self._replies = ReplyRouter()
        self._reply_ready: asyncio.Future[None] | None = None

    # ---- state -------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connection.connected

    async def wait_connected(self, timeout: float) -> bool:
        """Wait until connected or `timeout` seconds pass; whether connected."""
        return await self._connection.wait_connected(timeout)

    @property
    def protocol(self) -> Literal["5", "3.1.1"]:
        """The protocol in use: "5" unless the broker refused it."""
        return self._connection.protocol

    @property
    def active_filters(self) -> list[str]:
        """Filters with a live broker subscription (the private reply filter included)."""
        return list(self._routing.subscriptions)

    # ---- the connection's life ------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, and reconnect with backoff for as long as the server runs."""
        await self._connection.run()

    async def stop(self, run_task: asyncio.Task[None]) -> None:
        """Disconnect cleanly (the broker drops our session and every subscription with it)."""
        await self._connection.stop(run_task)

    async def _restore_subscriptions(self) -> None:
        """Re-subscribe every live filter on a new connection (the session starts clean)."""
        if not self._connection.v5:  # fallen back to 3.1.1: followers observe instead of subscribing
            self._routing.demote_followers()
        subs = list(self._routing.subscriptions.values())
        pending = [(sub, self._connection.subscribe(sub.topic_filter, sub.sub_id)[1]) for sub in subs]
        for sub, future in pending:
            code = await self._connection.acknowledged(future)
            if code.is_failure:
                log.warning("broker refused re-subscription to %r: %s", sub.topic_filter, code)

    def _subscribed(self, mid: int) -> None:
        if (join := self._joins.pop(mid, None)) is not None:
            sub, sink = join
            sub.retained_to = sink

    def _lost(self) -> None:
        self._joins.clear()
        self._routing.connection_lost()

    # ---- subscriptions ------------------------------------------------------------------------

    def follow(self, topic_filter: str, sink: Sink) -> None:
        """Keep `sink` subscribed to `topic_filter` for as long as the connection loop runs.

        For server-wide consumers (the live-state cache), not calls: the subscription is made on
        the next connection (or now, if connected) and restored after every reconnect, and `sink`
        gets the retained messages of every such SUBSCRIBE, so it can refill after an outage.

        On MQTT 3.1.1 there is no subscription identifier to tell the broker's copies apart, so a
        subscription of our own would make every call on an overlapping filter receive each
        message twice. There `sink` instead sees what the calls' subscriptions deliver.

        A sink may follow several filters; it gets each message once even where they overlap.
        """
        if problem := filter_problem(topic_filter):
            raise InvalidTopic(problem)
        sub = self._routing.follow(topic_filter, sink)
        if sub is not None and self._connection.attached and self._connection.connected:
            _, future = self._connection.subscribe(sub.topic_filter, sub.sub_id)
            future.add_done_callback(lambda done: _log_refusal(topic_filter, done))

    @contextlib.asynccontextmanager
    async def subscription(self, topic_filter: str, sink: Sink) -> AsyncIterator[None]:
        """Feed `sink` with messages on `topic_filter` while the block runs.

        Returns once the broker granted the subscription (SUBACK), so a caller can publish a
        request knowing the reply cannot be missed. A refusal raises BrokerRefused.
        """
        if problem := filter_problem(topic_filter):  # a malformed filter would cost the connection
            raise InvalidTopic(problem)
        await self._connection.ready()
        self._check_shared(topic_filter)
        sub = await self._join(topic_filter, sink, hint="the broker's own access rules forbid it")
        try:
            yield
        finally:
            self._release(sub, sink)

    def _check_shared(self, topic_filter: str) -> None:
        """Refuse a shared subscription before subscribing where the broker would grant it and then
        deliver nothing through it (a read would wait out its timeout in silence)."""
        group, inner = split_shared(topic_filter)
        if group is not None and self._connection.shared_subscriptions is False:
            raise BrokerRefused(
                f"the broker accepts shared subscriptions such as {topic_filter!r} but delivers nothing "
                f"through them; subscribe to the plain filter {inner!r} instead (every subscriber then "
                "gets every message)"
            )

    async def _join(self, topic_filter: str, sink: Sink, *, hint: str) -> Subscription:
        """Add `sink` to the filter's broker subscription (made if new) once the broker granted it;
        the retained messages that this SUBSCRIBE brings go to `sink` alone."""
        sub = self._routing.get_or_add(topic_filter)
        sub.sinks.add(sink)
        try:
            mid, future = self._connection.subscribe(sub.topic_filter, sub.sub_id)
            self._joins[mid] = (sub, sink)
            code = await self._connection.acknowledged(future)
            if code.is_failure:
                raise BrokerRefused(
                    f"the broker did not grant the subscription to {topic_filter!r} ({code}); {hint}"
                )
        except BaseException:
            self._release(sub, sink)
            raise
        return sub

    def _release(self, sub: Subscription, sink: Sink) -> None:
        """Drop one user of a subscription; the last one out unsubscribes (without waiting, so that a
        cancelled call cleans up too: the UNSUBSCRIBE is ordered before any later SUBSCRIBE)."""
        if self._routing.release(sub, sink):
            self._connection.unsubscribe(sub.topic_filter)

    # ---- publishing ---------------------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 0,
        retain: bool = False,
        properties: PublishProperties | None = None,
    ) -> None:
        """Publish; at QoS 1 and 2 return only once the broker acknowledged, and raise if it refused."""
        if problem := name_problem(topic):
            raise InvalidTopic(problem)
        await self._connection.ready()
        broker_max = self._connection.broker_max_qos
        if qos > (limit := min(self.settings.max_qos, broker_max)):
            source = "the broker's" if broker_max == limit else "the configured (mqtt.max_qos)"
            raise InvalidArgument(
                f"qos {qos} is above {source} maximum QoS of {limit}; publish at qos {limit} or lower"
            )
        code = await self._connection.publish(topic, payload, qos, retain, properties)
        if code is not None and code.is_failure:
            raise BrokerRefused(
                f"the broker rejected the publish to {topic!r} ({code}); "
                "the broker's own access rules or limits forbid it"
            )

    # ---- request / response -------------------------------------------------------------------

    async def _reply_subscription(self) -> str:
        """The private reply filter, subscribed once and kept for the life of the process."""
        if self._reply_ready is None:
            self._reply_ready = asyncio.get_running_loop().create_future()
            hint = "allow it in the broker's ACL, set mqtt.reply_topic_prefix, or pass response_topic"
            try:
                await self._join(f"{self._reply_base}/+", self._replies, hint=hint)
            except BaseException as exc:
                ready, self._reply_ready = self._reply_ready, None
                ready.set_exception(exc if isinstance(exc, McpMqttError) else self._connection.unavailable())
                ready.exception()  # retrieved here; later callers start over
                raise
            self._reply_ready.set_result(None)
        await asyncio.shield(self._reply_ready)
        return self._reply_base

    def check_reply_route(self, response_topic: str | None) -> None:
        """Raise InvalidArgument when a query could not get its reply: without a response_topic the
        reply comes on the server's private topic, named to the device by the MQTT 5 Response Topic,
        which MQTT 3.1.1 cannot carry."""
        if response_topic is None and not self._connection.v5:
            raise InvalidArgument(
                "the broker speaks MQTT 3.1.1, which cannot carry a response topic; "
                "pass response_topic (the topic the device replies on)"
            )

    async def request(
        self,
        request_topic: str,
        payload: bytes,
        *,
        qos: int,
        timeout: float,
        response_topic: str | None = None,
        accept: Callable[[Received], bool] | None = None,
        wait: Callable[[Inbox, float], Awaitable[bool]] | None = None,
    ) -> Reply:
        """Publish a request with MQTT 5 Response Topic and Correlation Data; wait for the reply.

        The reply subscription is acknowledged before the request goes out. Without a
        response_topic the reply comes on a private topic of this server's own. `wait(inbox,
        deadline)` waits for the reply (by default quietly; a caller may report progress meanwhile).
        """
        deadline = time.monotonic() + timeout
        correlation_id = uuid.uuid4().hex
        correlation = correlation_id.encode()
        is_reply = reply_check(correlation, v5=self._connection.v5)

        def accepted(message: Received) -> bool:
            return is_reply(message) and (accept is None or accept(message))

        inbox = Inbox(1, accepted)
        self.check_reply_route(response_topic)
        if response_topic is None:
            base = await self._reply_subscription()
            reply_topic = f"{base}/{correlation_id}"
            props = PublishProperties(response_topic=reply_topic, correlation_data=correlation)
            self._replies.waiters[correlation_id] = inbox
            try:
                await self.publish(request_topic, payload, qos=qos, properties=props)
                await (wait or wait_until)(inbox, deadline)
            finally:
                del self._replies.waiters[correlation_id]
        else:
            reply_topic = response_topic
            props = PublishProperties(response_topic=reply_topic, correlation_data=correlation)
            async with self.subscription(response_topic, inbox):
                await self.publish(request_topic, payload, qos=qos, properties=props)
                await (wait or wait_until)(inbox, deadline)
        return Reply(reply_topic, correlation_id, inbox.messages[0] if inbox.messages else None)
