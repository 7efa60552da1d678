"""Markets joined by an in-memory broker, as h11's tests join a client and a server by a fake
link: the protocol on its own, every step in the test's hands, no asyncio and no real clock.

:class:`QueuedBroker` is the simulator's MQTT broker (:mod:`sim_devices.market_sim.broker`:
retained messages and their clears, subscriptions by filter, a client hears what it publishes
itself, retained replays on subscribe) with one in-order queue: no faults here, every step in the
test's hands (for whole communities under faults and adversaries, seed by seed, see
:mod:`sim_devices.market_sim`). :class:`InMemoryStreet` holds one
:class:`~protocols.market.Market` per node on one clock and carries their actions out the way
``gateway.market.agent.MarketAgent`` does, with the broker in memory (the street of real gateways
is :class:`tests.street.Street`).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from typing import Any, Literal

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
    Timing,
    topics,
)
from protocols.messages import Bid, MembershipCertificate
from protocols.signing import Rejected, generate_key, public_key_hex, sign
from sim_devices.market_sim.broker import Broker, Out
from tests.market.community import COMMUNITY, PARAMS

TIMING = Timing(epoch_ms=0, length_ms=1000, gate_ms=600, grace_ms=100)
DAY_MS = 86_400_000


class QueuedBroker:
    """The simulator's broker (its MQTT rules, one implementation) with one queue of
    deliveries, in publish order: every node connected, none ever lost by the wire."""

    def __init__(self) -> None:
        self.mqtt = Broker(acl=False, persistence=False, max_queued=0)
        # What is on its way: (client, topic, payload, retained), in order.
        self.queue: deque[Out] = deque()

    @property
    def retained(self) -> dict[str, bytes]:
        return self.mqtt.retained

    @property
    def filters(self) -> dict[str, set[str]]:
        return {client: set(held.filters) for client, held in self.mqtt.sessions.items()}

    def subscribe(self, client: str, topic_filter: str) -> None:
        if client not in self.mqtt.sessions:
            self.mqtt.connect(client, clean=True, will=None)
        self.queue += self.mqtt.subscribe(client, topic_filter)

    def unsubscribe(self, client: str, topic_filter: str) -> None:
        self.mqtt.unsubscribe(client, topic_filter)

    def publish(self, topic: str, payload: bytes, *, retain: bool) -> None:
        self.queue += self.mqtt.publish("", topic, payload, retain=retain)


class InMemoryStreet:
    """One market per node, certified by one authority, on one :class:`QueuedBroker` and one
    clock.

    ``lost(node, topic)`` decides which live deliveries never reach a node (a fault to inject);
    what each node's market answered is kept as the agent would: ``rejections`` counted,
    ``outcomes`` the first outcome of each interval (what ``MarketAgent.outcome`` returns),
    ``evidence`` and ``fetched`` (topic filters) in order.
    """

    def __init__(self, *nodes: str, timing: Timing = TIMING, now_ms: int = 0,
                 **options: Any) -> None:
        """``options``: more of :class:`~protocols.market.Market`'s keyword arguments."""
        self.now_ms = now_ms
        self.timing = timing
        self.authority = generate_key()
        self.keys = {node: generate_key() for node in nodes}
        self.broker = QueuedBroker()
        self.lost: Callable[[str, str], bool] = lambda node, topic: False
        self.markets = {node: self.market(node, self.keys[node], **options) for node in nodes}
        self.rejections: dict[str, Counter[str]] = {node: Counter() for node in nodes}
        self.outcomes: dict[str, dict[int, Outcome]] = {node: {} for node in nodes}
        self.evidence: dict[str, list[Evidence]] = {node: [] for node in nodes}
        self.fetched: dict[str, list[str]] = {node: [] for node in nodes}
        for node, market in self.markets.items():
            for topic_filter in topics.subscriptions(COMMUNITY):
                self.broker.subscribe(node, topic_filter)
            online, _ = market.presence(1)
            self.broker.publish(topics.presence(COMMUNITY, node), online, retain=True)
            self.carry_out(node, market.start(now_ms))
        self.deliver()

    def market(self, node: str, key: Ed25519PrivateKey, **options: Any) -> Market:
        cert = MembershipCertificate(
            community=COMMUNITY, node=node, public_key=public_key_hex(key), bus="b1",
            import_limit_w=10_000, export_limit_w=10_000, valid_from_ms=0,
            valid_until_ms=self.now_ms + DAY_MS,
        )
        return Market(community=COMMUNITY, node=node, identity=key,
                      certificate=sign("cert", cert, self.authority),
                      authority_key_hex=public_key_hex(self.authority), timing=self.timing,
                      params=PARAMS, **options)

    def carry_out(self, node: str, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case Publish(topic=topic, payload=payload, retain=retain):
                    self.broker.publish(topic, payload, retain=retain)
                case Fetch(topic_filter=topic_filter):
                    self.fetched[node].append(topic_filter)
                    self.broker.subscribe(node, topic_filter)
                case Forget(topic_filter=topic_filter):
                    self.broker.unsubscribe(node, topic_filter)
                case Rejected(reason=reason):
                    self.rejections[node][reason] += 1
                case Evidence():
                    self.evidence[node].append(action)
                case Agreed() | Abstained():
                    self.outcomes[node].setdefault(action.interval, action)

    def deliver(self) -> None:
        """Hand every queued message to its market, and what that publishes, until none is left."""
        while self.broker.queue:
            node, topic, payload, retained = self.broker.queue.popleft()
            if not retained and self.lost(node, topic):
                continue
            self.carry_out(node, self.markets[node].receive(topic, payload, retained,
                                                            self.now_ms))

    def bid(self, node: str, interval: int, side: Literal["buy", "sell"], energy_wh: int,
            limit_price: int) -> Bid:
        bid, actions = self.markets[node].bid(interval, side, energy_wh, limit_price,
                                              self.now_ms)
        self.carry_out(node, actions)
        self.deliver()
        return bid

    def run(self, until_ms: int, *, step_ms: int = 10) -> None:
        """Tick every market every ``step_ms`` up to ``until_ms``, delivering between ticks."""
        while self.now_ms < until_ms:
            self.now_ms = min(self.now_ms + step_ms, until_ms)
            for node, market in self.markets.items():
                self.carry_out(node, market.tick(self.now_ms))
            self.deliver()
