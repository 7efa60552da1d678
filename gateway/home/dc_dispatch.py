"""DC-bus dispatch: this node's cleared position becomes its DC-DC converter's command.

On a DC-bus community the traded energy flows over the bus, not the grid. A seller's converter
puts its sold Wh onto the bus at constant current (CC), a buyer's draws its bought Wh, and one
converter, the bus *master*, holds the voltage (CV) and so absorbs whatever the others' currents
leave over, which in an agreed interval is its own cleared position. Energy counts at the bus
side, where it changes hands; each converter's loss stays in its own home, like an inverter's
behind a meter.

The master is named in every member's configuration (``[dc_bus] master``), so every gateway knows
it without talking. It holds the bus whenever its converter and battery readings are fresh and
its converter has not tripped this interval, agreement or not: holding the voltage is a service
to the bus, not a trade, and a master that let go whenever it missed one outcome (or at the edge
of an interval, while members still run last interval's current until their next control step)
would trip the bus under the members that did agree. Members run CC only on an agreed position.

A member never runs faster than ``CATCH_UP`` times its position's even pace over the whole
interval. One that fell behind (its control steps came late: a starved host delays every gateway
on it alike) catches up only that fast and does not squeeze what is left into less time; what it
could not deliver the grid balances at settlement like any shortfall. Members that squeezed
together would draw or inject more than the master can absorb (its position, which its own
battery carries, is what the even paces of the others leave over) and the bus would trip under
all of them. The loop needs some margin above the even pace all the same: it stops when ahead
and a late step then leaves it behind, so without one a busy host would under-deliver every
interval.

Any doubt means WAIT: a stale converter or battery, no agreement, a trip, the bus outside its
window. A trip also holds the converter in WAIT for the rest of the interval (the caller latches
``ConverterCommand.trip``), so a fault that persists costs one trip per interval, not one per
control period. At the next interval the master re-energises the bus (CV is the path that brings
a bus back into its window) and the members follow once it reads inside again.

Pure: readings and the position in, a command out; the energy the bus carried, which interval
a command counts towards and what is left for the meter are here too
(``gateway/home/dc_link.py`` polls, commands and keeps the count).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from gateway.devices.dcdc import ConverterState, DcDcReading
from gateway.dispatch import IntervalTarget
from gateway.envelope import BatteryEnvelope, ConverterEnvelope

ConverterMode = Literal["wait", "cv", "cc"]

CATCH_UP = 1.5
"""The fastest a member runs, as a multiple of its position's even pace over the interval."""

FAULT_TRIPS = frozenset({"OVER_VOLTAGE", "UNDER_VOLTAGE", "OVER_CURRENT"})
"""64200 ``Trip`` bits that mean the bus or the converter faulted (REVERTED only means that a
setpoint was not refreshed in time, which the next command repairs)."""


@dataclass(frozen=True, slots=True)
class DcTarget:
    """The energy this node's converter moves over one interval, at the bus side.

    ``energy_wh``: + = drawn from the bus into the home (bought), − = put onto the bus (sold).
    """

    energy_wh: int


@dataclass(frozen=True, slots=True)
class ConverterCommand:
    """What to write to the converter.

    ``current_a`` (CC, + = from the bus into the battery) and ``voltage_v``/``limit_a`` (CV) are
    0 in the modes that do not use them. ``safe_reason`` is non-empty when the converter waits
    because something is uncertain: the home's AC side then falls back to self-consumption too.
    ``trip`` is non-empty when a trip was seen: the caller keeps the converter waiting for the
    rest of the interval.
    """

    mode: ConverterMode
    current_a: float = 0.0
    voltage_v: float = 0.0
    limit_a: float = 0.0
    limits: tuple[str, ...] = ()
    reason: str = ""
    safe_reason: str = ""
    trip: str = ""


def _wait(reason: str, *, safe: bool = True, trip: str = "") -> ConverterCommand:
    return ConverterCommand(mode="wait", reason=reason, safe_reason=reason if safe else "",
                            trip=trip)


def trip_seen(reading: DcDcReading) -> str:
    """Why this reading shows a trip, or "" when it shows none."""
    faults = reading.trips & FAULT_TRIPS
    if reading.state is ConverterState.TRIPPED or faults:
        named = ", ".join(sorted(faults)) or "protection"
        return f"converter tripped ({named}) at {reading.bus_voltage_v:g} V"
    return ""


def _cents(amps: float) -> float:
    """Truncated to the register's 0.01 A toward zero, so what is written never exceeds a limit."""
    return math.trunc(round(amps * 100, 6)) / 100


