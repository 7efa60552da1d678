"""Controllable load driver (EV charger, deferrable appliance): the project's vendor model 64220.

The load says what it still needs (``WhNeed``) and by when (``Dline``, minute of the day); the
gateway allows it a power (``WLim``) with a revert time, written together in one request so the
limit is never live without its timer. When the timer runs out the load goes back to its own
default (full-power charging, the appliance's own logic): the gateway shifts the load while it is
alive and never strands it when it is not.

A bidirectional (V2G) charger also reports the car's pack (``SoC``, ``WhRtg``, ``WDisMax``,
``WDis``) and takes a discharge setpoint (``WDisSet``) under the same revert timer. The driver
offers discharge only on a reading it can believe: a charger without those points (or an older
map that ends at ``TotWh``) is charge-only, and a V2G charger whose pack reading is missing or
impossible (SoC past 100 %, no pack size) is charge-only for that reading, the reason logged and
counted (``pack_problems``), while its charging stays under control. A gateway never feeds a car
back on a number it cannot justify.
"""

from __future__ import annotations

import enum
import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from gateway.devices.bus import ModbusBus
from gateway.devices.capability import Command
from gateway.devices.discovery import DiscoveredDevice
from gateway.devices.errors import BadDeviceData
from gateway.devices.model_reader import ModelData, read_models
from gateway.devices.model_writer import write_points
from gateway.devices.plausibility import PlausibilityGuard, Uses
from protocols.sunspec.models import load_model

log = logging.getLogger(__name__)

_VENDOR_MODEL = 64220
_MAX_REVERT_S = 0xFFFE  # uint16 seconds; 0xFFFF is "not implemented"
_PACK_POINTS = frozenset({"SoC", "WhRtg"})
"""The car's points, not the charger's: they come and go with the car (not implemented while none
is plugged in, another pack with another car), which the plausibility guard's structure rule
would take for a changed device, one failed poll at each plug-in. The driver checks them itself
(``_pack``): a value it cannot believe makes the car charge-only, never a failed poll."""
_USES: Uses = {_VENDOR_MODEL: tuple(p.name for p in load_model(_VENDOR_MODEL).points
                                    if p.name not in _PACK_POINTS)}
MAX_PACK_WH = 250_000
"""A pack size past any car's (the largest sold are about 200 kWh): a larger one is a bad
reading, not a bus to plan with."""


class LoadKind(enum.IntEnum):
    """64220 ``Kind``."""

    APPLIANCE = 1
    EVSE = 2


@dataclass(frozen=True, slots=True)
class PackReading:
    """The car behind a V2G charger, as believed: SoC in 0..100 %, the pack's size, the most the
    charger feeds back and what it feeds back now (W)."""

    soc_pct: float
    capacity_wh: int
    max_discharge_w: int
    discharge_w: int


