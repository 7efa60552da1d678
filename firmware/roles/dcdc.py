"""DC-DC converter role: SunSpec models 1, 714 and vendor model 64200 over a DC-DC power stage.

The converter sits between a local port (a battery) and the community's shared DC bus. Control
is vendor model 64200 (docs/sunspec-vendor-model.md), because SunSpec has none for DC-DC:

* ``Mode`` WAIT (0 A), CV (hold the bus at ``VSet``, absorbing mismatch up to ``AMax``: the
  bus's voltage master), CC_CHARGE / CC_DISCHARGE (``ASet`` amps from / onto the bus).
* Every write is checked as a whole: an unknown mode, ``AMax`` above the stage's rating,
  ``VMin`` >= ``VMax``, ``VSet`` outside ``VMin``..``VMax`` or ``ASet`` above ``AMax`` is refused
  with exception 3 and the bank rolls the write back, so nothing half-applies.
* A write to ``Mode`` clears ``Trip`` and applies the mode; a write to ``ASet`` or ``VSet``
  alone changes the running setpoint. Either re-arms the revert timer with ``RvrtTms`` (0 = the
  device default, never "forever"). On expiry the converter goes to WAIT, ``Mode`` and ``ASet``
  to 0 (the request is withdrawn) and ``Trip`` bit 3 REVERTED is set.
* Protection, while running: bus voltage outside ``VMin``..``VMax``, current above ``AMax`` or
  the stage's own trip (the bus protection) stop the converter: ``St`` TRIPPED, the matching
  ``Trip`` bit, ``Mode`` left as requested so the gateway sees what it asked for. Only a new
  ``Mode`` write re-enables it: a tripped bus must not restart by itself.
* The voltage protection arms once the bus is inside the window: at the ``Mode`` write if the
  last reading was, else at the first reading that is. Without that, the master sent to bring a
  tripped bus back (which may take it more than one reading) would trip on the very voltage it
  is correcting. Over-current protection is always armed.

Measurements: 64200 ``DCV``/``DCA``/``DCW`` are the bus side (+ = from the bus into the port,
charging); 714 ``Prt[0]`` is the local port (from ``port`` when the board meters it, else not
implemented), ``Prt[1]`` the bus side, same sign. Scale factors follow the HAL's integer units:
A×100, V×10, W.
"""

from firmware.compat import const
from firmware.roles.common import Reversion, RoleError, fill_common

WAIT = const(0)
CV = const(1)
CC_CHARGE = const(2)
CC_DISCHARGE = const(3)
TRIPPED = const(4)

OVER_VOLTAGE = const(1)
UNDER_VOLTAGE = const(2)
OVER_CURRENT = const(4)
REVERTED = const(8)

_A_SF = const(-2)
_V_SF = const(-1)
_ILLEGAL_VALUE = const(3)
_MODEL = const(64200)
_PORTS = const(714)
_ESS = const(1)  # 714 PrtTyp
_DC_DC = const(6)
_STA_OFF = const(0)
_STA_ON = const(1)
_STA_ERROR = const(3)

_CONTROL = ("Mode", "ASet", "VSet", "AMax", "VMax", "VMin", "RvrtTms")
_SETPOINTS = ("Mode", "ASet", "VSet")


