"""What a home's gateway tells its observer (the demo, the community harness, tests): one event
per bid, per setpoint that starts an interval, per interval that ends and per interval settled."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.dispatch import Decision
from gateway.ems import Plan
from protocols.market import Abstained, Agreed
from protocols.settlement import SettlementFigures


@dataclass(frozen=True, slots=True)
class BidMade:
    node: str
    interval: int
    plan: Plan


@dataclass(frozen=True, slots=True)
class IntervalEnded:
    """``interval`` ended here and its closing meter reading was taken. Its
    :class:`IntervalClosed` (settlement and block) follows once the market's outcome is final:
    at once when it was agreed in time, up to an interval later when it was not (see
    :class:`gateway.home.ending.EndedIntervals`); in interval order either way."""

    node: str
    interval: int


@dataclass(frozen=True, slots=True)
class IntervalClosed:
    node: str
    interval: int
    outcome: Agreed | Abstained | None
    metered_wh: int
    setpoint_w: int
    soc_pct: float
    settlement: SettlementFigures | None
    in_market: bool
    """False for the interval already running when the gateway started (it never traded it)."""


@dataclass(frozen=True, slots=True)
class SetpointWritten:
    node: str
    interval: int
    decision: Decision
    soc_pct: float


HomeEvent = BidMade | IntervalEnded | IntervalClosed | SetpointWritten
