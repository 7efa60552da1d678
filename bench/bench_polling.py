"""Time per poll of ``gateway.devices.Battery.read()`` against a simulated battery on loopback.

The battery is ``sim_devices.World`` served over Modbus TCP on 127.0.0.1 (firmware's server core,
the same one the demo uses). Baseline: a raw pymodbus ``AsyncModbusTcpClient`` issuing the same
``read_holding_registers`` requests the driver plans (``plan_reads`` over models 713/802/124), with
no decoding. The ratio is the cost of our bus (lock, retries, timeouts, stats) plus SunSpec
decoding into a ``BatteryReading``. Both clients talk to the same server in the same run, one
after the other, so the server's own cost is in both figures.

Also printed: the process's resident memory (psutil RSS, and ru_maxrss) before and after N polls,
to show that polling does not grow the gateway's footprint.
"""

from __future__ import annotations

import asyncio
import gc
import resource
import time
from collections.abc import Awaitable, Callable

import psutil  # type: ignore[import-untyped]
from pymodbus.client import AsyncModbusTcpClient

from bench._report import line, machine
from gateway.devices import Battery, ModbusTcpBus, discover
from gateway.devices.model_reader import model_definition, plan_reads
from sim_devices.home import HomeSpec
from sim_devices.world import World

POLLS = 2_000  # per client per round; ~1-3 s each on loopback
ROUNDS = 3
UNIT = 1
HOME = "bench"


def rss_mib() -> float:
    return float(psutil.Process().memory_info().rss) / 2**20


async def time_polls(poll: Callable[[], Awaitable[object]], n: int) -> float:
    """Mean seconds per awaited ``poll()`` over ``n`` polls (after a 50-poll warm-up)."""
    for _ in range(50):
        await poll()
    t0 = time.perf_counter()
    for _ in range(n):
        await poll()
    return (time.perf_counter() - t0) / n


async def run() -> None:
    print(f"# bench_polling — {machine()}")
    world = World(homes=[HomeSpec(name=HOME)], seed=1)
    async with world.serve() as served:
        host, port = served.address(HOME, "battery")
        async with ModbusTcpBus(host=host, port=port, timeout_s=2.0) as bus:
            device = await discover(bus, unit=UNIT)
            battery = Battery(bus=bus, device=device)
            locations = sorted(
                (
                    loc
                    for loc in (device.location(713), device.location(802), device.location(124))
                    if loc
                ),
                key=lambda loc: loc.address,
            )
            reads = plan_reads(locations, {loc: model_definition(loc) for loc in locations})
            raw = AsyncModbusTcpClient(host, port=port, timeout=2.0)
            await raw.connect()

            async def raw_poll() -> None:
                for start, count in reads:
                    response = await raw.read_holding_registers(start, count=count, device_id=UNIT)
                    if response.isError() or len(response.registers) != count:
                        raise RuntimeError(f"raw read {start}+{count} failed: {response}")

            reading = await battery.read()
            gc.collect()
            rss_before = rss_mib()
            ours = theirs = float("inf")
            for _ in range(ROUNDS):  # interleave, keep the best mean of each
                ours = min(ours, await time_polls(battery.read, POLLS))
                theirs = min(theirs, await time_polls(raw_poll, POLLS))
            gc.collect()
            rss_after = rss_mib()
            raw.close()
            total_polls = ROUNDS * (POLLS + 50) + 1
    print(
        f"battery: SoC {reading.soc_pct:.1f} %, {len(reads)} request(s) per poll "
        f"({', '.join(f'{s}+{c}' for s, c in reads)})"
    )
    print(
        line(
            "Battery.read() per poll",
            ours * 1e6,
            "µs",
            "raw pymodbus read_holding_registers",
            theirs * 1e6,
            lower_is_better=True,
        )
    )
    print(
        f"resident memory (psutil RSS): {rss_before:.1f} MiB before, {rss_after:.1f} MiB after "
        f"{total_polls:,} Battery.read() polls (+{rss_after - rss_before:.2f} MiB; the raw "
        f"client's {ROUNDS * (POLLS + 50):,} polls share this process); "
        f"ru_maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MiB "
        "(process = gateway client + simulated world server)"
    )


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()
