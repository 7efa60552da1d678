"""The wire between each member and the broker: delays, reorder, duplicates, loss, partitions.

Each client has a :class:`Link`: an uplink (its publishes and subscriptions, in order, as over
one TCP connection) and a downlink (what the broker sends it). A downlink is in order too unless
the seed made it ``reorder`` (each message then takes its own delay); a ``dup`` share of QoS 1
deliveries arrives twice (a PUBACK lost, the message resent with DUP set). A message still on
the wire when the connection ends is lost to a clean session and resent to a persistent one.
``queue_limit`` bounds what may be on a client's downlink at once (the broker's inflight and
queue limits): more is dropped and counted. Fault windows (:mod:`sim_devices.market_sim.faults`)
add delay (``slow_ms``) or lose a share of arriving messages (``loss``: the gateway's inbox
overflowing while it is starved).

A link goes down when a partition starts or the broker restarts; the broker notices a lost
connection only ``detect_ms`` later (1.5 keep-alives) and then publishes the will; the client
reconnects when the partition has healed. Every loss to a member is recorded with its time
(:attr:`Network.losses`), so the liveness check can tell a calm interval from a faulty one.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from sim_devices.market_sim.broker import Broker, Out
from sim_devices.market_sim.scheduler import Scheduler
from sim_devices.market_sim.trace import Trace


class Endpoint(Protocol):
    """What the network calls on a member."""

    def deliver(self, topic: str, payload: bytes, retained: bool) -> None: ...

    def link_lost(self) -> None: ...

    def acked(self, topic: str, payload: bytes) -> None: ...


@dataclass
class Link:
    base_ms: int
    jitter_ms: int
    dup: float
    reorder: bool
    queue_limit: int
    up: bool = False
    epoch: int = 0  # connection number: a message sent on an older one is not delivered
    slow_ms: int = 0  # set by a fault window
    loss: float = 0.0  # set by a fault window
    partitioned: bool = False  # set by a fault window: no connection gets through
    in_flight: int = 0
    last_up_ms: int = 0
    last_down_ms: int = 0
    losses: list[int] = field(default_factory=list)


class Network:
    """The broker and every link, on one :class:`Scheduler` and one random source."""

    def __init__(self, scheduler: Scheduler, rng: random.Random, broker: Broker,
                 trace: Trace, *, detect_ms: int) -> None:
        self.scheduler = scheduler
        self.rng = rng
        self.broker = broker
        self.trace = trace
        self.detect_ms = detect_ms
        self.links: dict[str, Link] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self.broker_up = True
        self.delivered = 0
        self.delivered_at: Counter[int] = Counter()  # by simulated second
        self.delivered_kinds: Counter[tuple[int, str]] = Counter()
        """Deliveries by simulated second and topic kind ("commit", ...; "commit-clear": an empty
        retained payload clearing one), what a community's traffic is made of."""
        self.lost = 0

    def attach(self, client: str, endpoint: Endpoint, link: Link) -> None:
        self.links[client] = link
        self.endpoints[client] = endpoint

    # --- connections -----------------------------------------------------------------------------

    def reachable(self, client: str) -> bool:
        """Whether a connection attempt of ``client`` gets through now."""
        return self.broker_up and not self.links[client].partitioned

    def open(self, client: str, *, clean: bool, will: tuple[str, bytes] | None) -> None:
        """``client`` connects; what it sends next follows the CONNECT on its uplink."""
        link = self.links[client]
        link.up = True
        link.epoch += 1
        self.trace.add(self.scheduler.now, "connect", client, "", link.epoch)
        self._up(client, lambda: self._send(self.broker.connect(client, clean=clean,
                                                                 will=will)))

    def cut(self, client: str) -> None:
        """The connection dies (a partition, a host that stalls): the client knows at once,
        the broker after ``detect_ms`` (then the will goes out), unless it reconnected first."""
        link = self.links[client]
        if not link.up:
            return
        link.up = False
        epoch = link.epoch
        self.trace.add(self.scheduler.now, "cut", client, "", epoch)
        self.endpoints[client].link_lost()

        def notice() -> None:
            if link.epoch == epoch:  # no new connection took the session over meanwhile
                self._send(self.broker.lose(client))
        self.scheduler.at(self.scheduler.now + self.detect_ms, notice)

    def restart_broker(self, down_ms: int) -> None:
        """The broker goes down for ``down_ms`` and comes back with what it had saved."""
        self.trace.add(self.scheduler.now, "broker-restart", "", "", down_ms)
        self.broker.restart()
        self.broker_up = False
        for client, link in self.links.items():
            if link.up:
                link.up = False
                self.endpoints[client].link_lost()

        def back() -> None:
            self.broker_up = True
        self.scheduler.at(self.scheduler.now + down_ms, back)

    # --- messages --------------------------------------------------------------------------------

    def publish(self, client: str, topic: str, payload: bytes, *, retain: bool) -> bool:
        """Send a publish up ``client``'s link; False if the link is down (nothing sent)."""
        def arrive() -> None:
            self.trace.add(self.scheduler.now, "pub", client, topic, len(payload))
            self._send(self.broker.publish(client, topic, payload, retain=retain))
            if retain:
                self.endpoints[client].acked(topic, payload)
        return self._up(client, arrive)

    def subscribe(self, client: str, topic_filter: str) -> bool:
        return self._up(client, lambda: self._send(self.broker.subscribe(client, topic_filter)))

    def unsubscribe(self, client: str, topic_filter: str) -> bool:
        return self._up(client, lambda: self.broker.unsubscribe(client, topic_filter))

    def _up(self, client: str, at_broker: Callable[[], None]) -> bool:
        link = self.links[client]
        if not link.up:
            return False
        epoch = link.epoch
        when = max(link.last_up_ms, self.scheduler.now + self._delay(link))
        link.last_up_ms = when

        def arrive() -> None:
            if link.up and link.epoch == epoch:
                at_broker()
        self.scheduler.at(when, arrive)
        return True

    def _delay(self, link: Link) -> int:
        return link.base_ms + self.rng.randint(0, link.jitter_ms) + link.slow_ms

    def _send(self, out: list[Out]) -> None:
        for client, topic, payload, retained in out:
            link = self.links[client]
            if link.in_flight >= link.queue_limit:
                self._lose(client, link, topic, "queue-full")
                continue
            when = self.scheduler.now + self._delay(link)
            if not link.reorder:
                when = link.last_down_ms = max(link.last_down_ms, when)
            self._down(client, link, when, topic, payload, retained)
            if self.rng.random() < link.dup:
                self._down(client, link, when + self.rng.randint(1, 50), topic, payload,
                           retained)

    def _down(self, client: str, link: Link, when: int, topic: str, payload: bytes,
              retained: bool) -> None:
        link.in_flight += 1
        epoch = link.epoch

        def arrive() -> None:
            link.in_flight -= 1
            if not (link.up and link.epoch == epoch):
                self.broker.requeue(client, topic, payload, retained)
                self._lose(client, link, topic, "link-down")
            elif link.loss and self.rng.random() < link.loss:
                self._lose(client, link, topic, "inbox-full")
            else:
                self.delivered += 1
                second = self.scheduler.now // 1_000
                self.delivered_at[second] += 1
                self.delivered_kinds[second, _kind(topic, payload)] += 1
                self.trace.add(self.scheduler.now, "rx-retained" if retained else "rx", client,
                               topic, len(payload))
                self.endpoints[client].deliver(topic, payload, retained)
        self.scheduler.at(when, arrive)

    def _lose(self, client: str, link: Link, topic: str, why: str) -> None:
        self.lost += 1
        link.losses.append(self.scheduler.now)
        self.trace.add(self.scheduler.now, f"lost:{why}", client, topic, 0)

    def lost_between(self, client: str, start_ms: int, end_ms: int) -> bool:
        """Whether a message to ``client`` was lost in [start_ms, end_ms]."""
        return any(start_ms <= t <= end_ms for t in reversed(self.links[client].losses))


def _kind(topic: str, payload: bytes) -> str:
    """The topic's kind level (``gridpeer/<community>/<kind>/...``), "-clear" for a clear."""
    parts = topic.split("/", 3)
    kind = parts[2] if len(parts) > 2 else "?"
    return kind if payload else f"{kind}-clear"
