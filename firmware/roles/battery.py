"""Battery role: SunSpec models 1, 713, 802, 124 over a battery power stage + BMS.

Control is SunSpec model 124 (storage controls), read as a *setpoint* (forced rate), which is how
gridpeer's dispatcher drives a battery:

* ``StorCtl_Mod`` bit 0 (CHARGE) set: charge at ``InWRte`` percent of ``WChaMax``.
* ``StorCtl_Mod`` bit 1 (DISCHARGE) set: discharge at ``OutWRte`` percent of the discharge limit
  (802 ``WDisChaRteMax``).
* Both bits: the sum, ``InWRte``·WChaMax − ``OutWRte``·WDisChaRteMax; neither: idle (hold).
* ``InWRte``/``OutWRte`` are int16 with ``InOutWRte_SF`` = −2 (10000 = 100.00 %); a negative
  ``InWRte`` discharges (the convention several commercial inverters use). A write outside
  −100..100 % or with an unknown mode bit is refused with Modbus exception 3.
* ``InOutWRte_RvrtTms`` (s, simulated or real device time): any write to these four points re-arms
  the revert timer; when it expires the battery goes idle (``StorCtl_Mod`` 0, rates 0). A revert
  time of 0 means the device default (``DEFAULT_REVERT_S``), never "hold forever".

Everything else is measurement: 713 SoC/WHAvail, 802 SoC, V, A, W (+ = charge), 124 ChaState,
ChaSt. SoC points use scale factor −2 (hundredths of a percent) so a gateway sees SoC move within
a short interval.
"""

from firmware.compat import const
from firmware.roles.common import Reversion, RoleError, clamp, fill_common

_CHARGE = const(1)
_DISCHARGE = const(2)
_PCT_SF = const(-2)
_FULL_SCALE = const(10000)  # 100.00 % at scale factor -2
_ILLEGAL_VALUE = const(3)  # Modbus exception: the bank restores the registers

# 124 ChaSt / 802 ChaSt
_CHA_EMPTY = const(2)
_CHA_DISCHARGING = const(3)
_CHA_CHARGING = const(4)
_CHA_FULL = const(5)
_CHA_HOLDING = const(6)

_CONTROL = ("StorCtl_Mod", "InWRte", "OutWRte", "InOutWRte_RvrtTms")
# Writable so OutWRte..InOutWRte_RmpTms is one FC 16 window as SunSpec clients write it; stored,
# not applied: this device changes rate at once (no window, no ramp).
_STORED = ("InOutWRte_WinTms", "InOutWRte_RmpTms")


