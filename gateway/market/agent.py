"""MarketAgent: one gateway's seat in the community market, on a real broker.

The market's rules are :class:`protocols.market.Market`, which takes payloads and the time and
answers with actions; :class:`PeerLink` moves bytes. This file only joins them: it feeds the
market every message the link delivers, ticks it from the injected clock, passes on this node's
bids and settlements, and carries the answers out: publishing, fetching and forgetting on the
link, handing each interval's outcome to whoever awaits it, counting and logging every rejection
(``rejections``) and keeping the latest evidence (``evidence``).

The clock is injected (a callable returning ms since the epoch), so tests and the demo can run
intervals of a second or two against real time; the market never reads it itself.

:meth:`MarketAgent.settle` hands the caller this node's signed settlement at once, to record it,
and publishes it in the background (retained): a broker that is away never holds up the caller's
control loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Literal, Self

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.logs import worth_logging
from gateway.market.peerlink import PeerLink, PeerLinkError
from gateway.tls import TlsFiles
from protocols.clearing import ClearingParams, Tariffs
from protocols.market import (
    Abstained,
    Action,
    Agreed,
    Cleared,
    Evidence,
    Fetch,
    Forget,
    Market,
    MarketError,
    MeterKey,
    Outcome,
    Publish,
    State,
    TaggedMeterReading,
    Timing,
)
from protocols.market.tariffs import TariffSource
from protocols.messages import DEFAULT_MAX_ENVELOPE_BYTES, Bid, Settlement, SignedEnvelope, Step
from protocols.network import Feeder, FeeSchedule
from protocols.settlement import ReputationRule
from protocols.signing import Rejected

log = logging.getLogger(__name__)

EVIDENCE_KEPT = 1000
"""Evidence records kept in memory; older ones live on in the log."""


class MarketAgent:
    """``async with MarketAgent(...) as agent:`` — bid, then ``await agent.outcome(k)``."""

    def __init__(
        self,
        *,
        broker_url: str,
        community: str,
        node: str,
        identity: Ed25519PrivateKey,
        certificate: SignedEnvelope,
        authority_key_hex: str,
        timing: Timing,
        params: ClearingParams,
        clock: Callable[[], int],
        mechanism: str = "uniform",
        quorum: tuple[int, int] = (2, 3),
        max_payload: int = DEFAULT_MAX_ENVELOPE_BYTES,
        horizon: int = 4,
        tick_s: float = 0.02,
        tls: TlsFiles | None = None,
        feeder: Feeder | None = None,
        fees: FeeSchedule | None = None,
        meter_keys: Mapping[str, MeterKey] | None = None,
        reputation_rule: ReputationRule | None = None,
        energy_interval_ms: int | None = None,
        connect_timeout_s: float = 5.0,
        keepalive_s: int = 5,
        settlements: Iterable[SignedEnvelope] = (),
        schedule: TariffSource | None = None,
    ) -> None:
        """The market's arguments are :class:`protocols.market.Market`'s. ``settlements``: those
        this gateway accepted before a restart, as its ledger kept them
        (:meth:`protocols.market.Market.restore_settlements`). ``tick_s``: how often
        the market is ticked. ``connect_timeout_s``: how long joining (and a live publish) waits
        for the broker; ``keepalive_s``: the MQTT keep-alive, after 1.5 times which the broker
        declares the node gone (its last will): short, so the members present at a gate are the
        ones alive."""
        self._market = Market(
            community=community, node=node, identity=identity, certificate=certificate,
            authority_key_hex=authority_key_hex, timing=timing, params=params,
            mechanism=mechanism, quorum=quorum, max_payload=max_payload, horizon=horizon,
            feeder=feeder, fees=fees, meter_keys=meter_keys, reputation_rule=reputation_rule,
            energy_interval_ms=energy_interval_ms, schedule=schedule,
        )
        self.community = self._market.community
        self.node = self._market.node
        restored = self._market.restore_settlements(settlements, clock())
        self._clock = clock
        self._timing = timing
        self._tick_s = tick_s
        self._link = PeerLink(broker_url=broker_url, community=community, node=node, tls=tls,
                              connect_timeout_s=connect_timeout_s, keepalive_s=keepalive_s,
                              presence=self._own_presence)
        self._presence_session = 0  # of this node's latest connection
        self._outcomes: dict[int, asyncio.Future[Outcome]] = {}  # waiters, until retired
        self._tasks: asyncio.TaskGroup | None = None
        self._loops: list[asyncio.Task[None]] = []
        #: Rejected peer messages by reason ("bad-signature", "unknown-key", "equivocation", ...).
        self.rejections: Counter[str] = Counter(r.reason for r in restored)
        for refused in restored:
            log.warning("%s: a ledgered settlement not restored: %s", self.node, refused.reason)
        #: Misbehaviour with its signed proof, for the ledger and the operator: the latest
        #: ``EVIDENCE_KEPT`` (each is also logged), so a flooding peer cannot grow it unbounded.
        self.evidence: deque[Evidence] = deque(maxlen=EVIDENCE_KEPT)

    # --- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        joined = self._market.start(self._clock())  # an unusable certificate raises here
        await self._link.__aenter__()
        try:
            await self._carry_out(joined)
            self._tasks = asyncio.TaskGroup()
            await self._tasks.__aenter__()
            self._loops = [
                self._tasks.create_task(self._receive(), name=f"market-rx-{self.node}"),
                self._tasks.create_task(self._tick(), name=f"market-tick-{self.node}"),
            ]
        except BaseException:
            await self._link.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tasks, self._tasks = self._tasks, None
        try:
            if tasks is not None:
                for task in self._loops:
                    task.cancel()
                # The loops' own errors surface here; the caller's exception is not theirs.
                await tasks.__aexit__(None, None, None)
        finally:
            await self._link.__aexit__(exc_type, exc, tb)
            for future in self._outcomes.values():
                if not future.done():
                    future.cancel()

    # --- public API ------------------------------------------------------------------------------

    async def submit_bid(
        self,
        interval: int,
        side: Literal["buy", "sell"],
        energy_wh: int,
        limit_price: int,
        steps: Sequence[Step] = (),
    ) -> Bid:
        """Sign and publish (retained) this node's bid for ``interval``, ``steps`` its curve
        (:meth:`protocols.market.Market.bid`: a later one replaces it, 0 Wh withdraws it, a sell
        offer is capped at :meth:`offer_cap_wh`); returns the bid as offered."""
        bid, actions = self._market.bid(interval, side, energy_wh, limit_price, self._clock(),
                                        steps)
        await self._carry_out(actions)
        return bid

    def offer_cap_wh(self, node: str, interval: int | None = None) -> int:
        """The most ``node`` may offer in ``interval`` (default: the next one to clear): its
        limit scaled by its reputation, as every gateway clips its offers."""
        now = self._clock()
        return self._market.offer_cap_wh(
            node, self._timing.open_interval(now) if interval is None else interval, now)

    def reputation(self, node: str, interval: int | None = None) -> int:
        """``node``'s smoothed delivery ratio (per-mille) that caps its offers in ``interval``
        (default: the next one to clear, :mod:`protocols.reputation`)."""
        return self._market.reputation(
            node, self._timing.open_interval(self._clock()) if interval is None else interval)

    def settlements(self, interval: int) -> dict[str, Settlement]:
        """The verified settlements of ``interval`` by node (this node's own included)."""
        return self._market.settlements(interval)

    def signed_settlements(self, interval: int) -> dict[str, SignedEnvelope]:
        """The accepted settlements of ``interval`` by node, each as its signer's envelope."""
        return self._market.signed_settlements(interval)

    def settle(
        self, interval: int, *, delivered_wh: int, meter_reading: TaggedMeterReading,
        bus_wh: int = 0,
    ) -> SignedEnvelope:
        """Sign this node's settlement of an agreed interval that ended
        (:meth:`protocols.market.Market.settle`) and publish it (retained) in the background;
        :meth:`signed_settlements` lists it from now on."""
        if self._tasks is None:
            raise MarketError(f"{self.node}: settle outside 'async with'")
        envelope, actions = self._market.settle(
            interval, delivered_wh=delivered_wh, meter_reading=meter_reading, bus_wh=bus_wh,
            now_ms=self._clock())
        self._tasks.create_task(self._publish_settlement(interval, actions),
                                name=f"market-settle-{self.node}-{interval}")
        return envelope

    async def _publish_settlement(self, interval: int, actions: list[Action]) -> None:
        """A failure is logged, never raised into the agent's task group (the settlement is
        already recorded)."""
        try:
            await self._carry_out(actions)
        except PeerLinkError as exc:
            log.warning("%s: settlement of interval %d not published: %s", self.node, interval,
                        exc)

    async def outcome(self, interval: int) -> Outcome:
        """Wait for interval ``interval`` to be agreed or abstained."""
        if interval < self._market.first:
            raise MarketError(f"{self.node}: interval {interval} is before this agent started")
        if interval <= self._market.retired:
            raise MarketError(f"{self.node}: interval {interval} is over and forgotten; "
                              "agreed() keeps its result while it settles")
        return await asyncio.shield(self._future(interval))

    def agreed(self, interval: int) -> Agreed | None:
        """The result the community agreed for ``interval``, whether this node heard the quorum
        in time or adopted it after abstaining (``Agreed.late``); None if it knows of none."""
        return self._market.agreed(interval)

    def undecided(self, interval: int) -> bool:
        """Whether ``interval`` may still be agreed or adopted here: its session is alive, or one
        may still be made for it, and the agent is running. Once False it stays False, and
        :meth:`agreed` then says for good what the interval came to here (None: abstained). A
        node settles an interval only then: its peers settle their side of its trades against a
        result it may hear after the interval has ended (a starved host, a congested link)."""
        running = bool(self._loops) and not any(task.done() for task in self._loops)
        return running and self._market.undecided(interval, self._clock())

    def commitments(self, interval: int) -> list[SignedEnvelope]:
        """The signed commitments of the quorum that agreed ``interval`` (this node's own
        included when it was one of them), by node, exactly as their signers sent them: proof
        anyone holding the certificates can re-verify. Empty while no agreed result is known,
        and once it is forgotten (with :meth:`agreed`)."""
        return self._market.commitments(interval)

    def tariffs(self, interval: int) -> Tariffs:
        """The grid tariffs ``interval`` is cleared and settled at."""
        return self._market.tariffs(interval)

    def certificate(self, node: str) -> SignedEnvelope | None:
        """``node``'s membership certificate as the authority signed it (None: none held)."""
        return self._market.certificate(node)

    def session_state(self, interval: int) -> State | None:
        return self._market.session_state(interval)

    # --- internals -------------------------------------------------------------------------------

    def _future(self, interval: int) -> asyncio.Future[Outcome]:
        future = self._outcomes.get(interval)
        if future is None:
            future = self._outcomes[interval] = asyncio.get_running_loop().create_future()
        return future

    def _own_presence(self) -> tuple[bytes, bytes]:
        """This node's signed ``online`` and ``offline`` for a new connection of its link.

        The session number is the wall clock's ms, not the market clock's: it only has to grow
        from one connection to the next, across restarts too, and a simulated market clock
        starts over when the simulation does."""
        self._presence_session = max(time.time_ns() // 1_000_000, self._presence_session + 1)
        return self._market.presence(self._presence_session)

    async def _tick(self) -> None:
        while True:
            await self._carry_out(self._market.tick(self._clock()))
            # A retired interval's waiter goes too: it holds the interval's whole result, and
            # one per interval kept for the agent's life was the soak's memory growth.
            for interval in [k for k in self._outcomes if k <= self._market.retired]:
                future = self._outcomes.pop(interval)
                if not future.done():
                    future.cancel()
            await asyncio.sleep(self._tick_s)

    async def _receive(self) -> None:
        async for message in self._link.messages():
            actions = self._market.receive(message.topic, message.payload, message.retained,
                                           self._clock())
            await self._carry_out(actions, origin=message.topic)

    async def _carry_out(self, actions: list[Action], *, origin: str = "") -> None:
        for action in actions:
            match action:
                case Rejected(reason=reason, detail=detail):
                    self.rejections[reason] += 1
                    count = self.rejections[reason]
                    if worth_logging(count):
                        log.info("%s: rejected peer message%s: %s%s (%d so far)", self.node,
                                 f" on {origin}" if origin else "", reason,
                                 f" ({detail})" if detail else "", count)
                case Publish(topic=topic, payload=payload, retain=retain):
                    await self._link.publish(topic, payload, retain=retain)
                case Fetch(topic_filter=topic_filter):
                    await self._link.fetch(topic_filter)
                case Forget(topic_filter=topic_filter):
                    await self._link.forget(topic_filter)
                case Evidence():
                    self.evidence.append(action)
                    log.warning("%s: %s by %s in interval %d", self.node, action.reason,
                                action.node, action.interval)
                case Cleared():
                    log.debug("%s: cleared interval %d: %s", self.node, action.interval,
                              action.result_hash)
                case Agreed() | Abstained():
                    future = self._future(action.interval)
                    if not future.done():
                        future.set_result(action)
                    elif isinstance(action, Agreed):
                        log.info("%s: adopted the quorum's result of interval %d after "
                                 "abstaining: settling against it", self.node, action.interval)
