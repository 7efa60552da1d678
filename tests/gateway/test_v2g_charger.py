"""A bidirectional (V2G) charger end to end below the plan: the simulated car's pack feeds the
home at the charger's efficiency and never past empty, the firmware serves its SoC and takes a
discharge setpoint under the revert timer, and the gateway's driver reads it over Modbus TCP and
commands it, while a charger without the V2G points (or with hostile ones) stays charge-only."""

from __future__ import annotations

import asyncio
import struct
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.devices import ControllableLoad, ModbusTcpBus, discover
from gateway.devices.load import MAX_PACK_WH, decode_load
from gateway.devices.model_reader import ModelLocation, decode_model, model_definition
from gateway.devices.scan import render, scan
from sim_devices.ev import EvSpec, EvState, ev_step
from sim_devices.home import HomeSpec
from sim_devices.physics import MJ_PER_WH
from sim_devices.world import World

_GUARD_S = 20.0  # turns a hang into a failure; nothing here depends on timing
H = 3600
V2G = EvSpec(battery_wh=40_000, max_charge_w=7_400, max_discharge_w=5_000, arrival_h=18.0,
             departure_h=7.5, arrival_soc_pct=60, target_soc_pct=80)
CHARGE_ONLY = EvSpec(battery_wh=40_000, max_charge_w=7_400, arrival_h=18.0, departure_h=7.5)


def _world(ev: EvSpec) -> World:
    return World(homes=[HomeSpec(name="a", ev=ev, pv_peak_w=0)], seed=3, speed=1.0,
                 start_s=19 * H)


def test_the_pack_feeds_the_home_at_the_chargers_efficiency_and_never_past_empty() -> None:
    spec = EvSpec(battery_wh=10, max_charge_w=7_400, max_discharge_w=5_000, arrival_h=18.0,
                  departure_h=7.5, charge_efficiency=0.9)
    state = EvState(plugged=True, stored_mj=5 * MJ_PER_WH)  # half of 10 Wh
    fed_mj = 0
    for second in range(60):
        before = state.stored_mj
        state = ev_step(spec, state, t_ms=19 * H * 1000 + second * 1000, dt_ms=1000,
                        discharge_w=9_000)
        assert state.stored_mj >= 0
        out = before - state.stored_mj
        fed_mj += -state.power_w * 1000
        assert -state.power_w <= 5_000  # the charger's own maximum, not the setpoint
        assert -state.power_w * 1000 <= out * 0.9 + 1e-9  # losses paid by the cells
    assert state.fed_mj == fed_mj
    assert state.fed_mj == pytest.approx(5 * MJ_PER_WH * 0.9, abs=5_000)
    assert state.stored_mj < 5_000  # emptied to within one step's rounding
    # Away from home it neither charges nor feeds, whatever it is asked.
    away = ev_step(spec, state, t_ms=12 * H * 1000, dt_ms=1000, discharge_w=5_000)
    assert (away.power_w, away.stored_mj) == (0, state.stored_mj)
    # A charge-only car ignores a discharge setpoint.
    only = EvSpec(battery_wh=10, max_charge_w=7_400, arrival_h=18.0, departure_h=7.5)
    assert ev_step(only, EvState(True, 5 * MJ_PER_WH), t_ms=19 * H * 1000, dt_ms=1000,
                   discharge_w=5_000).power_w == 0


async def test_the_driver_reads_the_cars_soc_and_feeds_back_until_the_timer_reverts() -> None:
    world = _world(V2G)
    home = world.home("a")
    async with asyncio.timeout(_GUARD_S), world.serve() as served:
        host, port = served.address("a", "ev")
        async with ModbusTcpBus(host=host, port=port, timeout_s=1.0) as bus:
            charger = ControllableLoad(bus=bus, device=await discover(bus, unit=1))
            reading = await charger.read()
            assert reading.pack is not None and reading.max_discharge_w == 5_000
            assert reading.pack.soc_pct == pytest.approx(60, abs=0.1)
            assert reading.pack.capacity_wh == 40_000
            assert [c.what for c in charger.commands] == ["power limit", "discharge (V2G)"]

            with pytest.raises(ValueError, match=r"outside 1\.\.5000 W"):
                await charger.set_discharge(watts=5_001, revert_s=60)
            await charger.set_discharge(watts=3_000, revert_s=60)
            stage = home.hal_loads["ev"]
            assert (stage.discharge_set_w, stage.limit_w) == (3_000, 0)
            stored = home.state.ev.stored_mj if home.state.ev else 0
            world.advance(30)  # the test steps the world itself: served at speed 1, it barely moves
            assert home.state.ev is not None and home.state.ev.power_w == -3_000
            assert home.state.ev.stored_mj < stored
            assert home.meter.power_w == home.state.load_w  # the car covers part of the house
            reading = await charger.read()
            assert reading.pack is not None and reading.pack.discharge_w == 3_000

            await charger.set_limit(watts=2_000, revert_s=60)  # back to charging: setpoint first
            assert (stage.discharge_set_w, stage.limit_w) == (0, 2_000)
            await charger.set_discharge(watts=3_000, revert_s=60)
            world.advance(61)  # the gateway went silent: the timer stops the discharge
            assert stage.discharge_set_w == 0 and stage.limit_w is None
            assert home.state.ev.power_w > 0  # charging on its own default again


