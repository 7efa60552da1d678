"""The grid operator's export limit at the home's connection point, held by curtailing PV.

The plan and the bid already keep within the limit (``gateway/plan``), and the battery
controller never steers the meter past it (:func:`gateway.dispatch.decide`), but a full or idle
battery cannot take a sunny hour's surplus: what is left is PV the home may not export, so the
inverter's output is capped (SunSpec ``WMaxLimPct`` with a revert time, so a gateway that stops
leaves the inverter to lift the cap by itself).

The battery and the cap answer the same meter, so each control period they move in one order,
from one snapshot of the readings:

1. :func:`offered_cap_w`, before the battery's setpoint is chosen: a cap in force goes back up
   by the room below ``limit − margin`` at the meter and the battery's room to charge (a capped
   home's battery holds the meter at its target, so the meter alone shows no room), by at most
   ``RAISE_SHARE`` of the rating a period, lifted once it reaches the rating. The PV this lets
   through (the *rise*; none when the sun, not the cap, holds the inverter back) is handed to
   the battery controller, which sets its charge for the meter as it will be once the PV has
   risen. A cap raised after the battery's setpoint is written would send the rise to the grid
   for a whole control period, and the battery and the cap would then both correct the same
   export: the next period imports, the one after exports again.
2. :func:`checked_cap_w`, after the battery's setpoint is written: the meter this gives is
   predicted, and the cap comes down by what that export passes ``limit − margin`` by. A battery
   does not always follow its setpoint (full cells refuse a charge the envelope still allows),
   so the prediction counts the battery discharging more at once, but of charging more only
   what takes the rise it was handed; anything else only once the meter shows it.

Both act on readings taken at least half a period after the last commands were written
(``GridPointGuard.prepare`` reads the meter, the inverter and the battery again when theirs are
older): each device is polled on its own schedule, and a meter that already shows a new cap
beside an inverter reading that does not makes the guard misjudge what holds the inverter back.
The margin keeps a cloud passing, or a load switching off, within a period from carrying the
meter over the limit. The two rules are pure; ``GridPointGuard`` is the thin adapter that reads
and writes.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from dataclasses import dataclass

from gateway.aio import raise_if_cancelling
from gateway.devices import Battery, BatteryReading, Meter, MeterReading, PvInverter, PvReading
from gateway.home.devices import Device

log = logging.getLogger(__name__)

MARGIN_W = 50
"""W kept below the export limit (at least): readings lag by up to one poll."""
MARGIN_SHARE = 0.05
"""Of the limit, kept below it (when more than ``MARGIN_W``)."""
RAISE_SHARE = 0.1
"""Of the inverter's rating, the most a cap goes up in one control period."""
FRESH_SHARE = 0.5
"""Of a device's poll period, how old a reading the guard acts on without reading it again: a
younger one was taken at least half a period after the last commands were written."""


def margin_w(export_limit_w: int) -> int:
    return max(MARGIN_W, math.ceil(export_limit_w * MARGIN_SHARE))


def meter_floor_w(export_limit_w: int) -> int:
    """The lowest meter power (W, + import) the guard lets stand: the limit less the margin."""
    return -(export_limit_w - margin_w(export_limit_w))


def offered_cap_w(*, export_limit_w: int, meter_w: int, pv_w: int, cap_w: int | None,
                  rated_w: int, battery_room_w: int) -> tuple[int | None, int]:
    """(cap, rise): the cap for this period before the battery's setpoint is chosen (None: no
    cap), and how much more the inverter may produce under it than it does now (W), which the
    battery is to take.

    ``meter_w`` (+ import) and ``pv_w`` (− producing) are the latest readings, ``cap_w`` the cap
    in force, ``battery_room_w`` how much more than its last setpoint the battery could charge.
    A meter already past the floor raises nothing. The inverter counts as held by the cap when
    it produces within ``MARGIN_W`` of it; below that the sun holds it, and raising the cap lets
    nothing more through.
    """
    if cap_w is None:
        return None, 0
    floor = meter_floor_w(export_limit_w)
    room = max(0, meter_w - floor) + max(0, battery_room_w) if meter_w >= floor else 0
    raised = cap_w + min(room, math.ceil(rated_w * RAISE_SHARE))
    offered = None if raised >= rated_w else raised
    if not held_by_cap(pv_w=pv_w, cap_w=cap_w):
        return offered, 0
    return offered, max(0, (rated_w if offered is None else offered) - max(0, -pv_w))


def held_by_cap(*, pv_w: int, cap_w: int | None) -> bool:
    """Whether the inverter (``pv_w``, − producing) produces what the cap in force lets through,
    within ``MARGIN_W`` of it, rather than what the sun gives: its output then says how much the
    cap allows, not how much sun there is."""
    return cap_w is not None and max(0, -pv_w) + MARGIN_W >= cap_w


