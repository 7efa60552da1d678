"""A home under a 1.5 kW export limit, through every real part: its gateway plans with the
optimiser, sells to a neighbour over the embedded broker, and drives its battery and PV inverter
over Modbus TCP against the simulated street. Its battery is nearly full at noon with 9 kWp on
the roof, so the only way to keep the limit is to curtail the PV: the simulated meter (ground
truth, not the gateway's readings) never exports more than the limit allows in an interval.
"""

from __future__ import annotations

import asyncio

import pytest

from gateway.clock import Clock
from gateway.config import load_config
from gateway.home import GatewayNode, running
from gateway.identity import load_certificate, load_key_file
from sim_devices.demo.broker import EmbeddedBroker
from sim_devices.demo.community import RunTiming, provision
from sim_devices.home import HomeSpec
from sim_devices.world import World

pytestmark = pytest.mark.realtime

H = 3600
LIMIT_W = 1_500
HOMES = (
    HomeSpec(name="limited", pv_peak_w=9_000, base_load_w=300, battery_wh=5_000,
             battery_max_w=3_000, soc_start_pct=93, cloudiness=0.1),
    HomeSpec(name="neighbour", pv_peak_w=0, base_load_w=1_200, battery_wh=5_000,
             soc_start_pct=30),
)
SPEED = 360.0
TIMING = RunTiming(speed=SPEED, physics_step_ms=1000, revert_s=1800, poll_s=30)
START_S = 10.5 * H
CHECK_S = 11 * H  # from the first whole interval after the gateways are up
END_S = 13.5 * H
_GUARD_S = 300.0


async def test_the_meter_never_exports_past_the_operators_limit(tmp_path):
    world = World(homes=HOMES, seed=3, speed=SPEED, start_s=START_S,
                  dt_ms=TIMING.physics_step_ms)
    limited = world.home("limited")
    # (world time ms, meter export Wh, PV available W, PV produced W)
    samples: list[tuple[int, float, int, int]] = []

    async def sample() -> None:
        while True:
            pv, meter = limited.pv, limited.meter
            samples.append((world.now_ms, meter.export_wh, pv.available_w, pv.power_w))
            await asyncio.sleep(0.01)

    async with asyncio.timeout(_GUARD_S), EmbeddedBroker() as broker, world.serve() as served:
        addresses = {(h.name, key): served.address(h.name, key)
                     for h in world.homes for key in h.devices}
        configs = provision(tmp_path, HOMES, addresses, broker_url=broker.url, timing=TIMING)
        with configs[0].open("a") as config:  # the connection agreement, as the installer sets it
            config.write(f"\n[grid]\nexport_limit_w = {LIMIT_W}\n")
        clock = Clock(origin_ms=world.now_ms, speed=SPEED)
        nodes = []
        for path in configs:
            config = load_config(path)
            envelope, _ = load_certificate(config.certificate_file)
            nodes.append(GatewayNode(config=config, key=load_key_file(config.key_file),
                                     certificate=envelope, clock=clock))
        assert nodes[0].config.grid is not None and nodes[1].config.grid is None
        sampler = asyncio.create_task(sample())
        try:
            async with running(nodes[0]) as task_a, running(nodes[1]) as task_b:
                while world.now_ms < END_S * 1000:
                    assert not task_a.done() and not task_b.done(), "a gateway stopped"
                    await asyncio.sleep(0.05)
        finally:
            sampler.cancel()
    # The broker's and clients' name lookups ran on the loop's default executor: join its thread.
    await asyncio.get_running_loop().shutdown_default_executor()

    length_ms = round(TIMING.interval_s * 1000)
    allowed_wh = LIMIT_W * TIMING.interval_s / H
    checked = 0
    for start in range(round(CHECK_S * 1000), round(END_S * 1000) - length_ms + 1, length_ms):
        inside = [s for s in samples if start <= s[0] <= start + length_ms]
        assert inside, f"no samples in the interval from {start / 1000 / H:.2f} h"
        exported = inside[-1][1] - inside[0][1]
        assert exported <= allowed_wh, (start / 1000 / H, exported, allowed_wh)
        checked += 1
    assert checked == 10
    # The limit was held by curtailing: the sun gave more than the home used, stored and sent.
    curtailed = [s for s in samples if s[0] >= CHECK_S * 1000 and s[2] - s[3] > 1_000]
    assert len(curtailed) > len(samples) // 4
