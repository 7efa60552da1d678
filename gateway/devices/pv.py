"""PV inverter driver: output from SunSpec 701, rating from 702, export limit through 704.

The limit is ``WMaxLimPct`` (percent of the rating) with its own revert timer, written together
with its reversion values (100 %, disabled) in one request, so when the timer runs out the
inverter returns to the safe default of the architecture: unlimited, no export target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gateway.devices.bus import ModbusBus
from gateway.devices.discovery import DiscoveredDevice
from gateway.devices.model_reader import ModelData, read_models
from gateway.devices.model_writer import write_points
from gateway.devices.plausibility import PlausibilityGuard
from protocols.sunspec.points import to_raw

_ENABLED = 1
_DISABLED = 0
_MAX_REVERT_S = 0xFFFF_FFFE  # uint32 seconds; all ones is "not implemented"


@dataclass(frozen=True, slots=True)
class PvReading:
    """One inverter sample.

    ``power_w``: − = producing (the project's sign; SunSpec 701 ``W`` is + for generation), so it
    adds up with the meter and battery. ``energy_wh``: lifetime energy injected.
    ``limit_pct``: the active output limit in percent of ``rated_w``, None when not limited.
    """

    power_w: int
    energy_wh: int | None
    rated_w: int | None
    limit_pct: float | None


class PvInverter:
    """Reads a PV inverter found by ``discover`` (needs 701; 702 and 704 are used when present)."""

    def __init__(self, *, bus: ModbusBus, device: DiscoveredDevice,
                 now_s: Callable[[], float] | None = None) -> None:
        self._bus = bus
        self._unit = device.unit
        self._guard = PlausibilityGuard(now_s=now_s)
        (measure,) = device.require(driver="PvInverter", model_ids=(701,))
        self._locations = tuple(
            loc for loc in (measure, device.location(702), device.location(704)) if loc
        )
        self._device = device
        self._controls: ModelData | None = None

    async def read(self) -> PvReading:
        """One sample of 701 (+ 702 and 704 when present; adjacent models share requests)."""
        started = self._guard.begin()
        models = await read_models(self._bus, unit=self._unit, locations=self._locations)
        self._guard.check(models, started_s=started)
        measure, capacity, controls = models[701], models.get(702), models.get(704)
        limited = controls is not None and controls.optional_int("WMaxLimPctEna") == _ENABLED
        rated = capacity.optional_number("WMaxRtg") if capacity else None
        energy = measure.optional_number("TotWhInj")
        self._controls = controls
        return PvReading(
            power_w=-round(measure.number("W")),
            energy_wh=None if energy is None else round(energy),
            rated_w=None if rated is None else round(rated),
            limit_pct=controls.optional_number("WMaxLimPct") if controls and limited else None,
        )

    async def set_limit(self, *, pct: float, revert_s: int) -> None:
        """Limit output to ``pct`` percent of the rating for ``revert_s`` seconds."""
        if not 0 <= pct <= 100:
            raise ValueError(f"PV limit must be 0..100 %, got {pct}")
        if not 1 <= revert_s <= _MAX_REVERT_S:
            raise ValueError(f"revert_s must be 1..{_MAX_REVERT_S} s, got {revert_s}")
        controls = await self._control_model()
        sf = controls.scale_factor("WMaxLimPct")
        await write_points(self._bus, unit=self._unit, model=controls, values={
            "WMaxLimPctEna": _ENABLED,
            "WMaxLimPct": to_raw(pct, sf),
            "WMaxLimPctRvrt": to_raw(100, sf),
            "WMaxLimPctEnaRvrt": _DISABLED,
            "WMaxLimPctRvrtTms": revert_s,
        })

    async def clear_limit(self) -> None:
        """Lift the output limit now instead of waiting for its revert timer."""
        controls = await self._control_model()
        await write_points(
            self._bus, unit=self._unit, model=controls, values={"WMaxLimPctEna": _DISABLED}
        )

    async def _control_model(self) -> ModelData:
        """Model 704 as last read (its scale factors are static), reading it if never read."""
        if self._controls is not None:
            return self._controls
        (location,) = self._device.require(driver="PvInverter limit", model_ids=(704,))
        return (await read_models(self._bus, unit=self._unit, locations=(location,)))[704]
