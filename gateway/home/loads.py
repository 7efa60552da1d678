"""Controllable loads (EV chargers, appliances): planned into the interval's surplus, driven by a
power limit with a revert time (``gateway/flex_plan.py`` has the rules).

A load's need is taken as of the start of the interval it is planned for; each control period it
gets the plan's share of the rest of the interval, raised to what its deadline forces on this
reading, so a plan made ahead on an estimate cannot miss it. A stale load gets nothing: its revert
timer returns it to its own default.

A car at a V2G charger is planned as a ``Vehicle`` when its charger reports a believable pack
(``vehicle``); when the plan has it feed the home (its ``flex`` entry below 0) and nothing forces
it to charge now, it feeds back what ``gateway/home/v2g.py`` allows on the live reading, and
otherwise charges (or idles) as any load.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable

from gateway.clock import Clock
from gateway.devices import ControllableLoad, LoadKind, LoadReading
from gateway.devices.errors import DeviceError
from gateway.ems import Preferences
from gateway.flex_plan import FlexJob, load_job, plan_flex, rest_limit_w
from gateway.forecast import DAY_S, HomeForecaster
from gateway.home import v2g
from gateway.home.devices import Device
from gateway.home.records import NodeState
from gateway.plan import Vehicle
from protocols.market import Timing

log = logging.getLogger(__name__)

FLEX_MARGIN_INTERVALS = 1
"""A shifted load is planned to be done this many intervals before it is due: room for a
forecast that was wrong, a device that missed a poll, a plan made before the car was plugged in."""


class LoadsController:
    """Plans and limits the home's controllable loads (none is fine: it then does nothing)."""

    def __init__(
        self, *, node: str, loads: tuple[Device[ControllableLoad, LoadReading], ...],
        prefs: Callable[[], Preferences], forecaster: HomeForecaster, state: NodeState,
        timing: Timing, clock: Clock, revert_s: int,
    ) -> None:
        self.node = node
        self.loads = loads
        self._prefs = prefs
        self._forecaster = forecaster
        self._state = state
        self._timing = timing
        self._clock = clock
        self._revert_s = revert_s
        self.v2g_refused: Counter[str] = Counter()
        """Control periods in which the plan asked the car to feed the home and the live reading
        did not allow it, by reason (``v2g.Discharge.refused``)."""
        self._last_refusal: dict[str, str | None] = {}

    def plan(self, k: int, *, surplus_wh: int) -> dict[str, int]:
        """Energy each fresh, connected load runs in interval ``k`` (the heuristic's shifting)."""
        length_s = self._timing.length_ms / 1000
        return plan_flex(self.jobs(k), slot_s=length_s, surplus_wh=surplus_wh, period_s=length_s,
                         margin_s=length_s * FLEX_MARGIN_INTERVALS)

    def jobs(self, k: int) -> list[FlexJob]:
        """What each fresh, connected load owes as of the start of interval ``k``: what it owes
        now less what it draws until then at its present power."""
        start_ms = self._timing.start_ms(k)
        ahead_h = max(0, start_ms - self._clock.now_ms()) / 3_600_000
        jobs = []
        for load in self.loads:
            reading = load.fresh()
            if reading is None or not reading.connected:
                continue
            job = load_job(
                load.name, need_wh=reading.need_wh - math.floor(reading.power_w * ahead_h),
                max_w=reading.max_w, deadline_min=reading.deadline_min,
                ready_by_min=self._ready_by(reading), time_of_day_s=start_ms / 1000 % DAY_S)
            if job is not None:
                jobs.append(job)
        return jobs

    def vehicle(self, k: int, *, margin_s: float) -> Vehicle | None:
        """The car to plan as a vehicle from the start of interval ``k``: the first fresh EV
        charger reporting a believable pack (None: the cars are planned as loads)."""
        time_of_day_s = self._timing.start_ms(k) / 1000 % DAY_S
        for load in self.loads:
            reading = load.fresh()
            if reading is None:
                continue
            car = v2g.vehicle(load.name, reading, floor_pct=self._prefs().v2g_min_soc_pct,
                              ready_by_min=self._ready_by(reading), time_of_day_s=time_of_day_s,
                              margin_s=margin_s)
            if car is not None:
                return car
        return None

    def v2g_refusals(self) -> dict[str, int]:
        """What kept the cars from feeding the home, by reason (``Status.v2g_refusals``)."""
        refused = dict(self.v2g_refused)
        for load in self.loads:
            for point, count in load.driver.pack_problems.items():
                refused[f"pack {point}"] = refused.get(f"pack {point}", 0) + count
        return refused

    def _ready_by(self, reading: LoadReading) -> int | None:
        """The owner's ready-by applies to EV chargers."""
        return self._prefs().ev_ready_by_min if reading.kind == LoadKind.EVSE else None

    def shifted_w(self) -> int:
        """What the controllable loads draw now: load the forecaster must not learn as base load
        (it is shifted by the plan, not repeated at the same time tomorrow); a car feeding the
        home counts below 0."""
        readings = (load.fresh() for load in self.loads)
        return sum(r.power_w - (r.pack.discharge_w if r.pack else 0)
                   for r in readings if r is not None)

    async def step(self, k: int, now_ms: int) -> None:
        """Write each fresh load's power limit for the rest of interval ``k``, with a revert time.

        Without a bid for ``k`` (not trading, or started within it) the loads are planned now,
        the same way.
        """
        if not self.loads:
            return
        record = self._state.records.get(k)
        length_s = self._timing.length_ms / 1000
        rest_s = (self._timing.start_ms(k + 1) - now_ms) / 1000
        if record is not None and record.plan is not None:
            runs = dict(record.plan.flex)
        else:
            pv_wh, load_wh = self._forecaster.forecast_wh(
                start_s=self._timing.start_ms(k) / 1000 % DAY_S, length_s=length_s)
            runs = self.plan(k, surplus_wh=pv_wh - load_wh)
        for load in self.loads:
            reading = load.fresh()
            if reading is None:
                continue
            limit = 0
            job = load_job(load.name, need_wh=reading.need_wh, max_w=reading.max_w,
                           deadline_min=reading.deadline_min,
                           ready_by_min=self._ready_by(reading),
                           time_of_day_s=now_ms / 1000 % DAY_S) if reading.connected else None
            planned = runs.get(load.name, 0)
            if job is not None:
                limit = rest_limit_w(job, planned_wh=round(planned * rest_s / length_s),
                                     rest_s=rest_s, interval_s=length_s,
                                     margin_s=length_s * FLEX_MARGIN_INTERVALS)
            feed = 0
            if planned < 0 and limit == 0:
                feed = self._feed_w(load.name, reading, planned_wh=planned, now_ms=now_ms)
            try:
                if feed > 0:
                    await load.driver.set_discharge(watts=feed, revert_s=self._revert_s)
                else:
                    await load.driver.set_limit(watts=limit, revert_s=self._revert_s)
            except (DeviceError, ValueError) as exc:
                log.warning("%s: load %s limit not written: %s", self.node, load.name, exc)

    def _feed_w(self, name: str, reading: LoadReading, *, planned_wh: int, now_ms: int) -> int:
        """What the car may feed the home now for the plan's ``planned_wh`` (< 0); a refusal is
        counted each period and logged when its reason changes."""
        length_s = self._timing.length_ms / 1000
        decision = v2g.discharge(
            reading, planned_wh=planned_wh, interval_s=length_s, hold_s=self._revert_s,
            floor_pct=self._prefs().v2g_min_soc_pct, ready_by_min=self._ready_by(reading),
            time_of_day_s=now_ms / 1000 % DAY_S, margin_s=length_s * FLEX_MARGIN_INTERVALS)
        if decision.refused is not None:
            self.v2g_refused[decision.refused] += 1
        if name not in self._last_refusal or decision.refused != self._last_refusal[name]:
            log.info("%s: car at %s %s", self.node, name,
                     f"feeds the home {decision.watts} W" if decision.refused is None
                     else f"does not feed the home: {decision.refused}")
            self._last_refusal[name] = decision.refused
        return decision.watts
