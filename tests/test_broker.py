"""The broker adapter against a real Mosquitto: acknowledgements, routing, retained, reconnects."""

import asyncio
import contextlib
import pathlib
import uuid
from collections.abc import Iterator

import anyio
import anyio.lowlevel
import pytest
from devices import raw_client, reply_properties, responder
from mosquitto import Mosquitto
from support import eventually, free_port, running

from mcpmqtt.errors import BrokerRefused, BrokerUnavailable, InvalidArgument
from mcpmqtt.mqtt import Broker, BrokerSettings, Inbox, Received
from mcpmqtt.server.live_state import LiveState

pytestmark = pytest.mark.anyio


def settings(mosquitto: Mosquitto, port: int | None = None, **options: object) -> BrokerSettings:
    return BrokerSettings(
        host=mosquitto.host,
        port=port or mosquitto.port,
        client_id=f"test-{uuid.uuid4().hex[:10]}",
        **options,  # type: ignore[arg-type]
    )


def payloads(inbox: Inbox) -> list[bytes]:
    return [bytes(m.payload) for m in inbox.messages]


def last_events(mosquitto: Mosquitto, client_id: str) -> dict[str, str]:
    """The last logged subscribe/unsubscribe event per filter for one client."""
    events: dict[str, str] = {}
    for kind, topic_filter in mosquitto.subscribe_events(client_id):
        events[topic_filter] = kind
    return events


# ---- publish ------------------------------------------------------------------------------------


async def test_qos1_publish_returns_after_the_broker_acknowledged(broker: Mosquitto) -> None:
    async with running(settings(broker)) as adapter, raw_client(broker) as observer:
        await observer.subscribe("pub/ack", qos=1)
        await adapter.publish("pub/ack", b"hello", qos=1)
        with anyio.fail_after(5):
            message = await anext(aiter(observer.messages))
        assert message.payload == b"hello"


async def test_negative_puback_is_broker_refused_not_success(broker: Mosquitto) -> None:
    s = settings(broker, port=broker.auth_port, username="agent", password=broker.users["agent"])
    async with running(s) as adapter:
        with pytest.raises(BrokerRefused, match=r"^broker refused: .*'readonly/x'.*Not authorized"):
            await adapter.publish("readonly/x", b"nope", qos=1)
        await adapter.publish("allowed/x", b"yes", qos=1)  # the connection is still up
        assert adapter.connected


async def test_negative_suback_is_broker_refused(broker: Mosquitto) -> None:
    s = settings(broker, port=broker.dynsec_port, username="agent", password=broker.users["agent"])
    async with running(s) as adapter:
        with pytest.raises(BrokerRefused, match=r"^broker refused: .*'forbidden/#'"):
            async with adapter.subscription("forbidden/#", Inbox(1)):
                pass
        assert adapter.active_filters == []
        async with adapter.subscription("allowed/#", Inbox(1)):
            assert adapter.connected


async def test_malformed_topic_never_reaches_the_broker(broker: Mosquitto) -> None:
    async with running(settings(broker)) as adapter:
        for bad in ("a/+", "a/#", "a\x00b", ""):
            with pytest.raises(ValueError):
                await adapter.publish(bad, b"x")
        with pytest.raises(ValueError):
            async with adapter.subscription("a/#/b", Inbox(1)):
                pass
        await adapter.publish("still/connected", b"x", qos=1)


# ---- subscriptions and routing ------------------------------------------------------------------


async def test_wildcard_subscription_delivers_concrete_topics(broker: Mosquitto) -> None:
    async with running(settings(broker)) as adapter, raw_client(broker) as device:
        inbox = Inbox(2)
        async with adapter.subscription("wild/+/temp", inbox):
            await device.publish("wild/kitchen/temp", b"21", qos=1)
            await device.publish("wild/hall/temp", b"19", qos=1)
            assert await inbox.wait_full(5)
        assert [m.topic for m in inbox.messages] == ["wild/kitchen/temp", "wild/hall/temp"]


