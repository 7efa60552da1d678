"""Controllable loads (EV chargers, appliances): planned into the interval's surplus, driven by a
power limit with a revert time (``gateway/flex_plan.py`` has the rules).

A load's need is taken as of the start of the interval it is planned for; each control period it
gets the plan's share of the rest of the interval, raised to what its deadline forces on this
reading, so a plan made ahead on an estimate cannot miss it. A stale load gets nothing: its revert
timer returns it to its own default.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from gateway.clock import Clock
from gateway.devices import ControllableLoad, LoadKind, LoadReading
from gateway.devices.errors import DeviceError
from gateway.ems import Preferences
from gateway.flex_plan import FlexJob, load_job, plan_flex, rest_limit_w
from gateway.forecast import DAY_S, HomeForecaster
from gateway.home.devices import Device
from gateway.home.records import NodeState
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

    def _ready_by(self, reading: LoadReading) -> int | None:
        """The owner's ready-by applies to EV chargers."""
        return self._prefs().ev_ready_by_min if reading.kind == LoadKind.EVSE else None

    def shifted_w(self) -> int:
        """What the controllable loads draw now: load the forecaster must not learn as base load
        (it is shifted by the plan, not repeated at the same time tomorrow)."""
        readings = (load.fresh() for load in self.loads)
        return sum(r.power_w for r in readings if r is not None)

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
            if job is not None:
                planned = runs.get(load.name, 0)
                limit = rest_limit_w(job, planned_wh=round(planned * rest_s / length_s),
                                     rest_s=rest_s, interval_s=length_s,
                                     margin_s=length_s * FLEX_MARGIN_INTERVALS)
            try:
                await load.driver.set_limit(watts=limit, revert_s=self._revert_s)
            except (DeviceError, ValueError) as exc:
                log.warning("%s: load %s limit not written: %s", self.node, load.name, exc)
