"""Battery driver: SoC and limits from SunSpec 802/713, setpoints through storage controls (124).

Setpoints follow the semantics our battery firmware implements (``firmware/roles/battery.py``),
which read model 124 as a forced rate: ``StorCtl_Mod`` bit 0 charges at ``InWRte`` percent of
``WChaMax``, bit 1 discharges at ``OutWRte`` percent of 802's ``WDisChaRteMax``, both bits give
the sum. Zero is written as both bits with both rates 0, which every reading of 124 agrees means
"hold" (a device that treats the rates as limits also holds). Every setpoint carries a revert time
so a battery left alone by a dead gateway goes idle by itself.

The driver never clamps: the dispatcher's envelope does, and a value past the device's own limits
here is a bug upstream, so it raises ``ValueError`` instead of being quietly cut.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from math import ceil, trunc

from gateway.devices.bus import ModbusBus
from gateway.devices.discovery import DiscoveredDevice
from gateway.devices.model_reader import ModelData, read_models
from gateway.devices.model_writer import write_points
from gateway.devices.plausibility import PlausibilityGuard

_CHARGE = 1
_DISCHARGE = 2
_MAX_REVERT_S = 0xFFFE  # uint16 seconds; 0xFFFF is "not implemented"


@dataclass(frozen=True, slots=True)
class BatteryReading:
    """One battery sample.

    ``power_w``: + = charging, − = discharging (802 ``W``; None if the device does not measure it).
    ``soc_min_pct``/``soc_max_pct``: the window the device allows (reserve setpoints if set,
    else nameplate). ``setpoint_w``/``revert_s``: the command the device currently holds.
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
    """Reads and commands a battery found by ``discover`` (needs 124 and one of 802/713)."""

    def __init__(self, *, bus: ModbusBus, device: DiscoveredDevice,
                 now_s: Callable[[], float] | None = None) -> None:
        self._bus = bus
        self._unit = device.unit
        self._guard = PlausibilityGuard(now_s=now_s)
        (self._controls,) = device.require(driver="Battery", model_ids=(124,))
        self._soc_source = device.require_one_of(driver="Battery", model_ids=(802, 713))
        self._locations = tuple(
            loc for loc in (device.location(713), device.location(802), self._controls) if loc
        )
        self._last: tuple[BatteryReading, ModelData] | None = None

    async def read(self) -> BatteryReading:
        """One sample; the three models sit next to each other, so usually one request."""
        reading, _ = await self._sample()
        return reading

    async def _sample(self) -> tuple[BatteryReading, ModelData]:
        started = self._guard.begin()
        models = await read_models(self._bus, unit=self._unit, locations=self._locations)
        self._guard.check(models, started_s=started)
        c = models[124]
        battery = models.get(802)
        capacity = models.get(713)
        soc = (battery or capacity or c).number("SoC" if battery or capacity else "ChaState")
        max_charge = c.number("WChaMax")
        max_discharge = _first(battery, "WDisChaRteMax") or max_charge
        reading = BatteryReading(
            soc_pct=soc,
            power_w=_rounded(_first(battery, "W")),
            max_charge_w=round(max_charge),
            max_discharge_w=round(max_discharge),
            soc_min_pct=max(_present(battery, "SoCMin", "SoCRsvMin") or [0.0]),
            soc_max_pct=min(_present(battery, "SoCMax", "SocRsvMax") or [100.0]),
            capacity_wh=_rounded(_first(capacity, "WHRtg") or _first(battery, "WHRtg")),
            setpoint_w=_command_w(
                c.raw_int("StorCtl_Mod") or 0,
                c.raw_int("InWRte") or 0,
                c.raw_int("OutWRte") or 0,
                c.scale_factor("InWRte"),
                round(max_charge),
                round(max_discharge),
            ),
            revert_s=c.optional_int("InOutWRte_RvrtTms"),
        )
        self._last = (reading, c)
        return self._last

    async def set_power(self, *, watts: int, revert_s: int) -> int:
        """Command ``watts`` (+ charge, − discharge) for ``revert_s`` seconds; returns the watts
        the device was actually commanded (the rate registers are percentages, so a few W of
        quantisation is possible).

        Refresh it before ``revert_s`` runs out to keep it: that is the heartbeat.
        """
        if not 1 <= revert_s <= _MAX_REVERT_S:
            raise ValueError(f"revert_s must be 1..{_MAX_REVERT_S} s, got {revert_s}")
        # Limits and scale factors change rarely: the last sample's are good enough, and a
        # setpoint refresh then costs writes only.
        reading, controls = self._last or await self._sample()
        if watts > reading.max_charge_w or -watts > reading.max_discharge_w:
            raise ValueError(
                f"battery setpoint {watts} W outside the device limits "
                f"[-{reading.max_discharge_w}, +{reading.max_charge_w}] W"
            )
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
        await self._write(controls, {"InOutWRte_RvrtTms": revert_s})
        await self._write(controls, {"OutWRte": out_rte, "InWRte": in_rte})
        await self._write(controls, {"StorCtl_Mod": mode})
        return commanded

    async def _write(self, controls: ModelData, values: dict[str, int]) -> None:
        await write_points(self._bus, unit=self._unit, model=controls, values=values)


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
