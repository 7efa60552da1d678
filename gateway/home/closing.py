"""Closing an ended interval for one home: its settlement, signed and published when it can be,
and its ledger block.

The gateway closes each interval this way (:mod:`gateway.home.ending`), and so does the
feeder-100 soak for each of its hundred homes, from the same Modbus meter readings: one path from
a meter's tagged counters to a signed ``Settlement`` on the broker and a block in the home's
hash-chained ledger.

A settlement is signed only for an agreed interval whose closing reading verified and carries
the meter's tag (``meter`` not None); otherwise the interval is settled locally, with the grid, and
the block says why. The block of ``k`` is written at once, with this node's signed settlement, so
a crash never loses a settled interval. The peers settle ``k`` at the same moment, so theirs arrive
after it: each block carries the peers' verified settlements accepted since the block before (each
names its interval), and every one is written exactly once.

Every ended interval gets its block, whatever the meter said: a delivery no home can make (more
than a settlement may carry, ``MAX_ENERGY_WH``: a meter replaced or reset mid-interval, a counter
gone wild) is settled as undelivered, counted, and the block says why; a settlement the message
schema cannot carry is settled locally only. Nothing the peers would refuse is published.

The settlements a block carries are also what a restarted gateway takes its members' reputations
back from (:func:`ledgered_settlements`), so that it caps offers as its peers do.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from gateway.devices import MeterReading
from gateway.ledger import Ledger
from gateway.market.agent import MarketAgent
from protocols.ledger import Block, quorum_record
from protocols.market import Abstained, Agreed, MarketError, TaggedMeterReading
from protocols.market.settlement import no_position
from protocols.messages import MAX_ENERGY_WH, Settlement, SignedEnvelope
from protocols.settlement import ReputationRule, SettlementFigures, settle
from protocols.signing import Rejected, verify

log = logging.getLogger(__name__)

_PEER_LOOKBACK = 8
"""Intervals back a block looks for peers' settlements: longer than the agent keeps them."""


@dataclass(frozen=True, slots=True)
class Closed:
    """What closing an interval produced: the home's figures, its signed settlement if one was
    published, and its block (None if the ledger already held the interval: a restart)."""

    figures: SettlementFigures
    settlement: SignedEnvelope | None
    block: Block | None