@dataclass(frozen=True, slots=True)
class LoadReading:
    """One sample of a controllable load. Powers in W (a load only consumes), energy in Wh.

    ``deadline_min`` is the minute of the day the needed energy is due (None while nothing is
    owed or the load is not connected); ``limited`` says whether the load follows the gateway's
    ``limit_w`` (False: its own default). ``max_discharge_w`` is what the charger can feed back
    from a car (0: a charge-only charger). ``pack`` is the car's pack when the charger can
    discharge, a car is plugged in and the reading is believable (None: charge-only now);
    ``pack_problem`` says why a V2G charger with a car gave no believable pack.
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
    max_discharge_w: int = 0
    pack: PackReading | None = None
    pack_problem: str | None = None


class ControllableLoad:
    """Reads and limits a load found by ``discover`` (needs model 64220)."""

    def __init__(self, *, bus: ModbusBus, device: DiscoveredDevice,
                 now_s: Callable[[], float] | None = None) -> None:
        self._bus = bus
        self._unit = device.unit
        self._guard = PlausibilityGuard(now_s=now_s, uses=_USES)
        (self._location,) = device.require(driver="ControllableLoad", model_ids=(_VENDOR_MODEL,))
        self._last: tuple[LoadReading, ModelData] | None = None
        self._discharging = False
        self.pack_problems: Counter[str] = Counter()
        """Readings of a V2G charger whose pack was not believed, by the point at fault: each
        one left the car charge-only."""

    family = "gridpeer controllable load (vendor model 64220)"
    uses: Uses | None = _USES
    """Every point of 64220 but the car's pack can refuse a reading: it is gridpeer's own,
    served as declared."""

    @property
    def commands(self) -> tuple[Command, ...]:
        """The power the load may draw, with its revert timer, through 64220; on a charger that
        can feed back (V2G, as its last reading said), the power to feed back from the car too."""
        limit = Command(what="power limit", model=_VENDOR_MODEL, points=("WLim", "RvrtTms"))
        if self._last is None or not self._last[0].max_discharge_w:
            return (limit,)
        return (limit, Command(what="discharge (V2G)", model=_VENDOR_MODEL,
                               points=("WDisSet", "RvrtTms")))

    async def read(self) -> LoadReading:
        reading, _ = await self._sample()
        return reading

    async def _sample(self) -> tuple[LoadReading, ModelData]:
        started = self._guard.begin()
        models = await read_models(self._bus, unit=self._unit, locations=(self._location,))
        self._guard.check(models, started_s=started)
        m = models[_VENDOR_MODEL]
        reading = decode_load(m)
        problem = reading.pack_problem
        if problem is not None:
            point = problem.split(" ", 1)[0]
            if not self.pack_problems[point]:
                log.warning("charger at unit %s is charge-only while %s", self._unit, problem)
            self.pack_problems[point] += 1
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
        if self._discharging or model.unscaled.get("WDisSet") not in (None, 0):
            # Stop feeding back before charging is allowed: were the second write lost, the car
            # would sit idle until the timer, never drain.
            await write_points(self._bus, unit=self._unit, model=model, values={"WDisSet": 0})
            self._discharging = False
        await write_points(self._bus, unit=self._unit, model=model,
                           values={"WLim": watts, "RvrtTms": revert_s})

    async def set_discharge(self, *, watts: int, revert_s: int) -> None:
        """Feed ``watts`` back from the car for ``revert_s`` seconds (V2G); refresh it to keep it.

        Charging is stopped first (``WLim`` 0 with the timer), then the setpoint written: were
        the second write lost, the car would sit idle until the timer, never drain unasked.
        Raises ``ValueError`` when the last reading offered no discharge or ``watts`` is past
        what it offered: whether to discharge is decided upstream on that same reading.
        """
        if not 1 <= revert_s <= _MAX_REVERT_S:
            raise ValueError(f"revert_s must be 1..{_MAX_REVERT_S} s, got {revert_s}")
        reading, model = self._last or await self._sample()
        if reading.pack is None:
            raise ValueError("the charger's last reading offered no discharge"
                             + (f" ({reading.pack_problem})" if reading.pack_problem else ""))
        if not 0 < watts <= reading.pack.max_discharge_w:
            raise ValueError(f"discharge {watts} W outside 1..{reading.pack.max_discharge_w} W")
        await write_points(self._bus, unit=self._unit, model=model,
                           values={"WLim": 0, "RvrtTms": revert_s})
        await write_points(self._bus, unit=self._unit, model=model, values={"WDisSet": watts})
        self._discharging = True


def decode_load(m: ModelData) -> LoadReading:
    """A reading from a decoded model 64220; ``BadDeviceData`` when its core points are out of
    their ranges (the reading is then stale, and the load's timer returns it to its default)."""
    kind, conn, state = m.optional_int("Kind"), m.optional_int("Conn"), m.optional_int("St")
    if kind is None or kind not in LoadKind._value2member_map_:
        raise BadDeviceData(f"model 64220 Kind is {kind}, not a load kind")
    if conn not in (0, 1) or state not in (0, 1):
        raise BadDeviceData(f"model 64220 Conn {conn} / St {state} out of their enumerations")
    deadline = m.optional_int("Dline")
    if deadline is not None and not 0 <= deadline < 1440:
        raise BadDeviceData(f"model 64220 Dline {deadline} is not a minute of the day")
    max_dis = m.optional_int("WDisMax") if kind == LoadKind.EVSE else None
    pack, problem = _pack(m) if max_dis and conn == 1 else (None, None)
    return LoadReading(
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
        max_discharge_w=max_dis or 0,
        pack=pack,
        pack_problem=problem,
    )


def _pack(m: ModelData) -> tuple[PackReading | None, str | None]:
    """The pack of the car at a V2G charger if it is one that can be, else None and why (the
    reason starts with the point at fault)."""
    for name in ("SoC", "WhRtg", "WDis", "WDisSet"):
        if (why := m.missing(name)) is not None:
            return None, f"{name} {why}"
    soc, capacity = m.optional_number("SoC"), m.optional_int("WhRtg")
    max_w, now_w = m.optional_int("WDisMax"), m.optional_int("WDis")
    if soc is None or capacity is None or max_w is None or now_w is None:
        return None, "SoC not implemented"  # missing() said they all were: unreachable
    if not (math.isfinite(soc) and 0 <= soc <= 100):
        return None, f"SoC {soc:g} % is outside 0..100 %"
    if not 0 < capacity <= MAX_PACK_WH:
        return None, f"pack size WhRtg {capacity} Wh is outside 1..{MAX_PACK_WH} Wh"
    if now_w > max_w:
        return None, f"feeding back WDis {now_w} W past its maximum WDisMax {max_w} W"
    return PackReading(soc_pct=soc, capacity_wh=capacity, max_discharge_w=max_w,
                       discharge_w=now_w), None


def _required_int(model: ModelData, name: str) -> int:
    value = model.optional_int(name)
    if value is None:
        raise BadDeviceData(f"model 64220 point {name} required but not implemented")
    return value
