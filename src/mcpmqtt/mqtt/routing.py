"""Which broker subscriptions exist, who shares each, and where every incoming message goes.

Facts the routing rests on, measured against Mosquitto:
- A broker sends one copy of a message per matching subscription, and a second SUBSCRIBE to the
  same filter replaces the first. So there is one broker subscription per filter, shared by every
  call that uses it (reference counted), tagged with an MQTT 5 subscription identifier that routes
  each copy to its filter; on MQTT 3.1.1 routing falls back to topic matching.
- Retained messages (retain flag set on delivery) are only ever sent in answer to a SUBSCRIBE, right
  after its SUBACK. A call that joins a filter already in use re-sends the SUBSCRIBE so that it gets
  the retained messages too, and those go to that call alone, not to the calls already listening.

No I/O: the connection sends the packets; this module keeps the tables and delivers.
"""

from __future__ import annotations

from mcpmqtt.mqtt.inbox import Sink
from mcpmqtt.mqtt.received import Received
from mcpmqtt.rules.topics import matches, split_shared

_MAX_SUBSCRIPTION_ID = 268_435_455
_ROUTE_CACHE_SIZE = 10_000
"""Topics whose matching filters are remembered (routing without subscription identifiers)."""


class Subscription:
    """One broker subscription and the sinks sharing it."""

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


Route = tuple[tuple[Subscription, ...], tuple[Sink, ...]]


class Routing:
    """The subscription tables and the per-message routing.

    `v5` says whether MQTT 5 subscription identifiers route messages; on 3.1.1 (after a fallback) each
    message goes to every subscription whose filter matches its topic, and followers observe what the
    calls' subscriptions bring instead of subscribing themselves (see `follow`).
    """

    def __init__(self, v5: bool) -> None:
        self.v5 = v5
        self.subscriptions: dict[str, Subscription] = {}
        self._by_id: dict[int, Subscription] = {}
        self._last_id = 0
        self._followed: list[tuple[str, Sink]] = []
        # topic -> (subscriptions matching it, followers observing it): routing without subscription
        # identifiers matches each topic once, not once per message; emptied whenever filters change.
        self._routes: dict[str, Route] = {}
        # (topic, follower) -> the first of the follower's filters that matches the topic ("" if none);
        # used only while some follower follows several filters (see _deliver_once).
        self._firsts: dict[tuple[str, int], str] = {}
        self._overlapping_follows = False  # some follower follows several filters

    def protocol_changed(self, v5: bool) -> None:
        """The connection fell back to 3.1.1 or went back to 5: followers now observe, or subscribe."""
        self.v5 = v5
        self.forget_routes()

    # ---- the tables ----------------------------------------------------------------------------

    def get_or_add(self, topic_filter: str) -> Subscription:
        """The subscription of `topic_filter`, made (with a fresh identifier) if there is none."""
        if (existing := self.subscriptions.get(topic_filter)) is not None:
            return existing
        sub = self.subscriptions[topic_filter] = Subscription(topic_filter, self._new_subscription_id())
        self._by_id[sub.sub_id] = sub
        self.forget_routes()
        return sub

    def remove(self, sub: Subscription) -> None:
        del self.subscriptions[sub.topic_filter]
        del self._by_id[sub.sub_id]
        self.forget_routes()

    def release(self, sub: Subscription, sink: Sink) -> bool:
        """Drop one user of a subscription; True when it was the last one and the subscription is gone
        (the caller unsubscribes)."""
        sub.sinks.discard(sink)
        if sub.sinks or self.subscriptions.get(sub.topic_filter) is not sub:
            return False
        self.remove(sub)
        return True

    def follow(self, topic_filter: str, sink: Sink) -> Subscription | None:
        """Register `sink` as a follower of `topic_filter`; the subscription to send, or None on 3.1.1,
        where followers observe instead of subscribing."""
        self._overlapping_follows |= any(followed is sink for _, followed in self._followed)
        self._followed.append((split_shared(topic_filter)[1], sink))
        self.forget_routes()
        if not self.v5:
            return None
        sub = self.get_or_add(topic_filter)
        sub.sinks.add(sink)
        sub.followers = (*sub.followers, sink)
        return sub

    def demote_followers(self) -> None:
        """On 3.1.1 followers observe: their own subscriptions are dropped before re-subscribing."""
        for sub in [s for s in self.subscriptions.values() if s.followers]:
            sub.sinks.difference_update(sub.followers)
            sub.followers = ()
            if not sub.sinks:
                self.remove(sub)

    def connection_lost(self) -> None:
        """The re-subscription after a reconnect replays retained messages nobody asked for."""
        for sub in self.subscriptions.values():
            sub.retained_to = None

    def forget_routes(self) -> None:
        """Filters or followers changed: what was worked out per topic may be wrong now."""
        self._routes.clear()
        self._firsts.clear()

    def _new_subscription_id(self) -> int:
        self._last_id = self._last_id % _MAX_SUBSCRIPTION_ID + 1
        while self._last_id in self._by_id:
            self._last_id = self._last_id % _MAX_SUBSCRIPTION_ID + 1
        return self._last_id

    # ---- per message (runs on the event loop for every message: keep it lean) ----------------

    def route(self, received: Received, ids: list[int] | None) -> None:
        """To the subscriptions the broker sent this copy for (by subscription identifier), or else to
        every subscription that matches its topic and, on MQTT 3.1.1, once to each follower observing it."""
        if ids:
            for sub_id in ids:
                if (sub := self._by_id.get(sub_id)) is not None:
                    if sub.followers and self._overlapping_follows and not received.retain:
                        self._deliver_once(sub, received)
                    else:
                        sub.deliver(received)
            return
        route = self._routes.get(received.topic)
        if route is None:
            route = self._route_of(received.topic)
        subs, observers = route
        for sub in subs:
            sub.deliver(received)
        for sink in observers:
            sink.offer(received)

    def _deliver_once(self, sub: Subscription, received: Received) -> None:
        """`sub.deliver`, where a follower follows several filters that can match one topic (`a/+/c` and
        `a/b/+`): the broker sends a copy per matching subscription, and the follower takes only the one
        that came for the first of its filters matching the topic, so it counts each message once."""
        topic = received.topic
        for sink in sub.sinks:
            if sink not in sub.followers or self._first_followed(topic, sink) == sub.match_filter:
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

    def _route_of(self, topic: str) -> Route:
        subs = tuple(s for s in self.subscriptions.values() if matches(s.match_filter, topic))
        observers: list[Sink] = []
        if not self.v5:  # see follow()
            for topic_filter, sink in self._followed:
                if sink not in observers and matches(topic_filter, topic):
                    observers.append(sink)
        if len(self._routes) >= _ROUTE_CACHE_SIZE:
            self._routes.clear()
        route = self._routes[topic] = (subs, tuple(observers))
        return route