class BatteryRole:
    """Fills a battery's registers from ``stage`` and turns 124 setpoint writes into commands."""

    def __init__(self, points, *, stage, clock, serial, unit=1, capacity_wh, max_charge_w,
                 max_discharge_w, soc_min_pct, soc_max_pct):
        if capacity_wh <= 0 or capacity_wh > 655350:
            raise RoleError(f"battery capacity_wh must be in 1..655350, got {capacity_wh!r}")
        if not 0 <= max_charge_w <= 32767 or not 0 <= max_discharge_w <= 32767:
            raise RoleError("battery power limits must be in 0..32767 W")
        if not 0 <= soc_min_pct < soc_max_pct <= 100:
            raise RoleError("battery SoC window must satisfy 0 <= min < max <= 100")
        self._p = points
        self._stage = stage
        self._clock = clock
        self._max_charge_w = max_charge_w
        self._max_discharge_w = max_discharge_w
        self._soc_min = round(soc_min_pct * 100)
        self._soc_max = round(soc_max_pct * 100)
        self._capacity_wh = capacity_wh
        self._wh_sf = 0 if capacity_wh <= 65535 else 1
        self.revert = Reversion(clock)
        self.command_w = 0
        points.blank()
        fill_common(points, role="battery", serial=serial, unit=unit)
        self._fill_nameplate()
        points.writable(124, *_CONTROL, *_STORED)
        points.bank.on_write(self.on_write)
        stage.set_power_w(0)
        self.tick()

    def _fill_nameplate(self):
        p = self._p
        wh = self._capacity_wh // (10 ** self._wh_sf)
        p.put(713, "WHRtg", wh)
        p.put(713, "WH_SF", self._wh_sf)
        p.put(713, "Pct_SF", _PCT_SF)
        p.put(713, "SoH", 10000)
        p.put(713, "Sta", 0)
        p.put(802, "WHRtg", wh)
        p.put(802, "WHRtg_SF", self._wh_sf)
        p.put(802, "WChaRteMax", self._max_charge_w)
        p.put(802, "WDisChaRteMax", self._max_discharge_w)
        p.put(802, "WChaDisChaMax_SF", 0)
        p.put(802, "SoCMax", self._soc_max)
        p.put(802, "SoCMin", self._soc_min)
        p.put(802, "SoC_SF", _PCT_SF)
        p.put(802, "SoH", 100)
        p.put(802, "SoH_SF", 0)
        p.put(802, "LocRemCtl", 0)  # REMOTE: setpoints come over Modbus
        p.put(802, "Typ", 4)  # LITHIUM_ION
        p.put(802, "State", 3)  # CONNECTED
        for name in ("Evt1", "Evt2", "EvtVnd1", "EvtVnd2"):
            p.put(802, name, 0)
        p.put(802, "AlmRst", 0)
        p.put(802, "SetOp", 1)  # CONNECT
        p.put(802, "SetInvState", 3)  # INVERTER_STARTED
        p.put(802, "AHRtg_SF", 0)
        p.put(802, "V_SF", -1)
        p.put(802, "CellV_SF", -3)
        p.put(802, "A_SF", -2)
        p.put(802, "AMax_SF", 0)
        p.put(802, "W_SF", 0)
        p.put(124, "WChaMax", self._max_charge_w)
        p.put(124, "WChaMax_SF", 0)
        p.put(124, "WChaGra", 100)
        p.put(124, "WDisChaGra", 100)
        p.put(124, "WChaDisChaGra_SF", 0)
        p.put(124, "MinRsvPct", self._soc_min)
        p.put(124, "MinRsvPct_SF", _PCT_SF)
        p.put(124, "ChaState_SF", _PCT_SF)
        p.put(124, "StorAval_SF", -1)
        p.put(124, "InBatV_SF", -1)
        p.put(124, "InOutWRte_SF", _PCT_SF)
        self._idle()

    def _idle(self):
        p = self._p
        p.put(124, "StorCtl_Mod", 0)
        p.put(124, "InWRte", 0)
        p.put(124, "OutWRte", 0)
        for name in ("InOutWRte_RvrtTms",) + _STORED:
            if p.get(124, name) is None:
                p.put(124, name, 0)
        self.command_w = 0
        self._stage.set_power_w(0)

    def on_write(self, addr, count):
        """A gateway wrote registers: check the 124 setpoint, re-arm reversion, command.

        Returns Modbus exception 3 (illegal data value) for a rate outside −100..100 % or an
        unknown mode bit; the bank then restores the registers, so nothing half-applies.
        """
        p = self._p
        if not p.touched(124, _CONTROL, addr, count):
            return 0
        in_rte = p.get(124, "InWRte") or 0
        out_rte = p.get(124, "OutWRte") or 0
        mode = p.get(124, "StorCtl_Mod") or 0
        if (mode & ~(_CHARGE | _DISCHARGE) or not -_FULL_SCALE <= in_rte <= _FULL_SCALE
                or not -_FULL_SCALE <= out_rte <= _FULL_SCALE):
            return _ILLEGAL_VALUE
        command = 0
        if mode & _CHARGE:
            command += in_rte * self._max_charge_w // _FULL_SCALE
        if mode & _DISCHARGE:
            command -= out_rte * self._max_discharge_w // _FULL_SCALE
        self.command_w = clamp(command, -self._max_discharge_w, self._max_charge_w)
        self._stage.set_power_w(self.command_w)
        self.revert.arm(p.get(124, "InOutWRte_RvrtTms") or 0)
        return 0

    def tick(self):
        """Once per control period: revert an expired setpoint, then publish measurements."""
        if self.revert.expired():
            self._idle()
        p = self._p
        w, v_x10, a_x100, soc = self._stage.sample()
        soc = clamp(soc, 0, _FULL_SCALE)
        if w > 0:
            state = _CHA_FULL if soc >= self._soc_max else _CHA_CHARGING
        elif w < 0:
            state = _CHA_EMPTY if soc <= self._soc_min else _CHA_DISCHARGING
        else:
            state = (_CHA_FULL if soc >= self._soc_max else
                     _CHA_EMPTY if soc <= self._soc_min else _CHA_HOLDING)
        avail_wh = self._capacity_wh * max(0, soc - self._soc_min) // _FULL_SCALE
        ah_x10 = self._capacity_wh * 100 // max(1, v_x10)  # Ah×10 = Wh / V
        p.put(713, "SoC", soc)
        p.put(713, "WHAvail", avail_wh // (10 ** self._wh_sf))
        p.put(802, "SoC", soc)
        p.put(802, "AHRtg", ah_x10 // 10)
        p.put(802, "V", v_x10)
        p.put(802, "A", clamp(a_x100, -32767, 32767))
        p.put(802, "W", clamp(w, -32767, 32767))
        p.put(802, "ChaSt", state)
        p.put(802, "Hb", (self._clock.ticks_ms() // 1000) & 0xFFFF)
        p.put(124, "ChaState", soc)
        p.put(124, "StorAval", ah_x10 * max(0, soc - self._soc_min) // _FULL_SCALE)
        p.put(124, "InBatV", v_x10)
        p.put(124, "ChaSt", state)