def command_converter(
    *,
    master: bool,
    target: DcTarget | None,
    remaining_s: float,
    delivered_wh: float,
    reading: DcDcReading | None,
    soc_pct: float | None,
    envelope: ConverterEnvelope,
    battery: BatteryEnvelope,
    bus_setpoint_v: float,
    dt_s: float,
    length_s: float,
    latched_trip: str = "",
    safe_reason: str = "",
) -> ConverterCommand:
    """One control step of the converter.

    ``target`` None means no agreed position (``safe_reason`` says why); ``delivered_wh`` is the
    bus-side energy (+ into the home) already counted towards it, and ``remaining_s`` how long
    the current commanded now and at the steps after it still counts towards it: the loop
    spreads what is left evenly over that time, so delivered energy lands on the cleared energy,
    but never faster than ``CATCH_UP`` times the position's even pace over ``length_s``.
    ``latched_trip`` is a trip seen earlier in this interval; ``soc_pct`` None a stale battery.
    """
    if reading is None:
        return _wait("converter stale: its revert timer returns it to WAIT")
    if soc_pct is None:
        return _wait("battery stale: the converter's port is the battery")
    tripped = latched_trip or trip_seen(reading)
    if tripped:
        return _wait(f"dc bus fault: {tripped}", trip=tripped)
    try:
        env = envelope.within_device(current_limit_a=reading.current_limit_a,
                                     v_min=reading.bus_voltage_min_v,
                                     v_max=reading.bus_voltage_max_v)
    except ValueError as exc:
        return _wait(f"converter limits unusable with our envelope: {exc}")
    if master:
        return _hold(env, battery, bus_setpoint_v)
    if not env.bus_inside(reading.bus_voltage_v):
        return _wait(f"dc bus at {reading.bus_voltage_v:g} V outside "
                     f"[{env.bus_v_min:g}, {env.bus_v_max:g}] V")
    if target is None:  # the home's own side knows it has no agreement: not the converter's to say
        return _wait(safe_reason or "no agreement", safe=False)
    if target.energy_wh == 0:
        return _wait("nothing traded over the bus", safe=False)
    power_w = (target.energy_wh - delivered_wh) * 3600 / max(remaining_s, dt_s)
    if power_w * target.energy_wh < 0:  # ahead of the position: stop, never trade it back
        power_w = 0.0
    pace_w = CATCH_UP * abs(target.energy_wh) * 3600 / length_s
    limits: tuple[str, ...] = ()
    if abs(power_w) > pace_w:  # behind: never squeeze the rest into less time
        power_w = math.copysign(pace_w, power_w)
        limits = ("catch-up",)
    amps, clamped = env.clamp(requested_a=power_w / reading.bus_voltage_v,
                              bus_v=reading.bus_voltage_v, soc_pct=soc_pct, battery=battery)
    limits += clamped
    amps = _cents(amps)
    if amps == 0:
        why = f"held at 0 A by {', '.join(limits)}" if limits else "cleared energy delivered"
        return ConverterCommand(mode="wait", limits=limits, reason=why)
    return ConverterCommand(mode="cc", current_a=amps, limits=limits,
                            reason="carrying the cleared energy over the bus")


def _hold(env: ConverterEnvelope, battery: BatteryEnvelope, volts: float) -> ConverterCommand:
    """The master's command: CV at ``volts``, its current capped by the envelope and by what its
    battery may take or give (the master's port carries the bus's whole residual)."""
    if not env.bus_inside(volts):
        return _wait(f"bus setpoint {volts:g} V outside [{env.bus_v_min:g}, {env.bus_v_max:g}] V")
    limits = []
    limit = env.max_current_a
    by_battery = min(battery.max_charge_w, battery.max_discharge_w) / volts
    if by_battery < limit:
        limit = by_battery
        limits.append("battery-power")
    limit = _cents(limit)
    if limit <= 0:
        return _wait("the master's battery can neither take nor give power")
    return ConverterCommand(mode="cv", voltage_v=volts, limit_a=limit, limits=tuple(limits),
                            reason="holding the dc bus")


class BusEnergy:
    """The converter's bus-side energy (+ into the home), integrated from its power readings.

    Each reading's power is taken to have held since the integration before it: the caller adds
    a reading once when it is sampled and again once the next command is written, so the energy
    between two commands is the current the first one set.
    """

    def __init__(self) -> None:
        self.wh = 0.0
        self._last_ms: int | None = None

    def add(self, reading: DcDcReading | None, now_ms: int) -> None:
        """Add ``reading``'s power since the last integration (nothing for a missed reading: the
        next one covers the gap)."""
        if reading is None:
            return
        if self._last_ms is not None:
            self.wh += reading.power_w * (now_ms - self._last_ms) / 3_600_000
        self._last_ms = now_ms


@dataclass(frozen=True, slots=True)
class Aim:
    """Which interval a command counts towards, the energy already counted towards it and the
    time left to count."""

    interval: int
    delivered_wh: float
    remaining_s: float


def aim(*, k: int, now_ms: int, period_ms: int, next_start_ms: int, length_ms: int,
        counted_wh: float | None) -> Aim:
    """Where the current commanded now at ``now_ms`` (in interval ``k``) counts.

    The energy a command moves is measured at the next control step and counted in that step's
    interval, as the meter reading of an interval's first step closes the interval before. So a
    command counts towards ``k`` only while a later step still falls in ``k``; the last step of
    ``k`` already carries ``k + 1``'s position. ``counted_wh`` is what the bus carried in ``k``
    so far (None: ``k`` has no opening count).
    """
    later_steps = math.ceil((next_start_ms - now_ms) / period_ms) - 1
    if later_steps >= 1 and counted_wh is not None:
        return Aim(k, counted_wh, later_steps * period_ms / 1000)
    return Aim(k + 1, 0.0, length_ms / 1000)


def meter_target_over_bus(
    target: IntervalTarget | None, reason: str, *, traded_wh: int, command: ConverterCommand
) -> tuple[IntervalTarget | None, str]:
    """The meter's target when the P2P energy goes over the DC bus: only what the grid balances
    passes the meter (the cleared position less what was traded: nothing). A converter waiting
    on a doubt puts the home into safe mode too: self-consumption, nothing promised to anyone."""
    if command.safe_reason:
        return None, command.safe_reason
    if target is None:
        return None, reason
    return IntervalTarget(meter_wh=target.meter_wh - traded_wh, length_s=target.length_s), reason
