"""PV inverter driver: whichever SunSpec inverter models the device presents (docs/devices.md).

* **IEEE 1547 models** (701 present): output from 701 ``W`` and ``TotWhInj``, rating from 702
  ``WMaxRtg``, the output limit through 704 ``WMaxLimPct`` with its own revert timer, written
  together with its reversion values (100 %, disabled) in one request.
* **Inverter models** (101–103 integer with scale factors, 111–113 float): output from ``W`` and
  ``WH``, rating from 120 ``WRtg`` (else 121 ``WMax``), the limit through 123 ``WMaxLimPct``
  (percent of 121 ``WMax``) with ``WMaxLimPct_RvrtTms``, switched on by ``WMaxLim_Ena``: timer
  first, then the value, then the switch, one request each (the registers between them are other
  settings), so the limit is never live without its timer.

Either way, when the timer runs out the inverter returns to the safe default of the architecture:
unlimited. A device that cannot scale the limit or has no revert timer ("not implemented") gets no
limit at all (``NotCommandable``): a limit a dead gateway could not end is not written. 123's
``Conn`` is never written: a limit of 0 % curtails as a disconnect would, and ends by itself.
122 (status) and 160 (MPPT) are found by discovery and not read: the AC power and energy the
gateway needs are in the inverter model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gateway.devices.bus import ModbusBus
from gateway.devices.capability import Command, unimplemented
from gateway.devices.discovery import DiscoveredDevice
from gateway.devices.errors import NotCommandable
from gateway.devices.model_reader import ModelData, read_models
from gateway.devices.model_writer import write_points
from gateway.devices.plausibility import PlausibilityGuard, Sample, Uses
from protocols.sunspec.points import to_raw

_ENABLED = 1
_DISABLED = 0
INVERTER_MODELS = (103, 101, 102, 113, 111, 112)
"""The inverter models in preference order: three phase, single, split; integer, then float."""


@dataclass(frozen=True, slots=True)
class PvReading:
    """One inverter sample.

    ``power_w``: − = producing (the project's sign; SunSpec's ``W`` is + for generation), so it
    adds up with the meter and battery. ``energy_wh``: lifetime energy injected.
    ``limit_pct``: the active output limit in percent of the inverter's maximum power (``rated_w``
    unless an installer lowered its setting), None when not limited.
    """

    power_w: int
    energy_wh: int | None
    rated_w: int | None
    limit_pct: float | None


class PvInverter:
    """Reads and limits a PV inverter found by ``discover`` (needs 701 or one of 101–103 /
    111–113; the rating and control models are used when present)."""

    def __init__(self, *, bus: ModbusBus, device: DiscoveredDevice,
                 now_s: Callable[[], float] | None = None) -> None:
        self._bus = bus
        self._unit = device.unit
        self._family = _Der(device) if device.location(701) else _Inverter(device)
        self.uses: Uses = self._family.uses
        """The points this inverter's readings come from, by model."""
        self._guard = PlausibilityGuard(now_s=now_s, uses=self.uses,
                                        label=f"{bus} unit {device.unit}")
        self._controls: ModelData | None = None

    @property
    def family(self) -> str:
        """Which models this inverter is driven through."""
        return self._family.name

    @property
    def commands(self) -> tuple[Command, ...]:
        """The output limit, refused as of the last reading if the device cannot carry it."""
        family = self._family
        return (Command(what="output limit", model=family.control_id, points=family.limit_points,
                        refused=self._refusal(self._controls)),)

    async def read(self) -> PvReading:
        """One sample of the models the family reads (adjacent models share requests)."""
        started = self._guard.begin()
        models = await read_models(self._bus, unit=self._unit, locations=self._family.locations)
        self._guard.check(models, started_s=started)
        self._controls = models.get(self._family.control_id)
        return self._family.reading(models)

    async def set_limit(self, *, pct: float, revert_s: int) -> None:
        """Limit output to ``pct`` percent of the maximum power for ``revert_s`` seconds."""
        if not 0 <= pct <= 100:
            raise ValueError(f"PV limit must be 0..100 %, got {pct}")
        most = self._family.max_revert_s
        if not 1 <= revert_s <= most:
            raise ValueError(f"revert_s must be 1..{most} s, got {revert_s}")
        controls = await self._control_model()
        for values in self._family.limit(controls, pct=pct, revert_s=revert_s):
            await write_points(self._bus, unit=self._unit, model=controls, values=values)

    async def clear_limit(self) -> None:
        """Lift the output limit now instead of waiting for its revert timer."""
        controls = await self._control_model()
        await write_points(self._bus, unit=self._unit, model=controls,
                           values={self._family.enable_point: _DISABLED})

    def _refusal(self, controls: ModelData | None) -> str | None:
        family = self._family
        if family.control is None:
            return f"the device has no model {family.control_id} ({family.control_name})"
        return None if controls is None else unimplemented(controls, family.limit_points)

    async def _control_model(self) -> ModelData:
        """The control model as last read (re-read every poll), reading it if never read; raises
        ``NotCommandable`` when the device cannot carry a limit."""
        family = self._family
        if family.control is None:
            raise NotCommandable(f"no output limit: {self._refusal(None)}")
        if self._controls is None:
            self._controls = (await read_models(
                self._bus, unit=self._unit, locations=(family.control,)))[family.control_id]
        if (refused := self._refusal(self._controls)) is not None:
            raise NotCommandable(f"no output limit: {refused}")
        return self._controls


