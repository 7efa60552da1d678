"""The trader: plans each interval ahead of its gate closure and bids what the plan leaves over.

The plan is the day's (:mod:`gateway.plan`: a linear programme over the learned day ahead,
priced with the tariff schedule and bounded by the grid operator's limits), re-made for every
interval from fresh readings; its bid is the curve of what energy in the interval is worth to the
home. With ``[plan] planner = "heuristic"``, whenever the solver fails, and while the PV
inverter is silent (self-consumption alone), the heuristic plans
(:func:`gateway.ems.plan_interval`: the home's own battery first, only the residual offered).
Either way it is made from the forecaster's profile and the devices' fresh readings, and not at
all while the meter is stale (nothing to settle on). A bid stands until its gate, so the offer is
kept no larger than what the devices can still deliver (:meth:`Trader._keep_offer`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from gateway.clock import Clock
from gateway.devices import Battery, BatteryReading, Meter, MeterReading, PvInverter, PvReading
from gateway.ems import BatteryState, Plan, Preferences, plan_interval
from gateway.envelope import BatteryEnvelope
from gateway.forecast import DAY_S, HomeForecaster
from gateway.home.battery import device_envelope
from gateway.home.devices import Device
from gateway.home.events import BidMade, HomeEvent
from gateway.home.faults import Faults
from gateway.home.grid_point import meter_floor_w
from gateway.home.loads import FLEX_MARGIN_INTERVALS, LoadsController
from gateway.home.records import NodeState
from gateway.lookahead import Ahead, horizon
from gateway.market.agent import MarketAgent
from gateway.plan import GridLimits, Outcome, Planner, TariffSchedule
from gateway.plan.bidding import bid_plan, day_problem, horizon_steps
from gateway.plan.planner import band
from protocols.market import MarketError, Timing
from protocols.messages import MAX_ENERGY_WH, curve_head

log = logging.getLogger(__name__)

PV_SILENT = "pv-silent"
"""Why the heuristic plans in the optimiser's place while the PV inverter is silent (a fallback
reason, as the solver's are)."""