async def test_overlapping_filters_each_get_exactly_one_copy(broker: Mosquitto) -> None:
    async with running(settings(broker)) as adapter, raw_client(broker) as device:
        plus, hash_ = Inbox(10), Inbox(10)
        async with adapter.subscription("ov/+", plus), adapter.subscription("ov/#", hash_):
            await device.publish("ov/a", b"1", qos=1)
            await device.publish("ov/b/c", b"2", qos=1)
            # Delivered in order on our one connection: a duplicate of the above would come before this.
            await device.publish("ov/end", b"end", qos=1)
            await eventually(lambda: b"end" in payloads(plus) and b"end" in payloads(hash_))
        assert payloads(plus) == [b"1", b"end"]
        assert payloads(hash_) == [b"1", b"2", b"end"]


async def test_calls_on_one_filter_share_one_broker_subscription(broker: Mosquitto) -> None:
    s = settings(broker)
    async with running(s) as adapter, raw_client(broker) as device:
        first, second = Inbox(5), Inbox(5)
        async with adapter.subscription("share/x", first):
            async with adapter.subscription("share/x", second):
                assert adapter.active_filters == ["share/x"]
                await device.publish("share/x", b"both", qos=1)
                await eventually(lambda: len(second.messages) == 1)
            assert last_events(broker, s.client_id) == {"share/x": "subscribe"}  # first still listening
            await device.publish("share/x", b"first only", qos=1)
            await eventually(lambda: len(first.messages) == 2)
        assert payloads(first) == [b"both", b"first only"]
        assert payloads(second) == [b"both"]
        await eventually(lambda: last_events(broker, s.client_id) == {"share/x": "unsubscribe"})


async def test_joining_call_gets_retained_message_and_earlier_call_no_duplicate(broker: Mosquitto) -> None:
    async with running(settings(broker)) as adapter, raw_client(broker) as device:
        await device.publish("ret/state", b"on", qos=1, retain=True)
        early, late = Inbox(5), Inbox(5)
        async with adapter.subscription("ret/state", early):
            await eventually(lambda: len(early.messages) == 1)
            async with adapter.subscription("ret/state", late):
                await eventually(lambda: len(late.messages) == 1)
                # In order after any retained copy the broker might have sent `early` as well.
                await device.publish("ret/state", b"next", qos=1)
                await eventually(lambda: len(late.messages) == 2 and early.messages[-1].payload == b"next")
        assert [(m.payload, m.retain) for m in early.messages] == [(b"on", True), (b"next", False)]
        assert [(m.payload, m.retain) for m in late.messages] == [(b"on", True), (b"next", False)]
        await device.publish("ret/state", b"", qos=1, retain=True)  # clear it for other tests


async def test_non_utf8_payload_does_not_deafen_the_subscription(broker: Mosquitto) -> None:
    async with running(settings(broker)) as adapter, raw_client(broker) as device:
        inbox = Inbox(2)
        async with adapter.subscription("bin/x", inbox):
            await device.publish("bin/x", b"\xff\xfe\x00\x80", qos=1)
            await device.publish("bin/x", b"after", qos=1)
            assert await inbox.wait_full(5)
        assert payloads(inbox) == [b"\xff\xfe\x00\x80", b"after"]


async def test_burst_is_not_lost(broker: Mosquitto) -> None:
    count = 5000
    async with running(settings(broker)) as adapter, raw_client(broker) as device:
        inbox = Inbox(count)
        async with adapter.subscription("burst/#", inbox):
            for i in range(count):
                await device.publish(f"burst/{i % 7}", str(i).encode(), qos=0)
            assert await inbox.wait_full(20), f"only {len(inbox.messages)} of {count} arrived"
        assert sorted(int(p) for p in payloads(inbox)) == list(range(count))


async def test_bounded_inbox_counts_overflow_instead_of_buffering(broker: Mosquitto) -> None:
    async with running(settings(broker)) as adapter, raw_client(broker) as device:
        inbox = Inbox(3)
        async with adapter.subscription("flood/x", inbox):
            for i in range(50):
                await device.publish("flood/x", str(i).encode(), qos=1)
            await eventually(lambda: inbox.overflow == 47)
        assert payloads(inbox) == [b"0", b"1", b"2"]