async def test_a_car_plugging_in_or_leaving_is_not_a_changed_device() -> None:
    """Its SoC and pack size appear and vanish with the car: no poll fails on that."""
    world = World(homes=[HomeSpec(name="a", ev=V2G, pv_peak_w=0)], seed=3, speed=1.0,
                  start_s=17.9 * H)
    async with asyncio.timeout(_GUARD_S), world.serve() as served:
        host, port = served.address("a", "ev")
        async with ModbusTcpBus(host=host, port=port, timeout_s=1.0) as bus:
            charger = ControllableLoad(bus=bus, device=await discover(bus, unit=1),
                                       now_s=lambda: world.now_s)
            away = await charger.read()
            assert not away.connected and away.pack is None and away.max_discharge_w == 5_000
            world.advance(0.2 * H)
            home = await charger.read()
            assert home.connected and home.pack is not None
            world.advance(14 * H)  # gone again in the morning
            gone = await charger.read()
            assert not gone.connected and gone.pack is None


async def test_a_charger_without_the_v2g_points_stays_charge_only() -> None:
    world = _world(CHARGE_ONLY)
    async with asyncio.timeout(_GUARD_S), world.serve() as served:
        host, port = served.address("a", "ev")
        async with ModbusTcpBus(host=host, port=port, timeout_s=1.0) as bus:
            charger = ControllableLoad(bus=bus, device=await discover(bus, unit=1))
            reading = await charger.read()
            assert (reading.max_discharge_w, reading.pack, reading.pack_problem) == (0, None, None)
            assert [c.what for c in charger.commands] == ["power limit"]
            with pytest.raises(ValueError, match="offered no discharge"):
                await charger.set_discharge(watts=1_000, revert_s=60)
            assert world.home("a").hal_loads["ev"].discharge_set_w == 0


async def test_a_v2g_charger_that_cannot_know_its_car_is_charge_only_and_counted() -> None:
    """A pack past full (a BMS fault, a charger confused by a car swap): the firmware reports the
    SoC as not implemented, the driver counts it, and a discharge cannot be commanded."""
    world = _world(V2G)
    home = world.home("a")
    assert home.state.ev is not None
    home.state = replace(home.state, ev=replace(home.state.ev, stored_mj=V2G.capacity_mj * 2))
    world.advance(2)  # the role publishes what the car now says
    async with asyncio.timeout(_GUARD_S), world.serve() as served:
        host, port = served.address("a", "ev")
        async with ModbusTcpBus(host=host, port=port, timeout_s=1.0) as bus:
            charger = ControllableLoad(bus=bus, device=await discover(bus, unit=1))
            for _ in range(3):
                reading = await charger.read()
            assert reading.pack is None and reading.pack_problem == "SoC not implemented"
            assert charger.pack_problems == {"SoC": 3}
            with pytest.raises(ValueError, match=r"offered no discharge \(SoC not implemented\)"):
                await charger.set_discharge(watts=1_000, revert_s=60)
            await charger.set_limit(watts=1_000, revert_s=60)  # its charging stays ours
            assert home.hal_loads["ev"].limit_w == 1_000
            assert home.hal_loads["ev"].discharge_set_w == 0


@pytest.mark.parametrize(("ev", "commands"), [
    (V2G, ["commands the power limit", "commands the discharge (V2G)"]),
    (CHARGE_ONLY, ["commands the power limit"]),
])
async def test_the_installers_scan_names_whether_the_charger_can_feed_back(
        ev: EvSpec, commands: list[str]) -> None:
    world = _world(ev)
    async with asyncio.timeout(_GUARD_S), world.serve() as served:
        host, port = served.address("a", "ev")
        report = await scan(f"tcp://{host}:{port}", unit=1, kinds=["load"], timeout_s=1.0,
                            first_timeout_s=2.0)
    text = render(report)
    assert [line.strip().split(" through")[0] for line in text.splitlines()
            if line.strip().startswith("commands")] == commands, text
    assert f"max_discharge_w {ev.max_discharge_w}" in text
    assert report.kinds[0].status == "yes"


