"""V2G through every real part, on the v2g-evening scenario: two homes with the same car on the
same bidirectional charger and a dear evening (dynamic-street's tariff file), and a neighbour,
planned by the optimiser, trading over the embedded broker with signed bids, driving their
chargers over Modbus TCP against the simulated street. home-1's owner consented to V2G with a
55 % floor, home-2's did not. Ground truth from the simulated packs: home-1's car feeds its
evening and never goes below its floor; home-2's never feeds anything; both are at their target
charge when they leave.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from gateway.clock import Clock
from gateway.home import running
from sim_devices import virtual_time
from sim_devices.demo.broker import EmbeddedBroker
from sim_devices.demo.community import Rules, RunTiming, provision, provisioned_node
from sim_devices.demo.history import learned_forecast
from sim_devices.ev import EvSpec
from sim_devices.physics import MJ_PER_WH
from sim_devices.scenario import load_scenario
from sim_devices.world import World

H = 3600
SCENARIO = load_scenario("v2g-evening")
HOMES = SCENARIO.home_specs()
FLOOR_PCT = 55
_CAR = HOMES[0].ev
if _CAR is None or HOMES[1].ev != _CAR or not _CAR.max_discharge_w:
    raise AssertionError("v2g-evening: home-1 and home-2 have the same V2G car")
EV: EvSpec = _CAR
SPEED = 720.0  # the gateways' pace against the physics step, on the virtual clock
# Setpoints hold half an hour: a charger must not revert between two control periods; the floor
# rule counts the whole of it.
TIMING = RunTiming(speed=SPEED, physics_step_ms=2000, revert_s=1800)
READY_S = 24 * H + 7.5 * H - 60  # the minute before the cars leave (their chargers' deadline)
_GUARD_S = 400.0  # virtual seconds: turns a hang into a failure

Sample = tuple[int, int, int, int]  # world ms, stored mJ, power W, fed mJ


async def _sample(world: World, samples: dict[str, list[Sample]]) -> None:
    while True:
        for name, rows in samples.items():
            ev = world.home(name).state.ev
            assert ev is not None
            rows.append((world.now_ms, ev.stored_mj, ev.power_w, ev.fed_mj))
        await asyncio.sleep(0.01)


def test_with_consent_the_car_feeds_the_evening_above_its_floor_and_is_full_by_morning(
        tmp_path: Path) -> None:
    """On virtual time (:mod:`sim_devices.virtual_time`): a busy host makes the night slower,
    never a control step late."""
    virtual_time.run(_evening(tmp_path))


async def _evening(tmp_path: Path) -> None:
    world = SCENARIO.world(speed=SPEED, dt_ms=TIMING.physics_step_ms)
    samples: dict[str, list[Sample]] = {home.name: [] for home in HOMES if home.ev}
    rules = replace(Rules.of(SCENARIO), planner="optimiser")
    for home in HOMES:  # the gateways have learned their homes' days, as after a few weeks
        state = tmp_path / home.name / "state"
        state.mkdir(parents=True)
        (state / "forecast.json").write_text(
            learned_forecast(home, world_seed=SCENARIO.seed, days=3).to_json())
    async with asyncio.timeout(_GUARD_S), EmbeddedBroker() as broker, world.serve() as served:
        addresses = {(h.name, key): served.address(h.name, key)
                     for h in world.homes for key in h.devices}
        configs = provision(tmp_path, HOMES, addresses, broker_url=broker.url, timing=TIMING,
                            rules=rules)
        clock = Clock(origin_ms=world.now_ms, speed=SPEED)
        nodes = [provisioned_node(path, clock=clock) for path in configs]
        assert nodes[0].config.preferences.v2g_min_soc_pct == FLOOR_PCT
        assert nodes[1].config.preferences.v2g_min_soc_pct is None
        sampler = asyncio.create_task(_sample(world, samples))
        try:
            async with running(nodes[0]) as a, running(nodes[1]) as b, running(nodes[2]) as c:
                while world.now_ms < (READY_S + 300) * 1000:
                    assert not any(t.done() for t in (a, b, c)), "a gateway stopped"
                    await asyncio.sleep(0.05)
                statuses = [node.status() for node in nodes]
        finally:
            sampler.cancel()
    await asyncio.get_running_loop().shutdown_default_executor()

    capacity_mj = EV.battery_wh * MJ_PER_WH
    at_ready = {name: [s for s in rows if s[0] <= READY_S * 1000][-1]
                for name, rows in samples.items()}
    plugged = {name: [s for s in rows if EV.arrival_h * H * 1000 <= s[0] <= READY_S * 1000]
               for name, rows in samples.items()}

    # The consenting home's car fed the home in the dear evening (17:00-21:00), and never
    # below the owner's floor.
    consents = plugged["home-1"]
    evening = [s for s in consents if s[0] <= 21 * H * 1000]
    fed_wh = (evening[-1][3] - evening[0][3]) / MJ_PER_WH
    assert fed_wh >= 1_000, fed_wh
    assert min(s[1] for s in consents) >= capacity_mj * FLOOR_PCT / 100
    # The other car never fed anything.
    assert all(s[3] == 0 and s[2] >= 0 for s in samples["home-2"])
    # The owner sees why the car did not feed the home when the plan asked; without consent
    # the plan never asks.
    assert all(isinstance(n, int) and n > 0 for n in statuses[0].v2g_refusals.values())
    assert statuses[1].v2g_refusals == {}
    assert statuses[0].to_json()["v2g_refusals"] == statuses[0].v2g_refusals
    # Both cars are at their target charge when they leave (the car's own clock: the world's).
    for name, sample in at_ready.items():
        assert sample[1] >= capacity_mj * EV.target_soc_pct / 100 * 0.999, (name, sample)