async def test_accept_predicate_drops_messages_it_refuses(broker: Mosquitto) -> None:
    def only_even(message: Received) -> bool:
        return int(message.payload) % 2 == 0

    async with running(settings(broker)) as adapter, raw_client(broker) as device:
        inbox = Inbox(2, only_even)
        async with adapter.subscription("pred/x", inbox):
            for i in range(1, 5):
                await device.publish("pred/x", str(i).encode(), qos=1)
            assert await inbox.wait_full(5)
        assert payloads(inbox) == [b"2", b"4"]
        assert inbox.rejected == 2


async def test_cancelled_call_removes_its_broker_subscription(broker: Mosquitto) -> None:
    s = settings(broker)
    async with running(s) as adapter:
        subscribed = anyio.Event()

        async def listen_forever() -> None:
            async with adapter.subscription("cancel/me", Inbox(1)):
                subscribed.set()
                await anyio.sleep_forever()

        async with anyio.create_task_group() as tg:
            tg.start_soon(listen_forever)
            await subscribed.wait()
            tg.cancel_scope.cancel()
        assert adapter.active_filters == []
        await eventually(lambda: last_events(broker, s.client_id) == {"cancel/me": "unsubscribe"})


async def test_mqtt_311_routes_by_topic_matching(broker: Mosquitto) -> None:
    async with running(settings(broker, protocol="3.1.1")) as adapter, raw_client(broker) as device:
        assert adapter.protocol == "3.1.1"
        a, b = Inbox(5), Inbox(5)
        async with adapter.subscription("v3/+/t", a), adapter.subscription("v3/room/#", b):
            await device.publish("v3/room/t", b"x", qos=1)
            await device.publish("v3/room/other", b"y", qos=1)
            await eventually(lambda: len(b.messages) >= 2)
        assert payloads(a) == [b"x"]
        assert b"y" in payloads(b)


async def test_mqtt_311_a_filter_added_later_gets_topics_already_routed(broker: Mosquitto) -> None:
    """Without subscription identifiers the adapter remembers which filters match each topic; a new
    filter must be matched against topics it has already seen."""
    async with running(settings(broker, protocol="3.1.1")) as adapter, raw_client(broker) as device:
        a, b = Inbox(5), Inbox(5)
        async with adapter.subscription("known/#", a):
            await device.publish("known/x", b"1", qos=1)
            await eventually(lambda: len(a.messages) == 1)  # the route of known/x is now known
            async with adapter.subscription("known/+", b):
                await device.publish("known/x", b"2", qos=1)
                await eventually(lambda: len(b.messages) == 1)
            await device.publish("known/x", b"3", qos=1)
            await eventually(lambda: len(a.messages) == 3)
        assert payloads(a) == [b"1", b"2", b"3"]
        assert payloads(b) == [b"2"]


async def test_mqtt_311_a_follower_added_later_observes_topics_already_routed(broker: Mosquitto) -> None:
    async with running(settings(broker, protocol="3.1.1")) as adapter, raw_client(broker) as device:
        call, follower = Inbox(5), Inbox(5)
        async with adapter.subscription("seen/#", call):
            await device.publish("seen/x", b"1", qos=1)
            await eventually(lambda: len(call.messages) == 1)
            adapter.follow("seen/#", follower)
            await device.publish("seen/x", b"2", qos=1)
            await eventually(lambda: len(call.messages) == 2)
        assert payloads(follower) == [b"2"]


# ---- request / response -------------------------------------------------------------------------


async def test_query_reply_sent_instantly_is_not_missed(broker: Mosquitto) -> None:
    async with running(settings(broker)) as adapter, responder(broker, "svc/+/request") as seen:
        reply = await adapter.request("svc/p1/request", b"status", qos=1, timeout=5)
        assert reply.message is not None
        assert reply.message.payload == b"re:status"
        assert reply.message.topic == reply.response_topic
        assert seen[0].properties is not None
        assert seen[0].properties.CorrelationData == reply.correlation_id.encode()
        assert seen[0].properties.ResponseTopic == reply.response_topic


