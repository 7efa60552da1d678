"""Energy meter driver: SunSpec meter model 203 (or 201/202/204, which name their points alike).

The meter is what settlement trusts, so the driver refuses to guess where SunSpec lets it: a
device that leaves power "not implemented" is reported as ``BadDeviceData`` rather than read as
zero. Energy counters are the exception (see ``_counter``).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.devices.bus import ModbusBus
from gateway.devices.discovery import DiscoveredDevice
from gateway.devices.model_reader import ModelData, read_models

METER_MODELS = (203, 201, 204, 202)
"""Preference order: three-phase wye (what our firmware serves), single phase, delta, split."""


@dataclass(frozen=True, slots=True)
class MeterReading:
    """One meter sample at the grid connection point.

    ``power_w``: + = import from the grid, − = export (SunSpec meters use the same sign).
    ``import_wh``/``export_wh``: lifetime counters, monotonic on a healthy meter.
    """

    power_w: int
    import_wh: int
    export_wh: int
    voltage_v: float | None
    current_a: float | None
    frequency_hz: float | None


class Meter:
    """Reads an energy meter found by ``discover``."""

    def __init__(self, *, bus: ModbusBus, device: DiscoveredDevice) -> None:
        self._bus = bus
        self._unit = device.unit
        self._location = device.require_one_of(driver="Meter", model_ids=METER_MODELS)

    @property
    def model_id(self) -> int:
        """Which SunSpec meter model this meter presents."""
        return self._location.model_id

    async def read(self) -> MeterReading:
        """One sample, read in a single request (the meter models are under 125 registers)."""
        models = await read_models(self._bus, unit=self._unit, locations=(self._location,))
        m = models[self._location.model_id]
        return MeterReading(
            power_w=round(m.number("W")),
            import_wh=_counter(m, "TotWhImp"),
            export_wh=_counter(m, "TotWhExp"),
            voltage_v=m.optional_number("PhV"),
            current_a=m.optional_number("A"),
            frequency_hz=m.optional_number("Hz"),
        )


def _counter(model: ModelData, name: str) -> int:
    """An energy accumulator. SunSpec encodes "not accumulated" as 0, which is also what a new
    meter that has counted nothing yet holds, so "not implemented" reads as 0 Wh here."""
    value = model.optional_number(name)
    return 0 if value is None else round(value)
