"""The grid operator's export limit at the home's connection point, held by curtailing PV.

The plan and the bid already keep within the limit (``gateway/plan``), and the battery
controller never steers the meter past it (:func:`gateway.dispatch.decide`), but a full or idle
battery cannot take a sunny hour's surplus: what is left is PV the home may not export, so the
inverter's output is capped (SunSpec ``WMaxLimPct`` with a revert time, so a gateway that stops
leaves the inverter to lift the cap by itself). Each control period the meter the battery's new
setpoint will give is predicted from the latest readings; the cap comes down by what that export
passes ``limit − margin`` by, and goes back up by the room below it, lifted once it reaches the
inverter's rating. A battery does not always follow its setpoint (full cells refuse a charge
the envelope still allows), so the prediction counts the battery discharging more at once, but
charging more only once the meter shows it. The cap goes back up by the room below the limit
and the battery's room to charge (the battery holds the meter at its target, so a capped home
shows no room at the meter while its battery could take more), by at most ``RAISE_SHARE`` of
the rating a period: the battery and the cap both answer the same meter, and a cap that jumped
would make them chase each other. The margin keeps a reading one poll old, or a cloud passing,
from carrying the meter over the limit.

``pv_cap_w`` is the rule, pure; ``GridPointGuard`` the thin adapter that reads and writes.
"""

from __future__ import annotations

import logging
import math
from collections import Counter

from gateway.aio import raise_if_cancelling
from gateway.devices import Meter, MeterReading, PvInverter, PvReading
from gateway.home.devices import Device

log = logging.getLogger(__name__)

MARGIN_W = 50
"""W kept below the export limit (at least): readings lag by up to one poll."""
MARGIN_SHARE = 0.05
"""Of the limit, kept below it (when more than ``MARGIN_W``)."""
RAISE_SHARE = 0.1
"""Of the inverter's rating, the most a cap goes up in one control period."""


def margin_w(export_limit_w: int) -> int:
    return max(MARGIN_W, math.ceil(export_limit_w * MARGIN_SHARE))


def pv_cap_w(*, export_limit_w: int, meter_w: int, battery_change_w: int, pv_w: int,
             cap_w: int | None, rated_w: int, battery_room_w: int = 0) -> int | None:
    """The PV output cap (W) for the next control period, None when no cap is needed.

    ``meter_w`` (+ import) and ``pv_w`` (− producing) are the latest readings;
    ``battery_change_w`` is how much more the battery is commanded to charge than it does now
    (its new setpoint less its power; only a decrease is counted), ``battery_room_w`` how much
    more than its new setpoint it could charge. ``cap_w`` is the cap in force.
    """
    target = -(export_limit_w - margin_w(export_limit_w))  # the meter's floor, W (+ import)
    predicted = meter_w + min(0, battery_change_w)
    producing = max(0, -pv_w)
    if predicted < target:  # exporting too much: cut by the excess
        return max(0, min(producing, rated_w) - (target - predicted))
    if cap_w is None:
        return None
    room = predicted - target + max(0, battery_room_w)
    raised = cap_w + min(room, math.ceil(rated_w * RAISE_SHARE))
    return None if raised >= rated_w else raised


class GridPointGuard:
    """Caps the PV inverter each control period so the meter keeps the export limit."""

    def __init__(self, *, node: str, export_limit_w: int,
                 meter: Device[Meter, MeterReading] | None,
                 pv: Device[PvInverter, PvReading], revert_s: int) -> None:
        self.node = node
        self.export_limit_w = export_limit_w
        self._meter, self._pv = meter, pv
        self._revert_s = revert_s
        self.cap_w: int | None = None
        #: Caps written and failures, by what happened ("capped", "lifted", "failed", ...).
        self.counts: Counter[str] = Counter()

    async def step(self, *, battery_change_w: int, battery_room_w: int) -> None:
        """One control period, after the battery's setpoint was written."""
        meter = None if self._meter is None else self._meter.fresh()
        pv = self._pv.fresh()
        if meter is None or pv is None:
            return  # the inverter's revert timer lifts a cap nobody renews
        if not pv.rated_w:
            if not self.counts["no-rating"]:
                log.warning("%s: %s reports no rating: the export limit cannot be held by "
                            "curtailing it", self.node, self._pv.name)
            self.counts["no-rating"] += 1
            return
        cap = pv_cap_w(export_limit_w=self.export_limit_w, meter_w=meter.power_w,
                       battery_change_w=battery_change_w, pv_w=pv.power_w, cap_w=self.cap_w,
                       rated_w=int(pv.rated_w), battery_room_w=battery_room_w)
        if cap is None and self.cap_w is None:
            return
        driver = self._pv.driver
        try:
            if cap is None:
                await driver.clear_limit()
                self.counts["lifted"] += 1
            else:
                await driver.set_limit(pct=min(100.0, 100 * cap / pv.rated_w),
                                       revert_s=self._revert_s)
                self.counts["capped"] += 1
        except Exception as exc:
            raise_if_cancelling(exc)
            self.counts["failed"] += 1
            log.warning("%s: PV cap for the export limit not written: %s", self.node, exc)
            return
        self.cap_w = cap
