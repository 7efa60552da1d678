"""One market interval for one node: verified messages and the time in, what to do out.

This file may know the protocol rules of one interval k (docs/architecture.md, "Peer protocol"):
which bids count, when the gate closes, how the community clears, when a quorum of commitments
agrees, when to abstain. It may not know topics, keys, the clock or certificates: the
:class:`~protocols.market.market.Market` has checked signatures and membership, passes
``now_ms``, and turns what comes back into wire actions: a :class:`Commit` is signed and
published, a :class:`Missing` fetched. A peer's message that breaks a rule comes back as a
:class:`Rejected` with a reason to count; the states and which events may move them are the table
in :mod:`protocols.market.state`, and an event it does not allow raises :class:`SessionError`.

Network. With a ``feeder``, every bid's node must sit on one of its buses (its certificate's bus,
looked up through ``bus_of`` when the bid is first heard), the clearing is curtailed until no line
is overloaded, and with a ``fees`` schedule every trade's network fee is computed. Fees are part of
what gateways agree on: the committed ``result_hash`` then covers the result *and* the fees
(:func:`agreed_hash`), so a gateway with a different fee schedule or feeder cannot count towards
the same quorum.

Tariffs. Where the community prices intervals by a tariff schedule (``agree_tariffs``), the
interval is cleared at ``params.tariffs``, the schedule's prices for it, and the commitment carries
them (:mod:`protocols.market.tariffs`). A peer's commitment that names other tariffs, or none, is
refused as "tariff-mismatch" and never counted: a member reading another file would clear and
settle at other prices, and a quorum that counted it would vouch for figures it does not share.
Its vote is known, all the same, to count for no result here, so the union round does not wait
for it.

Limits. A signed bid is its node's wish, not its right: with ``limits_of``, every order is clipped
to what the node's certificate lets it import or export over the interval (looked up, like the
bus, when its first bid is heard), so a member cannot sell what its connection may not carry.
Every gateway clips from the same certificate and interval length, so the results still agree.
With ``offer_caps``, a member's export limit is then capped by its reputation, looked up when
the interval clears: a function of settlements every member has held since long before
(:mod:`protocols.reputation`), so every gateway caps alike.

Commitments are published *retained*, like bids. A gateway whose link dropped after the
commitments went out gets them back from the broker when it reconnects and can still reach the
quorum; with plain publishes it would abstain for an interval it had cleared correctly. The cost
is one retained message per node and interval on the broker, which the market clears when it
retires the interval (as it does for bids). A retained commitment is not a replay risk: it names
its interval, and a market ignores retained history for intervals before it started.

A commitment carries its list of bid digests inline up to ``MAX_INLINE_BIDS``. A longer list goes
out once, retained, as the committer's :class:`~protocols.messages.BidSet`, which no one
subscribes to, and the commitment names it by digest only; a member fetches the lists
(:class:`Missing`) only when it needs one: to join a majority, clear the union, adopt a result, or
judge a dissenting commitment. With the list inside every commitment, each member of a
1,000-node community parsed ~66 MB of commitments per interval; a street keeps it inline
because fetching costs a round trip on the paths that must be quick (joining a majority).

Timeline of interval k (``Timing``)::

    OPEN (bids)  | gate = start - gate_ms | clear = gate + grace_ms | start        | end
                   GATE_CLOSED              CLEARED -> COMMITTED       AGREED -> DISPATCHING
                                                                      (or ABSTAINED -> ADOPTED)

A member's votes are numbered (``Commitment.seq``): a re-vote replaces its first at every peer
whatever order the broker delivers them in, and two different votes with one number are an
equivocation (:meth:`IntervalSession._equivocation`), caught by every member that holds both.

Halfway from clearing to the start (``Timing.union_ms``), a member whose commitments have no
quorum yet may vote again, once it holds the first vote of every member of the roster (but those
excluded): for the result a majority of the first votes has if there is one, else for the union
of the bids they list; so members that each missed a different bid still converge. Never sooner,
and never while its own first vote, with as many votes as hostile members may move to it, could
still make a quorum: a peer may already have counted it, and a second vote for another result
would let two results be agreed (``_union_round``). A node
that abstained keeps listening until its market retires the interval, after the interval's
end: once it holds a quorum's commitments and their bids, it reproduces that result and adopts
it for settlement (``_adopt``). Its peers settle their side of its trades whether it hears them
in time or not, so the end of the interval is no deadline for adopting: a starved host may hear
the quorum only after it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from typing import Literal, TypeVar

from protocols.canonical import digest
from protocols.clearing import (
    ClearingParams,
    Limits,
    Result,
    clear,
    orders_from_bids,
)
from protocols.clearing import result_hash as hash_result
from protocols.market.actions import Abstained, Agreed, Cleared, Evidence, Outcome
from protocols.market.errors import SessionError
from protocols.market.state import Event, State, advance
from protocols.market.tariffs import claim
from protocols.market.timing import Timing
from protocols.messages import (
    MAX_INLINE_BIDS,
    Bid,
    BidSet,
    Commitment,
    bid_set_digest,
    message_digest,
)
from protocols.network import (
    Feeder,
    FeederFees,
    FeeSchedule,
    TradeFee,
    curtail,
    network_fees,
)
from protocols.signing import Rejected


@dataclass(frozen=True, slots=True)
class Commit:
    """Publish this node's commitment, unsigned as yet; ``bidset``, the list it names by digest
    when that is too long to travel inline, goes out first (both retained: module docstring)."""

    commitment: Commitment
    bidset: BidSet | None


@dataclass(frozen=True, slots=True)
class Missing:
    """Ask the broker for what it retains of this interval's ``bids`` (ones we missed) or
    ``bidsets`` (a peer's list a held commitment names)."""

    what: Literal["bids", "bidsets"]


SessionAction = Commit | Missing | Cleared | Agreed | Abstained | Evidence | Rejected


K = TypeVar("K", str, tuple[str, str])

MAX_BIDS_PER_NODE = 8
"""Distinct bids a node may have heard per interval; more are a flood."""

def _count(counter: Counter[K], key: K, delta: int) -> None:
    """Move ``counter[key]`` by ``delta``, dropping the key at zero so the counter stays small."""
    left = counter[key] + delta
    if left:
        counter[key] = left
    else:
        del counter[key]


def agreed_hash(result: Result, fees: tuple[TradeFee, ...] | None) -> str:
    """The hash a commitment carries: the result's own hash, or, where the community charges
    network fees (``fees`` not None), a hash over the result's hash and every trade's fee."""
    if fees is None:
        return hash_result(result)
    return digest({"result": hash_result(result), "fees": [list(fee) for fee in fees]})


def quorum_size(members: int, num: int, den: int) -> int:
    """Smallest count >= members * num / den (and at least 1), in integers."""
    return max(1, (members * num + den - 1) // den)


class IntervalSession:
    """The protocol of one interval for one node. Feed it :meth:`on_bid`, :meth:`on_commitment`,
    :meth:`on_bidset`, :meth:`tick`; each returns what to do, in order."""

    def __init__(
        self,
        *,
        community: str,
        interval: int,
        node: str,
        timing: Timing,
        mechanism: str,
        params: ClearingParams,
        active: Callable[[int], Collection[str]],
        certified: Callable[[int], int] | None = None,
        quorum: tuple[int, int] = (2, 3),
        max_bids_per_node: int = MAX_BIDS_PER_NODE,
        bus_of: Callable[[str], str] | None = None,
        limits_of: Callable[[str], Limits] | None = None,
        feeder: Feeder | None = None,
        fees: FeeSchedule | None = None,
        offer_caps: Callable[[Mapping[str, Limits]], Mapping[str, Limits]] | None = None,
        agree_tariffs: bool = False,
    ) -> None:
        """``limits_of``: what a node's certificate lets it trade in this interval, looked up
        when its first bid is heard (as its bus is); every order is clipped to it in clearing.
        None: bids are cleared as signed (up to the protocol's ``MAX_ENERGY_WH``).
        ``offer_caps(limits)``: given the bidders' certificate limits, the limits of the nodes
        whose reputation caps what they may sell in this interval (asked when it clears).
        ``agree_tariffs``: commitments carry ``params.tariffs`` and must agree on them (module
        docstring, "Tariffs")."""
        num, den = quorum
        if not (0 < den and den < 2 * num <= 2 * den):
            # More than half: two different results can then never both reach a quorum.
            raise SessionError(f"quorum must be in (1/2, 1], got {num}/{den}")
        if fees is not None and feeder is None:
            raise SessionError("a fee schedule needs a feeder: fees grow with feeder distance")
        self.community = community
        self.interval = interval
        self.node = node
        self._timing = timing
        self._mechanism = mechanism
        # With fees, clearing keeps every buyer's price + fee within its limit (the same fees
        # network_fees charges each trade afterwards).
        self._params = (params if fees is None or feeder is None
                        else replace(params, fees=FeederFees(feeder=feeder, schedule=fees)))
        self._active = active
        self._certified = certified
        self._quorum = quorum
        self._max_bids = max_bids_per_node
        self._bus_of = bus_of
        self._limits_of = limits_of
        self._offer_caps = offer_caps
        self._feeder = feeder
        self._fee_schedule = fees
        self._tariffs = claim(params.tariffs) if agree_tariffs else None
        self._foreign: set[str] = set()  # peers whose commitments name other tariffs
        self._buses: dict[str, str] = {}  # bus per node, fixed when its first bid is heard
        self._limits: dict[str, Limits] = {}  # the same for the node's trading limits
        self._state = State.OPEN
        self._known: dict[str, Bid] = {}  # every verified bid of k by digest, late ones too
        self._by_seq: dict[tuple[str, int], str] = {}
        self._per_node: defaultdict[str, int] = defaultdict(int)
        # The bid that counts, per node (set while OPEN), with its digest.
        self._current: dict[str, tuple[Bid, str]] = {}
        self._excluded: set[str] = set()  # equivocators: neither their bids nor votes count
        self._barred: set[str] = set()  # flooders: their bids are cleared by no one
        self._commitments: dict[str, Commitment] = {}
        # Each node's first vote (seq 0), kept after it re-votes: the union round decides on
        # these, which a later vote cannot change.
        self._first: dict[str, Commitment] = {}
        self._first_named: Counter[str] = Counter()  # bid-set digests the first votes name
        # Kept in step with _commitments (see _keep): how many name each bid set, and how many
        # voters back each (bid set, result). Rescanning the commitments at each new one cost a
        # hundred agents a fifth of their CPU in the feeder-100 soak.
        self._named: Counter[str] = Counter()
        self._tally: Counter[tuple[str, str]] = Counter()
        # Bid sets by digest: our own, and peers' that a commitment we hold names. A peer's list
        # heard before its commitment waits in _unclaimed (one per node).
        self._lists: dict[str, tuple[str, ...]] = {}
        self._unclaimed: dict[str, BidSet] = {}
        self._eligible: frozenset[str] = frozenset()
        self._voter_set: frozenset[str] = frozenset()  # eligible but excluded, kept by _retally
        self._floor = 1  # a majority of the certified roster, fixed with the eligible set
        self._roster_size = 0  # the certified roster's size then (0: not known)
        self._mine: Commitment | None = None
        self._result: Result | None = None
        self._fees: tuple[TradeFee, ...] = ()
        self._fetched = False
        self._fetched_lists = False
        self._union_done = False
        self._split = False  # the union round kept a first vote that had no quorum itself
        # The union round's last merge: the lists it merged, their union, its bids not held.
        self._union: tuple[frozenset[str], list[str], set[str]] | None = None
        # Bumped by every new bid or commitment: agreement, the union round and adoption, tried
        # at every tick, rescan the commitments only when something came in since their last try.
        self._version = 0
        self._agree_tried = -1
        self._union_tried = -1
        self._adopt_tried = -1
        self._last_join: tuple[tuple[str, str], int] | None = None
        self._dissent_counted: set[str] = set()
        # Dissenters judged once their list arrives: bid set digest -> nodes (ordered), so that a
        # commitment after agreement is judged alone, not with a rescan of every commitment.
        self._awaiting: dict[str, dict[str, None]] = {}
        self._verdicts: dict[tuple[str, str], str] = {}  # (bid set, result) -> dissent reason
        # Bid set digest -> the result hash clearing it gives here (None: no set an honest
        # gateway clears), so that each set is cleared once however many claims name it.
        # Forgotten with its list (_drop_unnamed).
        self._cleared: dict[str, str | None] = {}
        self._outcome: Outcome | None = None

    @property
    def state(self) -> State:
        return self._state

    @property
    def outcome(self) -> Outcome | None:
        """What the interval came to here so far (an :class:`Abstained` may turn into an
        :class:`Agreed` with ``late`` set, :meth:`_adopt`)."""
        return self._outcome

    def held(self, node: str) -> Commitment | None:
        """The commitment of ``node`` this session counts (its latest, or none)."""
        return self._commitments.get(node)

    @property
    def bid_set_published(self) -> bool:
        """This node's commitment named a bid set it published apart (not inline)."""
        return self._mine is not None and self._mine.bid_digests is None

    def _fire(self, event: Event) -> None:
        self._state = advance(self._state, event, interval=self.interval)

    # --- inputs ----------------------------------------------------------------------------------

    def on_bid(self, bid: Bid) -> list[SessionAction]:
        """A bid whose signature and membership the caller has verified."""
        if bid.community != self.community:
            return [Rejected("wrong-community")]
        if bid.interval != self.interval:
            return [Rejected("replay")]  # a genuine bid, signed for another interval
        digest = message_digest(bid)
        if digest in self._known:
            return []  # the same bid again: broker redelivery, our own echo, a fetch
        if self.saturated(bid.node):
            return self._flood(bid)
        bus = self._buses.get(bid.node)
        if bus is None:
            bus = self._bus_of(bid.node) if self._bus_of is not None else ""
            if self._feeder is not None and bus not in self._feeder.buses:
                return [Rejected("unknown-bus")]  # its trades could not be routed or charged
            self._buses[bid.node] = bus
            if self._limits_of is not None:
                self._limits[bid.node] = self._limits_of(bid.node)
        self._per_node[bid.node] += 1
        self._known[digest] = bid
        self._version += 1
        first = self._by_seq.setdefault((bid.node, bid.seq), digest)
        if first != digest:
            return self._equivocation(bid, self._known[first])
        if self._state is State.COMMITTED:
            return self._try_agree()  # perhaps the bid we lacked to join the majority
        if self._state is not State.OPEN:
            return []  # kept as evidence of what the peers may have cleared
        if bid.node in self._excluded:
            return [Rejected("excluded")]
        current = self._current.get(bid.node)
        if current is not None and current[0].seq > bid.seq:
            return [Rejected("stale-seq")]
        self._current[bid.node] = bid, digest
        return []

    def saturated(self, node: str) -> bool:
        """``node`` has sent as many distinct bids as it may: anything more is a flood."""
        return self._per_node[node] >= self._max_bids

    def _flood(self, bid: Bid) -> list[SessionAction]:
        """One more distinct verified bid from a node that had sent its limit: none of its bids
        for the interval is cleared, here or (once they hear the flood) by any peer.

        Members that each kept a different handful of a flood (the quota cuts the rest unread,
        and the broker retains only the last) would otherwise commit to different bid sets, and
        the union round would wait for bids no one can fetch. Any member that hears the flood
        hears more than the limit, so they all bar the node's bids alike; no one can be barred
        by another's hand (only its own signature counts), and an honest node never signs more
        bids than the limit for one interval (:meth:`Market.bid
        <protocols.market.market.Market.bid>` refuses). Its vote still counts, as any member's
        does: excluded from voting, as an equivocator is, it would make the union round wait
        while its vote, counted by a peer that has not heard the flood, could tip a majority.
        """
        actions: list[SessionAction] = [Rejected("flood")]
        if bid.node not in self._barred:
            self._barred.add(bid.node)
            heard = tuple(b for b in self._known.values() if b.node == bid.node)
            actions.append(Evidence(self.interval, bid.node, "flood", (*heard, bid)))
        if self._state is State.OPEN:
            self._current.pop(bid.node, None)
        return actions

    def _equivocation(self, message: Bid | Commitment,
                      earlier: Bid | Commitment) -> list[SessionAction]:
        """Two different bids, or commitments, one ``seq``, both signed by their node: it is
        excluded, its bids not cleared and its votes not counted here (the union round allows
        for peers that counted one before they caught it)."""
        actions: list[SessionAction] = [Rejected("equivocation")]
        node = message.node
        if node not in self._excluded:
            self._excluded.add(node)
            self._retally()
            self._version += 1  # fewer voters: a quorum, or the union round, may be in reach
            actions.append(Evidence(self.interval, node, "equivocation", (earlier, message)))
        if self._state is State.OPEN:
            self._current.pop(node, None)
        return actions

    def on_commitment(self, commitment: Commitment) -> list[SessionAction]:
        """A commitment whose signature and membership the caller has verified (the caller keeps
        its envelope, the proof an :class:`Agreed` carries)."""
        refused = self._misplaced(commitment)
        if refused:
            return refused
        if commitment.tariffs != self._tariffs:
            self._foreign.add(commitment.node)
            return [Rejected("tariff-mismatch", f"{commitment.node} prices interval "
                             f"{self.interval} at (retail, feed-in) {commitment.tariffs}, "
                             f"this member at {self._tariffs}")]
        self._foreign.discard(commitment.node)
        held = self._commitments.get(commitment.node)
        if held == commitment:
            return []
        if commitment.seq == 0:
            first = self._first.get(commitment.node)
            if first is not None and first != commitment:
                return self._equivocation(commitment, first)
            self._keep_first(commitment)
        if held is not None and held.seq > commitment.seq:
            return [Rejected("stale-seq")]  # a vote its node has replaced, delivered late
        if held is not None and held.seq == commitment.seq:
            return self._equivocation(commitment, held)
        replaced = self._keep(commitment)
        waiting = self._unclaimed.get(commitment.node)
        if commitment.bid_digests is not None:
            self._lists.setdefault(commitment.bid_set_digest, commitment.bid_digests)
        elif waiting is not None and waiting.set_digest() == commitment.bid_set_digest:
            self._lists[commitment.bid_set_digest] = waiting.bid_digests
            del self._unclaimed[commitment.node]
        if replaced is not None:
            self._stop_awaiting(commitment.node, replaced.bid_set_digest)
            self._drop_unnamed(replaced.bid_set_digest)
        if self._state is State.COMMITTED:
            return self._try_agree()
        if isinstance(self._outcome, Agreed):
            named = commitment.bid_set_digest
            listed = self._awaiting.pop(named, {}) if named in self._lists else {}
            return self._dissent([*listed, commitment.node])
        return []

    def on_bidset(self, bidset: BidSet) -> list[SessionAction]:
        """A peer's list of bid digests (signature and membership verified by the caller)."""
        refused = self._misplaced(bidset)
        if refused:
            return refused
        named = bidset.set_digest()
        if named in self._lists:
            return []
        claimed = self._commitments.get(bidset.node)
        first = self._first.get(bidset.node)
        if (claimed is None or claimed.bid_set_digest != named) and (
                first is None or first.bid_set_digest != named):
            self._unclaimed[bidset.node] = bidset  # its commitment may follow
            return []
        self._lists[named] = bidset.bid_digests
        self._version += 1
        if isinstance(self._outcome, Agreed):
            return self._dissent(list(self._awaiting.pop(named, {})))
        return []

    def _misplaced(self, message: Commitment | BidSet) -> list[SessionAction]:
        """Why a peer's commitment or bid set is not this session's to count, if it is not."""
        if message.community != self.community:
            return [Rejected("wrong-community")]
        if message.interval != self.interval:
            return [Rejected("replay")]
        if message.node in self._excluded:
            return [Rejected("excluded")]
        return []

    def _keep(self, commitment: Commitment) -> Commitment | None:
        """Hold ``commitment`` as its node's, with the counts over commitments in step; returns
        the commitment it replaces."""
        node = commitment.node
        voter = node in self._eligible and node not in self._excluded
        replaced = self._commitments.get(node)
        if replaced is not None:
            _count(self._named, replaced.bid_set_digest, -1)
            if voter:
                _count(self._tally, (replaced.bid_set_digest, replaced.result_hash), -1)
        self._commitments[node] = commitment
        self._named[commitment.bid_set_digest] += 1
        if voter:
            self._tally[commitment.bid_set_digest, commitment.result_hash] += 1
        self._version += 1
        return replaced

    def _keep_first(self, commitment: Commitment) -> None:
        """Hold a node's first vote (and its list, when inline) for the union round."""
        if commitment.node in self._first:
            return
        self._first[commitment.node] = commitment
        self._first_named[commitment.bid_set_digest] += 1
        waiting = self._unclaimed.get(commitment.node)
        if commitment.bid_digests is not None:
            self._lists.setdefault(commitment.bid_set_digest, commitment.bid_digests)
        elif waiting is not None and waiting.set_digest() == commitment.bid_set_digest:
            self._lists.setdefault(commitment.bid_set_digest, waiting.bid_digests)
        self._version += 1

    def _retally(self) -> None:
        """Count the voters' commitments afresh: the voters changed (gate closure, exclusion)."""
        voters = self._voter_set = self._eligible - self._excluded
        self._tally = Counter((c.bid_set_digest, c.result_hash)
                              for node, c in self._commitments.items() if node in voters)

    def _drop_unnamed(self, set_digest: str) -> None:
        """Forget a list no commitment names any more (a peer re-committed), so that a peer
        re-committing over and over cannot grow the session."""
        mine = self._mine
        if ((mine is None or mine.bid_set_digest != set_digest) and not self._named[set_digest]
                and not self._first_named[set_digest]):
            self._lists.pop(set_digest, None)
            self._cleared.pop(set_digest, None)

    def tick(self, now_ms: int) -> list[SessionAction]:
        """Advance to ``now_ms``: close the gate, clear and commit, abstain or start dispatch."""
        timing, k = self._timing, self.interval
        actions: list[SessionAction] = []
        if self._state is State.OPEN and now_ms >= timing.gate_close_ms(k):
            # Who counts towards the quorum is fixed at gate closure, the same instant for all.
            self._eligible = frozenset(self._active(now_ms)) | {self.node}
            self._retally()
            if self._certified is not None:
                self._roster_size = self._certified(now_ms)
                self._floor = self._roster_size // 2 + 1
            self._fire(Event.GATE)
        if self._state is State.GATE_CLOSED and now_ms >= timing.clear_ms(k):
            actions += self._clear_and_commit()
        if self._state is State.COMMITTED:
            if self._agree_tried != self._version:
                self._agree_tried = self._version
                actions += self._try_agree()
            if (self._state is State.COMMITTED and not self._union_done
                    and now_ms >= timing.union_ms(k) and self._union_tried != self._version
                    and self._winner() is None):
                self._union_tried = self._version
                actions += self._union_round()
            if self._state is State.COMMITTED and now_ms >= timing.start_ms(k):
                reason = ("minority" if self._winner() is not None
                          else "split" if self._split else "no-quorum")
                self._fire(Event.ABSTAIN)
                self._outcome = Abstained(k, reason)
                self._fetched = False  # the market dropped that fetch with the outcome
                actions.append(self._outcome)
        if self._state is State.ABSTAINED and self._adopt_tried != self._version:
            self._adopt_tried = self._version
            actions += self._adopt()
        if self._state is State.AGREED and now_ms >= timing.start_ms(k):
            self._fire(Event.START)
        return actions

    def settled(self) -> None:
        """The settlement layer closed the interval (DISPATCHING -> SETTLED)."""
        self._fire(Event.SETTLE)

    # --- clearing and agreement ------------------------------------------------------------------

    def _run(self, with_digests: Collection[tuple[Bid, str]]
             ) -> tuple[Result, tuple[TradeFee, ...], Commitment]:
        """Clear verified bids, each with the digest it was received under (not recomputed:
        canonical JSON and SHA-256 of 100,000 bids would dominate the step)."""
        buses = {bid.node: self._buses[bid.node] for bid, _ in with_digests}
        limits = {bid.node: self._limits[bid.node] for bid, _ in with_digests
                  if bid.node in self._limits}
        if self._offer_caps is not None:
            limits.update(self._offer_caps(limits))
        orders = orders_from_bids(with_digests, buses=buses, limits=limits)
        result = clear(self._mechanism, orders, self._params)
        fees: tuple[TradeFee, ...] | None = None
        if self._feeder is not None:
            result = curtail(result, orders=orders, params=self._params, feeder=self._feeder,
                             bus_of=buses)
            if self._fee_schedule is not None:
                fees = network_fees(result.trades, feeder=self._feeder, bus_of=buses,
                                    schedule=self._fee_schedule)
        digests = tuple(sorted(d for _, d in with_digests))
        set_digest = bid_set_digest(digests)
        self._lists.setdefault(set_digest, digests)
        result_hash = agreed_hash(result, fees)
        self._cleared[set_digest] = result_hash
        commitment = Commitment(
            community=self.community,
            interval=self.interval,
            node=self.node,
            bid_digests=digests if len(digests) <= MAX_INLINE_BIDS else None,
            bid_set_digest=set_digest,
            result_hash=result_hash,
            mechanism=self._mechanism,
            tariffs=self._tariffs,
        )
        return result, fees or (), commitment

    def _commit(
        self, result: Result, fees: tuple[TradeFee, ...], commitment: Commitment
    ) -> Commit:
        """Make ``commitment`` ours, counted at once, with the bid set it names when that is
        not inline."""
        if self._mine is not None:  # a re-vote: numbered past the last, so it replaces it
            commitment = commitment.model_copy(update={"seq": self._mine.seq + 1})
        else:
            self._keep_first(commitment)
        self._result, self._fees, self._mine = result, fees, commitment
        self._keep(commitment)
        listed = None
        if commitment.bid_digests is None:
            listed = BidSet(community=self.community, interval=self.interval, node=self.node,
                            bid_digests=self._lists[commitment.bid_set_digest])
        return Commit(commitment, listed)

    def _clear_and_commit(self) -> list[SessionAction]:
        bids = [pair for node, pair in self._current.items()
                if node not in self._excluded and node not in self._barred]
        result, fees, commitment = self._run(bids)
        self._fire(Event.CLEAR)
        commit = self._commit(result, fees, commitment)
        self._fire(Event.COMMIT)
        return [Cleared(self.interval, result, commitment.result_hash, fees), commit]

    def _voters(self) -> frozenset[str]:
        """The members whose commitments count: fixed with the tally (:meth:`_retally`), as they
        change only at gate closure and on an exclusion, not at every commitment."""
        return self._voter_set

    def _winner(self) -> tuple[str, str] | None:
        """The (bid-set digest, result hash) a quorum of eligible members committed to, if any.

        A quorum is two thirds (``quorum``) of the members this node saw present at the gate,
        and never less than a majority of the certified roster (``certified``). The first part
        keeps a street with some gateways switched off trading; the floor keeps two agents
        whose presence views differ (one that lost its presence subscription sees a handful of
        members) from reaching quorums that share no member: two majorities of one roster
        always overlap, so two different results cannot both be agreed.
        """
        need = max(quorum_size(len(self._voters()), *self._quorum), self._floor)
        return next((key for key, count in self._tally.items() if count >= need), None)

    def _try_agree(self) -> list[SessionAction]:
        winner = self._winner()
        mine = self._mine
        if winner is None or mine is None:
            return []
        actions: list[SessionAction] = []
        if winner != (mine.bid_set_digest, mine.result_hash):
            joined = self._join(winner)
            if joined is None:
                return self._fetch_once()
            actions += joined
        self._fire(Event.QUORUM)
        self._outcome = self._agreed(winner, late=False)
        actions.append(self._outcome)
        return actions + self._dissent()

    def _union_round(self) -> list[SessionAction]:
        """No quorum halfway to the start: vote again, for the roster's majority result or for
        the union of every bid committed to.

        Bids reach members unevenly (a starved process, a lost packet, a bid changed just before
        the gate); when the first commitments are spread over several bid sets, none has a
        quorum and the minority rule moves no one. Every bid listed by a commitment was seen by
        a member before its gate; fetched from the broker's retained copies, their union (a
        node's highest sequence number where it has several) is the same at every member that
        holds the same first votes, so they converge on it. One round only: a second could
        chase a moving set.

        It decides on first votes only (``seq`` 0), once it holds every roster member's but the
        excluded ones': a re-vote cannot change them, so every member deciding sees the same
        ones; a hostile member's re-vote, timed to reach some members before their union round
        and others after, would otherwise show a majority to some and none to others. A vote
        taken back may already count towards a quorum elsewhere, with votes that hostile members
        move there, so a member keeps its first vote while that vote's first voters and as many
        members as may be hostile (a third of the roster, or the excluded, if more) could make a
        quorum. Otherwise it moves, where every member that moves goes: to the result a majority
        of the first votes have, or else to the union of their lists.
        """
        members = max(self._roster_size, len(self._voters()))
        # Counted without a pass over the votes: this runs at every commitment that comes in
        # while votes are still missing, N times an interval.
        first, excluded = self._first, self._excluded
        excluded_held = sum(1 for node in excluded if node in first)
        foreign = sum(1 for node in self._foreign if node not in first and node not in excluded)
        if len(first) - excluded_held + len(excluded) + foreign < members:
            return []  # someone's first vote is unknown: tried again when a commitment comes in
        held = {node: c for node, c in first.items() if node not in excluded}
        voters = self._voters()
        tally = Counter((c.bid_set_digest, c.result_hash) for node, c in held.items()
                        if node in voters)
        own = first.get(self.node)
        if not tally:
            return []
        need = max(quorum_size(len(voters), *self._quorum), self._floor)
        hostile = max((members - 1) // 3, len(excluded))
        kept = 0 if own is None else tally[own.bid_set_digest, own.result_hash]
        if own is not None and kept + hostile >= need:
            self._union_done = True  # it may make a quorum somewhere: kept, for good
            self._split = kept < need and len(tally) > 1
            return []
        top, count = max(tally.items(), key=lambda item: (item[1], item[0]))
        if count > members // 2:
            joined = self._join(top)
            if joined is None:
                return self._fetch_once()
            self._union_done = True
            return joined + self._try_agree()
        # A flooder's own list may name bids of its flood that everyone cut unread.
        named = frozenset(c.bid_set_digest for node, c in held.items()
                          if node not in self._barred)
        if any(d not in self._lists for d in named):
            return self._fetch_once()  # tried again at the next tick, with what it brought
        listed, missing = self._union_of(named)
        if missing:
            return self._fetch_once()
        self._union_done = True
        latest: dict[str, tuple[Bid, str]] = {}
        for d in listed:
            bid = self._known[d]
            if bid.node not in self._excluded and bid.node not in self._barred and (
                    bid.node not in latest or bid.seq > latest[bid.node][0].seq):
                latest[bid.node] = bid, d
        result, fees, commitment = self._run(list(latest.values()))
        mine = self._mine
        if mine is not None and (mine.bid_set_digest, mine.result_hash) == (
                commitment.bid_set_digest, commitment.result_hash):
            return []  # we already hold the union
        commit = self._commit(result, fees, commitment)
        self._fire(Event.RECOMMIT)
        return [Cleared(self.interval, result, commitment.result_hash, fees), commit,
                *self._try_agree()]

    def _union_of(self, named: frozenset[str]) -> tuple[list[str], set[str]]:
        """The sorted union of the held lists ``named``, and which of its bids are not held yet.

        Kept between tries (one union per session): while the fetched bids come in, each
        one retries the round, and merging every member's list again at each was a pass over
        N lists of up to MAX_BIDS_PER_SET digests per bid received."""
        if self._union is None or self._union[0] != named:
            listed = sorted({d for digest in named for d in self._lists[digest]})
            self._union = named, listed, set(listed)
        _, listed, missing = self._union
        missing.difference_update([d for d in missing if d in self._known])
        return listed, missing

    def _adopt(self) -> list[SessionAction]:
        """After abstaining, take the quorum's result as ours once we can reproduce it.

        The agreement is the community's, not this node's: the peers trade against its bid and
        pay for its position whether or not it heard the quorum before the interval started. So
        a node that abstained (commitments late, bids missed) still settles against the agreed
        position, its shortfall balanced by the grid like anyone's; otherwise its counterparties
        pay for energy that no settlement accounts for. It publishes no commitment this late.
        """
        winner = self._winner()
        if winner is None:
            return []
        recomputed = self._recompute(winner)
        if recomputed is None:
            return self._fetch_once()
        self._result, self._fees, _ = recomputed
        self._fire(Event.ADOPT)
        self._outcome = self._agreed(winner, late=True)
        return [self._outcome, *self._dissent()]

    def _agreed(self, winner: tuple[str, str], *, late: bool) -> Agreed:
        """The agreed result, without the committers' envelopes: the market, which verified
        and signed them, adds those."""
        result = self._result
        assert result is not None  # set with self._mine, or by _adopt
        voters = self._voters()
        committed = frozenset(
            node for node, c in self._commitments.items()
            if node in voters and (c.bid_set_digest, c.result_hash) == winner
        )
        position = result.outcomes.of(self.node)
        return Agreed(self.interval, result, winner[1], winner[0], committed, position,
                      self._fees, late)

    def _join(self, winner: tuple[str, str]) -> list[SessionAction] | None:
        """Recompute with the majority's bid set; the commitment to publish if we now match."""
        recomputed = self._recompute(winner)
        if recomputed is None:
            return None
        commit = self._commit(*recomputed)
        self._fire(Event.RECOMMIT)
        return [commit]

    def _recompute(
        self, winner: tuple[str, str]
    ) -> tuple[Result, tuple[TradeFee, ...], Commitment] | None:
        """Clear the majority's bid set ourselves; None while we lack one of its bids or our
        result differs from the majority's."""
        listed = self._lists.get(winner[0])
        if listed is None or any(d not in self._known for d in listed):
            return None
        attempt = (winner, len(self._known))
        if attempt == self._last_join:
            return None  # same bids as last time: the answer cannot have changed
        self._last_join = attempt
        if self._cleared.get(winner[0], winner[1]) != winner[1]:
            return None  # cleared here before, to another result
        cleared = self._clear_listed(winner[0], listed)
        if cleared is None or cleared[2].result_hash != winner[1]:
            return None
        return cleared

    def _clear_listed(
        self, set_digest: str, listed: tuple[str, ...]
    ) -> tuple[Result, tuple[TradeFee, ...], Commitment] | None:
        """Clear the held bids a peer's set lists; None if they are no set an honest gateway
        clears (two bids of one node), kept as such in ``_cleared`` (:meth:`_run` keeps the
        hash of any other)."""
        bids = [(self._known[d], d) for d in listed]
        if len({bid.node for bid, _ in bids}) != len(bids):
            self._cleared[set_digest] = None
            return None
        return self._run(bids)

    def _fetch_once(self) -> list[SessionAction]:
        """Ask the broker for the bids (once per attempt), and for the bid sets when a held
        commitment names one this node has not got (once per interval)."""
        actions: list[SessionAction] = []
        if not self._fetched:
            self._fetched = True
            actions.append(Missing("bids"))
        if not self._fetched_lists and any(
                c.bid_set_digest not in self._lists for c in self._commitments.values()):
            self._fetched_lists = True
            actions.append(Missing("bidsets"))
        return actions

    def _dissent(self, nodes: Collection[str] | None = None) -> list[SessionAction]:
        """Count once per node a commitment that contradicts the agreed result, by its kind:
        every held commitment's at agreement (``nodes`` None), then only those of ``nodes``, the
        ones a new commitment or list can have changed; a dissent whose list has not arrived
        waits for it in ``_awaiting``."""
        agreed = self._outcome
        assert isinstance(agreed, Agreed)
        actions: list[SessionAction] = []
        for node in self._commitments if nodes is None else nodes:
            c = self._commitments.get(node)
            if c is None or node in self._dissent_counted or node == self.node:
                continue
            if (c.bid_set_digest, c.result_hash) != (agreed.bid_set_digest, agreed.result_hash):
                verdict = self._verdict(c)
                if verdict is None:
                    self._awaiting.setdefault(c.bid_set_digest, {})[node] = None
                    continue
                self._dissent_counted.add(node)
                actions.append(Rejected(verdict))
        return actions + self._fetch_once() if self._awaiting else actions

    def _stop_awaiting(self, node: str, set_digest: str) -> None:
        """``node`` committed anew: its earlier dissent no longer waits for its list."""
        waiting = self._awaiting.get(set_digest)
        if waiting is not None:
            waiting.pop(node, None)
            if not waiting:
                del self._awaiting[set_digest]

    def _verdict(self, commitment: Commitment) -> str | None:
        """``wrong-commitment`` when the commitment is provably false: this node holds every bid
        it lists and they clear to another result (or they are no set an honest gateway clears).
        Otherwise ``minority-commitment``: an honest gateway that heard other bids commits just
        like that, and first commitments of members that later joined were once counted as
        wrong, drowning the real liars (docs/reliability.md, the 24-hour soak's run 4). One
        clearing per distinct claim; None while the commitment's bid set has not arrived.
        """
        claim = (commitment.bid_set_digest, commitment.result_hash)
        verdict = self._verdicts.get(claim)
        if verdict is None:
            listed = self._lists.get(commitment.bid_set_digest)
            if listed is None:
                return None
            if any(d not in self._known for d in listed):
                verdict = "minority-commitment"
            else:
                named = commitment.bid_set_digest
                if named not in self._cleared:
                    self._clear_listed(named, listed)
                honest = self._cleared.get(named) == commitment.result_hash
                verdict = "minority-commitment" if honest else "wrong-commitment"
            self._verdicts[claim] = verdict
        return verdict
