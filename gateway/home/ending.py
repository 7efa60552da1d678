"""An interval's end: its closing meter reading taken and handed on, then, once the market's
outcome for it is final, its settlement and block (:class:`gateway.home.closing.IntervalCloser`).

The reading that closes one interval opens the next, so no metered Wh falls between two. With a
meter key, a delivery counts only if both readings' tags verified; otherwise the interval is
settled with the grid as undelivered (``delivered_wh`` 0) and, having no reading to back it,
publishes no settlement. On a DC bus the delivery also counts what the converter moved over the
bus: the trade flows there, not through the meter.

An ended interval waits while the market may still agree or adopt it, and the ones after it wait
behind it, so blocks stay in interval order.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from gateway.devices import Battery, BatteryReading, Meter, MeterReading
from gateway.devices.meter import verify_meter_reading
from gateway.home.closing import IntervalCloser
from gateway.home.devices import Device
from gateway.home.events import HomeEvent, IntervalClosed, IntervalEnded
from gateway.home.records import IntervalRecord, NodeState
from gateway.market.agent import MarketAgent
from protocols.market import Abstained, Agreed, MeterKey
from protocols.metering import RejectedReading

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Ended:
    """An interval as it was measured when it ended, waiting for the market's final outcome."""

    interval: int
    record: IntervalRecord | None
    metered_wh: int
    delivered_wh: int
    """What settles: the metered energy and the DC bus's part, 0 if the meter is not trusted."""
    bus_wh: int
    meter: MeterReading | None
    """The closing reading, None when it is not to be trusted (``meter_problem`` says why)."""
    meter_problem: str
    setpoint_w: int
    soc_pct: float


class EndedIntervals:
    """Ends this home's intervals in order and settles each once its outcome is final."""

    def __init__(
        self, *, node: str, state: NodeState, meter: Device[Meter, MeterReading] | None,
        battery: Device[Battery, BatteryReading] | None, meter_key: MeterKey | None,
        bus_wh: Callable[[IntervalRecord], int], agent: MarketAgent, closer: IntervalCloser,
        ended: Callable[[], None], on_event: Callable[[HomeEvent], None],
    ) -> None:
        """``bus_wh``: what the converter moved over the bus in a record's interval (0 without
        one); ``ended``: called as each interval ends, before its event (the forecaster is saved
        there)."""
        self.node = node
        self._state = state
        self._meter, self._battery = meter, battery
        self._meter_key = meter_key
        self._meter_seq: int | None = None  # of the last reading whose tag verified
        self._bus_wh = bus_wh
        self._agent = agent
        self._closer = closer
        self._ended_hook = ended
        self._on_event = on_event
        self._ended: deque[_Ended] = deque()  # ended, not settled yet: oldest first
        #: Own meter readings refused for settlement, by reason ("meter-bad-tag", ...).
        self.meter_rejections: Counter[str] = Counter()

    def end(self, k: int) -> None:
        """Take interval ``k``'s closing meter reading and hand it to ``k + 1``; ``k`` is settled
        by :meth:`settle`."""
        record = self._state.records.pop(k, None)
        meter = None if self._meter is None else self._meter.fresh()
        metered = 0
        end_checked = False
        if meter is not None:
            net_wh = meter.import_wh - meter.export_wh
            if record is not None and record.meter_start_wh is not None:
                metered = round(net_wh - record.meter_start_wh)
            end_checked = self._meter_checked(k, meter)
            following = self._state.record(k + 1)
            following.meter_start_wh = net_wh
            following.meter_start_checked = end_checked
        trusted = self._meter_key is None or (
            end_checked and record is not None and record.meter_start_checked)
        bus = self._bus_wh(record) if record is not None else 0
        self._ended_hook()
        battery = None if self._battery is None else self._battery.fresh()
        self._ended.append(_Ended(
            interval=k, record=record, metered_wh=metered,
            delivered_wh=metered + bus if trusted else 0, bus_wh=bus,
            meter=meter if trusted else None,
            meter_problem="" if trusted else "meter reading not verified",
            setpoint_w=self._state.setpoint_w,
            soc_pct=battery.soc_pct if battery is not None else float("nan")))
        self._on_event(IntervalEnded(node=self.node, interval=k))

    def settle(self) -> None:
        """Settle the ended intervals whose outcome is final, oldest first, each into its
        block."""
        while self._ended:
            ended = self._ended[0]
            k = ended.interval
            outcome: Agreed | Abstained | None = None
            in_market = k >= self._state.first_traded
            if in_market:
                outcome = self._outcome(ended)
                if outcome is None:
                    return
            self._ended.popleft()
            figures = None
            if outcome is not None:
                figures = self._closer.close(
                    k, outcome, delivered_wh=ended.delivered_wh, meter=ended.meter,
                    bus_wh=ended.bus_wh, meter_problem=ended.meter_problem).figures
            self._on_event(IntervalClosed(
                node=self.node, interval=k, outcome=outcome, metered_wh=ended.metered_wh,
                setpoint_w=ended.setpoint_w, soc_pct=ended.soc_pct, settlement=figures,
                in_market=in_market,
            ))

    def _outcome(self, ended: _Ended) -> Agreed | Abstained | None:
        """What a traded interval that ended settles against: the result it dispatched, else the
        one the agent agreed or adopted, else, once the agent can no longer agree or adopt it,
        an abstention (settled with the grid); None while it still can.

        The peers settle their side of this node's trades against the quorum's result whether or
        not it heard that result in time, so settling an interval as abstained before the agent
        is done with it would leave their P2P payments unmatched. A result known only after the
        interval ended, or heard too late to dispatch, is settled only (``late``): the interval
        ran in safe mode. Dispatching a position from the middle of its interval would squeeze
        all of it into the time left, and on a DC bus the members that adopted it at once would
        push more current than the master can absorb.
        """
        k, record = ended.interval, ended.record
        dispatched = record.outcome if record is not None else None
        if isinstance(dispatched, Agreed):
            return dispatched
        agreed = self._agent.agreed(k)
        if agreed is not None:
            return replace(agreed, late=True)
        if self._agent.undecided(k):
            return None
        # No quorum was heard (broker away, commitments lost): the interval ran in safe mode and
        # its metered energy is settled with the grid.
        return dispatched or Abstained(interval=k, reason="no-outcome")

    def _meter_checked(self, k: int, meter: MeterReading) -> bool:
        """Whether the meter's tag on ``meter`` verifies (True when no key is held to check it);
        a refused reading is counted and logged, never raised."""
        key = self._meter_key
        if key is None:
            return True
        checked = verify_meter_reading(meter, device_id=key.device_id, key=key.key,
                                       last_seq=self._meter_seq)
        if isinstance(checked, RejectedReading):
            self.meter_rejections[f"meter-{checked.reason}"] += 1
            log.warning("%s: meter reading closing interval %d refused (%s): the interval "
                        "settles with the grid as undelivered", self.node, k, checked.reason)
            return False
        self._meter_seq = checked.seq
        return True