async def test_query_with_given_response_topic(broker: Mosquitto) -> None:
    async with (
        running(settings(broker)) as adapter,
        responder(broker, "svc2/request", reply_topic="svc2/response") as seen,
    ):
        reply = await adapter.request(
            "svc2/request", b"ping", qos=0, timeout=5, response_topic="svc2/response"
        )
        assert reply.response_topic == "svc2/response"
        assert reply.message is not None and reply.message.payload == b"re:ping"
        assert seen[0].properties is not None
        assert seen[0].properties.ResponseTopic == "svc2/response"
        assert adapter.active_filters == [f for f in adapter.active_filters if "replies" in f]


async def test_query_ignores_replies_with_other_correlation_data(broker: Mosquitto) -> None:
    def wrong_then_right(message: object) -> list[tuple[bytes | None, bytes]]:
        props = getattr(message, "properties", None)
        return [(b"someone-else", b"wrong"), (props.CorrelationData if props else None, b"right")]

    async with running(settings(broker)) as adapter, responder(broker, "corr/request", wrong_then_right):
        reply = await adapter.request("corr/request", b"x", qos=1, timeout=5)
        assert reply.message is not None and reply.message.payload == b"right"


async def test_concurrent_queries_each_get_their_own_reply(broker: Mosquitto) -> None:
    async with running(settings(broker)) as adapter, responder(broker, "many/request"):
        results: dict[int, bytes] = {}

        async def ask(i: int) -> None:
            reply = await adapter.request("many/request", str(i).encode(), qos=1, timeout=5)
            assert reply.message is not None
            results[i] = bytes(reply.message.payload)

        async with anyio.create_task_group() as tg:
            for i in range(30):
                tg.start_soon(ask, i)
        assert results == {i: f"re:{i}".encode() for i in range(30)}


async def test_query_without_reply_times_out(broker: Mosquitto) -> None:
    async with running(settings(broker)) as adapter:
        with anyio.fail_after(3):
            reply = await adapter.request("nobody/request", b"x", qos=0, timeout=0.3)
        assert reply.message is None


async def test_mqtt5_reply_without_correlation_data_answers_no_query(broker: Mosquitto) -> None:
    """On MQTT 5 a reply carries the request's correlation data: a message without any, on the private
    reply topic or a given one, is not a reply (anyone able to publish there could have sent it)."""
    async with running(settings(broker)) as adapter, raw_client(broker) as device:
        await device.subscribe("plain/request")

        async def answer(count: int) -> None:
            async for message in device.messages:
                assert message.properties is not None
                reply_to = message.properties.ResponseTopic
                await device.publish(reply_to, b"no correlation", qos=1, properties=reply_properties(None))
                count -= 1
                if count == 0:
                    return

        async with anyio.create_task_group() as tg:
            tg.start_soon(answer, 2)
            private = await adapter.request("plain/request", b"x", qos=1, timeout=0.5)
            given = await adapter.request(
                "plain/request", b"x", qos=1, timeout=0.5, response_topic="plain/response"
            )
        assert private.message is None and given.message is None


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_a_retained_message_on_the_response_topic_is_never_the_reply(
    broker: Mosquitto, protocol: str
) -> None:
    """A retained message is an old value the broker replays on SUBSCRIBE, never the answer to a
    request sent after it, even when it carries the very correlation data (the probe's stale reply)."""
    topic = f"stale/{protocol}/response"
    async with running(settings(broker, protocol=protocol)) as adapter, raw_client(broker) as device:
        await device.publish(topic, b"stale", qos=1, retain=True)
        try:
            reply = await adapter.request("stale/request", b"x", qos=1, timeout=0.5, response_topic=topic)
            assert reply.message is None
        finally:
            await device.publish(topic, b"", qos=1, retain=True)


async def test_one_message_answers_at_most_one_query(broker: Mosquitto) -> None:
    """Two queries wait on one response topic; one injected message without correlation data answers
    neither, and a reply carrying the first query's correlation data answers the first alone."""
    async with (
        running(settings(broker)) as adapter,
        raw_client(broker) as device,
        anyio.create_task_group() as tg,
    ):
        await device.subscribe("shared/request", qos=1)
        replies: dict[str, object] = {}

        async def ask(name: str, timeout: float) -> None:
            replies[name] = await adapter.request(
                "shared/request", name.encode(), qos=1, timeout=timeout, response_topic="shared/response"
            )

        tg.start_soon(ask, "first", 5)
        tg.start_soon(ask, "second", 1.5)
        requests = aiter(device.messages)
        first = await anext(requests)
        second = await anext(requests)
        if first.payload == b"second":
            first, second = second, first
        assert first.properties is not None
        await device.publish("shared/response", b"injected", qos=1, properties=reply_properties(None))
        await device.publish(
            "shared/response",
            b"for the first",
            qos=1,
            properties=reply_properties(first.properties.CorrelationData),
        )
    answered = {name: reply.message.payload if reply.message else None for name, reply in replies.items()}  # type: ignore[attr-defined]
    assert answered == {"first": b"for the first", "second": None}


