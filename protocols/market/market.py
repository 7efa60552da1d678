"""One gateway's seat in the community market, sans-I/O: payloads and the time in, actions out.

A :class:`Market` is fed what the broker delivers (:meth:`Market.receive`), the passing of time
(:meth:`Market.tick`) and this node's own requests (:meth:`Market.bid`, :meth:`Market.settle`),
and answers each with the :mod:`actions <protocols.market.actions>` to carry out, in order. It is
the one owner of the market's state: the :class:`~protocols.market.roster.Roster`, one
:class:`~protocols.market.session.IntervalSession` per interval, every interval's outcome and
the :class:`~protocols.market.settlement.SettlementBook`. It signs every message this node sends,
here and nowhere else, and builds every topic (:mod:`protocols.market.topics`). It knows no
socket and no clock: its I/O adapter (``gateway/market/agent.py``) owns both.

Every payload goes through the same checks in the same order (topic, size and JSON, signature,
membership, then the session), and the first that fails is the :class:`Rejected` reason.

A flood is cut before its signatures are checked: once a node has had as many distinct verified
messages on one of its topics as the kind allows (:class:`~protocols.market.quota.Quota`,
:data:`QUOTAS`), further live ones there are refused as "flood" unread (only verified messages
fill the quota, so a forger cannot silence anyone).

A signer this node does not know is looked up, not only refused: a message whose signature
holds but whose node's certified key this node lacks (its certificate lost on the way, say) is
refused as "unknown-key" and makes it fetch what the broker retains about that node, rate-limited
so that made-up signers cannot turn it into a storm of requests (:mod:`protocols.market.lookup`).

A closed interval stays closed (:meth:`Market._closed`): a message about an interval this node
has retired, or whose retirement time has passed, is refused as "stale" and nothing more, whoever
sent it and however it came (live, retained after a reconnect, fetched). A session rebuilt for it
would clear, commit and retire it again, and its commitment would make every peer do the same,
for ever. Settlements close later, when the book forgets their interval.

Presence is signed (:class:`~protocols.messages.Presence`): this node signs an ``online`` and the
``offline`` its link leaves as last will for each connection (:meth:`Market.presence`); a peer's
presence counts only under its certified key, and the highest session wins, so neither an
outsider nor a replay can make a member look offline.

After an interval, :meth:`Market.settle` signs this node's settlement; the book checks the peers'
against the agreed result and holds the accepted ones, from which every member's reputation for an
interval follows (:mod:`protocols.reputation`). A signed order is only its member's wish: every
gateway clips it to what the member's certificate allows over the interval
(``energy_interval_ms``, :class:`protocols.clearing.Limits`) and a sell order further to the
member's reputation-scaled cap (:meth:`Market.offer_cap_wh`) when it clears. This node caps its
own bids the same way: :meth:`Market.bid` *caps* an offer rather than refusing it, because the
excess would only have been exported at feed-in anyway. The settlements that count outlive a
restart in the ledger, from which :meth:`Market.restore_settlements` takes them back.

With a ``schedule``, each interval is cleared and settled at its own tariffs, the schedule's
prices over it (:meth:`Market.tariffs`), which the members agree on
(:mod:`protocols.market.tariffs`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols.clearing import ClearingParams, Limits, Tariffs
from protocols.market import topics
from protocols.market.actions import (
    Abstained,
    Action,
    Agreed,
    Fetch,
    Forget,
    Publish,
)
from protocols.market.errors import MarketError
from protocols.market.lookup import Lookups
from protocols.market.quota import Quota
from protocols.market.roster import Member, Roster
from protocols.market.session import (
    MAX_BIDS_PER_NODE,
    Commit,
    IntervalSession,
    Missing,
    SessionAction,
)
from protocols.market.settlement import (
    MeterKey,
    SettlementBook,
    TaggedMeterReading,
    expected_settlement,
)
from protocols.market.state import State
from protocols.market.tariffs import IntervalTariffs, TariffSource
from protocols.market.timing import Timing
from protocols.messages import (
    DEFAULT_MAX_ENVELOPE_BYTES,
    Bid,
    BidSet,
    Commitment,
    MessageError,
    Presence,
    Revocation,
    Settlement,
    SignedEnvelope,
    Step,
    curve_head,
)
from protocols.network import Feeder, FeeSchedule
from protocols.reputation import UNLIMITED, counted_intervals
from protocols.settlement import ReputationRule
from protocols.signing import Rejected, Verified, sign, verify

PeerKind = Literal["bid", "commit", "bidset", "settle"]
"""The kinds of message a peer sends per interval (checked in :meth:`Market.receive`)."""

OpenedKind = PeerKind | Literal["presence", "cert"]
"""What an :data:`Opener` opens: a peer's per-interval messages, its presence, its certificate."""