class DcdcRole:
    """Fills a converter's registers from ``stage`` and turns 64200 writes into stage commands.

    ``rated_a_x100`` is the stage's current rating (the highest ``AMax`` a gateway may set);
    ``v_nom_x10``, ``v_min_x10``, ``v_max_x10`` the bus's nominal voltage and protection window
    at power-up. ``port`` meters the local port (``sample()`` -> ``(w, v_x10, a_x100)``, + = into
    the port), None on a board without one.
    """

    def __init__(self, points, *, stage, clock, serial, unit=1, rated_a_x100=2000,
                 v_nom_x10=3500, v_min_x10=3200, v_max_x10=3800, port=None):
        if not 0 < rated_a_x100 <= 32767:
            raise RoleError(f"converter rated_a_x100 must be in 1..32767, got {rated_a_x100!r}")
        if not 0 < v_min_x10 <= v_nom_x10 <= v_max_x10 < 65535 or v_min_x10 == v_max_x10:
            raise RoleError("converter voltages must satisfy 0 < v_min <= v_nom <= v_max, "
                            f"v_min < v_max, got {v_min_x10}, {v_nom_x10}, {v_max_x10}")
        self._p = points
        self._stage = stage
        self._port = port
        self._rated = rated_a_x100
        self.revert = Reversion(clock)
        self.state = WAIT
        self.trip = 0
        self._armed = False
        self._v_inside = True
        points.blank()
        fill_common(points, role="dcdc", serial=serial, unit=unit)
        self._fill_nameplate(v_nom_x10, v_min_x10, v_max_x10)
        points.writable(_MODEL, *_CONTROL)
        points.bank.on_write(self.on_write)
        self._command()
        self.tick()

    def _fill_nameplate(self, v_nom, v_min, v_max):
        p = self._p
        for name, value in (("Mode", WAIT), ("ASet", 0), ("VSet", v_nom), ("AMax", self._rated),
                            ("VMax", v_max), ("VMin", v_min), ("RvrtTms", 0), ("RvrtRem", 0),
                            ("St", WAIT), ("Trip", 0), ("A_SF", _A_SF), ("V_SF", _V_SF),
                            ("W_SF", 0)):
            p.put(_MODEL, name, value)
        p.put(_PORTS, "NPrt", 2)  # blank() cleared the chain's count with every other point
        p.put(_PORTS, "PrtAlrms", 0)
        for name, sf in (("DCA_SF", _A_SF), ("DCV_SF", _V_SF), ("DCW_SF", 0)):
            p.put(_PORTS, name, sf)
        for i, kind, label in ((0, _ESS, "local"), (1, _DC_DC, "dc-bus")):
            prt = "Prt[" + str(i) + "]."
            p.put(_PORTS, prt + "PrtTyp", kind)
            p.put(_PORTS, prt + "ID", i)
            p.put(_PORTS, prt + "IDStr", label)
            p.put(_PORTS, prt + "DCAlrm", 0)

    def _get(self, name):
        return self._p.get(_MODEL, name)

    def on_write(self, addr, count):
        """A gateway wrote 64200 points: check them together, then apply and re-arm.

        Returns Modbus exception 3 for a set of values no converter can run with; the bank then
        restores the registers, so the previous setpoint keeps running unchanged.
        """
        p = self._p
        touched = p.touched(_MODEL, _CONTROL, addr, count)
        if not touched:
            return 0
        mode, a_set, v_set = self._get("Mode"), self._get("ASet"), self._get("VSet")
        a_max, v_max, v_min = self._get("AMax"), self._get("VMax"), self._get("VMin")
        if (None in (mode, a_set, v_set, a_max, v_max, v_min) or mode > CC_DISCHARGE
                or a_max > self._rated or v_min >= v_max or not v_min <= v_set <= v_max
                or a_set > a_max):
            return _ILLEGAL_VALUE
        if "Mode" in touched:
            self.trip = 0
            self.state = mode
            self._armed = self._v_inside
        if self.state in (CV, CC_CHARGE, CC_DISCHARGE):
            for name in _SETPOINTS:
                if name in touched:
                    self.revert.arm(self._get("RvrtTms") or 0)
                    break
        else:
            self.revert.disarm()
        self._command()
        self._publish_state()
        return 0

    def _command(self):
        """Tell the stage what to do: CV gets ``AMax`` as its current limit, CC gets ``ASet``."""
        state = self.state
        if state == CV:
            self._stage.command(CV, self._get("AMax"), self._get("VSet"))
        elif state in (CC_CHARGE, CC_DISCHARGE):
            self._stage.command(state, self._get("ASet"), self._get("VSet"))
        else:
            self._stage.command(WAIT, 0, self._get("VSet"))

    def check_revert(self):
        """Go to WAIT if the setpoint was not refreshed in time (called first in ``tick``)."""
        if not self.revert.expired():
            return
        self.state = WAIT
        self.trip |= REVERTED
        self._p.put(_MODEL, "Mode", WAIT)
        self._p.put(_MODEL, "ASet", 0)
        self._command()
        self._publish_state()

    def tick(self):
        """Once per control period: revert an expired setpoint, measure, protect, publish."""
        self.check_revert()
        self.measure()

    def measure(self):
        """Publish the stage's readings and trip if they leave the limits while running.

        Split from ``tick`` so a simulator that updates the readings only after its physics step
        can revert before the step and protect after it, on fresh readings.
        """
        p = self._p
        w, v_x10, a_x100, stage_tripped = self._stage.sample()
        self._v_inside = (self._get("VMin") <= v_x10 <= self._get("VMax")
                          and not stage_tripped)
        if self.state in (CV, CC_CHARGE, CC_DISCHARGE):
            self._armed = self._armed or self._v_inside
            self._protect(v_x10, a_x100, stage_tripped)
        p.put(_MODEL, "DCV", max(0, min(65534, v_x10)))
        p.put(_MODEL, "DCA", max(-32767, min(32767, a_x100)))
        p.put(_MODEL, "DCW", max(-32767, min(32767, w)))
        self._publish_state()
        running = self.state != WAIT and self.state != TRIPPED
        status = _STA_ERROR if self.state == TRIPPED else _STA_ON if running else _STA_OFF
        p.put(_PORTS, "DCA", max(-32767, min(32767, a_x100)))
        p.put(_PORTS, "DCW", max(-32767, min(32767, w)))
        p.put(_PORTS, "Prt[1].DCA", max(-32767, min(32767, a_x100)))
        p.put(_PORTS, "Prt[1].DCV", max(0, min(65534, v_x10)))
        p.put(_PORTS, "Prt[1].DCW", max(-32767, min(32767, w)))
        p.put(_PORTS, "Prt[1].DCSta", status)
        p.put(_PORTS, "Prt[0].DCSta", status)
        if self._port is not None:
            port_w, port_v_x10, port_a_x100 = self._port.sample()
            p.put(_PORTS, "Prt[0].DCA", max(-32767, min(32767, port_a_x100)))
            p.put(_PORTS, "Prt[0].DCV", max(0, min(65534, port_v_x10)))
            p.put(_PORTS, "Prt[0].DCW", max(-32767, min(32767, port_w)))

    def _protect(self, v_x10, a_x100, stage_tripped):
        trip = 0
        if self._armed and v_x10 > self._get("VMax"):
            trip |= OVER_VOLTAGE
        elif self._armed and v_x10 < self._get("VMin"):
            trip |= UNDER_VOLTAGE
        if abs(a_x100) > self._get("AMax"):
            trip |= OVER_CURRENT
        if self._armed and stage_tripped and not trip:
            # The bus protection acted inside this converter's own window (a gateway widened
            # VMin..VMax beyond the bus's): name the side of the setpoint the bus went to.
            trip = OVER_VOLTAGE if v_x10 >= self._get("VSet") else UNDER_VOLTAGE
        if trip:
            self.state = TRIPPED
            self.trip |= trip
            self.revert.disarm()
            self._command()

    def _publish_state(self):
        p = self._p
        p.put(_MODEL, "St", self.state)
        p.put(_MODEL, "Trip", self.trip)
        p.put(_MODEL, "RvrtRem", min(65534, self.revert.remaining_s()))
