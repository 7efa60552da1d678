"""The home's live state: one record per interval in play, and what the controllers last did.

Written only by the node's own tasks (the trader plans, the outcome watchers agree, the battery
controller and the DC link measure, the interval's end hands its closing reading on), read by all
of them and by the owner's status. No task waits on another's I/O to read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.devices import MeterReading
from gateway.dispatch import Decision, IntervalTarget
from gateway.ems import Plan
from gateway.home.dc_dispatch import ConverterCommand
from protocols.market import Abstained, Agreed


@dataclass(slots=True)
class IntervalRecord:
    """One interval as this home plans, trades, drives and measures it."""

    plan: Plan | None = None
    outcome: Agreed | Abstained | None = None
    meter_start_wh: float | None = None
    meter_start_checked: bool = False
    """The opening reading is the previous interval's closing one and its tag verified."""
    last_decision: Decision | None = None
    dc_start_wh: float | None = None
    """The converter's bus-side energy counter (+ into the home) when the interval opened."""

    def cleared_wh(self) -> int:
        """The agreed position's net energy (+ bought): on a DC bus, what flows over the bus."""
        assert isinstance(self.outcome, Agreed)
        position = self.outcome.position
        return 0 if position is None else position.bought_wh - position.sold_wh

    def target(self, meter: MeterReading | None, *, length_s: float
               ) -> tuple[IntervalTarget | None, str]:
        """What the meter should follow over this interval, or None and why not (safe mode).

        The meter follows the *cleared* position, not the plan's residual: what was not sold
        stays home (the battery stores it for the evening rather than exporting it at feed-in),
        and the battery never drains to export more than a neighbour bought.
        """
        if meter is None:
            return None, "meter stale"
        if self.plan is None:
            return None, "no plan for this interval"
        if not isinstance(self.outcome, Agreed):
            reason = self.outcome.reason if isinstance(self.outcome, Abstained) else "pending"
            return None, f"no agreement ({reason})"
        return IntervalTarget(meter_wh=self.cleared_wh(), length_s=length_s), ""


@dataclass(slots=True)
class NodeState:
    """What the tasks share and the owner's status reads."""

    records: dict[int, IntervalRecord] = field(default_factory=dict)
    setpoint_w: int = 0
    safe_reason: str = ""
    converter: ConverterCommand | None = None
    """The DC-DC converter's last command written (None without a converter)."""
    first_traded: int = 2**62
    """The first interval this node bid for (set when it starts trading): no outcome is awaited
    before it."""

    def record(self, k: int) -> IntervalRecord:
        """Interval ``k``'s record, made empty if it has none yet."""
        return self.records.setdefault(k, IntervalRecord())