# ---- connection loss ----------------------------------------------------------------------------


async def test_a_host_that_does_not_resolve_is_named_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    host = f"no-such-broker-{uuid.uuid4().hex[:8]}.invalid"  # .invalid never resolves (RFC 2606)
    async with running(BrokerSettings(host=host, port=1883, client_id="test-unresolved"), wait=False):
        await eventually(lambda: "retrying in" in caplog.text)
    assert f"broker at {host}:1883: cannot connect: " in caplog.text


async def test_broker_down_at_start_gives_unavailable_then_recovers(fresh_broker: Mosquitto) -> None:
    await anyio.to_thread.run_sync(fresh_broker.stop)
    async with running(settings(fresh_broker, connect_grace=0.5), wait=False) as adapter:
        with anyio.fail_after(3):
            with pytest.raises(BrokerUnavailable, match=r"^broker unavailable: .*127\.0\.0\.1"):
                await adapter.publish("down/x", b"x")
        await anyio.to_thread.run_sync(fresh_broker.start)
        await eventually(lambda: adapter.connected, timeout=15)
        await adapter.publish("down/x", b"x", qos=1)


async def test_subscription_survives_broker_restart_and_is_restored_once(fresh_broker: Mosquitto) -> None:
    s = settings(fresh_broker)
    async with running(s) as adapter:
        inbox = Inbox(2)
        async with adapter.subscription("restart/x", inbox):
            async with raw_client(fresh_broker) as device:
                await device.publish("restart/x", b"before", qos=1)
            await eventually(lambda: len(inbox.messages) == 1)
            await anyio.to_thread.run_sync(fresh_broker.restart)
            await eventually(lambda: not adapter.connected)
            await eventually(lambda: adapter.connected, timeout=15)
            async with raw_client(fresh_broker) as device:
                await device.publish("restart/x", b"after", qos=1)
            assert await inbox.wait_full(5)
        assert payloads(inbox) == [b"before", b"after"]
        subscribes = [f for kind, f in fresh_broker.subscribe_events(s.client_id) if kind == "subscribe"]
        assert subscribes == ["restart/x", "restart/x"]  # once per connection, not more


async def test_pending_ack_gets_a_clear_error_when_the_broker_dies(fresh_broker: Mosquitto) -> None:
    async with running(settings(fresh_broker, ack_timeout=5.0)) as adapter:
        await anyio.to_thread.run_sync(fresh_broker.kill)
        with anyio.fail_after(6), pytest.raises(BrokerUnavailable, match=r"^broker unavailable:"):
            for _ in range(200):  # the loss may be noticed on the first publish or a later one
                await adapter.publish("dying/x", b"x", qos=1)


class QosOneMosquitto(Mosquitto):
    """A Mosquitto whose extra listener takes QoS 0 and 1 only (`max_qos 1`), announced in the CONNACK."""

    def __init__(self, workdir: pathlib.Path) -> None:
        super().__init__(workdir)
        self.qos1_port = free_port()

    @property
    def listening_ports(self) -> set[int]:
        return {*super().listening_ports, self.qos1_port}

    def _more_listeners(self) -> str:
        return f"\nlistener {self.qos1_port} {self.host}\nallow_anonymous true\nmax_qos 1\n"


@pytest.fixture(scope="module")
def qos1_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QosOneMosquitto]:
    with QosOneMosquitto(tmp_path_factory.mktemp("qos1")) as mosquitto:
        yield mosquitto


