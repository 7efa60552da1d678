"""Controllable load role: SunSpec model 1 and vendor model 64220 over a switched load stage.

One role for every load a home can shift in time: an EV charger (EVSE) and a deferrable
appliance (water heater, dishwasher). SunSpec has no model for "energy still needed by a
deadline", which is what a planner needs to know, hence vendor model 64220
(docs/sunspec-vendor-model.md):

* The device says what it is (``Kind``), whether it can run now (``Conn``: car plugged in, job
  waiting in its window), how much AC energy it still needs (``WhNeed``) and by which minute of
  the day (``Dline``), and the most it can draw (``WMax``).
* The gateway writes ``WLim`` (W, with ``RvrtTms`` in the same request): while it holds, the
  stage draws up to ``WLim`` whenever it has energy to take, and nothing more. ``WLim`` above
  ``WMax`` is refused with exception 3 and rolled back.
* Every ``WLim`` write re-arms the revert timer (``RvrtTms``, 0 = device default, never
  "forever"). On expiry the load goes back to its own default (``St`` DEFAULT, ``WLim`` =
  ``WMax``): the charger charges at full power, the appliance runs as it would alone. A dead
  gateway may cost money, never a car that is not charged in the morning.
* A bidirectional (V2G) charger (``max_dis_w`` > 0) also reports the car's ``SoC`` and pack size
  (``WhRtg``) and takes ``WDisSet``: power to feed back from the car, under the same revert timer,
  refused above ``WDisMax``. On expiry it returns to 0 with the rest: a silent gateway never
  leaves a car draining. A charger built without it leaves these points "not implemented", which
  is how a gateway knows to keep it charge-only.
"""

from firmware.compat import const
from firmware.roles.common import Reversion, RoleError, clamp, fill_common

APPLIANCE = const(1)
EVSE = const(2)

DEFAULT = const(0)
LIMITED = const(1)

_MODEL = const(64220)
_ILLEGAL_VALUE = const(3)
_CONTROL = ("WLim", "RvrtTms")
_DISCHARGE = ("WDisSet",)


class LoadRole:
    """Fills a load's registers from ``stage`` and turns 64220 ``WLim`` writes into its limit.

    ``stage`` (firmware/hal): ``sample()`` -> ``(w, connected, need_wh, deadline_min)`` with
    ``deadline_min`` -1 when there is none; ``energy_wh()`` -> total drawn; ``set_limit_w(w)``,
    None = the device's own default. A V2G stage (``max_dis_w`` > 0) also has ``pack()`` ->
    ``(soc_x10, capacity_wh, discharge_w)`` (``soc_x10`` -1 when unknown) and
    ``set_discharge_w(w)``.
    """

    def __init__(self, points, *, stage, clock, serial, unit=1, kind, max_w, max_dis_w=0):
        if kind not in (APPLIANCE, EVSE):
            raise RoleError(f"load kind must be {APPLIANCE} (appliance) or {EVSE} (EVSE), "
                            f"got {kind!r}")
        if not 0 < max_w <= 65534:
            raise RoleError(f"load max_w must be in 1..65534, got {max_w!r}")
        if not 0 <= max_dis_w <= 65534 or (max_dis_w and kind != EVSE):
            raise RoleError(f"load max_dis_w must be in 0..65534 and only for an EVSE, got "
                            f"{max_dis_w!r}")
        self._p = points
        self._stage = stage
        self._max_w = max_w
        self._max_dis_w = max_dis_w
        self.revert = Reversion(clock)
        self.state = DEFAULT
        points.blank()
        fill_common(points, role="load", serial=serial, unit=unit)
        points.put(_MODEL, "Kind", kind)
        points.put(_MODEL, "WMax", max_w)
        points.put(_MODEL, "RvrtTms", 0)
        if max_dis_w:
            points.put(_MODEL, "WDisMax", max_dis_w)
        self._default()
        points.writable(_MODEL, *_CONTROL)
        if max_dis_w:
            points.writable(_MODEL, *_DISCHARGE)
        points.bank.on_write(self.on_write)
        self.tick()

    def _default(self):
        self.state = DEFAULT
        self._p.put(_MODEL, "WLim", self._max_w)
        self._stage.set_limit_w(None)
        if self._max_dis_w:
            self._p.put(_MODEL, "WDisSet", 0)
            self._stage.set_discharge_w(0)

    def on_write(self, addr, count):
        """A gateway wrote 64220 points: check ``WLim`` (``WDisSet``), then limit (discharge)
        the stage and re-arm.

        Returns Modbus exception 3 for a limit the load cannot have; the bank then restores the
        registers, so the previous limit keeps running unchanged.
        """
        p = self._p
        touched = p.touched(_MODEL, _CONTROL + _DISCHARGE, addr, count)
        if not touched:
            return 0
        limit = p.get(_MODEL, "WLim")
        if limit is None or limit > self._max_w:
            return _ILLEGAL_VALUE
        if "WDisSet" in touched:
            dis = p.get(_MODEL, "WDisSet")
            if dis is None or dis > self._max_dis_w:
                return _ILLEGAL_VALUE
            self._stage.set_discharge_w(dis)
        if "WLim" in touched or "WDisSet" in touched:
            self.state = LIMITED
            self.revert.arm(p.get(_MODEL, "RvrtTms") or 0)
        if "WLim" in touched:
            self._stage.set_limit_w(limit)
        self._publish_state()
        return 0

    def check_revert(self):
        """Back to the device default if the limit was not refreshed in time."""
        if self.revert.expired():
            self._default()

    def tick(self):
        """Once per control period: revert an expired limit, then publish the readings."""
        self.check_revert()
        p = self._p
        w, connected, need_wh, deadline_min = self._stage.sample()
        p.put(_MODEL, "Conn", 1 if connected else 0)
        p.put(_MODEL, "WhNeed", clamp(need_wh, 0, 0xFFFFFFFE))
        p.put(_MODEL, "Dline", deadline_min if connected and 0 <= deadline_min < 1440 else None)
        p.put(_MODEL, "W", clamp(w, 0, 65534))
        p.put(_MODEL, "TotWh", self._stage.energy_wh() & 0xFFFFFFFF)
        if self._max_dis_w:
            soc_x10, capacity_wh, dis_w = self._stage.pack()
            known = connected and 0 <= soc_x10 <= 1000 and capacity_wh > 0
            p.put(_MODEL, "SoC", soc_x10 if known else None)
            p.put(_MODEL, "WhRtg", clamp(capacity_wh, 1, 0xFFFFFFFE) if known else None)
            p.put(_MODEL, "WDis", clamp(dis_w, 0, 65534))
        self._publish_state()

    def _publish_state(self):
        p = self._p
        p.put(_MODEL, "St", self.state)
        p.put(_MODEL, "RvrtRem", min(65534, self.revert.remaining_s()))
