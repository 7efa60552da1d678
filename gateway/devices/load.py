"""Controllable load driver (EV charger, deferrable appliance): the project's vendor model 64220.

The load says what it still needs (``WhNeed``) and by when (``Dline``, minute of the day); the
gateway allows it a power (``WLim``) with a revert time, written together in one request so the
limit is never live without its timer. When the timer runs out the load goes back to its own
default (full-power charging, the appliance's own logic): the gateway shifts the load while it is
alive and never strands it when it is not.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from gateway.devices.bus import ModbusBus
from gateway.devices.capability import Command
from gateway.devices.discovery import DiscoveredDevice
from gateway.devices.errors import BadDeviceData
from gateway.devices.model_reader import ModelData, read_models
from gateway.devices.model_writer import write_points
from gateway.devices.plausibility import PlausibilityGuard, Uses

_VENDOR_MODEL = 64220
_MAX_REVERT_S = 0xFFFE  # uint16 seconds; 0xFFFF is "not implemented"


class LoadKind(enum.IntEnum):
    """64220 ``Kind``."""

    APPLIANCE = 1
    EVSE = 2


@dataclass(frozen=True, slots=True)
class LoadReading:
    """One sample of a controllable load. Powers in W (a load only consumes), energy in Wh.

    ``deadline_min`` is the minute of the day the needed energy is due (None while nothing is
    owed or the load is not connected); ``limited`` says whether the load follows the gateway's
    ``limit_w`` (False: its own default).
    """

    kind: LoadKind
    connected: bool
    need_wh: int
    deadline_min: int | None
    max_w: int
    limit_w: int
    limited: bool
    power_w: int
    energy_wh: int
    revert_remaining_s: int | None


class ControllableLoad:
    """Reads and limits a load found by ``discover`` (needs model 64220)."""

    def __init__(self, *, bus: ModbusBus, device: DiscoveredDevice,
                 now_s: Callable[[], float] | None = None) -> None:
        self._bus = bus
        self._unit = device.unit
        self._guard = PlausibilityGuard(now_s=now_s)
        (self._location,) = device.require(driver="ControllableLoad", model_ids=(_VENDOR_MODEL,))
        self._last: tuple[LoadReading, ModelData] | None = None

    family = "gridpeer controllable load (vendor model 64220)"
    uses: Uses | None = None
    """Every point of 64220 can refuse a reading: it is gridpeer's own, served as declared."""

    @property
    def commands(self) -> tuple[Command, ...]:
        """The power the load may draw, with its revert timer, through 64220."""
        return (Command(what="power limit", model=_VENDOR_MODEL, points=("WLim", "RvrtTms")),)

    async def read(self) -> LoadReading:
        reading, _ = await self._sample()
        return reading

    async def _sample(self) -> tuple[LoadReading, ModelData]:
        started = self._guard.begin()
        models = await read_models(self._bus, unit=self._unit, locations=(self._location,))
        self._guard.check(models, started_s=started)
        m = models[_VENDOR_MODEL]
        kind, conn, state = m.optional_int("Kind"), m.optional_int("Conn"), m.optional_int("St")
        if kind is None or kind not in LoadKind._value2member_map_:
            raise BadDeviceData(f"model 64220 Kind is {kind}, not a load kind")
        if conn not in (0, 1) or state not in (0, 1):
            raise BadDeviceData(f"model 64220 Conn {conn} / St {state} out of their enumerations")
        deadline = m.optional_int("Dline")
        if deadline is not None and not 0 <= deadline < 1440:
            raise BadDeviceData(f"model 64220 Dline {deadline} is not a minute of the day")
        reading = LoadReading(
            kind=LoadKind(kind),
            connected=conn == 1,
            need_wh=_required_int(m, "WhNeed"),
            deadline_min=deadline,
            max_w=_required_int(m, "WMax"),
            limit_w=_required_int(m, "WLim"),
            limited=state == 1,
            power_w=_required_int(m, "W"),
            energy_wh=m.optional_int("TotWh") or 0,  # SunSpec reads an accumulator at 0 as None
            revert_remaining_s=m.optional_int("RvrtRem"),
        )
        self._last = (reading, m)
        return self._last

    async def set_limit(self, *, watts: int, revert_s: int) -> None:
        """Allow the load ``watts`` for ``revert_s`` seconds; refresh it before then to keep it.

        Raises ``ValueError`` for a limit outside 0..``WMax``: the planner caps it, so a value
        past the device's maximum is a bug upstream, not something to cut quietly here.
        """
        if not 1 <= revert_s <= _MAX_REVERT_S:
            raise ValueError(f"revert_s must be 1..{_MAX_REVERT_S} s, got {revert_s}")
        reading, model = self._last or await self._sample()
        if not 0 <= watts <= reading.max_w:
            raise ValueError(f"load limit {watts} W outside the device range 0..{reading.max_w} W")
        await write_points(self._bus, unit=self._unit, model=model,
                           values={"WLim": watts, "RvrtTms": revert_s})


def _required_int(model: ModelData, name: str) -> int:
    value = model.optional_int(name)
    if value is None:
        raise BadDeviceData(f"model 64220 point {name} required but not implemented")
    return value
