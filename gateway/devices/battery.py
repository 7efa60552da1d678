"""Battery driver: state of charge from SunSpec 802 or 713, setpoints through storage controls
(124) or, on a device without 124, through the IEEE 1547 active power setting (704).

Two families (docs/devices.md):

* **Storage controls (124)**, with 802 or 713 for the state of charge. Setpoints follow the
  semantics our battery firmware implements (``firmware/roles/battery.py``), which reads 124 as a
  forced rate: ``StorCtl_Mod`` bit 0 charges at ``InWRte`` percent of ``WChaMax``, bit 1
  discharges at ``OutWRte`` percent of 802's ``WDisChaRteMax``, both bits give the sum. Zero is
  written as both bits with both rates 0, which every reading of 124 agrees means "hold" (a
  device that treats the rates as limits also holds).
* **IEEE 1547 models** (no 124): the state of charge from 802 or 713, power from 802 or 701 (the
  DER's AC power: a hybrid inverter's includes its PV, see docs/devices.md), rates from 802 or
  702, and the setpoint through 704 ``WSet`` in watts (``WSetMod`` WATTS, − = absorbing, i.e.
  charging) with its revert timer and reversion values (0 W, disabled). What 124 alone carries
  cannot be set: the device's own reserve and grid-charging permission stay the device's.

Every setpoint carries a revert time so a battery left alone by a dead gateway goes idle by
itself; a device that cannot take one (its control model absent, its revert timer or a scale
factor "not implemented") is read and never commanded: ``NotCommandable`` names why, and its
reading offers no power to command (``max_charge_w`` = ``max_discharge_w`` = 0), so nothing
plans with it.

The driver never clamps: the dispatcher's envelope does, and a value past the device's own limits
here is a bug upstream, so it raises ``ValueError`` instead of being quietly cut.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from math import ceil, trunc

from gateway.devices.bus import ModbusBus
from gateway.devices.capability import Command, unimplemented
from gateway.devices.discovery import DiscoveredDevice
from gateway.devices.errors import NotCommandable
from gateway.devices.model_reader import ModelData, read_models
from gateway.devices.model_writer import write_points
from gateway.devices.plausibility import PlausibilityGuard, Sample, Uses
from protocols.sunspec.points import apply_sf, to_raw

_CHARGE = 1
_DISCHARGE = 2
_ENABLED = 1
_DISABLED = 0
_WATTS = 1  # 704 WSetMod
_MAX_REVERT_S = 0xFFFE  # uint16 seconds (124); 0xFFFF is "not implemented"
_STORAGE_POINTS = ("SoC", "W", "WChaRteMax", "WDisChaRteMax", "SoCMin", "SoCMax", "SoCRsvMin",
                   "SocRsvMax", "WHRtg")
"""What either family reads of 802."""


@dataclass(frozen=True, slots=True)
class BatteryReading:
    """One battery sample.

    ``soc_pct``: NaN when the device does not say (a 713 left "not implemented"): the envelope
    allows no setpoint then, and ``capacity_wh`` is None so nothing plans with it.
    ``power_w``: + = charging, − = discharging (None if the device does not measure it).
    ``max_charge_w``/``max_discharge_w``: what the gateway may command (0 when it cannot command
    the battery at all, see ``Battery.commands``). ``soc_min_pct``/``soc_max_pct``: the window
    the device allows (reserve setpoints if set, else nameplate). ``setpoint_w``/``revert_s``:
    the command the device currently holds.
    """

    soc_pct: float
    power_w: int | None
    max_charge_w: int
    max_discharge_w: int
    soc_min_pct: float
    soc_max_pct: float
    capacity_wh: int | None
    setpoint_w: int
    revert_s: int | None


class Battery:
    """Reads and commands a battery found by ``discover`` (needs 802 or 713; commands through
    124, else 704)."""

    def __init__(self, *, bus: ModbusBus, device: DiscoveredDevice,
                 now_s: Callable[[], float] | None = None) -> None:
        self._bus = bus
        self._unit = device.unit
        device.require_one_of(driver="Battery", model_ids=(802, 713))
        self._family = _Storage(device) if device.location(124) else _Der(device)
        self.uses: Uses = self._family.uses
        """The points this battery's readings come from, by model."""
        self._guard = PlausibilityGuard(now_s=now_s, uses=self.uses,
                                        label=f"{bus} unit {device.unit}")
        self._last: tuple[BatteryReading, ModelData | None] | None = None

    @property
    def family(self) -> str:
        """Which models this battery is driven through."""
        return self._family.name

    @property
    def commands(self) -> tuple[Command, ...]:
        """The charge/discharge setpoint, refused as of the last reading if the device cannot
        carry it."""
        family = self._family
        controls = None if self._last is None else self._last[1]
        return (Command(what="charge/discharge power", model=family.control_id,
                        points=family.command_points, refused=family.refusal(controls)),)

    async def read(self) -> BatteryReading:
        """One sample; the storage models usually sit next to each other: one request."""
        reading, _ = await self._sample()
        return reading

    async def _sample(self) -> tuple[BatteryReading, ModelData | None]:
        started = self._guard.begin()
        models = await read_models(self._bus, unit=self._unit, locations=self._family.locations)
        self._guard.check(models, started_s=started)
        self._last = (self._family.reading(models), models.get(self._family.control_id))
        return self._last

    async def set_power(self, *, watts: int, revert_s: int) -> int:
        """Command ``watts`` (+ charge, − discharge) for ``revert_s`` seconds; returns the watts
        the device was actually commanded (124's rate registers are percentages, so a few W of
        quantisation is possible).

        Refresh it before ``revert_s`` runs out to keep it: that is the heartbeat.
        """
        if not 1 <= revert_s <= _MAX_REVERT_S:
            raise ValueError(f"revert_s must be 1..{_MAX_REVERT_S} s, got {revert_s}")
        # Limits and scale factors change rarely: the last sample's are good enough, and a
        # setpoint refresh then costs writes only.
        reading, controls = self._last or await self._sample()
        refused = self._family.refusal(controls)
        if refused is not None or controls is None:
            raise NotCommandable(f"battery setpoint: {refused}")
        if watts > reading.max_charge_w or -watts > reading.max_discharge_w:
            raise ValueError(
                f"battery setpoint {watts} W outside the device limits "
                f"[-{reading.max_discharge_w}, +{reading.max_charge_w}] W"
            )
        commanded, writes = self._family.setpoint(controls, reading, watts=watts,
                                                  revert_s=revert_s)
        for values in writes:
            await write_points(self._bus, unit=self._unit, model=controls, values=values)
        return commanded


