"""One home's physics: PV, base load, flexible load and battery behind one meter.

``home_step`` is pure (state in, state out); the only thing that is not a plain value is
``HomeProfiles``, the seeded weather and load noise, which are deterministic functions of time.
The world (``sim_devices/world.py``) owns the clock and the devices around it.

A home may also have a DC-DC converter between its battery and the community's DC bus
(``HomeSpec.dcdc``). The converter's port works on the battery's DC side, beside the battery
inverter: ``port_bounds`` says what the battery can take or give this step (the bus physics
decides the flow within it) and ``home_dc_step`` books that flow into the cells before the AC
step. ``dc_port_mj`` counts it, so a home on a bus still balances to the millijoule.

A home may have an EV (``HomeSpec.ev``, physics in ``sim_devices/ev.py``). The EV charger and the
flexible load are controllable loads: ``home_step`` takes a power limit for each (None = the
device's own default, which is what they do without a gateway), and both count as loads at the
AC bus, so their energy is in ``load_mj``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from sim_devices.dcbus import ConverterFlow, ConverterSpec, PortBounds
from sim_devices.ev import EvSpec, EvState, ev_initial, ev_step
from sim_devices.physics import (
    MJ_PER_WH,
    BatterySpec,
    Cells,
    FlexSpec,
    FlexState,
    MeterState,
    PhysicsError,
    PvState,
    SeededProfile,
    base_load_shape,
    battery_initial,
    battery_step,
    clear_sky_fraction,
    flex_initial,
    flex_step,
    meter_step,
    pv_step,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class HomeSpec:
    """What a home has. Powers in W, energies in Wh, SoC in percent of capacity.

    ``seed`` None derives the home's weather and load noise from the world seed and the name, so a
    community is reproducible from one number while homes still differ.
    """

    name: str
    pv_peak_w: int = 4000
    base_load_w: int = 500
    battery_wh: int = 10_000
    battery_max_w: int = 3000
    soc_start_pct: float = 50.0
    soc_min_pct: float = 10.0
    soc_max_pct: float = 95.0
    charge_efficiency: float = 0.95
    discharge_efficiency: float = 0.95
    cloudiness: float = 0.3
    flex_w: int = 0
    flex_wh: int = 0
    seed: int | None = None
    dcdc: ConverterSpec | None = None
    """A DC-DC converter from the battery onto the community's DC bus (``World(dc_bus=...)``)."""
    ev: EvSpec | None = None
    """An electric vehicle charging at home, behind an EV charger the gateway can limit."""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise PhysicsError(f"home name must be non-empty without '/', got {self.name!r}")
        if self.pv_peak_w < 0 or self.base_load_w < 0:
            raise PhysicsError(f"home {self.name}: pv_peak_w and base_load_w must be >= 0")
        if not 0.0 <= self.cloudiness <= 1.0:
            raise PhysicsError(f"home {self.name}: cloudiness must be in [0, 1]")
        if not 0.0 <= self.soc_start_pct <= 100.0:
            raise PhysicsError(f"home {self.name}: soc_start_pct must be in [0, 100]")
        self.battery_spec()  # validates the battery fields, naming the problem
        FlexSpec(power_w=self.flex_w, energy_wh=self.flex_wh)

    def battery_spec(self) -> BatterySpec:
        return BatterySpec(
            capacity_wh=self.battery_wh, max_charge_w=self.battery_max_w,
            max_discharge_w=self.battery_max_w, soc_min_pct=self.soc_min_pct,
            soc_max_pct=self.soc_max_pct, charge_efficiency=self.charge_efficiency,
            discharge_efficiency=self.discharge_efficiency)

    def flex_spec(self) -> FlexSpec:
        return FlexSpec(power_w=self.flex_w, energy_wh=self.flex_wh)


class HomeProfiles:
    """The home's seeded cloud cover and load noise (deterministic functions of time)."""

    def __init__(self, spec: HomeSpec, *, world_seed: int) -> None:
        seed = spec.seed if spec.seed is not None else zlib.crc32(
            f"{world_seed}/{spec.name}".encode())
        low = 1.0 - spec.cloudiness
        self.cloud = SeededProfile(seed=f"{seed}/cloud", low=low, high=1.0)
        self.load_noise = SeededProfile(seed=f"{seed}/load", low=0.8, high=1.2)

    def pv_available_w(self, spec: HomeSpec, t_ms: int) -> int:
        return round(spec.pv_peak_w * clear_sky_fraction(t_ms) * self.cloud.at(t_ms))

    def base_load_w(self, spec: HomeSpec, t_ms: int) -> int:
        return round(spec.base_load_w * base_load_shape(t_ms) * self.load_noise.at(t_ms))


@dataclass(frozen=True, slots=True)
class HomeState:
    """Everything that changes in a home; powers are the averages over the last step."""

    t_ms: int
    pv: PvState
    battery: Cells
    flex: FlexState
    meter: MeterState
    load_w: int = 0
    load_mj: int = 0
    """Base, flexible and EV charging energy consumed since the start (for conservation checks)."""
    loss_mj: int = 0
    """Battery conversion losses since the start."""
    dc_port_mj: int = 0
    """Energy the DC-DC converter's port put into the battery since the start (− = took out)."""
    ev: EvState | None = None
    """The EV and its charger (None: the home has no EV)."""
    flex_mj: int = 0
    """Energy the flexible load drew since the start (its device's energy counter)."""


