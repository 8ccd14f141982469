"""The one MQTT connection: connect, reconnect with backoff, protocol fallback, packets and their
acknowledgements.

aiomqtt owns the connection and its asyncio socket plumbing; this module takes paho's packet
callbacks (SUBACK, PUBACK, PUBLISH) itself, because aiomqtt drops the PUBACK reason code (a refused
publish would look like success) and its message queue and iterator cost most of its throughput.
Incoming messages skip paho's per-packet reading too (`speedups.FastReader`): they go from the
socket, read in chunks, straight to the routing, with no asyncio work per message. aiomqtt does not
reconnect by itself: `run` loops with backoff and lets the broker facade restore every subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import aiomqtt
import anyio
import paho.mqtt.client as paho
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from mcpmqtt.errors import BrokerUnavailable, McpMqttError
from mcpmqtt.mqtt import aiomqtt_compat, speedups
from mcpmqtt.mqtt.properties import PublishProperties, from_paho, new_properties, to_paho
from mcpmqtt.mqtt.received import Received
from mcpmqtt.mqtt.settings import BrokerSettings
from mcpmqtt.mqtt.shared_probe import shared_delivery

log = logging.getLogger(__name__)

# Deliveries to us happen at min(publish QoS, this). 1 gives at-least-once without QoS 2's extra
# round trip before paho hands a message over.
SUBSCRIBE_QOS = 1
_BACKOFF_FIRST = 0.2
_BACKOFF_MAX = 10.0
# MQTT 3.1.1 CONNACK 1 and MQTT 5 reason 0x84 both mean "I do not speak that protocol version".
_UNSUPPORTED_PROTOCOL = {1, 0x84}

Route = Callable[[Received, list[int] | None], None]
"""Where every received message goes, with the subscription identifiers the broker tagged it with."""


class _ClosedBeforeConnack(aiomqtt.MqttError):
    """The broker accepted the TCP connection and closed it without answering CONNECT."""

    def __init__(self) -> None:
        super().__init__("the broker closed the connection without answering CONNECT")


class Connection:
    """Connects and reconnects for as long as it runs; sends packets and waits for their acknowledgements.

    It calls back into its owner: `restore()` once connected, before calls may use the connection;
    `protocol_changed(v5)` when it falls back to MQTT 3.1.1 or returns to 5; `route(message, ids)` for
    every message; `subscribed(mid)` on each SUBACK; `lost()` when a connection ends.
    """

    def __init__(
        self,
        settings: BrokerSettings,
        *,
        restore: Callable[[], Awaitable[None]],
        protocol_changed: Callable[[bool], None],
        route: Route,
        subscribed: Callable[[int], None],
        lost: Callable[[], None],
    ) -> None:
        aiomqtt_compat.check()  # refuse now, at start-up, rather than on the first connection
        self.settings = settings
        self.v5 = settings.protocol == "5"
        self._restore = restore
        self._protocol_changed = protocol_changed
        self._route = route
        self._subscribed = subscribed
        self._lost = lost
        self._paho: paho.Client | None = None
        self._connected = asyncio.Event()
        self._first_attempt_done = asyncio.Event()
        self._last_error = "not connected yet"
        self._acks: dict[int, asyncio.Future[Any]] = {}
        self._stopping = False
        self._lost_because: str | None = None
        self._spoke_v5 = False  # an MQTT 5 connection has succeeded: the broker speaks it
        self.broker_max_qos = 2  # from the CONNACK's Maximum QoS (MQTT 5)
        # Whether `$share/...` subscriptions deliver: the CONNACK says so on MQTT 5, a probe finds out
        # on 3.1.1 (see shared_probe.py); None until known, which counts as available.
        self.shared_subscriptions: bool | None = None
        self._probe: asyncio.Task[None] | None = None
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
        return "5" if self.v5 else "3.1.1"

    @property
    def attached(self) -> bool:
        """Whether a connection exists (also while it is being restored, before it counts as connected)."""
        return self._paho is not None

    def unavailable(self) -> BrokerUnavailable:
        """The error for a call that needs the connection while there is none."""
        where = f"{self.settings.host}:{self.settings.port}"
        return BrokerUnavailable(
            f"not connected to the MQTT broker at {where} ({self._last_error}); "
            "the server keeps reconnecting in the background, try again in a few seconds"
        )

    async def ready(self) -> None:
        """Return when connected; waits briefly while the very first connection attempt is under way."""
        if not self._first_attempt_done.is_set():  # set by the first success or failure
            with anyio.move_on_after(self.settings.connect_grace):
                await self._first_attempt_done.wait()
        if self._paho is None or not self._connected.is_set():
            raise self.unavailable()

    # ---- packets -------------------------------------------------------------------------------

    def subscribe(self, topic_filter: str, sub_id: int) -> tuple[int, asyncio.Future[Any]]:
        """Send SUBSCRIBE (tagged with `sub_id` on MQTT 5); its packet id and a future for its SUBACK."""
        client = self._paho
        if client is None:
            raise self.unavailable()
        if self.v5:
            props = new_properties(PacketTypes.SUBSCRIBE)
            props.SubscriptionIdentifier = sub_id
            rc, mid = client.subscribe(
                topic_filter, options=SubscribeOptions(qos=SUBSCRIBE_QOS), properties=props
            )
        else:
            rc, mid = client.subscribe(topic_filter, qos=SUBSCRIBE_QOS)
        if rc != paho.MQTT_ERR_SUCCESS or mid is None:
            raise BrokerUnavailable(f"could not send SUBSCRIBE ({paho.error_string(rc)})")
        return mid, self._expect(mid)

    def unsubscribe(self, topic_filter: str) -> None:
        """Send UNSUBSCRIBE without waiting (a cancelled call cleans up too; it is ordered before any
        later SUBSCRIBE)."""
        if self._paho is not None:
            self._paho.unsubscribe(topic_filter)

    async def publish(
        self, topic: str, payload: bytes, qos: int, retain: bool, properties: PublishProperties | None
    ) -> ReasonCode | None:
        """Send PUBLISH; at QoS 1 and 2 wait for its acknowledgement and return its reason code."""
        client = self._paho
        if client is None or not self._connected.is_set():
            raise self.unavailable()
        packed = to_paho(properties) if properties and self.v5 else None
        info = client.publish(topic, payload, qos, retain, packed)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise BrokerUnavailable(f"publish failed ({paho.error_string(info.rc)})")
        if qos == 0:
            return None
        try:
            return await self.acknowledged(self._expect(info.mid))
        finally:
            self._acks.pop(info.mid, None)

    def _expect(self, mid: int) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._acks[mid] = future
        return future

    async def acknowledged(self, future: asyncio.Future[Any]) -> ReasonCode:
        """The reason code of an acknowledgement; BrokerUnavailable if none comes within ack_timeout."""
        try:
            with anyio.fail_after(self.settings.ack_timeout):
                result: ReasonCode = await future
        except TimeoutError:
            waited = self.settings.ack_timeout
            raise BrokerUnavailable(f"no acknowledgement from the broker within {waited:g} s") from None
        return result

    # ---- the loop --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, and reconnect with backoff for as long as the server runs."""
        self._fast_reader = speedups.install()
        delay = _BACKOFF_FIRST
        while not self._stopping:
            client = self._new_client()
            try:
                async with client:
                    self._paho = aiomqtt_compat.internals(client).paho
                    delay = _BACKOFF_FIRST
                    await self._restore()
                    self._connected.set()
                    self._first_attempt_done.set()
                    if not self.v5:
                        self._start_probe()
                    self._spoke_v5 = self._spoke_v5 or self.v5
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
                if self.v5 and code in _UNSUPPORTED_PROTOCOL:
                    # Part of the same attempt: calls waiting for the first connection keep waiting.
                    log.info("broker refused MQTT 5 (%s); falling back to MQTT 3.1.1", exc)
                    self._use_v5(False)
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
                self._drop()
            if self._stopping:
                return
            self._first_attempt_done.set()
            self._closed_on_v5 = 0
            if self._probing_311:  # 3.1.1 did not connect either: the broker is down, not old
                self._probing_311 = False
                self._use_v5(True)
            # Named in full: "Name or service not known" alone does not say which name.
            where = f"{self.settings.host}:{self.settings.port}"
            log.warning("broker at %s: %s; retrying in %.1f s", where, self._last_error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX)

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

    def _start_probe(self) -> None:
        """Find out in the background whether `$share` delivers on this 3.1.1 connection; calls are not
        held up meanwhile (a reconnect may have reached another broker behind a proxy: probe again)."""
        if self._probe is not None:
            self._probe.cancel()

        async def probe() -> None:
            found = await shared_delivery(self.settings)
            if found is not None and self.connected:
                self.shared_subscriptions = found
                if not found:
                    log.warning(
                        "the broker grants shared subscriptions but delivers nothing through them; "
                        "$share/... reads will be refused"
                    )

        self._probe = asyncio.get_running_loop().create_task(probe())

    def _use_v5(self, v5: bool) -> None:
        self.v5 = v5
        self._protocol_changed(v5)

    def _fallback_after_close(self, exc: _ClosedBeforeConnack) -> bool:
        """Whether to try again at once, after the broker closed the connection without answering CONNECT.

        Brokers that do not speak MQTT 5 should answer its CONNECT with CONNACK 0x84 or 1, but some
        (RabbitMQ 3.10) just close the connection. A broker that is going down or coming up, or a proxy
        with no backend, can do the same; so MQTT 5 is asked for twice in a row before 3.1.1 is tried,
        3.1.1 is tried only until an MQTT 5 connection has once succeeded, and it sticks only if it
        connects (see `run`)."""
        if not self.v5 or self._spoke_v5 or self.settings.protocol != "5":
            return False
        self._closed_on_v5 += 1
        if self._closed_on_v5 == 1:
            return True
        log.info("broker closed the connection twice on MQTT 5 (%s); trying MQTT 3.1.1", exc)
        self._probing_311 = True
        self._use_v5(False)
        return True

    def _drop(self) -> None:
        """Forget the dead connection and give every waiting acknowledgement a clear answer."""
        self._connected.clear()
        self._paho = None
        self.shared_subscriptions = None
        if self._probe is not None:
            self._probe.cancel()
            self._probe = None
        error = BrokerUnavailable(
            "the connection to the broker was lost before it acknowledged; "
            "the operation may or may not have taken effect"
        )
        for future in self._acks.values():
            if not future.done():
                future.set_exception(error)
        self._acks.clear()
        self._lost()

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
            protocol=aiomqtt.ProtocolVersion.V5 if self.v5 else aiomqtt.ProtocolVersion.V311,
            timeout=s.ack_timeout,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            tls_context=s.tls,
            transport=s.transport,
            websocket_path=s.websocket_path if s.transport == "websockets" else None,
        )
        inside = aiomqtt_compat.internals(client)
        aiomqtt_compat.guard_socket_writes(client)
        raw = inside.paho
        raw.on_message = self._on_message  # what FastReader hands to paho (QoS 2, other properties)
        if self._fast_reader:
            speedups.FastReader(raw, self._deliver, v5=self.v5)
        raw.on_publish = self._on_publish
        raw.on_subscribe = self._on_subscribe
        raw.on_unsubscribe = None
        self._lost_because = None
        noted_by_aiomqtt = inside.on_disconnect  # what aiomqtt installed on `raw`
        connack = inside.connack
        connected_by_aiomqtt = inside.on_connect

        def on_connect(raw: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any = None) -> None:
            # MQTT 5: a broker without QoS 2 (or 1) says so in its CONNACK; absent means 2.
            self.broker_max_qos = getattr(props, "MaximumQoS", 2) if self.v5 else 2
            # "Shared Subscription Available": absent means available; 3.1.1 brokers are probed.
            self.shared_subscriptions = (
                getattr(props, "SharedSubscriptionAvailable", 1) != 0 if self.v5 else None
            )
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

    # ---- paho callbacks (run on the event loop thread: aiomqtt reads the socket there) ----------

    def _deliver(self, topic: str, payload: bytes, qos: int, retain: bool, ids: list[int] | None) -> None:
        """A message FastReader decoded itself (its only properties were subscription identifiers)."""
        self._route(Received(topic, payload, qos, retain, time.time(), None), ids)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        props = msg.properties if self.v5 else None
        received = Received(msg.topic, msg.payload, msg.qos, msg.retain, time.time(), from_paho(props))
        self._route(received, getattr(props, "SubscriptionIdentifier", None))

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any
    ) -> None:
        future = self._acks.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(reason)

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, reasons: list[ReasonCode], props: Any
    ) -> None:
        self._subscribed(mid)
        future = self._acks.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(reasons[0])
