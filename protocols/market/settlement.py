"""After an interval: this node's signed settlement, the peers' settlements checked, reputation.

Sans-I/O, like the session: the market has already checked a settlement's signature and its
signer's certificate, and hands over the parsed :class:`Settlement`; what comes back is the
settlement accepted or a :class:`Rejected` with the reason to count. Nothing here reads the clock.

A peer's settlement is only as good as what it can be checked against, so each one is held until
this gateway knows the *agreed* result of its interval, and then accepted only if

* every figure is what :func:`protocols.settlement.settle` gives for the node's agreed position
  and the metered ``delivered_wh`` it reports, plus the network fees it owes as a buyer
  ("settle-mismatch": a node cannot settle a position other than the one the quorum agreed, nor
  price its deviation at anything but the interval's tariffs);
* where this gateway holds the node's meter key, the meter's HMAC tag covers the counters
  ("meter-bad-tag", "meter-malformed"), the reading is newer than the node's reading for any
  earlier interval and older than any later one ("meter-replayed"), and when the node's reading
  for the interval before is known, ``delivered_wh`` less what went over the DC bus (``bus_wh``)
  is the counters' net change since ("meter-mismatch");
* it is the node's only settlement for the interval ("settle-conflict": a second, different one).

Meter keys are symmetric (HMAC): only the gateway of the meter's home and whoever provisioned it
(the community authority) hold one, so ordinary neighbours check the figures, and an auditor with
the keys checks the readings too.

Every accepted settlement goes into the book's :class:`~protocols.reputation.ReputationHistory`,
from which each node's reputation for an interval follows as a function of the settlements held,
not of the order they were accepted in (:mod:`protocols.reputation`): every gateway caps a
member's offers by it in clearing. So does a settlement held for an interval this gateway has no
agreed result of (it abstained): its figures are then the member's word, as they are for an
interval from before the gateway started, and a gateway that missed one interval still caps as
its peers do; it leaves the history again if the agreed result comes and refutes it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from protocols.clearing import NodeOutcome, Tariffs
from protocols.market.actions import Agreed
from protocols.messages import Settlement
from protocols.metering import RejectedReading, verify_reading
from protocols.reputation import ReputationHistory
from protocols.settlement import ReputationRule, settle
from protocols.signing import Rejected


@dataclass(frozen=True, slots=True, kw_only=True)
class TaggedMeterReading:
    """The meter's tagged cumulative counters at the end of an interval (vendor model 64210)."""

    seq: int
    import_wh: int
    export_wh: int
    tag: str  # hex HMAC-SHA256 over (device id, seq, import, export)


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterKey:
    """What checking one node's meter tags takes: the meter's device id and its HMAC key."""

    device_id: str
    key: bytes


def no_position(node: str) -> NodeOutcome:
    """The position of a node without a bid in the result (or without a result): none, so all it
    metered went through the grid."""
    return NodeOutcome(node, 0, 0, 0, 0, 0, 0, 0, 0)


def expected_settlement(
    agreed: Agreed,
    *,
    community: str,
    node: str,
    delivered_wh: int,
    reading: TaggedMeterReading,
    tariffs: Tariffs,
    bus_wh: int = 0,
) -> Settlement:
    """The one settlement ``node`` may publish for ``agreed`` with this metered delivery.

    A node without a bid in the agreed result settles a zero position: everything it metered went
    through the grid. ``money`` adds the network fees the node owes as a buyer (the agreed result
    charges them to the buyer of each trade), so one figure is what the home pays.
    """
    position = agreed.result.outcomes.of(node) or no_position(node)
    figures = settle(position, delivered_wh=delivered_wh, tariffs=tariffs)
    fees = sum(fee.fee for fee in agreed.fees if fee.buyer == node)
    return Settlement(
        community=community, interval=agreed.interval, node=node,
        cleared_wh=figures.cleared_wh, delivered_wh=figures.delivered_wh, bus_wh=bus_wh,
        grid_import_wh=figures.grid_import_wh, grid_export_wh=figures.grid_export_wh,
        money=figures.money + fees, meter_import_wh=reading.import_wh,
        meter_export_wh=reading.export_wh, meter_seq=reading.seq, meter_tag=reading.tag,
    )