def home_initial(spec: HomeSpec, *, t_ms: int) -> HomeState:
    return HomeState(
        t_ms=t_ms, pv=PvState(), flex=flex_initial(spec.flex_spec(), t_ms=t_ms),
        battery=battery_initial(spec.battery_spec(), soc_pct=spec.soc_start_pct),
        meter=MeterState(), ev=ev_initial(spec.ev, t_ms=t_ms) if spec.ev is not None else None)


def home_step(spec: HomeSpec, profiles: HomeProfiles, state: HomeState, *, dt_ms: int,
              battery_command_w: int, pv_limit_w: int | None, flex_limit_w: int | None = None,
              ev_limit_w: int | None = None, ev_discharge_w: int = 0) -> HomeState:
    """Advance the home by ``dt_ms`` with the devices' current commands.

    Order matters and follows the electrics: the sun and the base load are given, the battery
    follows its command within its limits, the EV charges (up to its charger's limit) or feeds
    the home (a V2G charger's ``ev_discharge_w``), the flexible load reacts to what is left over,
    and the meter sees the remainder:
    ``grid = load + ev + flex + battery − pv`` (+ = import).
    """
    t = state.t_ms
    pv = pv_step(state.pv, available_w=profiles.pv_available_w(spec, t), limit_w=pv_limit_w,
                 dt_ms=dt_ms)
    load_w = profiles.base_load_w(spec, t)
    battery = battery_step(spec.battery_spec(), state.battery, command_w=battery_command_w,
                           dt_ms=dt_ms)
    ev = (ev_step(spec.ev, state.ev, t_ms=t, dt_ms=dt_ms, limit_w=ev_limit_w,
                  discharge_w=ev_discharge_w)
          if spec.ev is not None and state.ev is not None else None)
    ev_w = ev.power_w if ev is not None else 0
    flex = flex_step(spec.flex_spec(), state.flex, t_ms=t, dt_ms=dt_ms,
                     surplus_w=pv.power_w - load_w - battery.power_w - ev_w, limit_w=flex_limit_w)
    consumed_w = load_w + flex.power_w + ev_w
    grid_w = consumed_w + battery.power_w - pv.power_w
    return HomeState(
        t_ms=t + dt_ms, pv=pv, battery=battery, flex=flex,
        meter=meter_step(state.meter, grid_w=grid_w, dt_ms=dt_ms),
        load_w=consumed_w, load_mj=state.load_mj + consumed_w * dt_ms,
        loss_mj=state.loss_mj + battery.loss_mj, dc_port_mj=state.dc_port_mj, ev=ev,
        flex_mj=state.flex_mj + flex.power_w * dt_ms)


_ANY_W = 10**9
"""A command beyond every rating: ``battery_step`` clamps it to what the battery can do."""


def port_bounds(spec: HomeSpec, state: HomeState, *, dt_ms: int) -> PortBounds:
    """What the battery can take or give through the converter's port during the next step.

    Asked of ``battery_step`` itself, which clamps a command monotonically, so any power within
    these bounds is achieved exactly when ``home_dc_step`` books it (over ``dt_ms`` or less). The
    battery's power rating applies to the port as to its inverter; the converter's own current
    rating is the bus's to apply.
    """
    battery = spec.battery_spec()
    return PortBounds(
        charge_w=battery_step(battery, state.battery, command_w=_ANY_W, dt_ms=dt_ms).power_w,
        discharge_w=-battery_step(battery, state.battery, command_w=-_ANY_W,
                                  dt_ms=dt_ms).power_w)


def home_dc_step(spec: HomeSpec, state: HomeState, *, flow: ConverterFlow) -> HomeState:
    """Book the converter port's ``flow`` into the battery (before ``home_step`` for the AC side).

    Raises ``PhysicsError`` if the battery cannot do exactly what the bus decided: the bus must
    stay within ``port_bounds``, or energy would appear from nowhere.
    """
    if not flow.on_ms or not flow.port_w:
        return state
    battery = battery_step(spec.battery_spec(), state.battery, command_w=flow.port_w,
                           dt_ms=flow.on_ms)
    if battery.power_w != flow.port_w:
        raise PhysicsError(f"home {spec.name}: battery took {battery.power_w} W of the "
                           f"converter's {flow.port_w} W; the bus ignored its port bounds")
    return HomeState(
        t_ms=state.t_ms, pv=state.pv, battery=battery, flex=state.flex, meter=state.meter,
        load_w=state.load_w, load_mj=state.load_mj, loss_mj=state.loss_mj + battery.loss_mj,
        dc_port_mj=state.dc_port_mj + flow.port_w * flow.on_ms, ev=state.ev,
        flex_mj=state.flex_mj)


def energy_imbalance_mj(start: HomeState, end: HomeState) -> int:
    """Sources minus sinks between two states, from independent counters; 0 when energy is kept.

    Sources: grid import, PV, the DC-DC converter's port. Sinks: grid export, loads, energy now
    in the cells, losses.
    """
    sources = ((end.meter.import_mj - start.meter.import_mj)
               + (end.pv.energy_mj - start.pv.energy_mj)
               + (end.dc_port_mj - start.dc_port_mj))
    sinks = ((end.meter.export_mj - start.meter.export_mj) + (end.load_mj - start.load_mj)
             + (end.battery.stored_mj - start.battery.stored_mj) + (end.loss_mj - start.loss_mj))
    return sources - sinks


__all__ = ["MJ_PER_WH", "HomeProfiles", "HomeSpec", "HomeState", "energy_imbalance_mj",
           "home_dc_step", "home_initial", "home_step", "port_bounds"]
