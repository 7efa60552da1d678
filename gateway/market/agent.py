"""MarketAgent: one gateway's seat in the community market.

It joins the pieces that each do one job: :class:`PeerLink` moves bytes, :class:`Roster` says who
is a member, one :class:`IntervalSession` per interval holds the protocol rules. This file owns
the plumbing between them: every incoming payload goes through the same checks in the same order
(topic, size and JSON, signature, membership, then the session), the first failure becomes a
counted reason in :attr:`MarketAgent.rejections`, and the session's actions are carried out.

The clock is injected (a callable returning ms since the epoch), so tests and the demo can run
intervals of a second or two against real time, and the sessions never read it themselves.

After an interval, :meth:`MarketAgent.settle` signs this node's settlement and publishes it in the
background (retained, so a gateway that reconnects can still check it): the caller gets the signed
envelope at once, to record it, and a broker that is away never holds up its control loop. The
:class:`SettlementBook` checks the peers' against the agreed result and keeps each node's
reputation; :meth:`MarketAgent.signed_settlements` hands out the accepted ones as their signers
sent them, so a ledger can keep evidence anyone can re-verify. The reputation caps what this
node offers: :meth:`MarketAgent.submit_bid` *caps* a sell offer at :meth:`offer_cap_wh` rather
than refusing it, because the excess would only have been exported at feed-in anyway and the
trader should not lose the whole interval over it; the returned :class:`Bid` says what was
offered.

A signed order is only its member's wish: every gateway clips it to what the member's
certificate allows over the interval (``energy_interval_ms``, :class:`protocols.clearing.Limits`),
and this node caps its own bids the same way.

A flood is cut before its signatures are checked: once a node has had as many distinct verified
messages on one of its topics as the kind allows (:class:`protocols.market.quota.Quota`: bids,
commitments, bid sets, settlements), further live ones there are counted as "flood" unread (only
verified messages fill the quota, so a forger cannot silence anyone).

A closed interval stays closed (:meth:`MarketAgent._closed`): a message about an interval this
node has retired, or whose retirement time has passed, is counted as "stale" and nothing more,
whoever sent it and however it came (live, retained after a reconnect, fetched). A session
rebuilt for it would clear, commit and retire it again, and its commitment would make every
peer do the same, for ever. Settlements close later, when the book forgets their interval.

Presence is signed (:class:`protocols.messages.Presence`): the link publishes this node's signed
``online`` at each connection and leaves the ``offline`` of the same session as its last will;
a peer's presence counts only under its certified key, and the highest session wins, so neither
an outsider nor a replay can make a member look offline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Literal, Self

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.market.peerlink import Incoming, PeerLink, PeerLinkError
from gateway.pki import TlsFiles
from protocols.clearing import ClearingParams, Limits
from protocols.market import (
    Abstained,
    Action,
    Agreed,
    Cleared,
    Evidence,
    Fetch,
    MeterKey,
    MeterReading,
    Outcome,
    Publish,
    State,
    Timing,
    topics,
)
from protocols.market.quota import Quota
from protocols.market.roster import Member, Roster
from protocols.market.session import MAX_BIDS_PER_NODE, IntervalSession
from protocols.market.settlement import SettlementBook, expected_settlement
from protocols.messages import (
    DEFAULT_MAX_ENVELOPE_BYTES,
    MAX_ENERGY_WH,
    Bid,
    BidSet,
    Commitment,
    MessageError,
    Presence,
    Settlement,
    SignedEnvelope,
    Step,
    curve_head,
)
from protocols.network import Feeder, FeeSchedule
from protocols.settlement import ReputationRule, offer_cap_wh
from protocols.signing import Rejected, sign, verify

log = logging.getLogger(__name__)

EVIDENCE_KEPT = 1000
"""Evidence records kept in memory; older ones live on in the log."""

_KINDS: dict[topics.Kind, Literal["bid", "commit", "bidset", "settle"]] = {
    topics.Kind.BIDS: "bid", topics.Kind.COMMIT: "commit", topics.Kind.BIDSET: "bidset",
    topics.Kind.SETTLE: "settle",
}

QUOTAS = {topics.Kind.BIDS: MAX_BIDS_PER_NODE, topics.Kind.COMMIT: 8, topics.Kind.BIDSET: 8,
          topics.Kind.SETTLE: 4}
"""Distinct verified messages per node and topic before the rest is cut unread as "flood". An
honest gateway sends a few bids per interval, at most three commitments (its first, the union
round's, a join) with as many bid sets, and one settlement; a retained message of the interval
its slot carried before may come on top."""

UNPLACED_PRESENCE = 1024
"""Presences held for nodes whose certificate has not arrived (a joining gateway's presence goes
out just before its certificate); the oldest go first, so a flood of made-up names cannot grow
it."""

UNLIMITED = Limits(MAX_ENERGY_WH, MAX_ENERGY_WH)


def _worth_logging(count: int) -> bool:
    """Log a rejection reason's 1st, 10th, 100th ... occurrence: every one is counted, but a peer
    flooding 10,000 bad messages must not also write 10,000 log lines on the Pi's SD card."""
    while count % 10 == 0:
        count //= 10
    return count == 1


class MarketError(RuntimeError):
    """We asked the market for something it cannot do (bid after the gate, unknown interval)."""


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
    ) -> None:
        """``feeder``/``fees``: the community's network (see :mod:`protocols.market.session`).
        ``meter_keys``: meters whose tags this gateway can check. ``energy_interval_ms``: the
        physical length of an interval, which turns a certificate's export limit (W) into the Wh
        a member may offer at full trust; None where intervals are not physical time (tests with
        home-sized bids in 1 s intervals): the limit is then the protocol's ``MAX_ENERGY_WH``.
        ``connect_timeout_s``: how long joining (and a live publish) waits for the broker;
        ``keepalive_s``: the MQTT keep-alive, after 1.5 times which the broker declares the node
        gone (its last will): short, so the members present at a gate are the ones alive."""
        if fees is not None and feeder is None:
            raise MarketError("a fee schedule needs a feeder: fees grow with feeder distance")
        self.community = topics.check_id("community", community)
        self.node = topics.check_id("node", node)
        self._identity = identity
        self._certificate = certificate
        self._timing = timing
        self._params = params
        self._clock = clock
        self._mechanism = mechanism
        self._quorum = quorum
        self._max_payload = max_payload
        self._horizon = horizon
        self._tick_s = tick_s
        self._roster = Roster(community=community, authority_key_hex=authority_key_hex)
        self._link = PeerLink(broker_url=broker_url, community=community, node=node, tls=tls,
                              connect_timeout_s=connect_timeout_s, keepalive_s=keepalive_s,
                              presence=self._own_presence)
        self._presence_session = 0  # of this node's latest connection
        # Each peer's highest verified presence, and presences waiting for their certificate.
        self._presence: dict[str, Presence] = {}
        self._unplaced: dict[str, SignedEnvelope] = {}
        self._quota = Quota(QUOTAS)
        self._sessions: dict[int, IntervalSession] = {}
        self._outcomes: dict[int, asyncio.Future[Outcome]] = {}
        self._retired = -1  # the latest interval retired: its outcome is no longer kept
        self._seq: Counter[int] = Counter()
        self._first = 0
        self._tasks: asyncio.TaskGroup | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._fetched: set[str] = set()
        self._feeder = feeder
        self._fees = fees
        self._energy_interval_ms = energy_interval_ms
        self._book = SettlementBook(community=community, tariffs=params.tariffs,
                                    rule=reputation_rule, meter_keys=meter_keys)
        # Every verified settlement envelope by interval and body, until its interval is forgotten.
        self._signed: dict[int, dict[Settlement, SignedEnvelope]] = {}
        #: Rejected peer messages by reason ("bad-signature", "unknown-key", "equivocation", ...).
        self.rejections: Counter[str] = Counter()
        #: Misbehaviour with its signed proof, for the ledger and the operator: the latest
        #: ``EVIDENCE_KEPT`` (each is also logged), so a flooding peer cannot grow it unbounded.
        self.evidence: deque[Evidence] = deque(maxlen=EVIDENCE_KEPT)

    # --- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        now = self._clock()
        admitted = self._roster.offer(self._certificate, node=self.node, now_ms=now)
        if not isinstance(admitted, Member):
            reason = admitted.reason if isinstance(admitted, Rejected) else admitted
            raise MarketError(f"{self.node}: own certificate is not usable: {reason}")
        self._first = self._timing.open_interval(now)
        await self._link.__aenter__()
        try:
            await self._link.publish(
                topics.roster(self.community, self.node), self._certificate.to_bytes(),
                retain=True,
            )
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
        """Sign and publish (retained) this node's bid for ``interval``; a later call replaces
        it (higher ``seq``), and ``energy_wh`` 0 withdraws it. Clearing the retained copy would
        not withdraw anything: every peer that heard the bid keeps it. ``steps`` is the bid's
        curve (:class:`Bid`), ``energy_wh`` and ``limit_price`` then its total and first price;
        capped, the curve keeps its best steps."""
        session = self._session(interval, self._clock())
        if session is None or session.state is not State.OPEN:
            raise MarketError(f"{self.node}: the gate of interval {interval} is closed")
        cap = self.offer_cap_wh(self.node) if side == "sell" else self._limits(self.node).import_wh
        if cap <= 0:
            raise MarketError(f"{self.node}: its certificate allows no "
                              f"{'export' if side == 'sell' else 'import'}")
        energy_wh = min(energy_wh, cap)  # capped, not refused: see the module docstring
        curve = curve_head(steps, energy_wh)
        bid = Bid(
            community=self.community, interval=interval, node=self.node,
            seq=self._seq[interval], side=side, energy_wh=energy_wh, limit_price=limit_price,
            created_ms=self._clock(), **({"steps": curve} if len(curve) > 1 else {}),
        )
        self._seq[interval] += 1
        await self._carry_out(session.on_bid(bid))
        envelope = sign("bid", bid, self._identity)
        await self._link.publish(
            topics.bid(self.community, interval, self.node), envelope.to_bytes(), retain=True
        )
        return bid

    def offer_cap_wh(self, node: str) -> int:
        """The most ``node`` may offer in one interval: its limit scaled by its reputation."""
        return offer_cap_wh(reputation=self._book.reputation(node),
                            limit_wh=self._limits(node).export_wh, rule=self._book.rule)

    def _limits(self, node: str) -> Limits:
        """What ``node``'s certificate lets it trade in one interval (every gateway clips its
        orders to this, :mod:`protocols.market.session`)."""
        member = self._roster.member(node, now_ms=self._clock())
        if isinstance(member, Rejected):
            raise MarketError(f"{node} is not a member now: {member.reason}")
        if self._energy_interval_ms is None:
            return UNLIMITED
        return Limits.over(import_limit_w=member.import_limit_w,
                           export_limit_w=member.export_limit_w,
                           interval_ms=self._energy_interval_ms)

    def reputation(self, node: str) -> int:
        """``node``'s smoothed delivery ratio, per-mille, as this gateway has settled it."""
        return self._book.reputation(node)

    def settlements(self, interval: int) -> dict[str, Settlement]:
        """The verified settlements of ``interval`` by node (this node's own included)."""
        return self._book.settlements(interval)

    def signed_settlements(self, interval: int) -> dict[str, SignedEnvelope]:
        """The accepted settlements of ``interval`` by node, each as its signer's envelope."""
        signed = self._signed.get(interval, {})
        return {node: signed[s] for node, s in self._book.settlements(interval).items()
                if s in signed}

    def settle(
        self, interval: int, *, delivered_wh: int, meter_reading: MeterReading, bus_wh: int = 0
    ) -> SignedEnvelope:
        """Sign this node's settlement of an agreed interval that ended, and publish it (retained)
        in the background; :meth:`signed_settlements` lists it from now on.

        ``delivered_wh`` is the metered net energy over the interval (+ import, − export), of
        which ``bus_wh`` went over the DC bus, and ``meter_reading`` the meter's tagged counters
        at its end. The settlement goes through
        the same checks as a peer's, so a reading this gateway itself could not verify is never
        published.
        """
        if self._tasks is None:
            raise MarketError(f"{self.node}: settle outside 'async with'")
        if self._clock() < self._timing.end_ms(interval):
            raise MarketError(f"{self.node}: interval {interval} has not ended")
        agreed = self._book.agreed(interval)
        if agreed is None:
            raise MarketError(f"{self.node}: interval {interval} has no agreed result to settle")
        settlement = expected_settlement(
            agreed, community=self.community, node=self.node, delivered_wh=delivered_wh,
            reading=meter_reading, tariffs=self._params.tariffs, bus_wh=bus_wh,
        )
        refused = [r for r in self._book.on_settlement(settlement) if isinstance(r, Rejected)]
        if refused:
            raise MarketError(f"{self.node}: own settlement of {interval}: {refused[0].reason}")
        envelope = sign("settle", settlement, self._identity)
        self._signed.setdefault(interval, {})[settlement] = envelope
        self._tasks.create_task(self._publish_settlement(interval, envelope),
                                name=f"market-settle-{self.node}-{interval}")
        session = self._sessions.get(interval)
        if session is not None and session.state in (State.DISPATCHING, State.ADOPTED):
            session.settled()
        return envelope

    async def _publish_settlement(self, interval: int, envelope: SignedEnvelope) -> None:
        """Retained, so a broker that is away gets it on reconnect; a failure is logged, never
        raised into the agent's task group (the settlement is already recorded)."""
        try:
            await self._link.publish(topics.settle(self.community, interval, self.node),
                                     envelope.to_bytes(), retain=True)
        except PeerLinkError as exc:
            log.warning("%s: settlement of interval %d not published: %s", self.node, interval,
                        exc)

    async def outcome(self, interval: int) -> Outcome:
        """Wait for interval ``interval`` to be agreed or abstained."""
        if interval < self._first:
            raise MarketError(f"{self.node}: interval {interval} is before this agent started")
        if interval <= self._retired:
            raise MarketError(f"{self.node}: interval {interval} is over and forgotten; "
                              "agreed() keeps its result while it settles")
        return await asyncio.shield(self._future(interval))

    def agreed(self, interval: int) -> Agreed | None:
        """The result the community agreed for ``interval``, whether this node heard the quorum
        in time or adopted it after abstaining (``Agreed.late``); None if it knows of none."""
        return self._book.agreed(interval)

    def undecided(self, interval: int) -> bool:
        """Whether ``interval`` may still be agreed or adopted here: its session is alive, or one
        may still be made for it, and the agent is running. Once False it stays False, and
        :meth:`agreed` then says for good what the interval came to here (None: abstained). A
        node settles an interval only then: its peers settle their side of its trades against a
        result it may hear after the interval has ended (a starved host, a congested link)."""
        running = bool(self._loops) and not any(task.done() for task in self._loops)
        return running and (interval in self._sessions
                            or not self._closed(interval, self._clock()))

    def commitments(self, interval: int) -> list[SignedEnvelope]:
        """The signed commitments of the quorum that agreed ``interval`` (this node's own
        included when it was one of them), by node, exactly as their signers sent them: proof
        anyone holding the certificates can re-verify. Empty while no agreed result is known,
        and once it is forgotten (with :meth:`agreed`)."""
        agreed = self._book.agreed(interval)
        return [] if agreed is None else list(agreed.commitments)

    def certificate(self, node: str) -> SignedEnvelope | None:
        """``node``'s membership certificate as the authority signed it (None: none held)."""
        return self._roster.certificate(node)

    def session_state(self, interval: int) -> State | None:
        session = self._sessions.get(interval)
        return None if session is None else session.state

    # --- internals -------------------------------------------------------------------------------

    def _future(self, interval: int) -> asyncio.Future[Outcome]:
        future = self._outcomes.get(interval)
        if future is None:
            future = self._outcomes[interval] = asyncio.get_running_loop().create_future()
        return future

    def _active(self, now_ms: int) -> list[str]:
        """Members that count towards the quorum: valid certificate and present on the broker
        (their own signed word, see the module docstring)."""
        members = self._roster.active(now_ms)
        return [n for n in members if n == self.node or (
            (p := self._presence.get(n)) is not None and p.state == "online")]

    def _own_presence(self) -> tuple[bytes, bytes]:
        """This node's signed ``online`` and ``offline`` for a new connection of its link.

        The session number is the wall clock's ms, not the market clock's: it only has to grow
        from one connection to the next, across restarts too, and a simulated market clock
        starts over when the simulation does."""
        self._presence_session = max(time.time_ns() // 1_000_000, self._presence_session + 1)
        return (self._signed_presence("online"), self._signed_presence("offline"))

    def _signed_presence(self, state: Literal["online", "offline"]) -> bytes:
        presence = Presence(community=self.community, node=self.node,
                            session=self._presence_session, state=state)
        return sign("presence", presence, self._identity).to_bytes()

    def _closed(self, interval: int, now_ms: int) -> bool:
        """``interval`` is over here for good: before this agent started, retired, or past the
        time it is retired at (a loop that stalled may not have got to it yet)."""
        return (interval < self._first or interval <= self._retired
                or now_ms > self._retire_ms(interval))

    def _retire_ms(self, interval: int) -> int:
        return self._timing.end_ms(interval) + self._timing.length_ms

    def _session(self, interval: int, now_ms: int) -> IntervalSession | None:
        """The session of ``interval``, made if need be; None for a closed interval or one past
        the horizon."""
        session = self._sessions.get(interval)
        if session is not None:
            return session
        if (self._closed(interval, now_ms)
                or interval > self._timing.open_interval(now_ms) + self._horizon):
            return None
        session = self._sessions[interval] = IntervalSession(
            community=self.community, interval=interval, node=self.node,
            identity=self._identity, timing=self._timing, mechanism=self._mechanism,
            params=self._params, active=self._active,
            certified=lambda now_ms: len(self._roster.active(now_ms)), quorum=self._quorum,
            bus_of=self._roster.bus, feeder=self._feeder, fees=self._fees,
            limits_of=None if self._energy_interval_ms is None else self._limits,
        )
        return session

    async def _tick(self) -> None:
        while True:
            now = self._clock()
            # Every interval gets a session even if this node does not bid: it still clears,
            # commits and counts towards the quorum.
            self._session(self._timing.open_interval(now), now)
            for interval, session in list(self._sessions.items()):
                await self._carry_out(session.tick(now))
                if now > self._retire_ms(interval):
                    await self._retire(interval)
            await asyncio.sleep(self._tick_s)

    async def _retire(self, interval: int) -> None:
        """Forget a finished interval and clear this node's retained bid for it on the broker."""
        session = self._sessions.pop(interval)
        # The outcome's future goes too: it holds the interval's whole result, and one per
        # interval kept for the agent's life was the soak's memory growth.
        self._retired = max(self._retired, interval)
        future = self._outcomes.pop(interval, None)
        if future is not None and not future.done():
            future.cancel()
        if self._seq[interval]:
            await self._link.publish(topics.bid(self.community, interval, self.node), b"",
                                     retain=True)
        if session.state not in (State.OPEN, State.GATE_CLOSED):
            await self._link.publish(topics.commit(self.community, interval, self.node), b"",
                                     retain=True)
        if session.bid_set_published:
            await self._link.publish(topics.bidset(self.community, interval, self.node), b"",
                                     retain=True)
        del self._seq[interval]
        for kind in (topics.Kind.BIDS, topics.Kind.COMMIT, topics.Kind.BIDSET):
            self._quota.forget(kind, topics.slot(interval))
        await self._forget_fetch(interval, lists_too=True)
        # Settlements come after the interval; they are kept ``horizon`` intervals longer.
        old = interval - self._horizon
        own = self._book.settlements(old).get(self.node)
        await self._carry_out(list(self._book.forget(old)))
        self._signed.pop(old, None)  # as the book forgets it
        if old >= 0:
            self._quota.forget(topics.Kind.SETTLE, topics.slot(old))
        if own is not None:
            await self._link.publish(topics.settle(self.community, old, self.node), b"",
                                     retain=True)

    async def _receive(self) -> None:
        async for message in self._link.messages():
            await self._carry_out(self._handle(message), origin=message.topic)

    def _handle(self, message: Incoming) -> list[Action]:
        """Run one payload through the checks; the first that fails names the rejection."""
        try:
            topic = topics.parse(message.topic)
        except topics.BadTopic:
            return [Rejected("bad-topic")]
        if not message.payload:
            return []  # an empty retained payload clears an old message
        now = self._clock()
        if topic.kind is topics.Kind.PRESENCE:
            return self._presence_message(topic.node, message.payload, now)
        if topic.kind in (topics.Kind.ROSTER, topics.Kind.REVOKED):
            return self._roster_message(topic.node, message.payload, now,
                                        revocation_only=topic.kind is topics.Kind.REVOKED)
        if not message.retained and self._quota.full(topic, message.payload):
            return [Rejected("flood")]  # unread: see the module docstring
        try:
            envelope = SignedEnvelope.from_bytes(message.payload, max_size=self._max_payload)
        except MessageError as exc:
            return [Rejected(exc.reason)]
        verified = verify(envelope, expected_kind=_KINDS[topic.kind])
        if isinstance(verified, Rejected):
            return [verified]
        body = verified.body
        assert isinstance(body, Bid | Commitment | BidSet | Settlement)  # by expected_kind
        if body.node != topic.node:
            return [Rejected("node-mismatch")]
        if not topic.holds(body.interval):
            return [Rejected("replay")]  # a genuine message, on another interval's slot
        member = self._roster.check(node=topic.node, signer=verified.public_key_hex, now_ms=now)
        if isinstance(member, Rejected):
            return [member]
        if not self._quota.admit(topic, message.payload):
            return [Rejected("flood")]
        interval = body.interval
        if interval < self._first and message.retained:
            return []  # history from before we joined, replayed by the broker
        if isinstance(body, Settlement):
            return self._settlement(body, envelope, now)
        if self._closed(interval, now):
            return [Rejected("stale")]  # see the module docstring
        session = self._session(interval, now)
        if session is None:
            return [Rejected("out-of-horizon")]
        if isinstance(body, Bid):
            return session.on_bid(body)
        if isinstance(body, BidSet):
            return session.on_bidset(body)
        return session.on_commitment(body, envelope)

    def _settlement(self, settlement: Settlement, envelope: SignedEnvelope,
                    now: int) -> list[Action]:
        """A settlement closes with its interval's agreed result, ``horizon`` intervals after
        the session (the book refuses one for an interval it has forgotten as "stale")."""
        interval = settlement.interval
        if interval < self._first:
            return [Rejected("stale")]  # no agreed result here to check it against, ever
        if interval >= self._timing.open_interval(now):
            return [Rejected("out-of-horizon")]  # a settlement before its gate even closed
        results = self._book.on_settlement(settlement)
        refused: list[Action] = [r for r in results if isinstance(r, Rejected)]
        if not refused:  # accepted, or held for the agreed result: at most one per node
            self._signed.setdefault(interval, {}).setdefault(settlement, envelope)
        return refused

    def _presence_message(self, node: str, payload: bytes, now: int) -> list[Action]:
        """A peer's signed presence; held until its certificate comes if that is still on the
        way (module constant ``UNPLACED_PRESENCE``)."""
        try:
            envelope = SignedEnvelope.from_bytes(payload, max_size=self._max_payload)
        except MessageError as exc:
            return [Rejected(exc.reason)]
        if self._roster.member(node, now_ms=now) == Rejected("unknown-key"):  # no certificate
            self._unplaced.pop(node, None)
            if len(self._unplaced) >= UNPLACED_PRESENCE:
                del self._unplaced[next(iter(self._unplaced))]
            self._unplaced[node] = envelope
            return []
        return self._place_presence(node, envelope, now)

    def _place_presence(self, node: str, envelope: SignedEnvelope, now: int) -> list[Action]:
        """Take a presence signed under ``node``'s certified key if it is newer than the one
        held (:meth:`Presence.rank`); an older one is "stale-presence"."""
        verified = verify(envelope, expected_kind="presence")
        if isinstance(verified, Rejected):
            return [verified]
        presence = verified.body
        assert isinstance(presence, Presence)  # by expected_kind
        if presence.node != node:
            return [Rejected("node-mismatch")]
        if presence.community != self.community:
            return [Rejected("wrong-community")]
        member = self._roster.check(node=node, signer=verified.public_key_hex, now_ms=now)
        if isinstance(member, Rejected):
            return [member]
        held = self._presence.get(node)
        if held is not None and presence.rank() <= held.rank():
            return [] if presence == held else [Rejected("stale-presence")]
        self._presence[node] = presence
        return []

    def _roster_message(self, node: str, payload: bytes, now: int, *,
                        revocation_only: bool) -> list[Action]:
        try:
            envelope = SignedEnvelope.from_bytes(payload, max_size=self._max_payload)
        except MessageError as exc:
            return [Rejected(exc.reason)]
        if revocation_only and envelope.kind != "revoke":
            return [Rejected("wrong-kind")]
        taken = self._roster.offer(envelope, node=node, now_ms=now)
        if isinstance(taken, Rejected):
            return [taken]
        unplaced = self._unplaced.pop(node, None)
        if isinstance(taken, Member) and unplaced is not None:
            return self._place_presence(node, unplaced, now)
        return []

    async def _carry_out(self, actions: list[Action], *, origin: str = "") -> None:
        # An agreed result counts from the moment its session reaches it, before any publish in
        # the same batch is awaited: what agreed() and undecided() say must never lag behind the
        # session (a node closing the interval meanwhile would settle it as abstained).
        checked: list[Action] = [r for action in actions if isinstance(action, Agreed)
                                 for r in self._book.on_agreed(action) if isinstance(r, Rejected)]
        for action in [*actions, *checked]:
            match action:
                case Rejected(reason=reason):
                    self.rejections[reason] += 1
                    count = self.rejections[reason]
                    if _worth_logging(count):
                        log.info("%s: rejected peer message%s: %s (%d so far)", self.node,
                                 f" on {origin}" if origin else "", reason, count)
                case Publish(topic=topic, payload=payload, retain=retain):
                    await self._link.publish(topic, payload, retain=retain)
                case Fetch(topic_filter=topic_filter):
                    self._fetched.add(topic_filter)
                    await self._link.fetch(topic_filter)
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
                    await self._forget_fetch(action.interval, lists_too=False)

    async def _forget_fetch(self, interval: int, *, lists_too: bool) -> None:
        """Drop the interval's fetch subscriptions: the bids' once an outcome is in (the broker
        has resent them), the bid sets' only when the interval retires (dissenting commitments
        are judged after the outcome, as their lists arrive)."""
        filters = [topics.bids_of(self.community, interval)]
        if lists_too:
            filters.append(topics.bidsets_of(self.community, interval))
        for fetched in filters:
            if fetched in self._fetched:
                self._fetched.discard(fetched)
                await self._link.forget(fetched)