class SettlementBook:
    """Agreed results by interval, settlements held and accepted, and the reputation history."""

    def __init__(
        self,
        *,
        community: str,
        tariffs: Tariffs | Callable[[int], Tariffs],
        rule: ReputationRule | None = None,
        meter_keys: Mapping[str, MeterKey] | None = None,
    ) -> None:
        """``tariffs``: the grid tariffs, or each interval's (:mod:`protocols.market.tariffs`)."""
        self.community = community
        self._tariffs = tariffs if callable(tariffs) else lambda _interval: tariffs
        self.history = ReputationHistory(rule or ReputationRule())
        self._meter_keys = dict(meter_keys or {})
        self._agreed: dict[int, Agreed] = {}
        self._pending: dict[int, dict[str, Settlement]] = {}
        self._accepted: dict[int, dict[str, Settlement]] = {}
        self._floor = 0  # intervals below it are forgotten

    def reputation(self, node: str, interval: int) -> int:
        """``node``'s reputation (per-mille) for clearing ``interval``."""
        return self.history.reputation(node, interval)

    def agreed(self, interval: int) -> Agreed | None:
        return self._agreed.get(interval)

    def settlements(self, interval: int) -> dict[str, Settlement]:
        """The accepted settlements of ``interval`` by node."""
        return dict(self._accepted.get(interval, {}))

    def on_agreed(self, agreed: Agreed) -> list[Settlement | Rejected]:
        """The quorum's result of an interval: check the settlements held for it."""
        self._agreed[agreed.interval] = agreed
        held = self._pending.pop(agreed.interval, {})
        return [self._check(agreed, s) for _, s in sorted(held.items())]

    def on_settlement(self, settlement: Settlement) -> list[Settlement | Rejected]:
        """A settlement whose signature and membership the caller verified; [] while held."""
        if settlement.community != self.community:
            return [Rejected("wrong-community")]
        if settlement.interval < self._floor:
            return [Rejected("stale")]  # its interval is closed here for good
        agreed = self._agreed.get(settlement.interval)
        if agreed is None:
            held = self._pending.setdefault(settlement.interval, {})
            earlier = held.setdefault(settlement.node, settlement)
            if earlier != settlement:
                return [Rejected("settle-conflict")]
            self.history.add(settlement)
            return []
        return [self._check(agreed, settlement)]

    def forget(self, interval: int) -> list[Rejected]:
        """Close ``interval`` and every one before it; settlements still held for it could never
        be checked, and later ones are refused as "stale"."""
        self._floor = max(self._floor, interval + 1)
        self._agreed.pop(interval, None)
        self._accepted.pop(interval, None)
        held = self._pending.pop(interval, {})
        return [Rejected("settle-unverifiable") for _ in held]

    def _check(self, agreed: Agreed, settlement: Settlement) -> Settlement | Rejected:
        node, k = settlement.node, settlement.interval
        accepted = self._accepted.setdefault(k, {})
        earlier = accepted.get(node)
        if earlier is not None:
            return settlement if earlier == settlement else Rejected("settle-conflict")
        reading = TaggedMeterReading(
            seq=settlement.meter_seq, import_wh=settlement.meter_import_wh,
            export_wh=settlement.meter_export_wh, tag=settlement.meter_tag)
        expected = expected_settlement(
            agreed, community=self.community, node=node, delivered_wh=settlement.delivered_wh,
            reading=reading, tariffs=self._tariffs(k), bus_wh=settlement.bus_wh,
        )
        if settlement != expected:
            self.history.discard(settlement)
            return Rejected("settle-mismatch")
        meter = self._check_meter(settlement)
        if meter is not None:
            self.history.discard(settlement)
            return meter
        accepted[node] = settlement
        self.history.add(settlement)
        return settlement

    def _check_meter(self, settlement: Settlement) -> Rejected | None:
        key = self._meter_keys.get(settlement.node)
        if key is None:
            return None
        node, k, seq = settlement.node, settlement.interval, settlement.meter_seq
        before = [(j, s) for j, by_node in self._accepted.items() if j < k
                  and (s := by_node.get(node)) is not None]
        later = [s.meter_seq for j, by_node in self._accepted.items() if j > k
                 and (s := by_node.get(node)) is not None]
        last_seq = max((s.meter_seq for _, s in before), default=None)
        checked = verify_reading(key.key, key.device_id, seq, settlement.meter_import_wh,
                                 settlement.meter_export_wh, settlement.meter_tag, last_seq)
        if isinstance(checked, RejectedReading):
            return Rejected(f"meter-{checked.reason}")
        if any(seq >= other for other in later):
            return Rejected("meter-replayed")
        previous = next((s for j, s in before if j == k - 1), None)
        if previous is not None:
            change = (settlement.meter_import_wh - previous.meter_import_wh
                      - settlement.meter_export_wh + previous.meter_export_wh)
            if change != settlement.delivered_wh - settlement.bus_wh:
                return Rejected("meter-mismatch")
        return None
