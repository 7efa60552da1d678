"""DC-DC converter driver: the project's vendor model 64200 (control) plus SunSpec 714 (ports).

SunSpec has no DC-DC control model, so 64200 carries mode (WAIT, CV, CC charge/discharge),
setpoints, limits and a revert timer (see ``protocols/sunspec/model_64200.json``). The current's
direction is in the mode, not the sign of ``ASet``; this driver takes a signed current (+ = from
the DC bus into the port, i.e. charging, the sign of 64200's ``DCA``) and picks the mode, so the
dispatcher speaks one sign convention for every device.
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
from protocols.sunspec.points import to_raw

_VENDOR_MODEL = 64200
_MAX_REVERT_S = 3600  # the model's documented range is 1..3600 s


class ConverterState(enum.IntEnum):
    """64200 ``St``: what the converter is actually doing."""

    WAIT = 0
    CV = 1
    CC_CHARGE = 2
    CC_DISCHARGE = 3
    TRIPPED = 4


@dataclass(frozen=True, slots=True)
class DcDcReading:
    """One converter sample. Currents and power: + = from the DC bus into the port (charging)."""

    state: ConverterState
    trips: frozenset[str]
    bus_voltage_v: float
    current_a: float
    power_w: int
    current_limit_a: float
    bus_voltage_min_v: float
    bus_voltage_max_v: float
    revert_remaining_s: int | None
    port_voltage_v: float | None
    """Voltage at the local port (714 ``Prt[0].DCV``), None without model 714."""


class DcDcConverter:
    """Reads and commands a DC-DC converter found by ``discover`` (needs model 64200)."""

    def __init__(self, *, bus: ModbusBus, device: DiscoveredDevice,
                 now_s: Callable[[], float] | None = None) -> None:
        self._bus = bus
        self._unit = device.unit
        self._guard = PlausibilityGuard(now_s=now_s)
        (control,) = device.require(driver="DcDcConverter", model_ids=(_VENDOR_MODEL,))
        self._locations = tuple(loc for loc in (device.location(714), control) if loc)
        self._control: ModelData | None = None
        self._written_mode: ConverterState | None = None  # Mode written since the last read

    family = "gridpeer DC-DC converter (vendor model 64200, SunSpec 714 DC ports)"
    uses: Uses | None = None
    """Every point of 64200 and 714 can refuse a reading: they are gridpeer's own, served as
    declared."""

    @property
    def commands(self) -> tuple[Command, ...]:
        """Mode with its current or voltage setpoint and revert timer, through 64200."""
        return (Command(what="converter mode and setpoint", model=_VENDOR_MODEL,
                        points=("RvrtTms", "Mode", "ASet", "VSet", "AMax")),)

    async def read(self) -> DcDcReading:
        reading, _ = await self._sample()
        return reading

    async def _sample(self) -> tuple[DcDcReading, ModelData]:
        started = self._guard.begin()
        models = await read_models(self._bus, unit=self._unit, locations=self._locations)
        self._guard.check(models, started_s=started)
        c = models[_VENDOR_MODEL]
        ports = models.get(714)
        self._control = c
        self._written_mode = None
        state = c.optional_int("St")
        if state is None or state not in ConverterState._value2member_map_:
            raise BadDeviceData(f"model 64200 St is {state}, not a converter state")
        trip_bits = c.optional_int("Trip") or 0
        symbols = c.definition.point("Trip").symbols or {}
        port_v = None
        if ports is not None and "Prt[0].DCV" in ports.values:
            port_v = ports.optional_number("Prt[0].DCV")
        reading = DcDcReading(
            state=ConverterState(state),
            trips=frozenset(name for name, bit in symbols.items() if trip_bits >> bit & 1),
            bus_voltage_v=c.number("DCV"),
            current_a=c.number("DCA"),
            power_w=round(c.number("DCW")),
            current_limit_a=c.number("AMax"),
            bus_voltage_min_v=c.number("VMin"),
            bus_voltage_max_v=c.number("VMax"),
            revert_remaining_s=c.optional_int("RvrtRem"),
            port_voltage_v=port_v,
        )
        return reading, c

    async def set_current(self, *, amps: float, revert_s: int) -> None:
        """Constant current: + = bus into the port (charge), − = port onto the bus; 0 = WAIT."""
        control = await self._control_model()
        limit = control.number("AMax")
        if abs(amps) > limit:
            raise ValueError(f"converter current {amps} A outside the device limit ±{limit} A")
        if amps == 0:
            await self.wait(revert_s=revert_s)
            return
        mode = ConverterState.CC_CHARGE if amps > 0 else ConverterState.CC_DISCHARGE
        raw = to_raw(abs(amps), control.scale_factor("ASet"))
        await self._command(control, revert_s, mode, {"ASet": raw})

    async def hold_voltage(
        self, *, volts: float, revert_s: int, limit_a: float | None = None
    ) -> None:
        """Constant voltage: the converter becomes the DC bus's voltage master at ``volts``.

        In CV the converter carries whatever the bus needs up to ``AMax``; ``limit_a`` sets
        ``AMax`` in the same write, so the master never runs with a cap the dispatcher did not
        choose (None keeps the device's). The device refuses a cap above its rating.
        """
        control = await self._control_model()
        low, high = control.number("VMin"), control.number("VMax")
        if not low <= volts <= high:
            raise ValueError(f"bus voltage {volts} V outside the device window [{low}, {high}] V")
        values = {"ASet": 0, "VSet": to_raw(volts, control.scale_factor("VSet"))}
        if limit_a is not None:
            if limit_a <= 0:
                raise ValueError(f"converter current limit must be > 0 A, got {limit_a}")
            values["AMax"] = to_raw(limit_a, control.scale_factor("AMax"))
        await self._command(control, revert_s, ConverterState.CV, values)

    async def wait(self, *, revert_s: int) -> None:
        """Idle at 0 A: the converter's safe state."""
        control = await self._control_model()
        await self._command(control, revert_s, ConverterState.WAIT, {"ASet": 0})

    async def _command(
        self, control: ModelData, revert_s: int, mode: ConverterState, values: dict[str, int]
    ) -> None:
        """Write the setpoints, and ``Mode`` only if the converter is not already in ``mode``.

        A ``Mode`` write clears a trip and re-enables the converter, so it is a deliberate
        restart; a heartbeat that repeats the running command writes the setpoints alone (which
        re-arms the revert timer too). Otherwise a trip landing between the dispatcher's reading
        and its heartbeat would be cleared unseen, and a tripped bus restarted by itself.
        "Already" is the state as last read (a dispatcher reads right before commanding), or
        the mode this driver wrote since.
        """
        if not 1 <= revert_s <= _MAX_REVERT_S:
            raise ValueError(f"revert_s must be 1..{_MAX_REVERT_S} s, got {revert_s}")
        running = control.optional_int("St") if self._written_mode is None else self._written_mode
        if running != mode:
            values = {"Mode": int(mode), **values}
        # Revert time first: writing Mode arms the timer with whatever RvrtTms holds.
        await write_points(self._bus, unit=self._unit, model=control, values={"RvrtTms": revert_s})
        await write_points(self._bus, unit=self._unit, model=control, values=values)
        if "Mode" in values:
            self._written_mode = mode

    async def _control_model(self) -> ModelData:
        """Model 64200 as last read (limits and scale factors), reading it if never read."""
        if self._control is not None:
            return self._control
        _, control = await self._sample()
        return control
