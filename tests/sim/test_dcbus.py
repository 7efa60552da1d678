"""DC bus physics: the master holds the voltage, mismatch beyond it moves the voltage and trips,
and energy is kept to the millijoule across homes, bus and converter losses."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.roles.dcdc import OVER_VOLTAGE, TRIPPED, UNDER_VOLTAGE
from protocols.sunspec.devices import DeviceMap
from sim_devices.dcbus import (
    CC_CHARGE,
    CC_DISCHARGE,
    CV,
    WAIT,
    ConverterSpec,
    DcBusSpec,
    PortBounds,
    StageCommand,
    bus_imbalance_mj,
    bus_initial,
    bus_step,
)
from sim_devices.home import HomeSpec, energy_imbalance_mj
from sim_devices.physics import PhysicsError
from sim_devices.world import World

BUS = DcBusSpec()
CONV = ConverterSpec(max_a=20, efficiency=0.97)
ROOMY = PortBounds(charge_w=10_000, discharge_w=10_000)
DCDC = DeviceMap.for_role("dcdc")


def _master(amps_x100=2000, v_x10=3500, bounds=ROOMY):
    return (CONV, StageCommand(CV, amps_x100, v_x10), bounds)


def _cc(mode, amps_x100, bounds=ROOMY):
    return (CONV, StageCommand(mode, amps_x100, 0), bounds)


def test_master_absorbs_a_mismatch_within_its_capacity_and_the_voltage_holds():
    state = start = bus_initial(BUS)
    for _ in range(10):
        state, flows = bus_step(BUS, state, converters={
            "a": _master(), "b": _cc(CC_DISCHARGE, 1000), "c": _cc(CC_CHARGE, 300)}, dt_ms=1000)
        assert BUS.voltage_x10(state.stored_mj) == 3500 and not state.tripped
    # b puts 10 A × 350 V on the bus, c takes 3 A, the master takes the other 7 A.
    assert flows["b"].bus_w == -3500 and flows["c"].bus_w == 1050
    assert flows["a"].bus_w == 2450 and flows["a"].a_x100 == 700
    assert flows["b"].port_w == -3609  # ceil(3500 / 0.97): the battery pays the loss
    assert flows["a"].port_w == 2376  # floor(2450 × 0.97)
    delivered = sum(f.port_w * f.on_ms for f in flows.values()) * 10
    assert bus_imbalance_mj(start, state, delivered_mj=delivered) == 0
    assert state.loss_mj - start.loss_mj > 0


def test_mismatch_beyond_the_master_moves_the_voltage_and_trips_at_the_crossing():
    state = bus_initial(BUS)
    members = {"a": _master(amps_x100=500), "b": _cc(CC_DISCHARGE, 700)}
    volts = []
    while not state.tripped:
        state, flows = bus_step(BUS, state, converters=members, dt_ms=1000)
        volts.append(BUS.voltage_x10(state.stored_mj))
    assert volts == sorted(volts) and len(volts) > 5  # it rose step by step, then tripped
    assert volts[-1] == 3801  # stopped the millisecond it left the window
    assert 0 < flows["b"].on_ms < 1000 and flows["a"].on_ms == flows["b"].on_ms
    # Outside the window no CC converter runs: the bus stays where protection left it.
    after, flows = bus_step(BUS, state, converters={"b": _cc(CC_DISCHARGE, 1500)}, dt_ms=1000)
    assert after.stored_mj == state.stored_mj and flows["b"].bus_w == 0 and after.tripped


def test_a_master_brings_a_tripped_bus_back_and_undervoltage_trips_too():
    state = bus_initial(BUS)
    while not state.tripped:  # a load with no master: the voltage falls
        state, _ = bus_step(BUS, state, converters={"c": _cc(CC_CHARGE, 2000)}, dt_ms=1000)
    assert BUS.voltage_x10(state.stored_mj) == 3199
    state, flows = bus_step(BUS, state, converters={"a": _master(), "c": _cc(CC_CHARGE, 2000)},
                            dt_ms=1000)
    assert flows["c"].bus_w == 0 and flows["a"].bus_w < 0  # only the master, feeding the bus
    assert BUS.voltage_x10(state.stored_mj) == 3500 and not state.tripped


def test_port_bounds_limit_what_a_converter_moves():
    empty = PortBounds(charge_w=0, discharge_w=1000)
    state, flows = bus_step(BUS, bus_initial(BUS), converters={
        "a": _master(bounds=PortBounds(charge_w=500, discharge_w=0)),
        "b": _cc(CC_DISCHARGE, 2000, bounds=empty)}, dt_ms=1000)
    assert flows["b"].port_w == -1000 and flows["b"].bus_w == -970
    assert 0 < flows["a"].port_w <= 500
    assert state.stored_mj > bus_initial(BUS).stored_mj  # the master's battery is nearly full


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(st.tuples(
    st.sampled_from([WAIT, CV, CC_CHARGE, CC_DISCHARGE]), st.integers(0, 2000),
    st.sampled_from([WAIT, CC_CHARGE, CC_DISCHARGE]), st.integers(0, 2000),
    st.integers(0, 8000), st.integers(0, 8000), st.integers(1, 5000)), min_size=1, max_size=30))
def test_bus_conserves_energy_and_respects_limits(steps):
    state = bus_initial(BUS)
    for mode_a, amps_a, mode_b, amps_b, charge, discharge, dt in steps:
        bounds = PortBounds(charge_w=charge, discharge_w=discharge)
        before = state
        state, flows = bus_step(BUS, state, converters={
            "a": (CONV, StageCommand(mode_a, amps_a, 3500), bounds),
            "b": _cc(mode_b, amps_b, bounds)}, dt_ms=dt)
        delivered = sum(f.port_w * f.on_ms for f in flows.values())
        assert bus_imbalance_mj(before, state, delivered_mj=delivered) == 0
        for f in flows.values():
            assert -discharge <= f.port_w <= charge and f.loss_mj >= 0
            assert abs(f.a_x100) <= CONV.max_a * 100 and 0 <= f.on_ms <= dt
        assert state.stored_mj > 0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"v_min": 360}, "v_min < nominal_v"), ({"capacitance_mf": 0}, "capacitance")])
def test_bad_bus_spec_names_the_problem(kwargs, message):
    with pytest.raises(PhysicsError, match=message):
        DcBusSpec(**kwargs)


def test_bad_converter_and_world_wiring_name_the_problem():
    with pytest.raises(PhysicsError, match="efficiency"):
        ConverterSpec(efficiency=0)
    with pytest.raises(PhysicsError, match="no dc_bus"):
        World(homes=[HomeSpec(name="a", dcdc=ConverterSpec())])
    with pytest.raises(PhysicsError, match="at least one home"):
        World(homes=[HomeSpec(name="a")], dc_bus=BUS)
    with pytest.raises(PhysicsError, match="unknown devices"):
        World(homes=[HomeSpec(name="a")], faults={("a", "dcdc"): None})


# --------------------------------------------------------------------------------------------
# The bus in a world: the converters' firmware on the homes' batteries
# --------------------------------------------------------------------------------------------


def _write(world, home, point, *words):
    bank = world.home(home).devices["dcdc"].bank
    return bank.write(DCDC.address(64200, point), struct.pack(f">{len(words)}H", *words))


def _reg(world, home, point):
    bank = world.home(home).devices["dcdc"].bank
    return bank.get(DCDC.address(64200, point))


def _community_world(**kwargs):
    homes = [HomeSpec(name="a", battery_max_w=5000, soc_start_pct=30, dcdc=ConverterSpec(max_a=10)),
             HomeSpec(name="b", soc_start_pct=80, dcdc=ConverterSpec(max_a=10)),
             HomeSpec(name="c", soc_start_pct=70, flex_w=1000, flex_wh=1500,
                      dcdc=ConverterSpec(max_a=10))]
    return World(homes=homes, seed=4, start_s=11 * 3600, dc_bus=BUS, **kwargs)


def test_energy_is_kept_across_homes_bus_and_losses_at_every_step():
    world = _community_world(dt_ms=5000)
    for home in ("a", "b", "c"):
        assert _write(world, home, "RvrtTms", 3600) == 0
    assert _write(world, "a", "Mode", CV, 0, 3500) == 0
    assert _write(world, "b", "Mode", CC_DISCHARGE, 600) == 0
    script = {10: ("c", CC_DISCHARGE, 500), 40: ("c", CC_DISCHARGE, 1000),  # trips the bus
              45: ("a", CV, 0), 47: ("b", CC_CHARGE, 300), 60: ("c", CC_CHARGE, 200)}
    starts = {h.name: h.state for h in world.homes}
    bus0 = world.dc_bus.state
    tripped_seen = False
    for i in range(120):
        if i in script:
            home, mode, amps = script[i]
            assert _write(world, home, "Mode", mode, amps) == 0
        prev_homes = {h.name: h.state for h in world.homes}
        prev_bus = world.dc_bus.state
        world.step()
        delivered = 0
        for h in world.homes:
            assert energy_imbalance_mj(prev_homes[h.name], h.state) == 0
            delivered += h.state.dc_port_mj - prev_homes[h.name].dc_port_mj
        assert bus_imbalance_mj(prev_bus, world.dc_bus.state, delivered_mj=delivered) == 0
        tripped_seen = tripped_seen or world.dc_bus.tripped
    delivered = sum(h.state.dc_port_mj - starts[h.name].dc_port_mj for h in world.homes)
    assert bus_imbalance_mj(bus0, world.dc_bus.state, delivered_mj=delivered) == 0
    assert all(energy_imbalance_mj(starts[h.name], h.state) == 0 for h in world.homes)
    # The run exercised the bus: energy moved between batteries, the bus tripped and recovered.
    assert tripped_seen and not world.dc_bus.tripped
    moved = [h.state.dc_port_mj for h in world.homes]
    assert min(moved) < 0 < max(moved)
    assert world.dc_bus.state.loss_mj > 0


def test_a_bus_trip_stops_every_converter_and_shows_in_its_registers():
    world = _community_world()
    assert _write(world, "a", "Mode", CV, 0, 3500) == 0
    assert _write(world, "b", "Mode", CC_DISCHARGE, 800) == 0
    world.advance(5)
    assert world.dc_bus.voltage_v == 350.0 and _reg(world, "a", "St") == CV
    soc_a = world.home("a").battery.soc_pct
    assert _write(world, "c", "Mode", CC_DISCHARGE, 800) == 0  # 16 A in, the master takes 10
    world.advance(10)
    assert world.dc_bus.tripped and world.dc_bus.voltage_v > 380
    for home in ("a", "b", "c"):
        assert _reg(world, home, "St") == TRIPPED
        assert _reg(world, home, "Trip") == OVER_VOLTAGE
        assert _reg(world, home, "DCV") > 3800
        assert world.home(home).hal_dcdc.mode == WAIT
        assert world.home(home).dc_flow.bus_w == 0
    assert world.home("a").battery.soc_pct > soc_a  # it charged from b and c until the trip
    # A setpoint alone does not restart a tripped converter; a Mode write does.
    assert _write(world, "b", "ASet", 100) == 0
    world.advance(2)
    assert _reg(world, "b", "St") == TRIPPED
    assert _write(world, "a", "Mode", CV) == 0  # the master restores the bus
    world.advance(3)
    assert world.dc_bus.voltage_v == 350.0 and not world.dc_bus.tripped
    assert _reg(world, "a", "St") == CV and _reg(world, "a", "Trip") == 0


def test_a_load_with_no_master_pulls_the_bus_under_its_window():
    world = _community_world()
    assert _write(world, "c", "Mode", CC_CHARGE, 1000) == 0
    world.advance(20)
    assert world.dc_bus.tripped and world.dc_bus.voltage_v < 320
    assert _reg(world, "c", "St") == TRIPPED and _reg(world, "c", "Trip") == UNDER_VOLTAGE
