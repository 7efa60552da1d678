"""Pure physics of one home: PV, base load, flexible load, battery and meter.

Every function here is a pure step: state and inputs in, new state out, no clock, no I/O, no global
randomness. Energy is bookkept in integer millijoules (W × ms) so a step conserves energy exactly
(not "to within a tolerance"): at the home's AC bus ``pv + grid = load + flex + battery`` holds to
the millijoule, and in the battery ``terminal = Δstored + loss`` does too. Integer bookkeeping is
also what keeps runs bit-identical on every machine: only the weather profiles touch floats, and
they are rounded to whole watts before they meet the ledger.

Sign conventions (docs/architecture.md): battery power + = charge; grid power + = import.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

MJ_PER_WH = 3_600_000
"""Millijoules per watt-hour: the unit of every energy counter below."""

DAY_MS = 86_400_000


class PhysicsError(ValueError):
    """A spec or input no real device has (negative capacity, SoC window upside down)."""


# --------------------------------------------------------------------------------------------
# Weather and load profiles: deterministic functions of (seed, time of day)
# --------------------------------------------------------------------------------------------


class SeededProfile:
    """Piecewise-linear random process with one knot every ``knot_ms``, drawn from one seed.

    A function of time rather than a stepped state, so the value at time t does not depend on how
    the world chose to step towards t: two worlds with different step sizes see the same clouds.
    Knots are an AR(1) walk clamped to [low, high], generated lazily and cached.
    """

    def __init__(self, *, seed: int | str, low: float, high: float, knot_ms: int = 900_000,
                 persistence: float = 0.8) -> None:
        if not low <= high:
            raise PhysicsError(f"profile bounds low={low} > high={high}")
        self._rng = random.Random(seed)
        self._low, self._high = low, high
        self._knot_ms = knot_ms
        self._persistence = persistence
        self._knots: list[float] = [self._rng.uniform(low, high)]

    def _knot(self, index: int) -> float:
        mid = (self._low + self._high) / 2
        while len(self._knots) <= index:
            prev = self._knots[-1]
            drawn = self._rng.uniform(self._low, self._high)
            value = mid + self._persistence * (prev - mid) + (1 - self._persistence) * (drawn - mid)
            value += self._rng.gauss(0.0, (self._high - self._low) * 0.15)
            self._knots.append(min(self._high, max(self._low, value)))
        return self._knots[index]

    def at(self, t_ms: int) -> float:
        """Value at absolute simulated time ``t_ms`` (≥ 0)."""
        if t_ms < 0:
            raise PhysicsError(f"profile time must be >= 0, got {t_ms}")
        index, rest = divmod(t_ms, self._knot_ms)
        a, b = self._knot(index), self._knot(index + 1)
        return a + (b - a) * rest / self._knot_ms


def clear_sky_fraction(t_ms: int, *, sunrise_h: float = 6.0, sunset_h: float = 20.0) -> float:
    """Fraction of PV peak under a clear sky: a sine arch between sunrise and sunset, 0 at night."""
    hour = (t_ms % DAY_MS) / 3_600_000
    if hour <= sunrise_h or hour >= sunset_h:
        return 0.0
    return float(math.sin(math.pi * (hour - sunrise_h) / (sunset_h - sunrise_h)) ** 1.3)


def base_load_shape(t_ms: int) -> float:
    """Multiplier of the home's base load: night floor, a morning and a larger evening peak."""
    hour = (t_ms % DAY_MS) / 3_600_000
    morning = 0.9 * math.exp(-(((hour - 7.5) / 1.0) ** 2))
    evening = 1.4 * math.exp(-(((hour - 19.0) / 1.5) ** 2))
    return 0.6 + morning + evening