class IntervalCloser:
    """Settles and records one home's ended intervals, in order."""

    def __init__(self, *, node: str, agent: MarketAgent, ledger: Ledger) -> None:
        self.node = node
        self._agent = agent
        self._ledger = ledger
        self._ledgered: dict[int, set[str]] = {}  # peers' settlements already in a block
        #: Closing meter figures refused for settlement, by reason ("meter-jump", ...).
        self.meter_rejections: Counter[str] = Counter()

    def close(self, k: int, outcome: Agreed | Abstained, *, delivered_wh: int,
              meter: MeterReading | None, bus_wh: int = 0, meter_problem: str = "") -> Closed:
        """Settle interval ``k`` against ``outcome`` and write its block.

        ``delivered_wh`` is the metered net energy (+ import), ``bus_wh`` the part of it that
        went over the DC bus, ``meter`` the reading that closed the interval (None when it is
        not to be trusted, ``meter_problem`` then says why).
        """
        if max(abs(delivered_wh), abs(bus_wh)) > MAX_ENERGY_WH:
            self.meter_rejections["meter-jump"] += 1
            meter_problem = (f"metered {delivered_wh} Wh (bus {bus_wh} Wh) in one interval, more "
                             f"than the {MAX_ENERGY_WH} Wh a settlement carries: settled as "
                             "undelivered")
            log.warning("%s: interval %d %s", self.node, k, meter_problem)
            delivered_wh, bus_wh, meter = 0, 0, None
        signed = None
        if isinstance(outcome, Agreed) and meter is not None:
            signed = self._sign(k, delivered_wh, meter, bus_wh=bus_wh)
        if signed is None:
            position, fees = no_position(self.node), 0
            if isinstance(outcome, Agreed):
                # the same money a signed settlement carries: the buyer's network fees included
                position = outcome.position or position
                fees = sum(fee.fee for fee in outcome.fees if fee.buyer == self.node)
            figures = settle(position, delivered_wh=delivered_wh, tariffs=self._agent.tariffs(k))
            figures = figures._replace(money=figures.money + fees)
        else:
            figures = SettlementFigures(*(getattr(signed[1], name)
                                          for name in SettlementFigures._fields))
        peers = self._unledgered_peers(k)
        block = self._ledger.append(
            interval=k,
            status="agreed" if isinstance(outcome, Agreed) else "abstained",
            content=ledger_content(
                outcome, figures, settlement=None if signed is None else signed[0],
                peers=[envelope for _, _, envelope in peers], meter_problem=meter_problem),
            certificates=self._committers(outcome),
        )
        if block is not None:
            for j, node, _ in peers:
                self._ledgered.setdefault(j, set()).add(node)
        return Closed(figures, None if signed is None else signed[0], block)

    def _sign(self, k: int, delivered_wh: int, meter: MeterReading, *, bus_wh: int
              ) -> tuple[SignedEnvelope, Settlement] | None:
        """This node's signed settlement of an agreed interval, published by the agent; None
        (settled locally only, with the reason logged) when it cannot be made."""
        if meter.seq is None or meter.tag is None:
            log.warning("%s: the meter publishes no tagged counters: interval %d settled "
                        "locally only", self.node, k)
            return None
        reading = TaggedMeterReading(seq=meter.seq, import_wh=meter.import_wh,
                                     export_wh=meter.export_wh, tag=meter.tag)
        try:
            envelope = self._agent.settle(k, delivered_wh=delivered_wh, meter_reading=reading,
                                          bus_wh=bus_wh)
        except MarketError as exc:
            log.warning("%s: interval %d settled locally only: %s", self.node, k, exc)
            return None
        except ValidationError as exc:  # a figure past what the message schema carries
            self.meter_rejections["settlement-unrepresentable"] += 1
            log.warning("%s: interval %d settled locally only: its settlement does not fit the "
                        "message schema: %s", self.node, k,
                        "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                  for e in exc.errors()))
            return None
        verified = verify(envelope, expected_kind="settle")
        assert not isinstance(verified, Rejected) and isinstance(verified.body, Settlement)
        return envelope, verified.body

    def _committers(self, outcome: Agreed | Abstained) -> list[SignedEnvelope]:
        """The certificates of the members whose commitments agreed ``outcome``: the ledger's
        proof that the quorum was one of members."""
        if not isinstance(outcome, Agreed):
            return []
        held = (self._agent.certificate(node) for node in sorted(outcome.committed_by))
        return [cert for cert in held if cert is not None]

    def _unledgered_peers(self, k: int) -> list[tuple[int, str, SignedEnvelope]]:
        """The peers' accepted settlements of intervals up to ``k`` not yet in a block."""
        for old in [j for j in self._ledgered if j < k - _PEER_LOOKBACK]:
            del self._ledgered[old]
        return [
            (j, node, envelope)
            for j in range(k - _PEER_LOOKBACK, k + 1)
            for node, envelope in sorted(self._agent.signed_settlements(j).items())
            if node != self.node and node not in self._ledgered.get(j, set())
        ]


def ledger_content(
    outcome: Agreed | Abstained,
    figures: SettlementFigures,
    *,
    settlement: SignedEnvelope | None = None,
    peers: list[SignedEnvelope] | None = None,
    meter_problem: str = "",
) -> dict[str, Any]:
    """The ledger block content of one interval for this node.

    ``outcome`` holds the settled figures (metered delivery against the cleared position, every
    deviation at the grid tariffs): that is what the owner pays or is paid, so billing exports
    and "money today" read it directly. ``settlement`` is this node's signed settlement as
    published, ``peer_settlements`` the peers' verified ones accepted since the block before, as
    their signers sent them, so anyone can check the ledger against the signatures (and, holding
    the meter keys, the tags) without trusting this gateway; ``quorum`` the signed commitments
    that agreed the result (:func:`protocols.ledger.quorum_record`); ``meter`` says why a
    reading was not used.
    """
    own = figures._asdict()
    extra: dict[str, Any] = {}
    if settlement is not None:
        extra["settlement"] = settlement.model_dump()
    if peers:
        extra["peer_settlements"] = [envelope.model_dump() for envelope in peers]
    if meter_problem:
        extra["meter"] = meter_problem
    if isinstance(outcome, Abstained):
        return {"reason": outcome.reason, "outcome": own, **extra}
    mine = outcome.position or no_position("")
    own.update(bought_wh=mine.bought_wh, sold_wh=mine.sold_wh)
    if outcome.late:
        extra["adopted_late"] = True  # dispatched in safe mode, settled against the quorum
    return {
        "result_hash": outcome.result_hash,
        "bid_set_digest": outcome.bid_set_digest,
        "price": outcome.result.price,
        "committed_by": sorted(outcome.committed_by),
        "quorum": quorum_record(outcome.commitments),
        "outcome": own,
        **extra,
    }


def ledgered_settlements(ledger: Ledger, rule: ReputationRule) -> list[SignedEnvelope]:
    """The signed settlements (the node's own and its peers') in the ledger's blocks recent enough
    to count towards a reputation under ``rule``, as their signers sent them.

    A peer's settlement of interval j is written into a block up to ``_PEER_LOOKBACK`` intervals
    after j, so that many more blocks are read. An entry that is not a signed message is skipped
    and logged (the market verifies the rest when it takes them back).
    """
    last = ledger.last()
    if last is None:
        return []
    since = last.interval - rule.lag - rule.window - _PEER_LOOKBACK
    found: list[SignedEnvelope] = []
    for block, _ in ledger.blocks(from_interval=max(since, 0)):
        own = block.content.get("settlement")
        peers = block.content.get("peer_settlements") or []
        for data in ([own] if own is not None else []) + list(peers):
            try:
                found.append(SignedEnvelope.model_validate(data))
            except ValidationError:
                log.warning("ledger block %d (interval %d): a settlement entry is not a signed "
                            "message; not restored", block.height, block.interval)
    return found