class _Der:
    """The IEEE 1547 models: 701 measures, 702 rates, 704 limits."""

    name = "IEEE 1547 DER models (701 measurement, 702 rating, 704 controls)"
    control_id = 704
    control_name = "DER AC controls"
    enable_point = "WMaxLimPctEna"
    limit_points = ("WMaxLimPctEna", "WMaxLimPct", "WMaxLimPctRvrt", "WMaxLimPctEnaRvrt",
                    "WMaxLimPctRvrtTms")
    max_revert_s = 0xFFFF_FFFE  # uint32 seconds; all ones is "not implemented"

    def __init__(self, device: DiscoveredDevice) -> None:
        (measure,) = device.require(driver="PvInverter", model_ids=(701,))
        self.control = device.location(704)
        self.locations = tuple(loc for loc in (measure, device.location(702), self.control) if loc)
        self.uses: Uses = {701: ("W", "TotWhInj"), 702: ("WMaxRtg",),
                           704: ("WMaxLimPctEna", "WMaxLimPct")}

    def reading(self, models: Sample) -> PvReading:
        measure, capacity, controls = models[701], models.get(702), models.get(704)
        rated = capacity.optional_number("WMaxRtg") if capacity else None
        return _reading(measure, "TotWhInj", rated, controls, self.enable_point)

    def limit(self, controls: ModelData, *, pct: float, revert_s: int) -> list[dict[str, int]]:
        sf = controls.scale_factor("WMaxLimPct")
        return [{
            "WMaxLimPctEna": _ENABLED,
            "WMaxLimPct": to_raw(pct, sf),
            "WMaxLimPctRvrt": to_raw(100, sf),
            "WMaxLimPctEnaRvrt": _DISABLED,
            "WMaxLimPctRvrtTms": revert_s,
        }]


class _Inverter:
    """The inverter models: 101–103 or 111–113 measure, 120/121 rate, 123 limits."""

    control_id = 123
    control_name = "immediate controls"
    enable_point = "WMaxLim_Ena"
    limit_points = ("WMaxLimPct_RvrtTms", "WMaxLimPct", "WMaxLim_Ena")
    max_revert_s = 0xFFFE  # uint16 seconds; 0xFFFF is "not implemented"

    def __init__(self, device: DiscoveredDevice) -> None:
        self.measure = device.require_one_of(driver="PvInverter", model_ids=(701, *INVERTER_MODELS))
        self.name = (f"SunSpec inverter models ({self.measure.model_id} measurement, "
                     "120 nameplate, 121 settings, 123 controls)")
        self.control = device.location(123)
        self.locations = tuple(loc for loc in (
            self.measure, device.location(120), device.location(121), self.control) if loc)
        self.uses: Uses = {self.measure.model_id: ("W", "WH"), 120: ("WRtg",), 121: ("WMax",),
                           123: ("WMaxLimPct", "WMaxLim_Ena")}

    def reading(self, models: Sample) -> PvReading:
        nameplate, settings = models.get(120), models.get(121)
        rated = nameplate.optional_number("WRtg") if nameplate else None
        if rated is None and settings is not None:
            rated = settings.optional_number("WMax")
        return _reading(models[self.measure.model_id], "WH", rated, models.get(123),
                        self.enable_point)

    def limit(self, controls: ModelData, *, pct: float, revert_s: int) -> list[dict[str, int]]:
        return [
            {"WMaxLimPct_RvrtTms": revert_s},
            {"WMaxLimPct": to_raw(pct, controls.scale_factor("WMaxLimPct"))},
            {"WMaxLim_Ena": _ENABLED},
        ]


def _reading(measure: ModelData, energy_point: str, rated: float | None,
             controls: ModelData | None, enable_point: str) -> PvReading:
    limited = controls is not None and controls.optional_int(enable_point) == _ENABLED
    energy = measure.optional_number(energy_point)
    return PvReading(
        power_w=-round(measure.number("W")),
        energy_wh=None if energy is None else round(energy),
        rated_w=None if rated is None else round(rated),
        limit_pct=controls.optional_number("WMaxLimPct") if controls and limited else None,
    )