class Trader:
    """Bids for each interval from the first whose bid time is still ahead, until cancelled."""

    def __init__(
        self, *, node: str, agent: MarketAgent, meter: Device[Meter, MeterReading] | None,
        battery: Device[Battery, BatteryReading] | None, pv: Device[PvInverter, PvReading] | None,
        loads: LoadsController, envelope: BatteryEnvelope, schedule: TariffSchedule,
        limits: GridLimits | None, planner: Planner | None, bus_cap_w: int | None,
        prefs: Callable[[], Preferences], forecaster: HomeForecaster, state: NodeState,
        timing: Timing, clock: Clock, bid_lead_ms: int, period_ms: int, faults: Faults,
        on_event: Callable[[HomeEvent], None],
    ) -> None:
        self.node = node
        self._agent = agent
        self._meter, self._battery, self._pv = meter, battery, pv
        self._loads = loads
        self._envelope = envelope
        self._schedule = schedule
        self._limits = limits
        self._bus_cap_w = bus_cap_w
        self.planner = planner
        #: The optimiser's last outcome (its violations are the owner's to see).
        self.last_outcome: Outcome | None = None
        self._prefs = prefs
        self._forecaster = forecaster
        self._state = state
        self._timing = timing
        self._clock = clock
        self._bid_lead_ms = bid_lead_ms
        self._period_ms = period_ms
        self._faults = faults
        self._on_event = on_event

    async def run(self) -> None:
        k = (self._clock.now_ms() - self._timing.epoch_ms) // self._timing.length_ms + 1
        while self._bid_time(k) < self._clock.now_ms():
            k += 1
        self._state.first_traded = k
        while True:
            await self._clock.sleep_until(self._bid_time(k))
            try:
                await self._bid(k)
                self._faults.clear("trader")
            except Exception as exc:  # no bid for k: nothing promised, nothing to keep
                self._faults.record("trader", exc)
            k += 1

    def _bid_time(self, k: int) -> int:
        return self._timing.start_ms(k) - self._timing.gate_ms - self._bid_lead_ms

    async def _bid(self, k: int) -> None:
        """Plan interval ``k``, bid the plan, and keep the offer until the gate."""
        plan = self.plan(k)
        self._state.record(k).plan = plan
        if plan is not None and plan.side is not None:
            await self._agent.submit_bid(
                interval=k, side=plan.side, energy_wh=plan.energy_wh,
                limit_price=plan.limit_price, steps=plan.steps,
            )
        if plan is not None:
            self._on_event(BidMade(node=self.node, interval=k, plan=plan))
        if plan is not None and plan.side is not None:
            await self._keep_offer(k, plan)

    async def _keep_offer(self, k: int, offered: Plan) -> None:
        """Until interval ``k``'s gate, cut the offer down to what the devices can still keep.

        A bid stands until the gate closes, so a device lost after it was made (battery, meter,
        PV) would leave an offer out that the home cannot deliver: each time one more of them goes
        stale the interval is planned again, as a bid made now would be, and the offer replaced
        (a higher ``seq``) by the smaller of the two, or withdrawn when the new plan offers
        nothing on its side. Never raised: a larger offer is a new bid, not one kept. The last
        replacement is made ``grace`` before the gate, so a peer whose clock runs that much ahead
        still counts it.
        """
        last_ms = self._timing.gate_close_ms(k) - self._timing.grace_ms
        lost = self._lost_devices()
        while (now := self._clock.now_ms()) < last_ms:
            await self._clock.sleep_until(min(now + self._period_ms, last_ms))
            gone = self._lost_devices()
            if gone <= lost:
                lost = gone  # one back again: the offer stays as cut
                continue
            lost = gone
            plan = self.plan(k)
            side = offered.side
            assert side is not None
            kept = plan.energy_wh if plan is not None and plan.side == side else 0
            if kept >= offered.energy_wh:
                continue
            cut = curve_head(offered.curve(), kept)  # its best Wh: a seller's cheapest first
            try:  # 0 Wh withdraws the offer
                await self._agent.submit_bid(interval=k, side=side, energy_wh=kept,
                                             limit_price=offered.limit_price, steps=cut)
            except MarketError as exc:
                log.warning("%s: offer for interval %d not replaced: %s", self.node, k, exc)
                return
            log.warning("%s: %s stale: %s offer for interval %d cut from %d to %d Wh", self.node,
                        ", ".join(sorted(gone)), side, k, offered.energy_wh, kept)
            if plan is not None and kept:
                offered = replace(plan, limit_price=offered.limit_price,
                                  steps=cut if len(cut) > 1 else ())
            else:
                offered = replace(plan or offered, side=None, energy_wh=0, limit_price=0,
                                  steps=())
            self._state.record(k).plan = None if plan is None else offered
            self._on_event(BidMade(node=self.node, interval=k, plan=offered))
            if not kept:
                return

    def _lost_devices(self) -> frozenset[str]:
        """The devices an offer counts on that are stale now (or, the battery, held), by kind."""
        counted = (self._meter, self._battery, self._pv)
        lost = {d.config.kind for d in counted if d is not None and d.poller.stale}
        battery = None if self._battery is None else self._battery.fresh()
        if battery is not None and (device_envelope(self._envelope, battery).held
                                    or self._refused()):
            lost.add("battery")
        return frozenset(lost)

    def _refused(self) -> bool:
        """Whether the battery's map cannot carry the setpoint: it would not be dispatched."""
        return self._battery is not None and self._battery.refused is not None

    def plan(self, k: int) -> Plan | None:
        """The EMS plan for interval ``k``; None (no bid) when the devices cannot be trusted."""
        battery = None if self._battery is None else self._battery.fresh()
        if self._meter is None or self._meter.fresh() is None:
            log.warning("%s: meter stale, not bidding for interval %d", self.node, k)
            return None
        state = None  # a battery held idle by its own report, or its map, has nothing to offer
        if (battery is not None and battery.capacity_wh
                and not device_envelope(self._envelope, battery).held and not self._refused()):
            state = BatteryState(
                capacity_wh=int(battery.capacity_wh), soc_pct=battery.soc_pct,
                max_charge_w=min(int(battery.max_charge_w), self._envelope.max_charge_w),
                max_discharge_w=min(int(battery.max_discharge_w),
                                    self._envelope.max_discharge_w),
            )
        start_ms, length_ms = self._timing.start_ms(k), self._timing.length_ms
        length_s = length_ms / 1000
        pv_wh, load_wh = self._forecaster.forecast_wh(start_s=start_ms / 1000 % DAY_S,
                                                      length_s=length_s)
        pv_silent = self._pv is not None and self._pv.fresh() is None
        if pv_silent:
            # A silent inverter may have tripped: its output is not ours to offer, now or as
            # the sun that would refill energy sold from the battery (self-consumption alone,
            # with either planner: the optimiser, blind to the day, would keep the cells for a
            # later it cannot see and buy the home's load instead, while the sun it was not
            # told of goes out at feed-in).
            pv_wh = 0
        if self.planner is not None and not pv_silent:
            plan = self._optimise(k, self.planner, state, (pv_wh, load_wh))
        else:
            block_s, count = horizon(length_s)
            ahead = None if pv_silent else Ahead(
                block_s=block_s, blocks=self._forecaster.learned_ahead(
                    start_s=self._timing.start_ms(k + 1) / 1000 % DAY_S, block_s=block_s,
                    count=count))
            plan = plan_interval(
                pv_wh=pv_wh, load_wh=load_wh, battery=state, prefs=self._prefs(),
                tariffs=band(*self._schedule.average(start_ms, self._timing.length_ms)),
                interval_s=length_s, flex=self._loads.plan(k, surplus_wh=pv_wh - load_wh),
                ahead=ahead,
            )
            if self.planner is not None:
                self.last_outcome = self.planner.fallback(plan, PV_SILENT)
        # Either planner's offer, cut to what the meter and the bus let through.
        return over_the_bus(within_export_limit(plan, limits=self._limits, length_ms=length_ms),
                            battery=state, cap_w=self._bus_cap_w, length_ms=length_ms)

    def _optimise(self, k: int, planner: Planner, battery: BatteryState | None,
                  first: tuple[int, int]) -> Plan:
        """The day's plan from interval ``k``, bid as its curve (:mod:`gateway.plan.bidding`).
        Loads are planned to be done ``FLEX_MARGIN_INTERVALS`` before they are due, as the
        heuristic plans them; the controller still runs them on live readings by their due."""
        length_s = self._timing.length_ms / 1000
        margin_s = length_s * FLEX_MARGIN_INTERVALS
        ahead = self._forecaster.learned_ahead(
            start_s=self._timing.start_ms(k + 1) / 1000 % DAY_S, block_s=length_s,
            count=horizon_steps(length_s) - 1)
        prefs = self._prefs()
        car = self._loads.vehicle(k, margin_s=margin_s)
        jobs = [replace(job, due_s=max(0.0, job.due_s - margin_s)) for job in self._loads.jobs(k)
                if car is None or job.name != car.name]
        problem = day_problem(start_ms=self._timing.start_ms(k), step_s=length_s, first=first,
                              ahead=ahead, battery=battery, prefs=prefs, jobs=jobs, vehicle=car,
                              schedule=self._schedule, limits=self._limits)
        outcome = planner.plan(problem, max_buy_wh=MAX_ENERGY_WH, max_sell_wh=MAX_ENERGY_WH)
        self.last_outcome = outcome
        return bid_plan(outcome, min_bid_wh=prefs.min_bid_wh)