# --------------------------------------------------------------------------------------------
# Battery
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class BatterySpec:
    """Nameplate of a battery. Efficiencies are one-way (AC terminal ↔ cells)."""

    capacity_wh: int
    max_charge_w: int
    max_discharge_w: int
    soc_min_pct: float = 10.0
    soc_max_pct: float = 95.0
    charge_efficiency: float = 0.95
    discharge_efficiency: float = 0.95

    def __post_init__(self) -> None:
        if self.capacity_wh <= 0:
            raise PhysicsError(f"battery capacity_wh must be > 0, got {self.capacity_wh}")
        if self.max_charge_w < 0 or self.max_discharge_w < 0:
            raise PhysicsError("battery power limits must be >= 0")
        if not 0.0 <= self.soc_min_pct < self.soc_max_pct <= 100.0:
            raise PhysicsError(
                f"battery SoC window must satisfy 0 <= min < max <= 100, got "
                f"[{self.soc_min_pct}, {self.soc_max_pct}]")
        for name in ("charge_efficiency", "discharge_efficiency"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise PhysicsError(f"battery {name} must be in (0, 1], got {getattr(self, name)}")

    @property
    def capacity_mj(self) -> int:
        return self.capacity_wh * MJ_PER_WH

    @property
    def floor_mj(self) -> int:
        return math.ceil(self.capacity_mj * self.soc_min_pct / 100)

    @property
    def ceiling_mj(self) -> int:
        return math.floor(self.capacity_mj * self.soc_max_pct / 100)


@dataclass(frozen=True, slots=True)
class Cells:
    """Energy in the cells and the power at the terminals during the last step (+ = charge)."""

    stored_mj: int
    power_w: int = 0
    loss_mj: int = 0
    """Losses of the last step (terminal energy that never reached, or came out of, the cells)."""

    def soc_pct(self, spec: BatterySpec) -> float:
        return 100.0 * self.stored_mj / spec.capacity_mj


def battery_initial(spec: BatterySpec, *, soc_pct: float) -> Cells:
    """A battery at ``soc_pct``, clamped into its SoC window (a BMS would not report outside it)."""
    stored = round(spec.capacity_mj * soc_pct / 100)
    return Cells(stored_mj=min(spec.ceiling_mj, max(spec.floor_mj, stored)))


def battery_step(spec: BatterySpec, state: Cells, *, command_w: int, dt_ms: int
                 ) -> Cells:
    """Follow ``command_w`` (+ charge, − discharge) for ``dt_ms`` within power and SoC limits.

    The achieved power is the command clamped first to the power limit, then to what the SoC
    window still allows in this step, so the window is never crossed whatever the gateway asks.
    """
    if dt_ms <= 0:
        raise PhysicsError(f"dt_ms must be > 0, got {dt_ms}")
    if command_w >= 0:
        headroom = max(0, spec.ceiling_mj - state.stored_mj)
        power = min(command_w, spec.max_charge_w,
                    math.floor(headroom / (spec.charge_efficiency * dt_ms)))
        terminal = power * dt_ms
        into_cells = min(headroom, math.floor(terminal * spec.charge_efficiency))
        return Cells(state.stored_mj + into_cells, power, terminal - into_cells)
    available = max(0, state.stored_mj - spec.floor_mj)
    power = min(-command_w, spec.max_discharge_w,
                math.floor(available * spec.discharge_efficiency / dt_ms))
    terminal = power * dt_ms
    out_of_cells = min(available, math.ceil(terminal / spec.discharge_efficiency))
    return Cells(state.stored_mj - out_of_cells, -power, out_of_cells - terminal)


# --------------------------------------------------------------------------------------------
# Flexible (deferrable) load
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class FlexSpec:
    """A deferrable job (dishwasher, water heater): ``energy_wh`` per day at ``power_w``.

    It may run between ``earliest_h`` and ``deadline_h``. On its own it starts early when the home
    has a PV surplus at least its power, and is forced on when waiting longer would miss the
    deadline; under a gateway's power limit (vendor model 64220) it draws up to that limit
    whenever it has energy owed in its window, and nothing more.
    """

    power_w: int = 0
    energy_wh: int = 0
    earliest_h: float = 9.0
    deadline_h: float = 21.0

    def __post_init__(self) -> None:
        if self.power_w < 0 or self.energy_wh < 0:
            raise PhysicsError("flexible load power_w and energy_wh must be >= 0")
        if self.energy_wh and not self.power_w:
            raise PhysicsError("flexible load with energy_wh needs power_w > 0")
        if not 0 <= self.earliest_h < self.deadline_h <= 24:
            raise PhysicsError(
                "flexible load window must satisfy 0 <= earliest_h < deadline_h <= 24")


@dataclass(frozen=True, slots=True)
class FlexState:
    """Energy still owed today and the day it is owed for."""

    day: int
    remaining_mj: int
    power_w: int = 0


def flex_initial(spec: FlexSpec, *, t_ms: int) -> FlexState:
    return FlexState(t_ms // DAY_MS, spec.energy_wh * MJ_PER_WH)


def flex_in_window(spec: FlexSpec, t_ms: int) -> bool:
    """Whether the job may run at absolute time ``t_ms``."""
    hour_ms = t_ms % DAY_MS
    return spec.earliest_h * 3_600_000 <= hour_ms < spec.deadline_h * 3_600_000


def flex_step(spec: FlexSpec, state: FlexState, *, t_ms: int, dt_ms: int, surplus_w: int,
              limit_w: int | None = None) -> FlexState:
    """Decide whether the job runs during [t_ms, t_ms + dt_ms) and charge its energy.

    ``limit_w`` None: the appliance's own logic (surplus, or the deadline forces it); a number:
    the gateway's limit, which it follows within its window.
    """
    if limit_w is not None and limit_w < 0:
        raise PhysicsError(f"flexible load limit_w must be >= 0 or None, got {limit_w}")
    day = t_ms // DAY_MS
    if day != state.day:
        state = FlexState(day, spec.energy_wh * MJ_PER_WH)
    hour_ms = t_ms % DAY_MS
    if not flex_in_window(spec, t_ms) or state.remaining_mj <= 0:
        return replace(state, power_w=0)
    if limit_w is not None:
        power = min(spec.power_w, limit_w, math.ceil(state.remaining_mj / dt_ms))
        return FlexState(day, max(0, state.remaining_mj - power * dt_ms), power)
    needed_ms = state.remaining_mj / spec.power_w
    left_ms = spec.deadline_h * 3_600_000 - hour_ms
    if surplus_w < spec.power_w and needed_ms < left_ms - dt_ms:
        return replace(state, power_w=0)
    power = min(spec.power_w, math.ceil(state.remaining_mj / dt_ms))
    return FlexState(day, max(0, state.remaining_mj - power * dt_ms), power)


# --------------------------------------------------------------------------------------------
# Meter
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MeterState:
    """Grid connection point: + = import. Counters in mJ; Wh views round down like a register."""

    power_w: int = 0
    import_mj: int = 0
    export_mj: int = 0

    @property
    def import_wh(self) -> int:
        return self.import_mj // MJ_PER_WH

    @property
    def export_wh(self) -> int:
        return self.export_mj // MJ_PER_WH


def meter_step(state: MeterState, *, grid_w: int, dt_ms: int) -> MeterState:
    """Integrate the grid power into the import or export counter."""
    energy = grid_w * dt_ms
    if energy >= 0:
        return MeterState(grid_w, state.import_mj + energy, state.export_mj)
    return MeterState(grid_w, state.import_mj, state.export_mj - energy)


# --------------------------------------------------------------------------------------------
# PV
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PvState:
    """Output of the inverter (W ≥ 0, produced) and what the sun would have allowed."""

    power_w: int = 0
    available_w: int = 0
    energy_mj: int = 0


def pv_step(state: PvState, *, available_w: int, limit_w: int | None, dt_ms: int) -> PvState:
    """Produce what the sun gives, curtailed to ``limit_w`` when the inverter is limited."""
    power = available_w if limit_w is None else max(0, min(available_w, limit_w))
    return PvState(power, available_w, state.energy_mj + power * dt_ms)
