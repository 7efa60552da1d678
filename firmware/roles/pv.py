"""PV inverter role: SunSpec models 1, 701, 702, 704 over a PV power stage.

Control is model 704, both functions a gateway may use to curtail export:

* ``WMaxLimPctEna`` + ``WMaxLimPct`` (scale factor −2, 10000 = 100.00 % of ``WMaxRtg``);
* ``WSetEna`` + ``WSetMod`` = WATTS (1) + ``WSet`` (int32 W, scale factor 0): for a PV inverter a
  cap on generation (it cannot make more than the sun gives). ``WSetMod`` W_MAX_PCT (0) would use
  ``WSetPct``, which this device does not implement, so it leaves the output uncapped.

The output cap is the smaller of the enabled limits. Each function has its own revert timer
(``WMaxLimPctRvrtTms``, ``WSetRvrtTms``, seconds; 0 = device default, never "forever"), re-armed
by any write to that function's points; on expiry the function takes its reversion values
(``WMaxLimPctRvrt``/``WMaxLimPctEnaRvrt``, ``WSetRvrt``/``WSetEnaRvrt``), which default to
"disabled": the safe default of docs/architecture.md, unlimited with no export target.
The ``...RvrtRem`` points count the remaining seconds down.
"""

from firmware.compat import const
from firmware.roles.common import Reversion, RoleError, clamp, fill_common

_PCT_SF = const(-2)
_FULL_SCALE = const(10000)
_WATTS = const(1)
_ILLEGAL_VALUE = const(3)

_LIM = ("WMaxLimPctEna", "WMaxLimPct", "WMaxLimPctRvrt", "WMaxLimPctEnaRvrt", "WMaxLimPctRvrtTms")
_SET = ("WSetEna", "WSetMod", "WSet", "WSetRvrt", "WSetEnaRvrt", "WSetRvrtTms")

# 701 InvSt
_SLEEPING = const(1)
_RUNNING = const(3)
_THROTTLED = const(4)


class PvRole:
    """Fills a PV inverter's registers from ``stage`` and applies 704 limits with reversion."""

    def __init__(self, points, *, stage, clock, serial, unit=1, rating_w):
        if not 0 < rating_w <= 32767:
            raise RoleError(f"PV rating_w must be in 1..32767, got {rating_w!r}")
        self._p = points
        self._stage = stage
        self._rating_w = rating_w
        self.lim_revert = Reversion(clock)
        self.set_revert = Reversion(clock)
        self.limit_w = None
        points.blank()
        fill_common(points, role="pv", serial=serial, unit=unit)
        self._fill_nameplate()
        points.writable(704, *_LIM)
        points.writable(704, *_SET)
        points.bank.on_write(self.on_write)
        self._apply()
        self.tick()

    def _fill_nameplate(self):
        p = self._p
        p.put(701, "ACType", 0)  # SINGLE_PHASE
        p.put(701, "ConnSt", 1)
        p.put(701, "Alrm", 0)
        for name, sf in (("A_SF", -2), ("V_SF", -1), ("Hz_SF", -2), ("W_SF", 0), ("VA_SF", 0),
                         ("TotWh_SF", 0)):
            p.put(701, name, sf)
        for name, value in (("WMaxRtg", self._rating_w), ("VAMaxRtg", self._rating_w),
                            ("WMax", self._rating_w), ("VAMax", self._rating_w),
                            ("VNomRtg", 2300), ("VNom", 2300), ("W_SF", 0), ("VA_SF", 0),
                            ("V_SF", -1)):
            p.put(702, name, value)
        for name, value in (("WMaxLimPctEna", 0), ("WMaxLimPct", _FULL_SCALE),
                            ("WMaxLimPctRvrt", _FULL_SCALE), ("WMaxLimPctEnaRvrt", 0),
                            ("WMaxLimPctRvrtTms", 0), ("WMaxLimPctRvrtRem", 0),
                            ("WSetEna", 0), ("WSetMod", _WATTS), ("WSet", 0), ("WSetRvrt", 0),
                            ("WSetEnaRvrt", 0), ("WSetRvrtTms", 0), ("WSetRvrtRem", 0),
                            ("WMaxLimPct_SF", _PCT_SF), ("WSet_SF", 0)):
            p.put(704, name, value)

    def on_write(self, addr, count):
        """A gateway wrote 704 points: check them, re-arm the touched function's timer, apply.

        Returns Modbus exception 3 (illegal data value) for a percentage above 100 %, a negative
        WSet or an enable/mode outside its enumeration; the bank then restores the registers.
        """
        p = self._p
        lim = p.touched(704, _LIM, addr, count)
        wset = p.touched(704, _SET, addr, count)
        for name in ("WMaxLimPct", "WMaxLimPctRvrt"):
            if not 0 <= (p.get(704, name) or 0) <= _FULL_SCALE:
                return _ILLEGAL_VALUE
        for name in ("WSet", "WSetRvrt"):
            if (p.get(704, name) or 0) < 0:
                return _ILLEGAL_VALUE
        for name in ("WMaxLimPctEna", "WMaxLimPctEnaRvrt", "WSetEna", "WSetEnaRvrt", "WSetMod"):
            if p.get(704, name) not in (0, 1):
                return _ILLEGAL_VALUE
        if lim:
            self.lim_revert.arm(p.get(704, "WMaxLimPctRvrtTms") or 0)
        if wset:
            self.set_revert.arm(p.get(704, "WSetRvrtTms") or 0)
        self._apply()
        return 0

    def _apply(self):
        p = self._p
        limit = None
        if p.get(704, "WMaxLimPctEna") == 1:
            limit = self._rating_w * p.get(704, "WMaxLimPct") // _FULL_SCALE
        if p.get(704, "WSetEna") == 1 and p.get(704, "WSetMod") == _WATTS:
            w_set = p.get(704, "WSet")
            limit = w_set if limit is None else min(limit, w_set)
        self.limit_w = limit
        self._stage.set_limit_w(limit)

    def tick(self):
        """Revert expired functions, then publish output, energy and remaining revert times."""
        p = self._p
        changed = False
        if self.lim_revert.expired():
            p.put(704, "WMaxLimPct", p.get(704, "WMaxLimPctRvrt"))
            p.put(704, "WMaxLimPctEna", p.get(704, "WMaxLimPctEnaRvrt"))
            changed = True
        if self.set_revert.expired():
            p.put(704, "WSet", p.get(704, "WSetRvrt"))
            p.put(704, "WSetEna", p.get(704, "WSetEnaRvrt"))
            changed = True
        if changed:
            self._apply()
        p.put(704, "WMaxLimPctRvrtRem", self.lim_revert.remaining_s())
        p.put(704, "WSetRvrtRem", self.set_revert.remaining_s())
        w, v_x10, a_x100, hz_x100 = self._stage.sample()
        injected, absorbed = self._stage.energy_wh()
        throttled = self.limit_w is not None and w >= self.limit_w
        p.put(701, "St", 1)
        p.put(701, "InvSt", _SLEEPING if w <= 0 else _THROTTLED if throttled else _RUNNING)
        p.put(701, "W", clamp(w, -32767, 32767))
        p.put(701, "VA", clamp(abs(w), 0, 32767))
        p.put(701, "A", clamp(a_x100, -32767, 32767))
        p.put(701, "LNV", v_x10)
        p.put(701, "Hz", hz_x100)
        p.put(701, "TotWhInj", injected)
        p.put(701, "TotWhAbs", absorbed)
