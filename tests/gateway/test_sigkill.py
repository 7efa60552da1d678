"""A gateway killed with SIGKILL at random moments loses no settled interval and settles none twice.

The victim is a real ``gridpeer run`` process on the wall clock; its two neighbours run in this
process, the devices are simulated homes on Modbus TCP and the broker is the embedded one, so the
market keeps clearing while the victim dies and comes back.
"""

import asyncio
import os
import random
import signal
import sys
from pathlib import Path

from gateway.broker import EmbeddedBroker
from gateway.clock import Clock
from gateway.community import Timing, provision
from gateway.config import load_config
from gateway.identity import load_certificate, load_key_file
from gateway.ledger import Ledger
from gateway.node import GatewayNode, running
from sim_devices.home import HomeSpec
from sim_devices.world import World

HOMES = (
    HomeSpec(name="home-1", pv_peak_w=6000, base_load_w=300, soc_start_pct=90),
    HomeSpec(name="home-2", pv_peak_w=0, base_load_w=3000, soc_start_pct=15),
    HomeSpec(name="home-3", pv_peak_w=0, base_load_w=2500, soc_start_pct=15),
)
INTERVAL_S = 1.5


def _ledger_state(path: Path) -> tuple[set[int], list[str], int]:
    if not path.exists():
        return set(), [], 0
    with Ledger.open(path) as ledger:
        blocks = list(ledger.blocks())
        return {b.interval for b, _ in blocks}, ledger.verify(), len(blocks)


async def _start_victim(config: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "run", "--config", str(config),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def test_sigkill_at_random_moments_loses_nothing_and_settles_nothing_twice(tmp_path):
    rng = random.Random(20261121)
    world = World(homes=HOMES, seed=3, speed=1.0, start_s=12 * 3600)
    async with EmbeddedBroker() as broker, world.serve() as served:
        addresses = {(h.name, r): served.address(h.name, r)
                     for h in HOMES for r in ("meter", "battery", "pv")}
        timing = Timing(interval_s=INTERVAL_S, gate_s=0.5, grace_s=0.2, poll_s=0.2, revert_s=5,
                        ramp_w_per_s=100_000, speed=1.0)
        configs = provision(tmp_path, HOMES, addresses, broker_url=broker.url, timing=timing)
        neighbours = []
        for path in configs[:2]:
            config = load_config(path)
            envelope, _ = load_certificate(config.certificate_file)
            neighbours.append(GatewayNode(config=config, key=load_key_file(config.key_file),
                                          certificate=envelope, clock=Clock.wall()))
        victim_ledger = tmp_path / "home-3" / "state" / "ledger.db"
        async with running(neighbours[0]), running(neighbours[1]):
            seen: set[int] = set()
            kills = 0
            for _ in range(6):
                victim = await _start_victim(configs[2])
                await asyncio.sleep(rng.uniform(3.0, 6.0))
                if victim.returncode is not None:
                    err = (await victim.stderr.read()).decode()
                    raise AssertionError(f"gridpeer run exited by itself:\n{err[-3000:]}")
                victim.send_signal(signal.SIGKILL)
                await victim.wait()
                kills += 1
                intervals, problems, count = _ledger_state(victim_ledger)
                assert problems == [], problems
                assert seen <= intervals, f"settled intervals lost: {sorted(seen - intervals)}"
                assert count == len(intervals), "an interval was settled twice"
                seen = intervals
            # a last clean run after all the kills: the chain still grows and verifies
            victim = await _start_victim(configs[2])
            await asyncio.sleep(4 * INTERVAL_S)
            victim.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(victim.wait(), timeout=10) == 0
    intervals, problems, count = _ledger_state(victim_ledger)
    assert kills == 6 and problems == [] and count == len(intervals)
    assert seen, "no interval was settled between the kills"
    assert seen < intervals, "the restarted gateway did not settle new intervals"
    print(f"victim settled {len(seen)} intervals across {kills} kills, {len(intervals)} in all")
