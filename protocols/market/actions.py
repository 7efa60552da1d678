"""What a :class:`~protocols.market.market.Market` answers with, in the order to act on it.

Three actions are for its I/O adapter to carry out on the broker: :class:`Publish`,
:class:`Fetch` (subscribe to what the broker retains under a filter) and :class:`Forget` (drop
such a filter). The rest are news: :class:`Cleared` for the log, an :class:`Outcome` of an
interval to hand on, :class:`Evidence` of misbehaviour with its signed proof, and
:class:`~protocols.signing.Rejected`, a peer message refused, with the reason to count.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.clearing import NodeOutcome, Result
from protocols.messages import Bid, Commitment, SignedEnvelope
from protocols.network import TradeFee
from protocols.signing import Rejected


@dataclass(frozen=True, slots=True)
class Publish:
    topic: str
    payload: bytes
    retain: bool


@dataclass(frozen=True, slots=True)
class Fetch:
    """Ask the broker for what it retains under ``topic_filter`` (bids we missed, peers' bid
    sets)."""

    topic_filter: str


@dataclass(frozen=True, slots=True)
class Forget:
    """Drop the filter a :class:`Fetch` added: what it was for is done."""

    topic_filter: str


@dataclass(frozen=True, slots=True)
class Cleared:
    interval: int
    result: Result
    result_hash: str
    fees: tuple[TradeFee, ...] = ()


@dataclass(frozen=True, slots=True)
class Agreed:
    """A quorum committed to this result; ``position`` is this node's outcome (None: no bid);
    ``fees`` the network fee of every trade (empty without a fee schedule); ``late``: learnt only
    after this node had abstained (it dispatched in safe mode, and settles against it);
    ``commitments``: the signed commitments of ``committed_by`` as their signers sent them (by
    node), the proof anyone can re-verify that a quorum agreed."""

    interval: int
    result: Result
    result_hash: str
    bid_set_digest: str
    committed_by: frozenset[str]
    position: NodeOutcome | None
    fees: tuple[TradeFee, ...] = ()
    late: bool = False
    commitments: tuple[SignedEnvelope, ...] = ()


@dataclass(frozen=True, slots=True)
class Abstained:
    """Safe mode for the interval: "no-quorum" (no result reached one), "split" (none did, and the
    first votes were split so that no side could move without risking a second quorum, see
    :meth:`~protocols.market.session.IntervalSession._union_round`) or "minority" (one did, and
    we could not reproduce it from the bids we hold)."""

    interval: int
    reason: str


@dataclass(frozen=True, slots=True)
class Evidence:
    """Proof that ``node`` misbehaved: for equivocation, the two signed-over bodies (bids, or
    commitments, with one ``seq``); for a flood, every distinct bid body of the interval heard
    from it, one past the limit."""

    interval: int
    node: str
    reason: str
    messages: tuple[Bid | Commitment, ...]


Outcome = Agreed | Abstained
Action = Publish | Fetch | Forget | Cleared | Agreed | Abstained | Evidence | Rejected
