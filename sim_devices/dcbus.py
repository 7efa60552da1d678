"""Pure physics of a shared DC bus: converters, the voltage master, capacitance and protection.

Every home on the bus has a DC-DC converter between its battery and the bus. A converter in CV
mode is the bus's voltage master: it holds the bus at its setpoint by absorbing (or supplying)
whatever the others inject or draw, up to its current limit and what its battery can take or
give. Converters in CC mode push or pull a constant current. Whatever the masters cannot cover
lands on the bus capacitance, so the voltage moves; when it leaves the protection window the
protection opens every converter at that instant ("all converters to wait"), which the converters
report as a trip.

The bus is bookkept like the battery: its state is the energy in the capacitance, in integer
millijoules, and the voltage is derived from it (E = C·V²/2). Every converter's flow is an
integer power over an integer number of milliseconds, so the bus conserves energy exactly:
``Δstored = −drawn`` and, per converter, ``bus side = port side + loss``, to the millijoule.

Sign convention (64200 ``DCA``): + = from the bus into the converter's port (charging).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from sim_devices.physics import PhysicsError

WAIT, CV, CC_CHARGE, CC_DISCHARGE = 0, 1, 2, 3
"""Converter modes as the firmware commands its stage (64200 ``Mode``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConverterSpec:
    """A DC-DC converter's rating: ``max_a`` at the bus side; ``efficiency`` one way."""

    max_a: int = 20
    efficiency: float = 0.97

    def __post_init__(self) -> None:
        if not 0 < self.max_a <= 327:
            raise PhysicsError(f"converter max_a must be in 1..327 A, got {self.max_a}")
        if not 0.0 < self.efficiency <= 1.0:
            raise PhysicsError(f"converter efficiency must be in (0, 1], got {self.efficiency}")


@dataclass(frozen=True, slots=True, kw_only=True)
class DcBusSpec:
    """The bus: nominal voltage and protection window in V, capacitance in millifarad.

    The capacitance sets how fast an uncovered mismatch moves the voltage: at 500 mF a 5 A
    surplus takes the bus from 350 V to 380 V in about three seconds.
    """

    nominal_v: int = 350
    v_min: int = 320
    v_max: int = 380
    capacitance_mf: int = 500

    def __post_init__(self) -> None:
        if not 0 < self.v_min < self.nominal_v < self.v_max <= 6000:
            raise PhysicsError(
                f"DC bus needs 0 < v_min < nominal_v < v_max <= 6000 V, got "
                f"{self.v_min}, {self.nominal_v}, {self.v_max}")
        if self.capacitance_mf <= 0:
            raise PhysicsError(f"DC bus capacitance_mf must be > 0, got {self.capacitance_mf}")

    def energy_mj(self, v_x10: int) -> int:
        """The least energy at which the bus reads ``v_x10`` decivolts: C·V²/2, rounded up."""
        return -(-v_x10 * v_x10 * self.capacitance_mf // 200)

    def voltage_x10(self, stored_mj: int) -> int:
        """Bus voltage in decivolts (rounded down) for ``stored_mj`` in the capacitance."""
        return math.isqrt(max(0, stored_mj) * 200 // self.capacitance_mf)

    def window_mj(self) -> tuple[int, int]:
        """The stored energies at which the bus reads inside ``v_min``..``v_max`` (inclusive),
        so "tripped" and the voltage a converter reads always agree."""
        return self.energy_mj(self.v_min * 10), self.energy_mj(self.v_max * 10 + 1) - 1


@dataclass(frozen=True, slots=True)
class StageCommand:
    """What the firmware commanded its stage: a CC current, or a CV voltage (``a_x100`` is then
    the master's current limit)."""

    mode: int = WAIT
    a_x100: int = 0
    v_x10: int = 0


@dataclass(frozen=True, slots=True)
class PortBounds:
    """The most the converter's port (its battery) can take or give this step, in W (≥ 0)."""

    charge_w: int
    discharge_w: int


@dataclass(frozen=True, slots=True)
class ConverterFlow:
    """One converter over one step: bus and port power (+ = from the bus into the port), for
    ``on_ms`` (the step, or less when the protection opened); ``a_x100`` the bus current."""

    bus_w: int = 0
    port_w: int = 0
    on_ms: int = 0
    a_x100: int = 0

    @property
    def loss_mj(self) -> int:
        return (self.bus_w - self.port_w) * self.on_ms


@dataclass(frozen=True, slots=True)
class BusState:
    """Energy in the capacitance and cumulative counters for conservation checks.

    ``drawn_mj``: energy taken off the bus by all converters (− = put on); ``loss_mj``: converter
    losses; ``tripped``: the bus ended the last step outside its protection window.
    """

    stored_mj: int
    drawn_mj: int = 0
    loss_mj: int = 0
    tripped: bool = False


def bus_initial(spec: DcBusSpec) -> BusState:
    """A bus charged to its nominal voltage."""
    return BusState(stored_mj=spec.energy_mj(spec.nominal_v * 10))


@dataclass(frozen=True, slots=True)
class _Member:
    spec: ConverterSpec
    command: StageCommand
    bounds: PortBounds


def _port_w(spec: ConverterSpec, bus_w: int) -> int:
    """Port power for a bus power: losses always come out of the energy moved."""
    if bus_w >= 0:
        return math.floor(bus_w * spec.efficiency)
    return -math.ceil(-bus_w / spec.efficiency)


def _limit(member: _Member, bus_w: int, limit_w: int) -> int:
    """``bus_w`` within ``±limit_w`` and what the port can take or give (exactly, not ±1 W)."""
    spec, bounds = member.spec, member.bounds
    bus_w = max(-limit_w, min(limit_w, bus_w))
    if bus_w > 0:
        bus_w = min(bus_w, math.floor(bounds.charge_w / spec.efficiency))
        while _port_w(spec, bus_w) > bounds.charge_w:
            bus_w -= 1
    elif bus_w < 0:
        bus_w = max(bus_w, -math.floor(bounds.discharge_w * spec.efficiency))
        while -_port_w(spec, bus_w) > bounds.discharge_w:
            bus_w += 1
    return bus_w


def bus_step(spec: DcBusSpec, state: BusState, *,
             converters: Mapping[str, tuple[ConverterSpec, StageCommand, PortBounds]],
             dt_ms: int) -> tuple[BusState, dict[str, ConverterFlow]]:
    """Advance the bus by ``dt_ms``: CC converters first, then the masters cover the rest.

    Masters (several are allowed, served in name order) aim at their setpoint by the end of the
    step within their current limit. While the bus is outside its window only masters run (the
    precharge path that brings it back). If the bus leaves the window during the step, every
    converter stops at the millisecond it left.
    """
    if dt_ms <= 0:
        raise PhysicsError(f"dt_ms must be > 0, got {dt_ms}")
    members = {name: _Member(*entry) for name, entry in sorted(converters.items())}
    v0 = spec.voltage_x10(state.stored_mj)
    low, high = spec.window_mj()
    inside = low <= state.stored_mj <= high
    bus_w: dict[str, int] = {name: 0 for name in members}
    for name, m in members.items():
        if inside and m.command.mode in (CC_CHARGE, CC_DISCHARGE):
            amps_x100 = min(m.command.a_x100, m.spec.max_a * 100)
            power = v0 * amps_x100 // 1000
            want = power if m.command.mode == CC_CHARGE else -power
            bus_w[name] = _limit(m, want, power)
    for name, m in members.items():
        if m.command.mode == CV:
            drawn = sum(bus_w.values())
            aim = (state.stored_mj - spec.energy_mj(m.command.v_x10)) // dt_ms
            amps_x100 = min(m.command.a_x100, m.spec.max_a * 100)
            bus_w[name] = _limit(m, aim - drawn, v0 * amps_x100 // 1000)
    drawn = sum(bus_w.values())
    on_ms = dt_ms
    end = state.stored_mj - drawn * dt_ms
    if inside and not low <= end <= high:
        edge = high if end > high else low
        on_ms = min(dt_ms, abs(edge - state.stored_mj) // abs(drawn) + 1)
        end = state.stored_mj - drawn * on_ms
    flows = {}
    for name, m in members.items():
        w = bus_w[name]
        flows[name] = ConverterFlow(bus_w=w, port_w=_port_w(m.spec, w), on_ms=on_ms if w else 0,
                                    a_x100=int(w * 1000 / v0) if v0 else 0)
    return BusState(
        stored_mj=end, drawn_mj=state.drawn_mj + drawn * on_ms,
        loss_mj=state.loss_mj + sum(f.loss_mj for f in flows.values()),
        tripped=not low <= end <= high), flows


def bus_imbalance_mj(start: BusState, end: BusState, *, delivered_mj: int) -> int:
    """Energy off the bus minus what reached the ports and the losses; 0 when energy is kept.

    ``delivered_mj`` is the ports' own count of what they received (+) or gave (−).
    """
    return ((start.stored_mj - end.stored_mj) - delivered_mj
            - (end.loss_mj - start.loss_mj))


__all__ = ["CC_CHARGE", "CC_DISCHARGE", "CV", "WAIT", "BusState", "ConverterFlow",
           "ConverterSpec", "DcBusSpec", "PortBounds", "StageCommand", "bus_imbalance_mj",
           "bus_initial", "bus_step"]