class _Storage:
    """124 commands; 802 or 713 say the state of charge."""

    name = "SunSpec storage models (124 controls, 802 battery or 713 storage capacity)"
    control_id = 124
    command_points = ("InOutWRte_RvrtTms", "OutWRte", "InWRte", "StorCtl_Mod")

    def __init__(self, device: DiscoveredDevice) -> None:
        self.locations = tuple(loc for loc in (
            device.location(713), device.location(802), device.location(124)) if loc)
        self.uses: Uses = {124: ("WChaMax", *self.command_points), 802: _STORAGE_POINTS,
                           713: ("SoC", "WHRtg")}

    def refusal(self, controls: ModelData | None) -> str | None:
        return None if controls is None else unimplemented(controls, self.command_points)

    def reading(self, models: Sample) -> BatteryReading:
        c, battery = models[124], models.get(802)
        commandable = self.refusal(c) is None
        max_charge = round(c.number("WChaMax")) if commandable else 0
        max_discharge = round(_first(battery, "WDisChaRteMax") or max_charge) if commandable else 0
        setpoint = 0
        if commandable:
            setpoint = _command_w(c.raw_int("StorCtl_Mod") or 0, c.raw_int("InWRte") or 0,
                                  c.raw_int("OutWRte") or 0, c.scale_factor("InWRte"),
                                  max_charge, max_discharge)
        return _reading(models, power_w=_first(battery, "W"), max_charge_w=max_charge,
                        max_discharge_w=max_discharge, setpoint_w=setpoint,
                        revert_s=c.optional_int("InOutWRte_RvrtTms"))

    def setpoint(self, controls: ModelData, reading: BatteryReading, *, watts: int,
                 revert_s: int) -> tuple[int, list[dict[str, int]]]:
        sf = controls.scale_factor("InWRte")
        if watts > 0:
            mode, in_rte, out_rte = _CHARGE, _rate_raw(watts, reading.max_charge_w, sf), 0
        elif watts < 0:
            mode, in_rte, out_rte = _DISCHARGE, 0, _rate_raw(-watts, reading.max_discharge_w, sf)
        else:
            mode, in_rte, out_rte = _CHARGE | _DISCHARGE, 0, 0
        commanded = _command_w(
            mode, in_rte, out_rte, sf, reading.max_charge_w, reading.max_discharge_w
        )
        # The device's writable window is exactly these points (not the read-only ones between),
        # so three writes; revert time first, so the new rate is never live without it.
        return commanded, [{"InOutWRte_RvrtTms": revert_s}, {"OutWRte": out_rte, "InWRte": in_rte},
                           {"StorCtl_Mod": mode}]