async def test_qos_above_the_brokers_maximum_is_refused_before_it_is_sent(
    qos1_broker: QosOneMosquitto,
) -> None:
    """MQTT 5 brokers announce Maximum QoS; a QoS 2 PUBLISH to this one would be a protocol error that
    costs the connection, and every call on it."""
    async with running(settings(qos1_broker, qos1_broker.qos1_port)) as adapter:
        with pytest.raises(
            InvalidArgument, match=r"^invalid argument: qos 2 is above the broker's maximum QoS of 1"
        ):
            await adapter.publish("lab/qos", b"2", qos=2)
        inbox = Inbox(1)
        async with adapter.subscription("lab/qos", inbox):
            await adapter.publish("lab/qos", b"1", qos=1)
            assert await inbox.wait_full(5)
        assert adapter.connected and payloads(inbox) == [b"1"]


async def test_configured_max_qos_is_enforced_on_a_broker_that_takes_more(broker: Mosquitto) -> None:
    async with running(settings(broker, max_qos=0)) as adapter:
        with pytest.raises(InvalidArgument, match=r"^invalid argument: qos 1 is above the configured"):
            await adapter.publish("lab/qos", b"1", qos=1)
        await adapter.publish("lab/qos", b"0", qos=0)


async def test_a_follower_of_overlapping_filters_takes_each_message_once(broker: Mosquitto) -> None:
    """`overlap/+/temperature` and `overlap/kitchen/#` both match `overlap/kitchen/temperature`: the
    broker sends two copies, the live state must count one, and a call on either filter still gets its own."""
    state = LiveState(100, 1024)
    adapter = Broker(settings(broker))
    adapter.follow("overlap/+/temperature", state)
    adapter.follow("overlap/kitchen/#", state)
    task = asyncio.create_task(adapter.run())

    def seen(topic: str) -> int:
        entry = state.get(topic)
        return entry.messages if entry is not None else 0

    try:
        await eventually(lambda: adapter.connected)
        call = Inbox(3)
        async with adapter.subscription("overlap/kitchen/#", call), raw_client(broker) as device:
            for topic in ("overlap/kitchen/temperature", "overlap/hall/temperature", "overlap/kitchen/light"):
                await device.publish(topic, b"1", qos=1)
            await eventually(lambda: len(state) == 3)
            await device.publish("overlap/kitchen/temperature", b"2", qos=1)
            assert await call.wait_full(5)
            await eventually(lambda: seen("overlap/kitchen/temperature") == 2)
            # A topic one pattern follows, published after: a second copy of the last message would be in
            # before it.
            await device.publish("overlap/hall/temperature", b"2", qos=1)
            await eventually(lambda: seen("overlap/hall/temperature") == 2)
        counts = {topic: entry.messages for topic, entry in state.matching("overlap/#")}
        assert counts == {
            "overlap/kitchen/temperature": 2,
            "overlap/hall/temperature": 2,
            "overlap/kitchen/light": 1,
        }
        assert [(m.topic, m.payload) for m in call.messages] == [
            ("overlap/kitchen/temperature", b"1"),
            ("overlap/kitchen/light", b"1"),
            ("overlap/kitchen/temperature", b"2"),
        ]
    finally:
        await adapter.stop(task)


async def test_publishing_while_the_broker_goes_away_leaves_no_error_in_the_event_loop(
    fresh_broker: Mosquitto,
) -> None:
    """A publish queued just as the connection breaks must not make aiomqtt ask the event loop to watch
    a socket that has closed meanwhile ("Exception in callback ... add_writer: Bad file descriptor",
    which the anyio test runner turns into a failure). Publishing back to back while the broker is
    killed, a few times over, hits that window."""
    for _ in range(20):
        if not fresh_broker.running:
            fresh_broker.start()
        async with running(settings(fresh_broker)) as adapter:

            async def publish_until_lost() -> None:
                with contextlib.suppress(BrokerUnavailable):
                    while True:
                        await adapter.publish("gone/soon", b"x" * 2000)
                        await anyio.lowlevel.checkpoint()

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(publish_until_lost)
                await anyio.to_thread.run_sync(fresh_broker.kill)
            for _ in range(3):  # let the loop run the callbacks the loss scheduled
                await anyio.lowlevel.checkpoint()
