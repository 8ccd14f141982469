"""One shared MQTT connection for every agent of this process. Knows nothing of MCP.

aiomqtt owns the connection and its asyncio socket plumbing; this adapter takes paho's packet
callbacks (SUBACK, PUBACK, PUBLISH) itself, because aiomqtt drops the PUBACK reason code (a refused
publish would look like success) and its message queue and iterator cost most of its throughput.
Incoming messages skip paho's per-packet reading too (`speedups.FastReader`): they go from the
socket, read in chunks, straight to the routing below, with no asyncio work per message.

Facts the design rests on, measured against Mosquitto:
- A broker sends one copy of a message per matching subscription, and a second SUBSCRIBE to the
  same filter replaces the first. So there is one broker subscription per filter, shared by every
  call that uses it (reference counted), tagged with an MQTT 5 subscription identifier that routes
  each copy to its filter; on MQTT 3.1.1 routing falls back to topic matching.
- Retained messages (retain flag set on delivery) are only ever sent in answer to a SUBSCRIBE, right
  after its SUBACK. A call that joins a filter already in use re-sends the SUBSCRIBE so that it gets
  the retained messages too, and those go to that call alone, not to the calls already listening.
- aiomqtt does not reconnect by itself: `run` loops with backoff and restores every live filter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import aiomqtt
import anyio
import paho.mqtt.client as paho
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from mcpmqtt.errors import BrokerRefused, BrokerUnavailable, InvalidArgument, InvalidTopic, McpMqttError
from mcpmqtt.mqtt import aiomqtt_compat, speedups
from mcpmqtt.mqtt.inbox import Inbox, Sink
from mcpmqtt.mqtt.properties import PublishProperties, from_paho, new_properties, to_paho
from mcpmqtt.mqtt.received import Received
from mcpmqtt.rules.topics import filter_problem, matches, name_problem, split_shared

log = logging.getLogger(__name__)

# Deliveries to us happen at min(publish QoS, this). 1 gives at-least-once without QoS 2's extra
# round trip before paho hands a message over.
SUBSCRIBE_QOS = 1
_MAX_SUBSCRIPTION_ID = 268_435_455
_BACKOFF_FIRST = 0.2
_BACKOFF_MAX = 10.0
_ROUTE_CACHE_SIZE = 10_000
"""Topics whose matching filters are remembered (routing without subscription identifiers)."""
# MQTT 3.1.1 CONNACK 1 and MQTT 5 reason 0x84 both mean "I do not speak that protocol version".
_UNSUPPORTED_PROTOCOL = {1, 0x84}


class _ClosedBeforeConnack(aiomqtt.MqttError):
    """The broker accepted the TCP connection and closed it without answering CONNECT."""

    def __init__(self) -> None:
        super().__init__("the broker closed the connection without answering CONNECT")


@dataclass(frozen=True)
class BrokerSettings:
    host: str
    port: int
    client_id: str
    username: str | None = None
    password: str | None = None
    keepalive: int = 60
    protocol: Literal["5", "3.1.1"] = "5"
    reply_topic_prefix: str = "mcpmqtt/replies"
    ack_timeout: float = 10.0
    connect_grace: float = 3.0
    tls: ssl.SSLContext | None = None
    transport: Literal["tcp", "websockets"] = "tcp"
    websocket_path: str = "/mqtt"
    max_qos: int = 2


class _Filter:
    """One broker subscription and the calls sharing it."""

    __slots__ = ("followers", "match_filter", "retained_to", "sinks", "sub_id", "topic_filter")

    def __init__(self, topic_filter: str, sub_id: int) -> None:
        self.topic_filter = topic_filter
        self.match_filter = split_shared(topic_filter)[1]
        self.sub_id = sub_id
        self.sinks: set[Sink] = set()
        self.retained_to: Sink | None = None
        self.followers: tuple[Sink, ...] = ()  # long-lived sinks that take every retained replay

    def deliver(self, message: Received) -> None:
        if message.retain:
            # Replayed for the latest SUBSCRIBE only; the calls already listening have seen these.
            if self.retained_to in self.sinks and self.retained_to is not None:
                self.retained_to.offer(message)
            for follower in self.followers:
                if follower is not self.retained_to:
                    follower.offer(message)
            return
        for sink in self.sinks:
            sink.offer(message)


class _ReplyRouter:
    """Routes replies on the private reply topics <base>/<correlation id> to the waiting query."""

    def __init__(self) -> None:
        self.waiters: dict[str, Inbox] = {}

    def offer(self, message: Received) -> None:
        waiter = self.waiters.get(message.topic.rpartition("/")[2])
        if waiter is not None:
            waiter.offer(message)


@dataclass(frozen=True)
class Reply:
    response_topic: str
    correlation_id: str
    message: Received | None


def _log_refusal(topic_filter: str, ack: asyncio.Future[Any]) -> None:
    if ack.cancelled() or ack.exception() is not None:
        return  # the connection dropped: the subscription is restored on the next one
    if ack.result().is_failure:
        log.warning("broker refused the subscription to %r: %s", topic_filter, ack.result())


async def _wait_until(inbox: Inbox, deadline: float) -> bool:
    return await inbox.wait_full(deadline - time.monotonic())


def _is_reply(correlation: bytes, v5: bool) -> Callable[[Received], bool]:
    """Whether a message on the reply topic answers the request that sent `correlation`.

    A retained message never does: the broker replays it on SUBSCRIBE, before the request went out.
    On MQTT 5 a reply carries the request's correlation data (the spec asks a responder to echo it);
    a message without it, or with another, could come from anyone who may publish on the reply
    topic, and would answer every query waiting there. MQTT 3.1.1 has no correlation data: there
    the first non-retained message on the response topic is the reply (docs/tools.md says so).
    """

    def accept(message: Received) -> bool:
        if message.retain:
            return False
        if not v5:
            return True
        data = message.properties.correlation_data if message.properties else None
        return data is not None and data == correlation

    return accept


class Broker:
    """The process's one MQTT connection: publish, subscribe, request/response, reconnect."""

    def __init__(self, settings: BrokerSettings) -> None:
        aiomqtt_compat.check()  # refuse now, at start-up, rather than on the first connection
        self.settings = settings
        self._v5 = settings.protocol == "5"
        self._paho: paho.Client | None = None
        self._connected = asyncio.Event()
        self._first_attempt_done = asyncio.Event()
        self._last_error = "not connected yet"
        self._filters: dict[str, _Filter] = {}
        self._by_id: dict[int, _Filter] = {}
        self._last_id = 0
        self._acks: dict[int, asyncio.Future[Any]] = {}
        self._joins: dict[int, tuple[_Filter, Sink]] = {}
        self._reply_base = f"{settings.reply_topic_prefix}/{secrets.token_hex(8)}"
        self._replies = _ReplyRouter()
        self._reply_ready: asyncio.Future[None] | None = None
        self._followed: list[tuple[str, Sink]] = []
        # topic -> (filters matching it, followers observing it): routing without subscription
        # identifiers matches each topic once, not once per message; emptied whenever filters change.
        self._routes: dict[str, tuple[tuple[_Filter, ...], tuple[Sink, ...]]] = {}
        # (topic, follower) -> the first of the follower's filters that matches the topic ("" if none);
        # used only while some follower follows several filters (see _deliver_once).
        self._firsts: dict[tuple[str, int], str] = {}
        self._overlapping_follows = False  # some follower follows several filters
        self._stopping = False
        self._lost_because: str | None = None
        self._spoke_v5 = False  # an MQTT 5 connection has succeeded: the broker speaks it
        self._broker_max_qos = 2  # from the CONNACK's Maximum QoS (MQTT 5)
        self._probing_311 = False  # trying 3.1.1 after a close on MQTT 5; kept only if it connects
        self._closed_on_v5 = 0  # attempts in a row that the broker closed on an MQTT 5 CONNECT
        self._fast_reader = False  # speedups.FastReader reads the socket (paho versions it was proven on)

    # ---- state -------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float) -> bool:
        """Wait until connected or `timeout` seconds pass; whether connected."""
        with anyio.move_on_after(timeout):
            await self._connected.wait()
        return self.connected

    @property
    def protocol(self) -> Literal["5", "3.1.1"]:
        """The protocol in use: "5" unless the broker refused it."""
        return "5" if self._v5 else "3.1.1"

    @property
    def active_filters(self) -> list[str]:
        """Filters with a live broker subscription (the private reply filter included)."""
        return list(self._filters)

    def _unavailable(self) -> BrokerUnavailable:
        where = f"{self.settings.host}:{self.settings.port}"
        return BrokerUnavailable(
            f"not connected to the MQTT broker at {where} ({self._last_error}); "
            "the server keeps reconnecting in the background, try again in a few seconds"
        )

    async def _ready(self) -> paho.Client:
        """The live paho client; waits briefly while the very first connection attempt is under way."""
        if not self._first_attempt_done.is_set():  # set by the first success or failure
            with anyio.move_on_after(self.settings.connect_grace):
                await self._first_attempt_done.wait()
        if self._paho is None or not self._connected.is_set():
            raise self._unavailable()
        return self._paho

    # ---- connection loop ----------------------------------------------------------------------

    def _new_client(self) -> aiomqtt.Client:
        # A fresh aiomqtt client per attempt: after an unexpected disconnect a reused one still
        # holds a completed CONNACK future and would report "connected" before the broker answers.
        s = self.settings
        client = aiomqtt.Client(
            s.host,
            s.port,
            username=s.username,
            password=s.password,
            identifier=s.client_id,
            keepalive=s.keepalive,
            protocol=aiomqtt.ProtocolVersion.V5 if self._v5 else aiomqtt.ProtocolVersion.V311,
            timeout=s.ack_timeout,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            tls_context=s.tls,
            transport=s.transport,
            websocket_path=s.websocket_path if s.transport == "websockets" else None,
        )
        inside = aiomqtt_compat.internals(client)  # see module docstring
        raw = inside.paho
        raw.on_message = self._on_message  # what FastReader hands to paho (QoS 2, other properties)
        if self._fast_reader:
            speedups.FastReader(raw, self._deliver, v5=self._v5)
        raw.on_publish = self._on_publish
        raw.on_subscribe = self._on_subscribe
        raw.on_unsubscribe = None
        self._lost_because = None
        noted_by_aiomqtt = inside.on_disconnect  # what aiomqtt installed on `raw`
        connack = inside.connack
        connected_by_aiomqtt = inside.on_connect

        def on_connect(raw: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any = None) -> None:
            # MQTT 5: a broker without QoS 2 (or 1) says so in its CONNACK; absent means 2.
            self._broker_max_qos = getattr(props, "MaximumQoS", 2) if self._v5 else 2
            connected_by_aiomqtt(raw, userdata, flags, reason, props)

        raw.on_connect = on_connect

        def on_disconnect(
            raw: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any = None
        ) -> None:
            self._lost_because = self._why_lost(reason)
            if not connack.done():  # aiomqtt would wait out its timeout for a CONNACK that cannot come
                connack.set_exception(_ClosedBeforeConnack())
            noted_by_aiomqtt(raw, userdata, flags, reason, props)

        raw.on_disconnect = on_disconnect
        return client

    def _why_lost(self, reason: ReasonCode) -> str | None:
        """Words for a connection that keepalive found dead, which aiomqtt reports only as "Disconnected
        during message iteration": the most likely cause people meet (a half-open connection through a
        NAT, a firewall or a hung broker host) should say what happened."""
        if str(reason) == "Keep alive timeout":
            return f"no answer from the broker within the keepalive interval ({self.settings.keepalive} s)"
        return None

    async def run(self) -> None:
        """Connect, and reconnect with backoff for as long as the server runs."""
        self._fast_reader = speedups.install()
        delay = _BACKOFF_FIRST
        while not self._stopping:
            client = self._new_client()
            try:
                async with client:
                    self._paho = client._client
                    delay = _BACKOFF_FIRST
                    await self._restore_subscriptions()
                    self._connected.set()
                    self._first_attempt_done.set()
                    self._spoke_v5 = self._spoke_v5 or self._v5
                    self._probing_311 = False
                    log.info(
                        "connected to mqtt://%s:%s as %s (MQTT %s)",
                        self.settings.host,
                        self.settings.port,
                        self.settings.client_id,
                        self.protocol,
                    )
                    async for _ in client.messages:  # our on_message bypasses this queue: it
                        pass  # only ends, with MqttError, when the connection drops
            except MqttConnectError as exc:
                code = exc.rc.value if isinstance(exc.rc, ReasonCode) else exc.rc
                self._last_error = f"connection refused: {exc}"
                if self._v5 and code in _UNSUPPORTED_PROTOCOL:
                    # Part of the same attempt: calls waiting for the first connection keep waiting.
                    log.info("broker refused MQTT 5 (%s); falling back to MQTT 3.1.1", exc)
                    self._v5 = False
                    self._forget_routes()  # followers now observe
                    continue
            except _ClosedBeforeConnack as exc:
                self._last_error = f"cannot connect: {exc}"
                if self._fallback_after_close(exc):
                    continue
            except (aiomqtt.MqttError, McpMqttError) as exc:
                if self._paho:
                    self._last_error = f"connection lost: {self._lost_because or exc}"
                else:
                    self._last_error = f"cannot connect: {exc}"
            finally:
                self._drop_connection()
            if self._stopping:
                return
            self._first_attempt_done.set()
            self._closed_on_v5 = 0
            if self._probing_311:  # 3.1.1 did not connect either: the broker is down, not old
                self._probing_311 = False
                self._v5 = True
                self._forget_routes()
            log.warning("%s; retrying in %.1f s", self._last_error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX)

    def _fallback_after_close(self, exc: _ClosedBeforeConnack) -> bool:
        """Whether to try again at once, after the broker closed the connection without answering CONNECT.

        Brokers that do not speak MQTT 5 should answer its CONNECT with CONNACK 0x84 or 1, but some
        (RabbitMQ 3.10) just close the connection. A broker that is going down or coming up, or a proxy
        with no backend, can do the same; so MQTT 5 is asked for twice in a row before 3.1.1 is tried,
        3.1.1 is tried only until an MQTT 5 connection has once succeeded, and it sticks only if it
        connects (see `run`)."""
        if not self._v5 or self._spoke_v5 or self.settings.protocol != "5":
            return False
        self._closed_on_v5 += 1
        if self._closed_on_v5 == 1:
            return True
        log.info("broker closed the connection twice on MQTT 5 (%s); trying MQTT 3.1.1", exc)
        self._v5 = False
        self._probing_311 = True
        self._forget_routes()
        return True

    async def stop(self, run_task: asyncio.Task[None]) -> None:
        """Disconnect cleanly (the broker drops our session and every subscription with it)."""
        self._stopping = True
        if self._paho is not None:
            self._paho.disconnect()
        with anyio.move_on_after(2):
            await asyncio.wait({run_task})
        run_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run_task

    def _drop_connection(self) -> None:
        """Forget the dead connection and give every waiting acknowledgement a clear answer."""
        self._connected.clear()
        self._paho = None
        error = BrokerUnavailable(
            "the connection to the broker was lost before it acknowledged; "
            "the operation may or may not have taken effect"
        )
        for future in self._acks.values():
            if not future.done():
                future.set_exception(error)
        self._acks.clear()
        self._joins.clear()
        for f in self._filters.values():
            f.retained_to = None  # the re-subscription replays retained messages nobody asked for

    async def _restore_subscriptions(self) -> None:
        """Re-subscribe every live filter on a new connection (the session starts clean)."""
        if not self._v5:  # fallen back to 3.1.1: followers observe instead of subscribing
            for f in [f for f in self._filters.values() if f.followers]:
                f.sinks.difference_update(f.followers)
                f.followers = ()
                if not f.sinks:
                    self._remove_filter(f)
        pending = [self._send_subscribe(f, None) for f in list(self._filters.values())]
        for filter_, future in pending:
            code = await self._await_ack(future)
            if code.is_failure:
                log.warning("broker refused re-subscription to %r: %s", filter_.topic_filter, code)

    # ---- paho callbacks (run on the event loop thread: aiomqtt reads the socket there) ----------

    def _deliver(self, topic: str, payload: bytes, qos: int, retain: bool, ids: list[int] | None) -> None:
        """A message FastReader decoded itself (its only properties were subscription identifiers)."""
        self._route(Received(topic, payload, qos, retain, time.time(), None), ids)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        props = msg.properties if self._v5 else None
        received = Received(msg.topic, msg.payload, msg.qos, msg.retain, time.time(), from_paho(props))
        self._route(received, getattr(props, "SubscriptionIdentifier", None))

    def _route(self, received: Received, ids: list[int] | None) -> None:
        """To the filters the broker sent this copy for (by subscription identifier), or else to
        every filter that matches its topic and, on MQTT 3.1.1, once to each follower observing it."""
        if ids:
            for sub_id in ids:
                if (f := self._by_id.get(sub_id)) is not None:
                    if f.followers and self._overlapping_follows and not received.retain:
                        self._deliver_once(f, received)
                    else:
                        f.deliver(received)
            return
        route = self._routes.get(received.topic)
        if route is None:
            route = self._route_of(received.topic)
        filters, observers = route
        for f in filters:
            f.deliver(received)
        for sink in observers:
            sink.offer(received)

    def _deliver_once(self, f: _Filter, received: Received) -> None:
        """`f.deliver`, where a follower follows several filters that can match one topic (`a/+/c` and
        `a/b/+`): the broker sends a copy per matching subscription, and the follower takes only the one
        that came for the first of its filters matching the topic, so it counts each message once."""
        topic = received.topic
        for sink in f.sinks:
            if sink not in f.followers or self._first_followed(topic, sink) == f.match_filter:
                sink.offer(received)

    def _first_followed(self, topic: str, sink: Sink) -> str:
        key = (topic, id(sink))
        first = self._firsts.get(key)
        if first is None:
            first = next(
                (pattern for pattern, s in self._followed if s is sink and matches(pattern, topic)), ""
            )
            if len(self._firsts) >= _ROUTE_CACHE_SIZE:
                self._firsts.clear()
            self._firsts[key] = first
        return first

    def _forget_routes(self) -> None:
        """Filters or followers changed: what was worked out per topic may be wrong now."""
        self._routes.clear()
        self._firsts.clear()

    def _route_of(self, topic: str) -> tuple[tuple[_Filter, ...], tuple[Sink, ...]]:
        filters = tuple(f for f in self._filters.values() if matches(f.match_filter, topic))
        observers: list[Sink] = []
        if not self._v5:  # see follow()
            for topic_filter, sink in self._followed:
                if sink not in observers and matches(topic_filter, topic):
                    observers.append(sink)
        if len(self._routes) >= _ROUTE_CACHE_SIZE:
            self._routes.clear()
        route = self._routes[topic] = (filters, tuple(observers))
        return route

    def _add_filter(self, topic_filter: str) -> _Filter:
        f = self._filters[topic_filter] = _Filter(topic_filter, self._new_subscription_id())
        self._by_id[f.sub_id] = f
        self._forget_routes()
        return f

    def _remove_filter(self, f: _Filter) -> None:
        del self._filters[f.topic_filter]
        del self._by_id[f.sub_id]
        self._forget_routes()

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any
    ) -> None:
        future = self._acks.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(reason)

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, reasons: list[ReasonCode], props: Any
    ) -> None:
        if (join := self._joins.pop(mid, None)) is not None:
            filter_, sink = join
            filter_.retained_to = sink
        future = self._acks.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(reasons[0])

    # ---- operations ---------------------------------------------------------------------------

    def _send_subscribe(self, f: _Filter, joiner: Sink | None) -> tuple[_Filter, asyncio.Future[Any]]:
        client = self._paho
        if client is None:
            raise self._unavailable()
        if self._v5:
            props = new_properties(PacketTypes.SUBSCRIBE)
            props.SubscriptionIdentifier = f.sub_id
            rc, mid = client.subscribe(
                f.topic_filter, options=SubscribeOptions(qos=SUBSCRIBE_QOS), properties=props
            )
        else:
            rc, mid = client.subscribe(f.topic_filter, qos=SUBSCRIBE_QOS)
        if rc != paho.MQTT_ERR_SUCCESS or mid is None:
            raise BrokerUnavailable(f"could not send SUBSCRIBE ({paho.error_string(rc)})")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._acks[mid] = future
        if joiner is not None:
            self._joins[mid] = (f, joiner)
        return f, future

    async def _await_ack(self, future: asyncio.Future[Any]) -> ReasonCode:
        try:
            with anyio.fail_after(self.settings.ack_timeout):
                result: ReasonCode = await future
        except TimeoutError:
            waited = self.settings.ack_timeout
            raise BrokerUnavailable(f"no acknowledgement from the broker within {waited:g} s") from None
        return result

    def _new_subscription_id(self) -> int:
        self._last_id = self._last_id % _MAX_SUBSCRIPTION_ID + 1
        while self._last_id in self._by_id:
            self._last_id = self._last_id % _MAX_SUBSCRIPTION_ID + 1
        return self._last_id

    def _release(self, f: _Filter, sink: Sink) -> None:
        """Drop one user of a filter; the last one out unsubscribes (without waiting, so that a
        cancelled call cleans up too: the UNSUBSCRIBE is ordered before any later SUBSCRIBE)."""
        f.sinks.discard(sink)
        if f.sinks or self._filters.get(f.topic_filter) is not f:
            return
        self._remove_filter(f)
        if self._paho is not None:
            self._paho.unsubscribe(f.topic_filter)

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
        self._overlapping_follows |= any(followed is sink for _, followed in self._followed)
        self._followed.append((split_shared(topic_filter)[1], sink))
        self._forget_routes()
        if not self._v5:
            return  # see _route
        f = self._filters.get(topic_filter) or self._add_filter(topic_filter)
        f.sinks.add(sink)
        f.followers = (*f.followers, sink)
        if self._paho is not None and self._connected.is_set():
            _, future = self._send_subscribe(f, None)
            future.add_done_callback(lambda done: _log_refusal(topic_filter, done))

    @contextlib.asynccontextmanager
    async def subscription(self, topic_filter: str, sink: Sink) -> AsyncIterator[None]:
        """Feed `sink` with messages on `topic_filter` while the block runs.

        Returns once the broker granted the subscription (SUBACK), so a caller can publish a
        request knowing the reply cannot be missed. A refusal raises BrokerRefused.
        """
        if problem := filter_problem(topic_filter):  # a malformed filter would cost the connection
            raise InvalidTopic(problem)
        await self._ready()
        f = await self._join(topic_filter, sink, hint="the broker's own access rules forbid it")
        try:
            yield
        finally:
            self._release(f, sink)

    async def _join(self, topic_filter: str, sink: Sink, *, hint: str) -> _Filter:
        """Add `sink` to the filter's broker subscription (made if new) once the broker granted it;
        the retained messages that this SUBSCRIBE brings go to `sink` alone."""
        f = self._filters.get(topic_filter) or self._add_filter(topic_filter)
        f.sinks.add(sink)
        try:
            _, future = self._send_subscribe(f, sink)
            code = await self._await_ack(future)
            if code.is_failure:
                raise BrokerRefused(
                    f"the broker did not grant the subscription to {topic_filter!r} ({code}); {hint}"
                )
        except BaseException:
            self._release(f, sink)
            raise
        return f

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
        client = await self._ready()
        if qos > (limit := min(self.settings.max_qos, self._broker_max_qos)):
            source = "the broker's" if self._broker_max_qos == limit else "the configured (mqtt.max_qos)"
            raise InvalidArgument(
                f"qos {qos} is above {source} maximum QoS of {limit}; publish at qos {limit} or lower"
            )
        packed = to_paho(properties) if properties and self._v5 else None
        info = client.publish(topic, payload, qos, retain, packed)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise BrokerUnavailable(f"publish failed ({paho.error_string(info.rc)})")
        if qos == 0:
            return
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._acks[info.mid] = future
        try:
            code = await self._await_ack(future)
        finally:
            self._acks.pop(info.mid, None)
        if code.is_failure:
            raise BrokerRefused(
                f"the broker rejected the publish to {topic!r} ({code}); "
                "the broker's own access rules or limits forbid it"
            )

    async def _reply_subscription(self) -> str:
        """The private reply filter, subscribed once and kept for the life of the process."""
        if self._reply_ready is None:
            self._reply_ready = asyncio.get_running_loop().create_future()
            hint = "allow it in the broker's ACL, set mqtt.reply_topic_prefix, or pass response_topic"
            try:
                await self._join(f"{self._reply_base}/+", self._replies, hint=hint)
            except BaseException as exc:
                ready, self._reply_ready = self._reply_ready, None
                ready.set_exception(exc if isinstance(exc, McpMqttError) else self._unavailable())
                ready.exception()  # retrieved here; later callers start over
                raise
            self._reply_ready.set_result(None)
        await asyncio.shield(self._reply_ready)
        return self._reply_base

    def check_reply_route(self, response_topic: str | None) -> None:
        """Raise InvalidArgument when a query could not get its reply: without a response_topic the
        reply comes on the server's private topic, named to the device by the MQTT 5 Response Topic,
        which MQTT 3.1.1 cannot carry."""
        if response_topic is None and not self._v5:
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
        is_reply = _is_reply(correlation, self._v5)

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
                await (wait or _wait_until)(inbox, deadline)
            finally:
                del self._replies.waiters[correlation_id]
        else:
            reply_topic = response_topic
            props = PublishProperties(response_topic=reply_topic, correlation_data=correlation)
            async with self.subscription(response_topic, inbox):
                await self.publish(request_topic, payload, qos=qos, properties=props)
                await (wait or _wait_until)(inbox, deadline)
        return Reply(reply_topic, correlation_id, inbox.messages[0] if inbox.messages else None)