class _Der:
    """No 124: 704 ``WSet`` commands; 802 or 713, 701 and 702 say the rest."""

    name = ("IEEE 1547 DER models (713 storage capacity or 802 battery, 701 measurement, "
            "702 rating, 704 controls)")
    control_id = 704
    command_points = ("WSetEnaRvrt", "WSetRvrtTms", "WSetEna", "WSetMod", "WSet", "WSetRvrt")

    def __init__(self, device: DiscoveredDevice) -> None:
        self.present = device.location(704) is not None
        self.locations = tuple(loc for loc in (
            device.location(mid) for mid in (701, 702, 704, 713, 802)) if loc)
        self.uses: Uses = {713: ("SoC", "WHRtg"), 802: _STORAGE_POINTS, 701: ("W",),
                           702: ("WMaxRtg", "WMax", "WChaRteMaxRtg", "WDisChaRteMaxRtg",
                                 "WChaRteMax", "WDisChaRteMax"),
                           704: ("WSetEna", "WSetMod", "WSet", "WSetPct", "WSetRvrtTms")}

    def refusal(self, controls: ModelData | None) -> str | None:
        if not self.present:
            return f"the device has no model 124 (storage controls) and no model {self.control_id}"
        return None if controls is None else unimplemented(controls, self.command_points)

    def reading(self, models: Sample) -> BatteryReading:
        battery, measure, ratings, c = (models.get(mid) for mid in (802, 701, 702, 704))
        commandable = c is not None and self.refusal(c) is None
        max_charge = max_discharge = 0
        if commandable:
            max_charge = round(_first(battery, "WChaRteMax") or _first(ratings, "WChaRteMax")
                               or _first(ratings, "WChaRteMaxRtg") or 0)
            max_discharge = round(_first(battery, "WDisChaRteMax")
                                  or _first(ratings, "WDisChaRteMax")
                                  or _first(ratings, "WDisChaRteMaxRtg") or 0)
        power = _first(battery, "W")
        if power is None and measure is not None:
            generation = measure.optional_number("W")
            power = None if generation is None else -generation
        setpoint = 0
        if commandable and c is not None and c.optional_int("WSetEna") == _ENABLED:
            if c.optional_int("WSetMod") == _WATTS:
                setpoint = -round(c.number("WSet"))
            else:  # W_MAX_PCT: percent of the DER's maximum active power
                wmax = _first(ratings, "WMax") or _first(ratings, "WMaxRtg") or 0
                setpoint = -round(c.number("WSetPct") * wmax / 100)
        return _reading(models, power_w=power, max_charge_w=max_charge,
                        max_discharge_w=max_discharge, setpoint_w=setpoint,
                        revert_s=None if c is None else c.optional_int("WSetRvrtTms"))

    def setpoint(self, controls: ModelData, reading: BatteryReading, *, watts: int,
                 revert_s: int) -> tuple[int, list[dict[str, int]]]:
        sf = controls.scale_factor("WSet")
        raw = to_raw(-watts, sf)  # 704's sign: + injecting (discharging)
        # Revert timer and what reverts to first (two adjacent points), then the setpoint: it is
        # never live without its timer.
        return -round(apply_sf(raw, sf)), [
            {"WSetEnaRvrt": _DISABLED, "WSetRvrtTms": revert_s},
            {"WSetEna": _ENABLED, "WSetMod": _WATTS, "WSet": raw, "WSetRvrt": 0},
        ]


def _reading(models: Sample, *, power_w: float | None, max_charge_w: int, max_discharge_w: int,
             setpoint_w: int, revert_s: int | None) -> BatteryReading:
    """What both families read alike: state of charge, window and capacity (802, 713)."""
    battery, capacity = models.get(802), models.get(713)
    soc = battery.number("SoC") if battery is not None else _first(capacity, "SoC")
    known = soc is not None
    return BatteryReading(
        soc_pct=soc if soc is not None else math.nan,
        power_w=_rounded(power_w),
        max_charge_w=max_charge_w,
        max_discharge_w=max_discharge_w,
        soc_min_pct=max(_present(battery, "SoCMin", "SoCRsvMin") or [0.0]),
        soc_max_pct=min(_present(battery, "SoCMax", "SocRsvMax") or [100.0]),
        capacity_wh=_rounded(_first(capacity, "WHRtg") or _first(battery, "WHRtg"))
        if known else None,
        setpoint_w=setpoint_w,
        revert_s=revert_s,
    )


def _rate_raw(watts: int, max_w: int, sf: int) -> int:
    """The rate register for ``watts`` of ``max_w``, rounded up so that a device which truncates
    (as our firmware does, and as integer arithmetic on a microcontroller tends to) lands on the
    requested watts exactly whenever ``max_w`` allows; exact arithmetic, no float error."""
    return ceil(Fraction(100 * watts, max_w) / Fraction(10) ** sf)


def _command_w(
    mode: int, in_rte: int, out_rte: int, sf: int, max_charge_w: int, max_discharge_w: int
) -> int:
    """The power the device derives from the 124 registers, computed the way the firmware does
    (forced-rate reading of 124, truncating toward zero)."""
    watts = Fraction(0)
    if mode & _CHARGE:
        watts += Fraction(in_rte) * Fraction(10) ** sf * max_charge_w / 100
    if mode & _DISCHARGE:
        watts -= Fraction(out_rte) * Fraction(10) ** sf * max_discharge_w / 100
    return trunc(watts)


def _first(model: ModelData | None, name: str) -> float | None:
    return None if model is None else model.optional_number(name)


def _present(model: ModelData | None, *names: str) -> list[float]:
    values = [_first(model, n) for n in names]
    return [v for v in values if v is not None]


def _rounded(value: float | None) -> int | None:
    return None if value is None else round(value)
