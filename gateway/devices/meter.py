"""Energy meter driver: a SunSpec meter model, integer with scale factors (201–204) or float
(211–214), which all name their points alike, plus gridpeer's vendor model 64210 when the meter
has it: its HMAC-tagged energy counters.

The meter is what settlement trusts, so the driver refuses to guess where SunSpec lets it: a
device that leaves power "not implemented" is reported as ``BadDeviceData`` rather than read as
zero. Energy counters are the exception (see ``_counter``).

Tagged counters (docs/sunspec-vendor-model.md): model 64210 holds ``Seq``, 64-bit ``TotWhImp`` /
``TotWhExp`` and a 32-byte HMAC-SHA256 ``Tag`` over them. They are read in one request of their
own (the meter updates them together between requests), and a reading then carries the tagged
counters, so ``verify_meter_reading`` checks exactly what settlement will use.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from gateway.devices.bus import ModbusBus
from gateway.devices.capability import Command
from gateway.devices.discovery import DiscoveredDevice
from gateway.devices.errors import BadDeviceData
from gateway.devices.model_reader import ModelData, read_models
from gateway.devices.plausibility import PlausibilityGuard, Uses
from protocols.metering import RejectedReading, VerifiedReading, verify_reading

METER_MODELS = (203, 201, 204, 202, 213, 211, 214, 212)
"""Preference order: three-phase wye (what our firmware serves), single phase, delta, split;
integer with scale factors first, then the same four as floats."""
TAGGED_MODEL = 64210
"""gridpeer vendor model: device status and tagged energy counters."""
_TAG_WORDS = 16
_METER_POINTS = ("W", "TotWhImp", "TotWhExp", "PhV", "A", "Hz")
_TAGGED_POINTS = ("Seq", "TotWhImp", "TotWhExp", *(f"Tag{i}" for i in range(_TAG_WORDS)))


@dataclass(frozen=True, slots=True)
class MeterReading:
    """One meter sample at the grid connection point.

    ``power_w``: + = import from the grid, − = export (SunSpec meters use the same sign).
    ``import_wh``/``export_wh``: lifetime counters, monotonic on a healthy meter; on a tagging
    meter the 64-bit counters the tag covers. ``seq`` and ``tag`` (hex HMAC-SHA256) are None when
    the meter has no model 64210 or publishes no tags (no key provisioned).
    """

    power_w: int
    import_wh: int
    export_wh: int
    voltage_v: float | None
    current_a: float | None
    frequency_hz: float | None
    seq: int | None = None
    tag: str | None = None


class Meter:
    """Reads an energy meter found by ``discover``."""

    def __init__(self, *, bus: ModbusBus, device: DiscoveredDevice,
                 now_s: Callable[[], float] | None = None) -> None:
        self._bus = bus
        self._unit = device.unit
        self._location = device.require_one_of(driver="Meter", model_ids=METER_MODELS)
        self._tagged = device.location(TAGGED_MODEL)
        self.uses: Uses = {self._location.model_id: _METER_POINTS,
                           **({TAGGED_MODEL: _TAGGED_POINTS} if self._tagged else {})}
        """The points this meter's readings come from, by model."""
        self._guard = PlausibilityGuard(now_s=now_s, uses=self.uses,
                                        label=f"{bus} unit {device.unit}")

    @property
    def model_id(self) -> int:
        """Which SunSpec meter model this meter presents."""
        return self._location.model_id

    @property
    def family(self) -> str:
        """Which models this meter is read through."""
        tags = ", gridpeer tagged counters 64210" if self._tagged else ""
        return f"SunSpec meter model {self.model_id}{tags}"

    @property
    def commands(self) -> tuple[Command, ...]:
        """A meter is only read."""
        return ()

    @property
    def tagged(self) -> bool:
        """Whether the meter serves model 64210 (it may still publish no tags: no key)."""
        return self._tagged is not None

    async def read(self) -> MeterReading:
        """One sample: the meter model in one request, then model 64210 in one more if present.

        Both are checked for plausibility together (``gateway/devices/plausibility.py``)."""
        started = self._guard.begin()
        models = await read_models(self._bus, unit=self._unit, locations=(self._location,))
        if self._tagged is not None:
            models |= await read_models(self._bus, unit=self._unit, locations=(self._tagged,))
        self._guard.check(models, started_s=started)
        m = models[self._location.model_id]
        import_wh, export_wh = _counter(m, "TotWhImp"), _counter(m, "TotWhExp")
        seq = tag = None
        if self._tagged is not None:
            status = models[TAGGED_MODEL]
            seq = status.optional_int("Seq")
            if seq is not None:
                import_wh = _tagged_counter(status, "TotWhImp")
                export_wh = _tagged_counter(status, "TotWhExp")
                tag = struct.pack(f">{_TAG_WORDS}H", *(
                    _word(status, f"Tag{i}") for i in range(_TAG_WORDS))).hex()
        return MeterReading(
            power_w=round(m.number("W")),
            import_wh=import_wh,
            export_wh=export_wh,
            voltage_v=m.optional_number("PhV"),
            current_a=m.optional_number("A"),
            frequency_hz=m.optional_number("Hz"),
            seq=seq,
            tag=tag,
        )


def verify_meter_reading(reading: MeterReading, *, device_id: str, key: bytes,
                         last_seq: int | None) -> VerifiedReading | RejectedReading:
    """Check a reading's tag with the meter's provisioned ``key`` (``gridpeer flash`` keeps it).

    ``device_id`` is the meter's (model 1 ``SN``); ``last_seq`` the last accepted sequence number
    (None: none yet). ``RejectedReading("untagged")`` for a reading without a tag, else the
    verdict of ``protocols.metering.verify_reading`` ("bad-tag", "replayed", "malformed").
    """
    if reading.seq is None or reading.tag is None:
        return RejectedReading("untagged")
    return verify_reading(key, device_id, reading.seq, reading.import_wh, reading.export_wh,
                          reading.tag, last_seq)


def _counter(model: ModelData, name: str) -> int:
    """An energy accumulator. SunSpec encodes "not accumulated" as 0, which is also what a new
    meter that has counted nothing yet holds, so "not implemented" reads as 0 Wh here."""
    value = model.optional_number(name)
    return 0 if value is None else round(value)


def _tagged_counter(model: ModelData, name: str) -> int:
    value = model.raw_int(name)
    if value is None:
        raise BadDeviceData(f"model {TAGGED_MODEL}: {name} not implemented beside a Seq")
    return value


def _word(model: ModelData, name: str) -> int:
    """A tag word as the device holds it: 0xFFFF is tag data here, not "not implemented"."""
    return model.registers[model.definition.point(name).offset]
