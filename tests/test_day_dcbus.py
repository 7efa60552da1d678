"""Trading over the DC bus end to end: real gateways on `dc-bus-cluster`, converters over Modbus,
bids and commitments signed over MQTT, the bus physics deciding what flows.

Ground truth comes from the simulated world, not from the gateways: the energy each converter
moved at the bus side, the bus voltage at the end of every physics step, the largest current any
converter carried, what each converter's firmware is doing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict
from pathlib import Path

import pytest

from firmware.roles.dcdc import TRIPPED, WAIT
from gateway.config import load_config
from gateway.devices import DcDcConverter, discover
from gateway.devices.registry import open_bus
from gateway.home import HomeEvent, IntervalClosed, IntervalEnded, SetpointWritten
from protocols.clearing import Tariffs
from protocols.market import Agreed
from sim_devices import virtual_time
from sim_devices.demo.community import CommunityLog, RunTiming, dc_bus_master, run_community
from sim_devices.demo.summary import unbalanced
from sim_devices.physics import MJ_PER_WH
from sim_devices.scenario import load_scenario
from sim_devices.world import World

SCENARIO = load_scenario("dc-bus-cluster")
assert SCENARIO.dc_bus is not None
HOMES = ("home-1", "home-2", "home-3", "home-4")
MASTER = dc_bus_master(SCENARIO.home_specs(), SCENARIO.dc_bus.spec())
MEMBERS = tuple(h for h in HOMES if h != MASTER)


def test_the_installer_makes_the_biggest_converter_and_battery_the_master() -> None:
    assert MASTER == "home-1"  # as the scenario file means it: 20 A and a 5 kW battery


def timing(speed: float) -> RunTiming:
    """Generous gate and grace, so a loaded 2-core CI machine still agrees on every interval;
    the revert time is 60 control periods, as in the field (60 s at a 1 s poll), so a gateway
    task the machine delays for a moment does not let its converter revert."""
    return RunTiming(interval_s=900, gate_s=240, grace_s=60, poll_s=60, revert_s=3600,
                     ramp_w_per_s=50, speed=speed, physics_step_ms=5000, warmup_s=1800)


class BusGroundTruth:
    """Each home's bus-side converter energy and cleared position per interval it closed.

    The energy is read from the world when the home's gateway ends the interval (takes its
    closing reading; it settles it then or, while the market may still agree it, later), so it
    spans the same control steps as the gateway's own count (from its first step in one interval
    to its first step in the next).
    """

    def __init__(self) -> None:
        self.moved_wh: dict[str, dict[int, float]] = defaultdict(dict)
        self.cleared_wh: dict[str, dict[int, int]] = defaultdict(dict)
        self.settled_bus_wh: dict[str, dict[int, int]] = defaultdict(dict)
        self.late: set[int] = set()  # intervals some home adopted only after they started
        self.trades = 0
        self._mark: dict[str, float] = {}

    def observe(self, event: HomeEvent, world: World, log: CommunityLog) -> None:
        if isinstance(event, IntervalEnded):
            moved = world.home(event.node).dc_bus_mj / MJ_PER_WH
            mark = self._mark.get(event.node)
            self._mark[event.node] = moved
            if mark is not None and event.interval in log.window:
                self.moved_wh[event.node][event.interval] = moved - mark
        if (not isinstance(event, IntervalClosed) or event.interval not in log.window
                or event.interval not in self.moved_wh[event.node]):
            return
        outcome = event.outcome
        position = outcome.position if isinstance(outcome, Agreed) else None
        self.cleared_wh[event.node][event.interval] = (
            0 if position is None else position.bought_wh - position.sold_wh)
        if event.settlement is not None:  # the delivery settled: the meter's part and the bus's
            self.settled_bus_wh[event.node][event.interval] = (
                event.settlement.delivered_wh - event.metered_wh)
        if event.node == MASTER and isinstance(outcome, Agreed):
            self.trades += len(outcome.result.trades)
        if isinstance(outcome, Agreed) and outcome.late:
            self.late.add(event.interval)


def _letter(outcome: object) -> str:
    """A: agreed in time, L: adopted late, a: abstained, -: no outcome (assertion messages)."""
    if isinstance(outcome, Agreed):
        return "L" if outcome.late else "A"
    return "-" if outcome is None else "a"


def _status(out: Path, home: str) -> dict:
    return json.loads((out / home / "state" / "status.json").read_text())


def test_traded_energy_flows_over_the_dc_bus_inside_its_window(tmp_path: Path) -> None:
    """A whole day on virtual time (:mod:`sim_devices.virtual_time`): the clock moves only when
    every task waits, so a busy host makes it slower, never a gateway late."""
    virtual_time.run(_traded_day(tmp_path))


async def _traded_day(tmp_path: Path) -> None:
    truth = BusGroundTruth()
    intervals = 96  # from 09:30 round the clock: the sunny stretch, the evening, the night
    log, world = await run_community(out=tmp_path, scenario=SCENARIO, intervals=intervals,
                                     timing=timing(speed=600), on_event=truth.observe)
    window = list(log.window)
    assert log.complete == window
    agreed = [k for k in window if all(isinstance(log.closed[k][h].outcome, Agreed)
                                       for h in HOMES)]
    print("outcomes by interval:", " ".join(  # shown with a failure below
        f"{k}:{''.join(_letter(log.closed[k][h].outcome) for h in HOMES)}" for k in window))
    # on virtual time no host is too busy for a gateway to agree: every interval, in time
    assert len(agreed) == intervals and not truth.late, (len(agreed), sorted(truth.late))
    assert truth.trades >= 5, truth.cleared_wh
    # Whatever the timing, every interval's P2P energy and money balance across the homes.
    assert unbalanced(log, Tariffs(retail_price=SCENARIO.tariffs.retail_price,
                                   feed_in_price=SCENARIO.tariffs.feed_in_price)) == {}

    # The bus voltage stayed in its window at the end of every physics step, all day.
    bus = world.dc_bus
    spec = SCENARIO.dc_bus.spec()
    assert spec.v_min <= bus.low_v and bus.high_v <= spec.v_max, (bus.low_v, bus.high_v)
    assert not bus.tripped

    # No converter ever carried more than its limit (the device's, within the envelope's 20 A).
    for home in world.homes:
        assert home.spec.dcdc is not None
        assert home.dc_peak_a <= min(home.spec.dcdc.max_a, 20), (home.name, home.dc_peak_a)

    # The traded energy flowed over the bus: what each converter moved at the bus side matches
    # its cleared positions, the master's included (it carries no current of its own: it
    # absorbs what the members' currents leave over). Tolerance: 5 % of the home's traded
    # energy, plus one control period at a member converter's full power (58 Wh) for each end
    # of a stretch compared. Single intervals are not compared: a home carries an interval's
    # position from its last control step of the interval before, its steps are up to a
    # control period (60 s of 900 s) off the others' (more on a busy host), and a position
    # agreed late starts late, so energy shifts between neighbouring intervals; over a
    # stretch the shifts cancel. Intervals some home adopted only after they started (on a
    # busy host the commitments can miss the start) are left out: nobody dispatched them
    # from the start, so their positions were only partly delivered, and settled as such.
    compared = [k for k in window if k not in truth.late]
    ends = 1 + sum(1 for k in compared if k - 1 in truth.late)
    traded_wh = 0
    for name in HOMES:
        moved = sum(truth.moved_wh[name][k] for k in compared)
        cleared = sum(truth.cleared_wh[name][k] for k in compared)
        traded = sum(abs(truth.cleared_wh[name][k]) for k in compared)  # bought and sold
        traded_wh += traded
        assert abs(moved - cleared) <= 0.05 * traded + ends * 3500 * 60 / 3600, (
            name, moved, cleared, sorted(truth.moved_wh[name].items()),
            sorted(truth.cleared_wh[name].items()), sorted(truth.late))
        # ...and the settlement credits it, late intervals too: what a member settled as
        # delivered over the bus is what its converter moved there, so a seller that delivered
        # over the bus is not billed a shortfall its AC meter never saw. Not the master's: its
        # CV power moves with every member's command and is sampled once a control period, an
        # estimate that was off by 1.2 kWh over a day on a loaded CI host (docs/architecture.md,
        # known limits: converter energy counters would fix it).
        moved_all = sum(truth.moved_wh[name].values())
        carried = sum(abs(wh) for wh in truth.moved_wh[name].values())  # both ways
        settled = sum(truth.settled_bus_wh[name].values())
        print(f"{name}: settled over the bus {settled} Wh, moved {moved_all:.0f} Wh")
        assert name == MASTER or abs(settled - moved_all) <= (
            0.05 * carried + 3500 * 60 / 3600), (name, settled, moved_all, carried)
    assert traded_wh >= 1000, truth.cleared_wh

    # The gateways saw the same thing: the master held the bus and nothing faulted.
    for name in HOMES:
        status = _status(tmp_path, name)
        converter = status["converter"]
        assert converter["role"] == ("master" if name == MASTER else "member")
        assert "dc bus" not in status["safe_reason"]
    assert world.home(MASTER).dcdc_role.state == 1  # CV


@pytest.mark.realtime(cost_s=20)
async def test_a_tripped_bus_puts_every_gateway_in_safe_mode_with_converters_waiting(
    tmp_path: Path,
) -> None:
    """A converter forced beyond what the master can absorb trips the bus; every gateway sees it
    (its own converter tripped, or the bus outside its window), waits, and goes to safe mode for
    the rest of the interval; at the next interval the master brings the bus back."""
    speed = 300
    tripped_in: list[int] = []
    safe_seen: dict[str, str] = {}
    all_waiting: list[bool] = []
    forcing: list[asyncio.Task[None]] = []

    async def force_and_watch(world: World) -> None:
        # A broken controller (or a person with a Modbus tool) pushes every member's converter to
        # full discharge onto the bus: 3 x 3.5 kW, more than the master's 5 kW battery can take.
        async with contextlib.AsyncExitStack() as stack:
            drivers = []
            for home in MEMBERS:
                config = load_config(tmp_path / home / "gridpeer.toml")
                (device,) = [d for d in config.devices if d.kind == "dcdc"]
                modbus = await stack.enter_async_context(
                    open_bus(device.url, timeout_s=device.timeout_s))
                drivers.append(DcDcConverter(bus=modbus, device=await discover(modbus, unit=1)))
            for _ in range(50):
                for driver in drivers:
                    await driver.set_current(amps=-10, revert_s=600)
                await asyncio.sleep(0.02)
                if world.dc_bus.tripped:
                    break
            assert world.dc_bus.tripped, "the forced converters never tripped the bus"
        interval_ms = SCENARIO.market.interval_s * 1000
        k = world.now_ms // interval_ms
        tripped_in.append(k)
        # Within the interval every gateway must wait and say why.
        while world.now_ms // interval_ms == k:
            statuses = {home: _status(tmp_path, home) for home in HOMES}
            for home, status in statuses.items():
                if "dc bus" in status["safe_reason"] and status["mode"] == "safe":
                    safe_seen.setdefault(home, status["safe_reason"])
            if len(safe_seen) == len(HOMES):
                all_waiting.append(all(world.home(h).dcdc_role.state == WAIT for h in HOMES))
                if all_waiting[-1]:
                    return
            await asyncio.sleep(0.05)

    def observe(event: HomeEvent, world: World, log: CommunityLog) -> None:
        # Early in the run's second interval, once every gateway is trading.
        if (isinstance(event, SetpointWritten) and event.interval == log.window[1]
                and not forcing):
            forcing.append(asyncio.create_task(force_and_watch(world)))

    log, world = await run_community(out=tmp_path, scenario=SCENARIO, intervals=4,
                                     timing=timing(speed=speed), on_event=observe)
    await asyncio.gather(*forcing)
    assert tripped_in, "the fault was never injected"
    assert set(safe_seen) == set(HOMES), safe_seen
    assert all_waiting and all_waiting[-1], "not every converter was in WAIT"
    assert any("tripped" in reason for reason in safe_seen.values()), safe_seen
    # The next interval the master re-energised the bus and it stayed in its window.
    assert tripped_in[0] < log.window[-1]
    bus = world.dc_bus
    assert not bus.tripped and bus.voltage_v == SCENARIO.dc_bus.spec().nominal_v
    assert world.home(MASTER).dcdc_role.state == 1  # CV again
    assert all(world.home(h).dcdc_role.state != TRIPPED for h in HOMES)
