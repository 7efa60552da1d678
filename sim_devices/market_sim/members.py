"""A member: one home's :class:`~protocols.market.Market`, driven the way its gateway drives it.

What ``gateway/market/agent.py`` and its link do, in simulated time: tick the market every
``tick_ms`` of the member's own clock (skewed and drifting, :class:`SkewedClock`), feed it every
delivery, and carry out its actions in order: publish, fetch (subscribe), forget (unsubscribe),
count rejections, keep evidence, hand outcomes on. Like ``PeerLink`` it reconnects after a lost
connection (retrying every ``retry_ms``), subscribes again (its fetch filters too), publishes a
newly signed ``online`` with the matching ``offline`` as will, and replays its own retained
messages: the latest per topic and every clear the broker has not acknowledged.

The home behind it is seeded: for each interval it bids (or not) with a side, energy and price
drawn from the one random source, sometimes bids again (a higher ``seq``) or withdraws; after an
agreed interval is decided for good (``Market.undecided``) it settles once, its delivery now and
then short of its position, with a meter reading tagged by its own meter key.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Literal, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols.market import (
    Abstained,
    Action,
    Agreed,
    Evidence,
    Fetch,
    Forget,
    Market,
    Outcome,
    Publish,
    TaggedMeterReading,
    Timing,
    topics,
)
from protocols.messages import Settlement
from protocols.metering import reading_tag
from protocols.signing import Rejected
from sim_devices.market_sim.network import Network
from sim_devices.market_sim.scheduler import Scheduler


class Checker(Protocol):
    """What the invariants are told as it happens (:mod:`sim_devices.market_sim.invariants`)."""

    def on_publish(self, member: SimGateway, topic: str, payload: bytes) -> None: ...

    def on_outcome(self, member: SimGateway, outcome: Outcome) -> None: ...

    def on_settled(self, member: SimGateway, settlement: Settlement) -> None: ...


@dataclass(frozen=True, slots=True)
class SkewedClock:
    """A member's clock: ``skew_ms`` off and ``drift_ppm`` fast (negative: slow)."""

    skew_ms: int
    drift_ppm: int

    def local(self, t_ms: int) -> int:
        return max(0, t_ms + self.skew_ms + t_ms * self.drift_ppm // 1_000_000)


@dataclass
class Stage:
    """What every member shares: time, the wire, the random source, the checks."""

    scheduler: Scheduler
    network: Network
    rng: random.Random
    timing: Timing
    checker: Checker
    trading: range  # the intervals the homes bid for
    community: str


@dataclass
class TaggingMeter:
    device_id: str
    key: bytes
    seq: int = 0
    import_wh: int = 0
    export_wh: int = 0

    def read(self, delivered_wh: int) -> TaggedMeterReading:
        """The counters after ``delivered_wh`` (+ import, − export), tagged as the meter does."""
        self.seq += 1
        self.import_wh += max(delivered_wh, 0)
        self.export_wh += max(-delivered_wh, 0)
        tag = reading_tag(self.key, self.device_id, self.seq, self.import_wh, self.export_wh)
        return TaggedMeterReading(seq=self.seq, import_wh=self.import_wh,
                                  export_wh=self.export_wh, tag=tag.hex())


@dataclass
class BiddingHabits:
    """How a home bids: mostly on one side, at prices around the tariffs."""

    seller: bool
    bid_share: float
    short_share: float  # how often it delivers less than its position


class SimGateway:
    """An honest gateway (adversaries subclass it, :mod:`sim_devices.market_sim.adversaries`)."""

    honest = True

    def __init__(self, stage: Stage, *, name: str, key: Ed25519PrivateKey, market: Market,
                 clock: SkewedClock, tick_ms: int, retry_ms: int, clean: bool, home: BiddingHabits,
                 meter: TaggingMeter) -> None:
        self.stage = stage
        self.name = name
        self.key = key
        self.market = market
        self.clock = clock
        self.tick_ms = tick_ms
        self.retry_ms = retry_ms
        self.clean = clean
        self.home = home
        self.meter = meter
        self.connected = False
        self.started = False
        self.connections = 0
        self.own_retained: dict[str, bytes] = {}  # latest per topic, b"": a clear not acked
        self.filters: list[str] = list(topics.subscriptions(stage.community))
        self.rejections: Counter[str] = Counter()
        self.evidence: list[Evidence] = []
        self.outcomes: dict[int, Outcome] = {}  # the first outcome of each interval
        self.bid_for: set[int] = set()
        self.settled: set[int] = set()
        self.agreed_waiting: list[int] = []  # agreed here, not settled yet

    # --- time ------------------------------------------------------------------------------------

    @property
    def now(self) -> int:
        """This member's clock reading."""
        return self.clock.local(self.stage.scheduler.now)

    def start(self) -> None:
        self.started = True
        self.carry_out(self.market.start(self.now))
        self.connect()
        self.stage.scheduler.at(self.stage.scheduler.now + self.tick_ms, self.tick)

    def tick(self) -> None:
        self.carry_out(self.market.tick(self.now))
        self.act()
        self.stage.scheduler.at(self.stage.scheduler.now + self.tick_ms, self.tick)

    def act(self) -> None:
        """The home's turn at each tick: bid for the open interval, settle decided ones."""
        now, timing = self.now, self.stage.timing
        k = timing.open_interval(now)
        rng = self.stage.rng
        if k in self.stage.trading and now < timing.gate_close_ms(k):
            if k not in self.bid_for:
                self.bid_for.add(k)
                if rng.random() < self.home.bid_share:
                    self.bid(k)
            elif rng.random() < 0.01:
                self.bid(k, withdraw=rng.random() < 0.2)  # changed its mind
        self.settle_decided()

    def bid(self, k: int, *, withdraw: bool = False) -> None:
        rng = self.stage.rng
        seller = self.home.seller if rng.random() < 0.8 else not self.home.seller
        side: Literal["buy", "sell"] = "sell" if seller else "buy"
        energy = 0 if withdraw else rng.randint(50, 3_000)
        price = rng.randint(80, 220) if seller else rng.randint(150, 300)
        _, actions = self.market.bid(k, side, energy, price, self.now)
        self.carry_out(actions)

    def settle_decided(self) -> None:
        now = self.now
        for k in list(self.agreed_waiting):
            if self.market.undecided(k, now) or now < self.stage.timing.end_ms(k):
                continue
            self.agreed_waiting.remove(k)
            agreed = self.market.agreed(k)
            if agreed is None or k in self.settled:
                continue
            position = agreed.position
            cleared = 0 if position is None else position.bought_wh - position.sold_wh
            delivered = cleared
            if cleared and self.stage.rng.random() < self.home.short_share:
                delivered = cleared * self.stage.rng.randint(0, 9) // 10
            self.settled.add(k)
            _, actions = self.market.settle(
                k, delivered_wh=delivered, meter_reading=self.meter.read(delivered), bus_wh=0,
                now_ms=now)
            self.stage.checker.on_settled(self, self.market.settlements(k)[self.name])
            self.carry_out(actions)

    # --- the link --------------------------------------------------------------------------------

    def connect(self) -> None:
        """Connect, subscribe, say ``online`` (its ``offline`` the will) and replay what this
        node retains, as ``PeerLink`` does after every (re)connect."""
        net = self.stage.network
        if not net.reachable(self.name):
            self.stage.scheduler.at(self.stage.scheduler.now + self.retry_ms, self.connect)
            return
        self.connections += 1
        online, offline = self.market.presence(self.connections)
        presence = topics.presence(self.stage.community, self.name)
        net.open(self.name, clean=self.clean, will=(presence, offline))
        self.connected = True
        for topic_filter in self.filters:
            net.subscribe(self.name, topic_filter)
        net.publish(self.name, presence, online, retain=True)
        for topic, payload in list(self.own_retained.items()):
            net.publish(self.name, topic, payload, retain=True)
        self.on_connected()

    def on_connected(self) -> None:
        """A hook for adversaries: what to do once connected."""

    def link_lost(self) -> None:
        self.connected = False
        self.stage.scheduler.at(self.stage.scheduler.now + self.retry_ms, self.connect)

    def acked(self, topic: str, payload: bytes) -> None:
        if not payload and self.own_retained.get(topic) == b"":
            del self.own_retained[topic]

    def deliver(self, topic: str, payload: bytes, retained: bool) -> None:
        self.carry_out(self.market.receive(topic, payload, retained, self.now))

    def send(self, topic: str, payload: bytes, *, retain: bool) -> None:
        """Publish as this node's link does: a retained message is remembered for replay. The
        checks hear of it first, whoever sends it (an adversary's own messages too)."""
        self.stage.checker.on_publish(self, topic, payload)
        if retain:
            self.own_retained.pop(topic, None)
            self.own_retained[topic] = payload
        if self.connected:
            self.stage.network.publish(self.name, topic, payload, retain=retain)

    def carry_out(self, actions: list[Action]) -> None:
        checker = self.stage.checker
        for action in actions:
            match action:
                case Publish(topic=topic, payload=payload, retain=retain):
                    self.send(topic, payload, retain=retain)
                case Fetch(topic_filter=topic_filter):
                    if topic_filter not in self.filters:
                        self.filters.append(topic_filter)
                    if self.connected:
                        self.stage.network.subscribe(self.name, topic_filter)
                case Forget(topic_filter=topic_filter):
                    if topic_filter in self.filters:
                        self.filters.remove(topic_filter)
                    if self.connected:
                        self.stage.network.unsubscribe(self.name, topic_filter)
                case Rejected(reason=reason):
                    self.rejections[reason] += 1
                case Evidence():
                    self.evidence.append(action)
                case Agreed() | Abstained():
                    self.outcomes.setdefault(action.interval, action)
                    if isinstance(action, Agreed):
                        self.agreed_waiting.append(action.interval)
                    checker.on_outcome(self, action)