def _model(fields: dict[str, int]) -> tuple[ModelLocation, list[int]]:
    """Registers of model 64220 as a V2G charger with a car would serve them, with ``fields``
    (raw register values, by point) overriding."""
    location = ModelLocation(model_id=64220, address=40070, length=19)
    definition = model_definition(location)
    regs = [0] * (2 + location.length)
    regs[0], regs[1] = 64220, 19
    base = {"Kind": 2, "Conn": 1, "WhNeed": 8_000, "Dline": 450, "WMax": 7_400, "WLim": 7_400,
            "RvrtTms": 0, "RvrtRem": 0, "St": 0, "W": 0, "TotWh": 0, "SoC": 600,
            "WhRtg": 40_000, "WDisMax": 5_000, "WDisSet": 0, "WDis": 0}
    for name, value in {**base, **fields}.items():
        point = definition.point(name)
        if point.size == 2:
            regs[point.offset], regs[point.offset + 1] = value >> 16, value & 0xFFFF
        else:
            regs[point.offset] = value
    return location, regs


_U16 = st.integers(0, 0xFFFF)
_U32 = st.integers(0, 0xFFFFFFFF)


@settings(max_examples=400, deadline=None)
@given(soc=_U16, capacity=_U32, max_dis=_U16, now=_U16, setpoint=_U16)
def test_hostile_v2g_registers_never_yield_a_pack_the_gateway_could_drain_wrongly(
        soc: int, capacity: int, max_dis: int, now: int, setpoint: int) -> None:
    location, regs = _model({"SoC": soc, "WhRtg": capacity, "WDisMax": max_dis, "WDis": now,
                             "WDisSet": setpoint})
    reading = decode_load(decode_model(location, model_definition(location), tuple(regs)))
    pack = reading.pack
    if pack is None:
        return
    assert 0 <= pack.soc_pct <= 100 and pack.soc_pct == soc / 10
    assert 0 < pack.capacity_wh <= MAX_PACK_WH
    assert 0 < pack.max_discharge_w == max_dis < 0xFFFF
    assert 0 <= pack.discharge_w <= pack.max_discharge_w
    assert reading.pack_problem is None


@pytest.mark.parametrize(("fields", "problem"), [
    ({"SoC": 0xFFFF}, "SoC not implemented"),
    ({"SoC": 1_001}, "SoC 100.1 % is outside 0..100 %"),
    ({"WhRtg": 0}, "WhRtg 0 Wh is outside"),
    ({"WhRtg": 0xFFFFFFFF}, "WhRtg not implemented"),
    ({"WhRtg": MAX_PACK_WH + 1}, f"WhRtg {MAX_PACK_WH + 1} Wh is outside"),
    ({"WDis": 6_000}, "WDis 6000 W past its maximum"),
    ({"WDisSet": 0xFFFF}, "WDisSet not implemented"),
])
def test_a_pack_reading_that_cannot_be_is_charge_only_and_says_why(
        fields: dict[str, int], problem: str) -> None:
    location, regs = _model(fields)
    reading = decode_load(decode_model(location, model_definition(location), tuple(regs)))
    assert reading.pack is None and reading.max_discharge_w == 5_000
    assert reading.pack_problem is not None and problem in reading.pack_problem
    # Charging stays under control: the rest of the reading is as served.
    assert (reading.connected, reading.need_wh, reading.max_w) == (True, 8_000, 7_400)


def test_an_older_map_that_ends_at_totwh_still_reads_as_a_charge_only_charger() -> None:
    location = ModelLocation(model_id=64220, address=40070, length=13)
    _, regs = _model({})
    regs[1] = 13
    reading = decode_load(decode_model(location, model_definition(location), tuple(regs[:15])))
    assert (reading.max_discharge_w, reading.pack, reading.need_wh) == (0, None, 8_000)


def test_served_registers_pack_as_the_model_says() -> None:
    """The simulator's 0.1 % SoC register is what the model's fixed scale factor reads."""
    world = _world(V2G)
    dev = world.home("a").devices["ev"]
    raw = dev.bank.get(dev.map.address(64220, "SoC"))
    assert raw == 600 and struct.pack(">H", raw) == b"\x02\x58"
