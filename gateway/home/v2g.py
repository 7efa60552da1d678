"""V2G: the car at a bidirectional charger as the day's plan sees it, and how much it may feed the
home now. Pure functions of one charger reading; ``gateway/home/loads.py`` and the trader call
them.

The plan may ask the car to feed the home; dispatch then checks every rule again on the live
reading, because the plan was made on an earlier one and a setpoint outlives the gateway by its
revert time. The car feeds back only when all of these hold:

- the owner consented (``[preferences] v2g_min_soc_pct``) and the charger offers discharge with a
  pack reading the driver believes (``LoadReading.pack``);
- the energy the setpoint could take out before it reverts (the whole revert time, should the
  gateway fall silent now) leaves the cells at or above the owner's floor;
- after that, the charger can still put back everything owed by the car's due (the owner's
  ready-by or the charger's deadline, less the planning margin) at its full power;
- the charger's own limit (``WDisMax``).

Energies at the charger's AC side; the charger's efficiency is not reported, so it is taken as
``EFFICIENCY`` one way, below what chargers reach: the rules err towards the car keeping more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gateway.devices import LoadKind, LoadReading
from gateway.ems import BatteryState
from gateway.flex_plan import due_in_s, first_due_s
from gateway.plan import Vehicle

EFFICIENCY = 0.88
"""Charger and pack, one way, as the rules assume it (bidirectional chargers reach 0.9-0.95)."""


@dataclass(frozen=True, slots=True)
class Discharge:
    """What the car may feed the home now (W, 0: nothing) and, for 0, why not."""

    watts: int
    refused: str | None = None


def due_s(reading: LoadReading, *, ready_by_min: int | None, time_of_day_s: float) -> float | None:
    """Seconds until the car must be charged: the owner's ready-by or the charger's deadline,
    whichever comes first (None: neither is known)."""
    return first_due_s(reading.deadline_min, ready_by_min, time_of_day_s=time_of_day_s)


def vehicle(name: str, reading: LoadReading, *, floor_pct: float | None,
            ready_by_min: int | None, time_of_day_s: float, margin_s: float) -> Vehicle | None:
    """The car for the day's plan from ``time_of_day_s``, or None when the charger gives no pack
    to plan with (a charge-only charger, no car, a reading not believed): it is then planned as
    a load that owes energy. Its target is what the charger says it still needs (``WhNeed``)
    on top of its SoC; it may discharge only with the owner's floor and above it."""
    pack = reading.pack
    if reading.kind != LoadKind.EVSE or not reading.connected or pack is None:
        return None
    cells_owed = reading.need_wh * EFFICIENCY / pack.capacity_wh * 100
    target = min(100.0, pack.soc_pct + cells_owed)
    can_feed = floor_pct is not None and pack.soc_pct > floor_pct
    due = due_s(reading, ready_by_min=ready_by_min, time_of_day_s=time_of_day_s)
    departs = (None if reading.deadline_min is None
               else due_in_s(reading.deadline_min, time_of_day_s=time_of_day_s))
    return Vehicle(
        name=name,
        battery=BatteryState(capacity_wh=pack.capacity_wh, soc_pct=pack.soc_pct,
                             max_charge_w=reading.max_w,
                             max_discharge_w=pack.max_discharge_w if can_feed else 0,
                             charge_efficiency=EFFICIENCY, discharge_efficiency=EFFICIENCY),
        target_soc_pct=target,
        ready_by_s=None if due is None else max(0.0, due - margin_s),
        departs_s=departs,
        v2g_min_soc_pct=floor_pct if can_feed else None,
    )


def discharge(reading: LoadReading, *, planned_wh: int, interval_s: float, hold_s: float,
              floor_pct: float | None, ready_by_min: int | None, time_of_day_s: float,
              margin_s: float) -> Discharge:
    """The power the car may feed the home for the plan's ``planned_wh`` (< 0: feed back, in an
    interval of ``interval_s``), on this reading, with a setpoint that holds ``hold_s`` (the
    revert time) if not refreshed. See the module docstring for the rules."""
    pack = reading.pack
    if planned_wh >= 0:
        return Discharge(0)
    if floor_pct is None:
        return Discharge(0, "no-consent")
    if pack is None or not reading.connected:
        return Discharge(0, "no-pack")
    above_wh = (pack.soc_pct - floor_pct) / 100 * pack.capacity_wh
    if above_wh <= 0:
        return Discharge(0, "at-floor")
    hold_h = max(1.0, hold_s) / 3600
    floor_w = math.floor(above_wh * EFFICIENCY / hold_h)
    if floor_w <= 0:
        return Discharge(0, "at-floor")
    due = due_s(reading, ready_by_min=ready_by_min, time_of_day_s=time_of_day_s)
    ready_w = floor_w
    if due is not None:
        charge_h = (due - margin_s) / 3600 - hold_h
        spare_wh = reading.max_w * charge_h - reading.need_wh  # AC the charger could put back
        ready_w = math.floor(spare_wh * EFFICIENCY * EFFICIENCY / hold_h)
        if ready_w <= 0:
            return Discharge(0, "ready-by")
    watts = min(math.ceil(-planned_wh / (interval_s / 3600)), pack.max_discharge_w, floor_w,
                ready_w)
    return Discharge(watts)