_KINDS: dict[topics.Kind, PeerKind] = {
    topics.Kind.BIDS: "bid", topics.Kind.COMMIT: "commit", topics.Kind.BIDSET: "bidset",
    topics.Kind.SETTLE: "settle",
}

QUOTAS = {topics.Kind.BIDS: MAX_BIDS_PER_NODE + 2, topics.Kind.COMMIT: 8, topics.Kind.BIDSET: 8,
          topics.Kind.SETTLE: 4}
"""Distinct verified messages per node and topic before the rest is cut unread as "flood". An
honest gateway sends at most ``MAX_BIDS_PER_NODE`` bids per interval (:meth:`Market.bid`), at
most three commitments (its first, the union round's, a join) with as many bid sets, and one
settlement; a retained message of the interval its slot carried before may come on top. Bids get
more: the session bars a node's bids once it has verified one bid past its limit (the proof),
so the quota must let that one through."""

Opener = Callable[[bytes, int, OpenedKind, str | None],
                  tuple[SignedEnvelope, Verified] | Rejected]
"""Parse a payload of at most ``max_size`` bytes and check its signature as the expected kind,
by the one signer it must come from if one is given: :func:`open_signed`. A pure function of its
arguments, so a simulation of many members on one host may share the answers for the same bytes
(:class:`Market`'s ``opener``)."""


def open_signed(payload: bytes, max_size: int, kind: OpenedKind, signer: str | None = None
                ) -> tuple[SignedEnvelope, Verified] | Rejected:
    """The envelope in ``payload`` and its verified body, or why it is refused (parse, then
    signature and schema: :func:`protocols.signing.verify`). With a ``signer`` (the authority,
    for a certificate), an envelope of the kind signed by another key is "not-authority" before
    its signature costs a check, as :func:`protocols.signing.check_certificate` refuses it."""
    try:
        envelope = SignedEnvelope.from_bytes(payload, max_size=max_size)
    except MessageError as exc:
        return Rejected(exc.reason)
    if signer is not None and envelope.kind == kind and envelope.signer != signer:
        return Rejected("not-authority")
    verified = verify(envelope, expected_kind=kind)
    return verified if isinstance(verified, Rejected) else (envelope, verified)


UNPLACED_PRESENCE = 1024
"""Presences held for nodes whose certificate has not arrived (a joining gateway's presence goes
out just before its certificate); the oldest go first, so a flood of made-up names cannot grow
it."""

LOOKUPS_AT_ONCE = 8
"""Roster lookups open at once (:mod:`protocols.market.lookup`): a lost certificate is rare, and
more at a time would only serve a sender of made-up names. Each node is asked about at most once
per interval length."""