def over_the_bus(plan: Plan, *, battery: BatteryState | None, cap_w: int | None,
                 length_ms: int) -> Plan:
    """A DC-bus home's offer (``cap_w``: its converter's power; None on AC) cut to what the
    converter can move in an interval of ``length_ms``, best steps kept.

    Its trades cross the bus through the converter, whose port is the battery, so an interval
    carries at most the converter's power or the battery's, whichever is less (nothing without a
    battery to take or give it). A position past that is energy the bus master would have to
    carry alone, and the bus would leave its window."""
    if cap_w is None or plan.side is None:
        return plan
    battery_w = 0 if battery is None else (
        battery.max_discharge_w if plan.side == "sell" else battery.max_charge_w)
    return cut_to(plan, min(cap_w, battery_w) * length_ms // 3_600_000)


def within_export_limit(plan: Plan, *, limits: GridLimits | None, length_ms: int) -> Plan:
    """A sale cut to what the grid operator's export limit lets through the meter in an
    interval of ``length_ms`` (the limit less the grid-point guard's margin), best steps kept.

    A home delivers a sale only by exporting: a sale past the limit is energy the meter never
    shows, and the shortfall is bought at retail (a zero-export home may not sell at all)."""
    if limits is None or limits.export_w is None or plan.side != "sell":
        return plan
    return cut_to(plan, max(0, -meter_floor_w(limits.export_w)) * length_ms // 3_600_000)


def cut_to(plan: Plan, cap_wh: int) -> Plan:
    """``plan``'s offer cut to ``cap_wh``, its best steps kept (no bid when none is left)."""
    if plan.energy_wh <= cap_wh:
        return plan
    head = curve_head(plan.curve(), cap_wh)
    if not head:
        return replace(plan, side=None, energy_wh=0, limit_price=0, steps=())
    return replace(plan, energy_wh=cap_wh, limit_price=head[0].price,
                   steps=head if len(head) > 1 else ())
