"""An electric vehicle behind a home's meter: plugged in between arrival and departure, charging.

Pure like the rest of the physics (``sim_devices/physics.py``): ``ev_step(spec, state, ...)``
returns the next state, energy is kept in integer millijoules, and nothing reads a clock. What
makes an EV different from the flexible load is that it is *absent* part of the day: it arrives
with a partly empty battery (the day's driving happened off the grid), charges while plugged in
(optionally capped by a charging limit a smart charger or the EMS sets), and leaves at the
departure hour whatever its state of charge. Its charging is a load at the home's AC bus, so a
home counts ``power_w`` with its other loads and ``energy_mj`` as a sink in its energy balance.

A car on a bidirectional charger (``EvSpec.max_discharge_w`` > 0) can also feed the home (V2G):
asked to discharge, it delivers up to that power at the charger's efficiency, ``power_w`` goes
negative and ``fed_mj`` counts what reached the home. The cells never go below empty nor above
full, and nothing moves while the car is away.

The plug-in window may wrap midnight (arrive 18:00, leave 07:30), as most home charging does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sim_devices.physics import DAY_MS, MJ_PER_WH, PhysicsError

_HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True, kw_only=True)
class EvSpec:
    """Nameplate and habits of one car. Powers in W, energy in Wh, hours of the day as floats."""

    battery_wh: int
    max_charge_w: int
    arrival_h: float = 18.0
    departure_h: float = 7.5
    arrival_soc_pct: float = 40.0
    target_soc_pct: float = 90.0
    charge_efficiency: float = 0.92
    max_discharge_w: int = 0
    """What a bidirectional charger can feed back from the car (V2G); 0: it only charges."""

    def __post_init__(self) -> None:
        if self.battery_wh <= 0:
            raise PhysicsError(f"ev battery_wh must be > 0, got {self.battery_wh}")
        if self.max_charge_w <= 0:
            raise PhysicsError(f"ev max_charge_w must be > 0, got {self.max_charge_w}")
        if self.max_discharge_w < 0:
            raise PhysicsError(f"ev max_discharge_w must be >= 0, got {self.max_discharge_w}")
        for name in ("arrival_h", "departure_h"):
            if not 0.0 <= getattr(self, name) < 24.0:
                raise PhysicsError(f"ev {name} must be in [0, 24), got {getattr(self, name)}")
        if self.arrival_h == self.departure_h:
            raise PhysicsError("ev arrival_h and departure_h must differ")
        if not 0.0 <= self.arrival_soc_pct <= self.target_soc_pct <= 100.0:
            raise PhysicsError(
                "ev SoC must satisfy 0 <= arrival_soc_pct <= target_soc_pct <= 100, got "
                f"{self.arrival_soc_pct} and {self.target_soc_pct}")
        if not 0.0 < self.charge_efficiency <= 1.0:
            raise PhysicsError(f"ev charge_efficiency must be in (0, 1], got "
                               f"{self.charge_efficiency}")

    @property
    def capacity_mj(self) -> int:
        return self.battery_wh * MJ_PER_WH

    @property
    def arrival_mj(self) -> int:
        return round(self.capacity_mj * self.arrival_soc_pct / 100)

    @property
    def target_mj(self) -> int:
        return math.floor(self.capacity_mj * self.target_soc_pct / 100)

    def plugged_at(self, t_ms: int) -> bool:
        """Whether the car is at home and plugged in at absolute simulated time ``t_ms``."""
        hour_ms = t_ms % DAY_MS
        arrive, leave = self.arrival_h * _HOUR_MS, self.departure_h * _HOUR_MS
        if arrive < leave:
            return arrive <= hour_ms < leave
        return hour_ms >= arrive or hour_ms < leave


@dataclass(frozen=True, slots=True)
class EvState:
    """Whether the car is plugged in, what is in its battery, and its power in the last step
    (+ = charging, − = feeding the home)."""

    plugged: bool
    stored_mj: int
    power_w: int = 0
    energy_mj: int = 0
    """AC energy drawn from the home since the start (a sink in the home's balance)."""
    loss_mj: int = 0
    """Charger losses since the start, both ways: energy that left the cells or the home and
    reached neither."""
    fed_mj: int = 0
    """AC energy fed back to the home since the start (V2G; a source in the home's balance)."""

    def soc_pct(self, spec: EvSpec) -> float:
        return 100.0 * self.stored_mj / spec.capacity_mj


def ev_need_mj(spec: EvSpec, state: EvState) -> int:
    """AC energy the charger still has to draw to reach the target SoC (0 while the car is away).

    What an EV charger reports as "energy needed" (vendor model 64220 ``WhNeed``): the cells'
    headroom grossed up by the charger's losses.
    """
    if not state.plugged:
        return 0
    return math.ceil(max(0, spec.target_mj - state.stored_mj) / spec.charge_efficiency)


def ev_initial(spec: EvSpec, *, t_ms: int) -> EvState:
    """The car at ``t_ms``: if it is plugged in already, it arrived with its usual SoC."""
    return EvState(plugged=spec.plugged_at(t_ms), stored_mj=spec.arrival_mj)


def ev_step(spec: EvSpec, state: EvState, *, t_ms: int, dt_ms: int, limit_w: int | None = None,
            discharge_w: int = 0) -> EvState:
    """Charge during [t_ms, t_ms + dt_ms) if plugged in, up to the target SoC, or feed the home.

    ``limit_w`` is a charging limit (a smart charger's current cap, as watts); None = the car's
    own maximum. ``discharge_w`` > 0 is a V2G charger's discharge setpoint: the car then feeds the
    home up to it (and its ``max_discharge_w``) instead of charging, until its cells are empty.
    Arriving resets the battery to the arrival SoC: the driving happened away from the grid and
    is no part of the community's energy. A step longer than the whole time away would miss that
    arrival; the world's steps are seconds, the time away is hours.
    """
    if dt_ms <= 0:
        raise PhysicsError(f"dt_ms must be > 0, got {dt_ms}")
    if limit_w is not None and limit_w < 0:
        raise PhysicsError(f"ev limit_w must be >= 0 or None, got {limit_w}")
    if discharge_w < 0:
        raise PhysicsError(f"ev discharge_w must be >= 0, got {discharge_w}")
    plugged = spec.plugged_at(t_ms)
    stored = spec.arrival_mj if plugged and not state.plugged else state.stored_mj
    idle = EvState(plugged, stored, 0, state.energy_mj, state.loss_mj, state.fed_mj)
    if not plugged:
        return idle
    if discharge_w > 0:
        return _discharge(spec, idle, dt_ms=dt_ms, setpoint_w=discharge_w)
    headroom = max(0, spec.target_mj - stored)
    if headroom == 0:
        return idle
    cap = spec.max_charge_w if limit_w is None else min(limit_w, spec.max_charge_w)
    power = min(cap, math.ceil(headroom / (spec.charge_efficiency * dt_ms)))
    terminal = power * dt_ms
    into_cells = min(headroom, math.floor(terminal * spec.charge_efficiency))
    return EvState(plugged, stored + into_cells, power, state.energy_mj + terminal,
                   state.loss_mj + terminal - into_cells, state.fed_mj)


def _discharge(spec: EvSpec, idle: EvState, *, dt_ms: int, setpoint_w: int) -> EvState:
    """Feed the home at ``setpoint_w`` (capped by the charger), the cells paying the losses: at
    most what the cells hold, so they never go below empty."""
    cap = min(setpoint_w, spec.max_discharge_w)
    power = min(cap, math.floor(idle.stored_mj * spec.charge_efficiency / dt_ms))
    if power <= 0:
        return idle
    delivered = power * dt_ms
    out_of_cells = min(idle.stored_mj, math.ceil(delivered / spec.charge_efficiency))
    return EvState(idle.plugged, idle.stored_mj - out_of_cells, -power, idle.energy_mj,
                   idle.loss_mj + out_of_cells - delivered, idle.fed_mj + delivered)


__all__ = ["EvSpec", "EvState", "ev_initial", "ev_need_mj", "ev_step"]