def checked_cap_w(*, export_limit_w: int, meter_w: int, pv_w: int, offered_w: int | None,
                  rise_w: int, battery_change_w: int, rated_w: int) -> int | None:
    """The cap to write (None: none needed): ``offered_w``, or lower by what the meter would
    export past the floor once the battery's new setpoint and the PV's rise have taken effect.

    ``battery_change_w`` is how much more the battery is commanded to charge than it does now
    (its new setpoint less its power): a decrease is counted whole, an increase only up to the
    ``rise_w`` it was handed (:func:`offered_cap_w`).
    """
    floor = meter_floor_w(export_limit_w)
    counted = min(battery_change_w, rise_w) if battery_change_w > 0 else battery_change_w
    predicted = meter_w - rise_w + counted
    if predicted >= floor:
        return offered_w
    producing = max(0, -pv_w) + rise_w
    return max(0, min(producing, rated_w) - (floor - predicted))


def _dated(age_s: float | None, period_s: float) -> bool:
    """Whether a reading may predate the last period's commands, or their effect (older than
    ``FRESH_SHARE`` of its poll period), and is read again. A device not read yet is left to
    its poller: the guard does not act without its reading."""
    return age_s is not None and age_s > period_s * FRESH_SHARE


@dataclass(frozen=True, slots=True)
class _Offer:
    """What ``prepare`` chose, from the readings ``step`` finishes with."""

    meter_w: int
    pv_w: int
    rated_w: int
    cap_w: int | None
    rise_w: int


class GridPointGuard:
    """Caps the PV inverter each control period so the meter keeps the export limit:
    ``prepare`` before the battery's setpoint is chosen, ``step`` after it is written."""

    def __init__(self, *, node: str, export_limit_w: int,
                 meter: Device[Meter, MeterReading] | None,
                 pv: Device[PvInverter, PvReading], revert_s: int) -> None:
        self.node = node
        self.export_limit_w = export_limit_w
        self._meter, self._pv = meter, pv
        self._revert_s = revert_s
        self.cap_w: int | None = None
        #: Whether the inverter's last reading was held by the cap (not a measure of the sun).
        self.curtailing = False
        self._offer: _Offer | None = None
        #: Caps written and failures, by what happened ("capped", "lifted", "failed", ...).
        self.counts: Counter[str] = Counter()

    async def prepare(self, *, battery: Device[Battery, BatteryReading] | None,
                      battery_room_w: int) -> int:
        """Read the meter, the inverter and ``battery`` afresh (one snapshot, after the last
        period's commands took effect, for the guard and the battery controller alike), then
        the PV rise (W) the battery is to take this period (0: none, or nothing to act on)."""
        self._offer = None
        self.curtailing = False
        await asyncio.gather(*(d.poller.poll_once()
                               for d in (self._meter, self._pv, battery)
                               if d is not None and d.adopted and _dated(d.poller.age_s,
                                                                         d.poller.period_s)))
        meter = None if self._meter is None else self._meter.fresh()
        pv = self._pv.fresh()
        if meter is None or pv is None:
            return 0  # the inverter's revert timer lifts a cap nobody renews
        if not pv.rated_w:
            if not self.counts["no-rating"]:
                log.warning("%s: %s reports no rating: the export limit cannot be held by "
                            "curtailing it", self.node, self._pv.name)
            self.counts["no-rating"] += 1
            return 0
        self.curtailing = held_by_cap(pv_w=pv.power_w, cap_w=self.cap_w)
        rated = int(pv.rated_w)
        cap, rise = offered_cap_w(export_limit_w=self.export_limit_w, meter_w=meter.power_w,
                                  pv_w=pv.power_w, cap_w=self.cap_w, rated_w=rated,
                                  battery_room_w=battery_room_w)
        self._offer = _Offer(meter_w=meter.power_w, pv_w=pv.power_w, rated_w=rated, cap_w=cap,
                             rise_w=rise)
        return rise

    async def step(self, *, battery_change_w: int) -> None:
        """Write the cap, once the battery's setpoint for this period was written."""
        offer, self._offer = self._offer, None
        if offer is None:
            return
        cap = checked_cap_w(export_limit_w=self.export_limit_w, meter_w=offer.meter_w,
                            pv_w=offer.pv_w, offered_w=offer.cap_w, rise_w=offer.rise_w,
                            battery_change_w=battery_change_w, rated_w=offer.rated_w)
        if cap is None and self.cap_w is None:
            return
        driver = self._pv.driver
        try:
            if cap is None:
                await driver.clear_limit()
                self.counts["lifted"] += 1
            else:
                await driver.set_limit(pct=min(100.0, 100 * cap / offer.rated_w),
                                       revert_s=self._revert_s)
                self.counts["capped"] += 1
        except Exception as exc:
            raise_if_cancelling(exc)
            self.counts["failed"] += 1
            log.warning("%s: PV cap for the export limit not written: %s", self.node, exc)
            return
        self.cap_w = cap