class Market:
    """Feed it :meth:`start` once, then :meth:`receive`, :meth:`tick`, :meth:`bid` and
    :meth:`settle`; carry out what each returns, in order."""

    def __init__(
        self,
        *,
        community: str,
        node: str,
        identity: Ed25519PrivateKey,
        certificate: SignedEnvelope,
        authority_key_hex: str,
        timing: Timing,
        params: ClearingParams,
        mechanism: str = "uniform",
        quorum: tuple[int, int] = (2, 3),
        max_payload: int = DEFAULT_MAX_ENVELOPE_BYTES,
        horizon: int = 4,
        feeder: Feeder | None = None,
        fees: FeeSchedule | None = None,
        meter_keys: Mapping[str, MeterKey] | None = None,
        reputation_rule: ReputationRule | None = None,
        energy_interval_ms: int | None = None,
        opener: Opener = open_signed,
        schedule: TariffSource | None = None,
    ) -> None:
        """``horizon``: how many intervals past the next gate a session may be opened for, and
        how many intervals after its session a settlement is kept. ``feeder``/``fees``: the
        community's network (:mod:`protocols.market.session`). ``meter_keys``: meters whose tags
        this gateway can check. ``energy_interval_ms``: the physical length of an interval, which
        turns a certificate's limits (W) into the Wh a member may trade; None where intervals are
        not physical time (tests with home-sized bids in 1 s intervals): the limit is then the
        protocol's ``MAX_ENERGY_WH``. ``opener``: how a peer's bid, commitment, bid set or
        settlement, presence or certificate is parsed and verified (:data:`Opener`); a gateway
        keeps the default.
        ``schedule``: the community's tariff schedule; None, every interval has
        ``params.tariffs``."""
        if fees is not None and feeder is None:
            raise MarketError("a fee schedule needs a feeder: fees grow with feeder distance")
        self.community = topics.check_id("community", community)
        self.node = topics.check_id("node", node)
        self._identity = identity
        self._certificate = certificate
        self._timing = timing
        self._params = params
        self._tariffs = IntervalTariffs(fixed=params.tariffs, timing=timing, schedule=schedule)
        self._mechanism = mechanism
        self._quorum = quorum
        self._max_payload = max_payload
        self._horizon = horizon
        self._feeder = feeder
        self._fees = fees
        self._energy_interval_ms = energy_interval_ms
        self._open = opener
        self._roster = Roster(community=community, authority_key_hex=authority_key_hex)
        # Each peer's highest verified presence, and presences waiting for their certificate.
        self._presence: dict[str, Presence] = {}
        self._unplaced: dict[str, bytes] = {}
        self._quota = Quota(QUOTAS)
        self._sessions: dict[int, IntervalSession] = {}
        # The signed commitment behind each one a session counts, by interval and node: the
        # proof an Agreed carries.
        self._proofs: dict[int, dict[str, SignedEnvelope]] = {}
        self._first = 0  # the first interval this node takes part in (set by start)
        self._retired = -1  # the latest interval retired: its session is gone
        self._seq: Counter[int] = Counter()
        self._fetched: set[str] = set()
        self._lookups = Lookups(every_ms=timing.length_ms, at_once=LOOKUPS_AT_ONCE)
        self._book = SettlementBook(community=community, tariffs=self._tariffs,
                                    rule=reputation_rule, meter_keys=meter_keys)
        # Every verified settlement envelope by interval and body, until its interval is forgotten.
        self._signed: dict[int, dict[Settlement, SignedEnvelope]] = {}
        self._now = 0  # the time of the call being served, for what sessions look up

    # --- feeding it ------------------------------------------------------------------------------

    def start(self, now_ms: int) -> list[Action]:
        """Join at ``now_ms``: check this node's own certificate (raises :class:`MarketError` if
        it is not usable) and publish it; intervals whose gate has closed are not ours."""
        admitted = self._roster.offer(self._certificate, node=self.node, now_ms=now_ms)
        if not isinstance(admitted, Member):
            reason = admitted.reason if isinstance(admitted, Rejected) else admitted
            raise MarketError(f"{self.node}: own certificate is not usable: {reason}")
        self._first = self._timing.open_interval(now_ms)
        return [Publish(topics.roster(self.community, self.node), self._certificate.to_bytes(),
                        retain=True)]

    def presence(self, session: int) -> tuple[bytes, bytes]:
        """This node's signed ``online`` and ``offline`` for a connection numbered ``session``
        (it must grow from one connection to the next, across restarts too)."""
        return (self._signed_presence("online", session),
                self._signed_presence("offline", session))

    def receive(self, topic: str, payload: bytes, retained: bool, now_ms: int) -> list[Action]:
        """One message as the broker delivered it; ``retained``: a replay of a stored one."""
        self._now = now_ms
        try:
            parsed = topics.parse(topic)
        except topics.BadTopic:
            return [Rejected("bad-topic")]
        if not payload:
            return []  # an empty retained payload clears an old message
        if parsed.kind is topics.Kind.PRESENCE:
            return self._presence_message(parsed.node, payload, now_ms)
        if parsed.kind in (topics.Kind.ROSTER, topics.Kind.REVOKED):
            return self._roster_message(parsed.node, payload, now_ms,
                                        revocation_only=parsed.kind is topics.Kind.REVOKED)
        if not retained and self._quota.full(parsed, payload):
            return [Rejected("flood")]  # unread: see the module docstring
        opened = self._open(payload, self._max_payload, _KINDS[parsed.kind], None)
        if isinstance(opened, Rejected):
            return [opened]
        envelope, verified = opened
        body = verified.body
        assert isinstance(body, Bid | Commitment | BidSet | Settlement)  # by expected_kind
        if body.node != parsed.node:
            return [Rejected("node-mismatch")]
        if not parsed.holds(body.interval):
            return [Rejected("replay")]  # a genuine message, on another interval's slot
        member = self._roster.check(node=parsed.node, signer=verified.public_key_hex,
                                    now_ms=now_ms)
        if isinstance(member, Rejected):
            return [member, *self._look_up(parsed.node, member, now_ms)]
        if not self._quota.admit(parsed, payload):
            return [Rejected("flood")]
        interval = body.interval
        if isinstance(body, Settlement):
            return self._settlement(body, envelope, now_ms)
        if interval < self._first and retained:
            return []  # history from before we joined, replayed by the broker
        if self._closed(interval, now_ms):
            return [Rejected("stale")]  # see the module docstring
        session = self._session(interval, now_ms)
        if session is None:
            return [Rejected("out-of-horizon")]
        if isinstance(body, Bid):
            return self._emit(session, session.on_bid(body))
        if isinstance(body, BidSet):
            return self._emit(session, session.on_bidset(body))
        held = session.held(body.node)
        done = session.on_commitment(body)
        if held != body and session.held(body.node) == body:
            self._proofs.setdefault(interval, {})[body.node] = envelope
        return self._emit(session, done)

    def tick(self, now_ms: int) -> list[Action]:
        """Advance every interval to ``now_ms``, and retire those long over."""
        # Every interval gets a session even if this node does not bid: it still clears,
        # commits and counts towards the quorum.
        self._session(self._timing.open_interval(now_ms), now_ms)
        actions: list[Action] = [Forget(topics.membership_of(self.community, node))
                                 for node in self._lookups.expire(now_ms)]
        for interval, session in list(self._sessions.items()):
            actions += self._emit(session, session.tick(now_ms))
            if now_ms > self._retire_ms(interval):
                actions += self._retire(interval)
        return actions

    def bid(
        self, interval: int, side: Literal["buy", "sell"], energy_wh: int, limit_price: int,
        now_ms: int, steps: Sequence[Step] = (),
    ) -> tuple[Bid, list[Action]]:
        """This node's bid for ``interval`` and the actions that publish it (retained); a later
        bid replaces it (higher ``seq``), and ``energy_wh`` 0 withdraws it. Clearing the retained
        copy would not withdraw anything: every peer that heard the bid keeps it. ``steps`` is the
        bid's curve (:class:`~protocols.messages.Bid`), ``energy_wh`` and ``limit_price`` then its
        total and first price; capped, the curve keeps its best steps."""
        self._now = now_ms
        session = self._session(interval, now_ms)
        if session is None or session.state is not State.OPEN:
            raise MarketError(f"{self.node}: the gate of interval {interval} is closed")
        if self._seq[interval] >= MAX_BIDS_PER_NODE:
            # One more would be a flood, for which every peer excludes this node from the interval.
            raise MarketError(f"{self.node}: already {MAX_BIDS_PER_NODE} bids for interval "
                              f"{interval}, the most a node may make")
        cap = (self.offer_cap_wh(self.node, interval, now_ms) if side == "sell"
               else self._limits(self.node, now_ms).import_wh)
        if cap <= 0:
            raise MarketError(f"{self.node}: its certificate allows no "
                              f"{'export' if side == 'sell' else 'import'}")
        energy_wh = min(energy_wh, cap)  # capped, not refused: see the module docstring
        curve = curve_head(steps, energy_wh)
        bid = Bid(
            community=self.community, interval=interval, node=self.node,
            seq=self._seq[interval], side=side, energy_wh=energy_wh, limit_price=limit_price,
            created_ms=now_ms, **({"steps": curve} if len(curve) > 1 else {}),
        )
        self._seq[interval] += 1
        actions = self._emit(session, session.on_bid(bid))
        envelope = sign("bid", bid, self._identity)
        actions.append(Publish(topics.bid(self.community, interval, self.node),
                               envelope.to_bytes(), retain=True))
        return bid, actions

    def settle(
        self, interval: int, *, delivered_wh: int, meter_reading: TaggedMeterReading, bus_wh: int,
        now_ms: int,
    ) -> tuple[SignedEnvelope, list[Action]]:
        """This node's signed settlement of an agreed interval that ended, and the action that
        publishes it (retained, so a gateway that reconnects can still check it).

        ``delivered_wh`` is the metered net energy over the interval (+ import, − export), of
        which ``bus_wh`` went over the DC bus, and ``meter_reading`` the meter's tagged counters
        at its end. The settlement goes through the same checks as a peer's, so a reading this
        gateway itself could not verify is never published.
        """
        if now_ms < self._timing.end_ms(interval):
            raise MarketError(f"{self.node}: interval {interval} has not ended")
        agreed = self._book.agreed(interval)
        if agreed is None:
            raise MarketError(f"{self.node}: interval {interval} has no agreed result to settle")
        settlement = expected_settlement(
            agreed, community=self.community, node=self.node, delivered_wh=delivered_wh,
            reading=meter_reading, tariffs=self._tariffs(interval), bus_wh=bus_wh,
        )
        refused = [r for r in self._book.on_settlement(settlement) if isinstance(r, Rejected)]
        if refused:
            raise MarketError(f"{self.node}: own settlement of {interval}: {refused[0].reason}")
        envelope = sign("settle", settlement, self._identity)
        self._signed.setdefault(interval, {})[settlement] = envelope
        session = self._sessions.get(interval)
        if session is not None and session.state in (State.DISPATCHING, State.ADOPTED):
            session.settled()
        return envelope, [Publish(topics.settle(self.community, interval, self.node),
                                  envelope.to_bytes(), retain=True)]

    # --- asking it -------------------------------------------------------------------------------

    @property
    def first(self) -> int:
        """The first interval this node takes part in."""
        return self._first

    @property
    def retired(self) -> int:
        """The latest interval retired here (-1: none yet); its outcome is no longer kept."""
        return self._retired

    def tariffs(self, interval: int) -> Tariffs:
        """The grid tariffs ``interval`` is cleared and settled at."""
        return self._tariffs(interval)

    def agreed(self, interval: int) -> Agreed | None:
        """The result the community agreed for ``interval``, whether this node heard the quorum
        in time or adopted it after abstaining (``Agreed.late``); None if it knows of none."""
        return self._book.agreed(interval)

    def undecided(self, interval: int, now_ms: int) -> bool:
        """Whether ``interval`` may still be agreed or adopted here: its session is alive, or one
        may still be made for it. Once False it stays False, and :meth:`agreed` then says for
        good what the interval came to here (None: abstained)."""
        return interval in self._sessions or not self._closed(interval, now_ms)

    def commitments(self, interval: int) -> list[SignedEnvelope]:
        """The signed commitments of the quorum that agreed ``interval``, by node, exactly as
        their signers sent them (empty while no agreed result is known, and once forgotten)."""
        agreed = self._book.agreed(interval)
        return [] if agreed is None else list(agreed.commitments)

    def session_state(self, interval: int) -> State | None:
        session = self._sessions.get(interval)
        return None if session is None else session.state

    def certificate(self, node: str) -> SignedEnvelope | None:
        """``node``'s membership certificate as the authority signed it (None: none held)."""
        return self._roster.certificate(node)

    def reputation(self, node: str, interval: int) -> int:
        """``node``'s smoothed delivery ratio (per-mille) that caps its offers in ``interval``
        (:mod:`protocols.reputation`)."""
        return self._book.reputation(node, interval)

    def offer_cap_wh(self, node: str, interval: int, now_ms: int) -> int:
        """The most ``node`` may offer in ``interval``: its certificate's limit scaled by its
        reputation, as every gateway clips its sell orders."""
        return self._book.history.offer_cap_wh(node, interval,
                                               self._limits(node, now_ms).export_wh)

    def restore_settlements(self, envelopes: Iterable[SignedEnvelope], now_ms: int
                            ) -> list[Rejected]:
        """Take back the settlements this gateway accepted before a restart, as its ledger kept
        them, so its members' reputations are what its peers still hold. Each must verify under
        its signer's key and be of this community (a refused one comes back with its reason);
        the ledger is this node's own signed chain, so who signed is not checked again against a
        roster that has not arrived yet. Call it before :meth:`start`."""
        refused: list[Rejected] = []
        for envelope in envelopes:
            verified = verify(envelope, expected_kind="settle")
            if isinstance(verified, Rejected):
                refused.append(verified)
                continue
            settlement = verified.body
            assert isinstance(settlement, Settlement)  # by expected_kind
            if settlement.community != self.community:
                refused.append(Rejected("wrong-community"))
                continue
            self._book.history.add(settlement)
        self._book.history.forget_before(self._timing.open_interval(now_ms))
        return refused

    def settlements(self, interval: int) -> dict[str, Settlement]:
        """The verified settlements of ``interval`` by node (this node's own included)."""
        return self._book.settlements(interval)

    def signed_settlements(self, interval: int) -> dict[str, SignedEnvelope]:
        """The accepted settlements of ``interval`` by node, each as its signer's envelope."""
        signed = self._signed.get(interval, {})
        return {node: signed[s] for node, s in self._book.settlements(interval).items()
                if s in signed}

    def active(self, now_ms: int) -> list[str]:
        """Members that count towards the quorum: valid certificate and present on the broker
        (their own signed word, see the module docstring)."""
        members = self._roster.active(now_ms)
        return [n for n in members if n == self.node or (
            (p := self._presence.get(n)) is not None and p.state == "online")]

    # --- sessions --------------------------------------------------------------------------------

    def _limits(self, node: str, now_ms: int) -> Limits:
        """What ``node``'s certificate lets it trade in one interval (every gateway clips its
        orders to this, :mod:`protocols.market.session`)."""
        member = self._roster.member(node, now_ms=now_ms)
        if isinstance(member, Rejected):
            raise MarketError(f"{node} is not a member now: {member.reason}")
        if self._energy_interval_ms is None:
            return UNLIMITED
        return Limits.over(import_limit_w=member.import_limit_w,
                           export_limit_w=member.export_limit_w,
                           interval_ms=self._energy_interval_ms)

    def _closed(self, interval: int, now_ms: int) -> bool:
        """``interval`` is over here for good: before this node started, retired, or past the
        time it is retired at (a caller that stalled may not have ticked it yet)."""
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
            community=self.community, interval=interval, node=self.node, timing=self._timing,
            mechanism=self._mechanism, active=self.active,
            params=replace(self._params, tariffs=self._tariffs(interval)),
            agree_tariffs=self._tariffs.agreed,
            certified=lambda now_ms: len(self._roster.active(now_ms)), quorum=self._quorum,
            bus_of=self._roster.bus, feeder=self._feeder, fees=self._fees,
            limits_of=(None if self._energy_interval_ms is None
                       else lambda node: self._limits(node, self._now)),
            offer_caps=lambda limits: self._book.history.capped(interval, limits),
        )
        return session

    def _emit(self, session: IntervalSession, done: list[SessionAction]) -> list[Action]:
        """What a session did, as wire actions: its commitments signed and published, what it
        misses fetched, a fetch forgotten once the outcome is in (the broker has resent the bids),
        the proofs added to an agreed result and the settlements held for it checked."""
        k = session.interval
        actions: list[Action] = []
        for action in done:
            match action:
                case Commit(commitment=commitment, bidset=bidset):
                    actions += self._publish_commit(commitment, bidset)
                case Missing(what=what):
                    of = topics.bids_of if what == "bids" else topics.bidsets_of
                    actions.append(self._fetch(of(self.community, k)))
                case Agreed():
                    proofs = self._proofs.get(k, {})
                    actions.append(replace(action, commitments=tuple(
                        proofs[node] for node in sorted(action.committed_by))))
                    actions += self._forget(k, lists_too=False)
                case Abstained():
                    actions.append(action)
                    actions += self._forget(k, lists_too=False)
                case _:
                    actions.append(action)
        # An agreed result counts for settling from the moment its session reaches it.
        checked: list[Action] = [r for action in actions if isinstance(action, Agreed)
                                 for r in self._book.on_agreed(action) if isinstance(r, Rejected)]
        return actions + checked

    def _publish_commit(self, commitment: Commitment, bidset: BidSet | None) -> list[Action]:
        """Sign this node's commitment, kept as its proof, after the bid set it names when that
        is not inline; both retained (:mod:`protocols.market.session`)."""
        k = commitment.interval
        signed = sign("commit", commitment, self._identity)
        self._proofs.setdefault(k, {})[self.node] = signed
        publish: list[Action] = []
        if bidset is not None:
            publish.append(Publish(topics.bidset(self.community, k, self.node),
                                   sign("bidset", bidset, self._identity).to_bytes(),
                                   retain=True))
        publish.append(Publish(topics.commit(self.community, k, self.node), signed.to_bytes(),
                               retain=True))
        return publish

    def _fetch(self, topic_filter: str) -> Fetch:
        self._fetched.add(topic_filter)
        return Fetch(topic_filter)

    def _forget(self, interval: int, *, lists_too: bool) -> list[Action]:
        """Drop the interval's fetch filters: the bids' once an outcome is in, the bid sets' only
        when the interval retires (dissenting commitments are judged after the outcome, as their
        lists arrive)."""
        filters = [topics.bids_of(self.community, interval)]
        if lists_too:
            filters.append(topics.bidsets_of(self.community, interval))
        forget: list[Action] = []
        for fetched in filters:
            if fetched in self._fetched:
                self._fetched.discard(fetched)
                forget.append(Forget(fetched))
        return forget

    def _retire(self, interval: int) -> list[Action]:
        """Forget a finished interval and clear this node's retained messages for it."""
        session = self._sessions.pop(interval)
        self._proofs.pop(interval, None)
        self._retired = max(self._retired, interval)
        clear: list[Action] = []
        if self._seq[interval]:
            clear.append(Publish(topics.bid(self.community, interval, self.node), b"",
                                 retain=True))
        if session.state not in (State.OPEN, State.GATE_CLOSED):
            clear.append(Publish(topics.commit(self.community, interval, self.node), b"",
                                 retain=True))
        if session.bid_set_published:
            clear.append(Publish(topics.bidset(self.community, interval, self.node), b"",
                                 retain=True))
        del self._seq[interval]
        for kind in (topics.Kind.BIDS, topics.Kind.COMMIT, topics.Kind.BIDSET):
            self._quota.forget(kind, topics.slot(interval))
        clear += self._forget(interval, lists_too=True)
        self._book.history.forget_before(interval + 1)
        # Settlements come after the interval; they are kept ``horizon`` intervals longer.
        old = interval - self._horizon
        own = self._book.settlements(old).get(self.node)
        clear += self._book.forget(old)
        self._signed.pop(old, None)  # as the book forgets it
        if old >= 0:
            self._quota.forget(topics.Kind.SETTLE, topics.slot(old))
        if own is not None:
            clear.append(Publish(topics.settle(self.community, old, self.node), b"",
                                 retain=True))
        return clear

    # --- settlements, presence, roster ------------------------------------------------------------

    def _settlement(self, settlement: Settlement, envelope: SignedEnvelope,
                    now_ms: int) -> list[Action]:
        """A settlement closes with its interval's agreed result, ``horizon`` intervals after
        the session (the book refuses one for an interval it has forgotten as "stale")."""
        interval = settlement.interval
        if interval < self._first:
            return self._earlier_settlement(settlement)
        if interval >= self._timing.open_interval(now_ms):
            return [Rejected("out-of-horizon")]  # a settlement before its gate even closed
        results = self._book.on_settlement(settlement)
        refused: list[Action] = [r for r in results if isinstance(r, Rejected)]
        if not refused:  # accepted, or held for the agreed result: at most one per node
            self._signed.setdefault(interval, {}).setdefault(settlement, envelope)
        return refused

    def _earlier_settlement(self, settlement: Settlement) -> list[Action]:
        """A member's settlement of an interval from before this node started: there is no agreed
        result here to check its figures against, ever, but it may still count towards the
        member's reputation (the broker retains settlements for ``horizon`` intervals, the ledger
        keeps the older ones, :meth:`restore_settlements`). Its signature and the signer's
        membership are checked; its figures are the member's own word, as its delivery is to
        every peer without its meter key. One that can no longer count is "stale"."""
        if settlement.community != self.community:
            return [Rejected("wrong-community")]
        history = self._book.history
        if settlement.interval < counted_intervals(self._first, history.rule).start:
            return [Rejected("stale")]
        history.add(settlement)
        return []

    def _signed_presence(self, state: Literal["online", "offline"], session: int) -> bytes:
        presence = Presence(community=self.community, node=self.node, session=session,
                            state=state)
        return sign("presence", presence, self._identity).to_bytes()

    def _presence_message(self, node: str, payload: bytes, now_ms: int) -> list[Action]:
        """A peer's signed presence; held until its certificate comes if that is still on the
        way (:data:`UNPLACED_PRESENCE`), its signature unchecked until then."""
        if self._roster.member(node, now_ms=now_ms) == Rejected("unknown-key"):  # no certificate
            try:
                SignedEnvelope.from_bytes(payload, max_size=self._max_payload)
            except MessageError as exc:
                return [Rejected(exc.reason)]
            self._unplaced.pop(node, None)
            if len(self._unplaced) >= UNPLACED_PRESENCE:
                del self._unplaced[next(iter(self._unplaced))]
            self._unplaced[node] = payload
            return []
        return self._place_presence(node, payload, now_ms)

    def _place_presence(self, node: str, payload: bytes, now_ms: int) -> list[Action]:
        """Take a presence signed under ``node``'s certified key if it is newer than the one
        held (:meth:`Presence.rank`); an older one is "stale-presence"."""
        opened = self._open(payload, self._max_payload, "presence", None)
        if isinstance(opened, Rejected):
            return [opened]
        presence = opened[1].body
        assert isinstance(presence, Presence)  # by expected_kind
        if presence.node != node:
            return [Rejected("node-mismatch")]
        if presence.community != self.community:
            return [Rejected("wrong-community")]
        member = self._roster.check(node=node, signer=opened[1].public_key_hex, now_ms=now_ms)
        if isinstance(member, Rejected):
            return [member]
        held = self._presence.get(node)
        if held is not None and presence.rank() <= held.rank():
            return [] if presence == held else [Rejected("stale-presence")]
        self._presence[node] = presence
        return []

    def _roster_message(self, node: str, payload: bytes, now_ms: int, *,
                        revocation_only: bool) -> list[Action]:
        """A certificate (opened by the opener, the authority's signature checked there) or a
        revocation on ``roster/<node>``, only a revocation on ``revoked/<node>``."""
        taken: Member | Revocation | Rejected
        opened = (Rejected("wrong-kind") if revocation_only else
                  self._open(payload, self._max_payload, "cert", self._roster.authority))
        if opened != Rejected("wrong-kind"):
            if isinstance(opened, Rejected):
                return [opened]
            taken = self._roster.admit(*opened, node=node, now_ms=now_ms)
        else:  # a revocation, or no kind the roster takes
            try:
                envelope = SignedEnvelope.from_bytes(payload, max_size=self._max_payload)
            except MessageError as exc:
                return [Rejected(exc.reason)]
            if revocation_only and envelope.kind != "revoke":
                return [Rejected("wrong-kind")]
            taken = self._roster.offer(envelope, node=node, now_ms=now_ms)
        if isinstance(taken, Rejected):
            return [taken]
        done: list[Action] = []
        if isinstance(taken, Member) and self._lookups.answered(node):
            done.append(Forget(topics.membership_of(self.community, node)))
        unplaced = self._unplaced.pop(node, None)
        if isinstance(taken, Member) and unplaced is not None:
            done += self._place_presence(node, unplaced, now_ms)
        return done

    def _look_up(self, node: str, refused: Rejected, now_ms: int) -> list[Action]:
        """Fetch what the broker retains about ``node`` if a verified message of its was refused
        because its certified key is not the signer's (rate-limited, see the module
        docstring): the certificate may have been lost on the way, or a newer one missed."""
        if refused.reason != "unknown-key" or not self._lookups.ask(node, now_ms):
            return []
        return [Fetch(topics.membership_of(self.community, node))]
