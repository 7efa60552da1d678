"""Gateway-only resident memory and CPU per poll cycle, with the devices in another process.

The simulated devices run in a subprocess (``python -m gateway sim run sunny-street``: every
device of the scenario served over Modbus TCP on 127.0.0.1 by firmware's server core), so this
process holds only the gateway side: one ``ModbusTcpBus`` per device, SunSpec discovery, the
production drivers (``Meter``, ``Battery``, ``PvInverter``) in the home's ``Device`` records, under
their ``DevicePoller``s.
One *poll cycle* is what the gateway does every poll period: ``poll_once()`` on the meter, the
battery and the PV inverter of one home, concurrently (each has its own connection and task).

Figures: RSS after discovery and warm-up, after ``CYCLES`` cycles and after as many raw cycles;
CPU time per cycle (``process_time`` / cycles: on a shared machine this is the honest cost, wall
time includes waiting for the server process) and wall time per cycle.

Baseline, same run, same server, interleaved rounds: raw pymodbus ``AsyncModbusTcpClient``s
issuing exactly the ``read_holding_registers`` requests our drivers issued (recorded from the
bus during the first cycle), with no decoding, also concurrently per device.

Memory with the solver loaded (issue 17's budget, 60 MB): after the cycles this process imports
what ``gridpeer run`` imports (the CLI, the config, ``GatewayNode``) and plans five 96-step days
with the optimiser and their bid curves (``bench.bench_ems``'s homes, as a gateway re-plans every
interval), then its RSS is set against the budget. Where it goes: a fresh interpreter imports
the same in dependency order and prints the RSS each step adds, ``psutil`` (the bench's, which
this process carries and a gateway does not) last.
"""

from __future__ import annotations

import asyncio
import gc
import re
import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psutil  # type: ignore[import-untyped]
from pymodbus.client import AsyncModbusTcpClient

from bench._report import fresh_python, line, machine
from gateway.config import DeviceConfig
from gateway.devices import ModbusTcpBus
from gateway.devices.poller import DevicePoller
from gateway.home.devices import Device

BUDGET_MIB = 60e6 / 2**20
"""Issue 17's budget: gateway RSS under 60 MB with the solver loaded."""
_PLAN = """
from bench.bench_ems import home
from gateway.plan import Planner
planner = Planner()
for seed in range(5):
    planner.plan(home(seed), max_buy_wh=3_000, max_sell_wh=3_000)
"""
_STEPS = (  # (what, code) in the order a gateway's imports pull them in
    ("the interpreter", "pass"),
    ("asyncio, ssl (OpenSSL), sqlite3, logging", "import asyncio, ssl, sqlite3, logging, json"),
    ("pydantic, and its schema machinery (built with the first model)",
     "import pydantic\nclass _First(pydantic.BaseModel):\n    x: int = 0"),
    ("pymodbus", "import pymodbus.client"),
    ("numpy", "import numpy"),
    ("cryptography (Ed25519)", "import cryptography.hazmat.primitives.asymmetric.ed25519"),
    ("paho-mqtt, aiomqtt", "import aiomqtt"),
    ("protocols (messages, signing, clearing, market)",
     "import protocols.messages, protocols.signing, protocols.clearing, protocols.market"),
    ("gateway (config, plan, devices, node, CLI)",
     "import gateway.cli, gateway.cli.home, gateway.config, gateway.home"),
    ("highspy (HiGHS)", "import highspy"),
    ("five planned days with their bid curves", _PLAN),
    ("psutil (the bench's, not the gateway's)", "import psutil"),
)
_STEP_RSS = ("import os as _os\nwith open('/proc/self/statm') as _f:\n"
             "    print('rss', int(_f.read().split()[1]) * _os.sysconf('SC_PAGE_SIZE') / 2**20)")
"""Resident pages from the kernel (Linux), so the count carries no psutil until its step."""
SCENARIO = "sunny-street"
CYCLES = 1_000  # per round; a cycle is ~1-3 ms of CPU
ROUNDS = 3
WARMUP = 50
UNIT = 1
ROLES = ("meter", "battery", "pv")
_ADDRESS = re.compile(r"^(\S+)/(\S+) tcp://([\d.]+):(\d+) ")


class RecordingBus(ModbusTcpBus):
    """A ``ModbusTcpBus`` that remembers the spans it read while ``recording`` is set, so the
    baseline can replay the very same requests."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.recording = False
        self.spans: list[tuple[int, int]] = []

    async def read_registers(self, *, unit: int, address: int, count: int) -> tuple[int, ...]:
        if self.recording:
            self.spans.append((address, count))
        return await super().read_registers(unit=unit, address=address, count=count)


def rss_mib() -> float:
    return float(psutil.Process().memory_info().rss) / 2**20


def start_server() -> tuple[subprocess.Popen[str], dict[str, tuple[str, int]]]:
    """Start the scenario's device server; the addresses of the first home with all ROLES."""
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "sim", "run", SCENARIO],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    homes: dict[str, dict[str, tuple[str, int]]] = {}
    for text in proc.stdout:
        if text.startswith("serving "):
            break
        match = _ADDRESS.match(text)
        if match:
            home, role, host, port = match.groups()
            homes.setdefault(home, {})[role] = (host, int(port))
    else:
        raise RuntimeError(f"device server exited {proc.wait()} before serving")
    for home, roles in homes.items():
        if all(role in roles for role in ROLES):
            print(f"devices: home {home} of {SCENARIO}, served by pid {proc.pid}")
            return proc, roles
    proc.terminate()
    raise RuntimeError(f"no home in {SCENARIO} has all of {ROLES}")


async def timed(cycle: Callable[[], Awaitable[object]], n: int) -> tuple[float, float]:
    """(CPU s, wall s) per awaited ``cycle()`` over ``n`` cycles."""
    cpu0, t0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        await cycle()
    return (time.process_time() - cpu0) / n, (time.perf_counter() - t0) / n


async def run() -> None:
    print(f"# bench_gateway — {machine()}")
    proc, addresses = start_server()
    try:
        await measure(addresses)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    with_solver()
    where_it_goes()


def with_solver() -> None:
    """This process's RSS once it holds what a gateway imports and has planned with HiGHS."""
    before = rss_mib()
    for _, step in _STEPS:  # the bench's own code, run here as where_it_goes runs it
        exec(step, {})
    gc.collect()
    after = rss_mib()
    print(f"+ gridpeer run's imports and highspy, five 96-step days planned: {before:.1f} -> "
          f"{after:.1f} MiB")
    print(line("gateway RSS with the solver loaded", after, "MiB", "issue 17's 60 MB budget",
               BUDGET_MIB, lower_is_better=True))


def where_it_goes() -> None:
    """RSS each import adds, in a fresh interpreter, in the order a gateway pulls them in."""
    code = "\n".join(f"{step}\n{_STEP_RSS}" for _, step in _STEPS)
    out, error = fresh_python(code)
    if error is not None:
        print(f"where it goes: not measured ({error})")
        return
    figures = [float(text.split()[1]) for text in out.splitlines()
               if text.startswith("rss ")]  # HiGHS prints its banner on stdout too
    print("where a gateway's RSS goes (fresh interpreter, MiB added by each step):")
    previous = 0.0
    for (what, _), total in zip(_STEPS, figures, strict=True):
        print(f"  {total - previous:5.1f}  {what} (total {total:.1f})")
        previous = total


async def measure(addresses: dict[str, tuple[str, int]]) -> None:
    rss_start = rss_mib()
    buses = {role: RecordingBus(host=host, port=port, timeout_s=2.0)
             for role, (host, port) in addresses.items() if role in ROLES}
    for bus in buses.values():
        await bus.__aenter__()
    try:
        # As the gateway runs them: each device a home ``Device`` (discovered, its driver
        # built, adopted), polled by its own poller through it.
        devices: list[Device[Any, Any]] = [
            Device(config=DeviceConfig.model_validate(
                {"name": role, "kind": role, "url": f"tcp://{host}:{port}", "unit": UNIT}),
                bus=buses[role], period_s=1.0)
            for role, (host, port) in addresses.items() if role in ROLES]
        for device in devices:
            assert await device.attempt(interval=0, trading=False), device.adoption.reason
        pollers: list[DevicePoller[Any]] = [device.poller for device in devices]

        async def ours() -> None:
            readings = await asyncio.gather(*(p.poll_once() for p in pollers))
            if any(r is None for r in readings):
                raise RuntimeError(f"a poll failed: {[p.health for p in pollers]}")

        for bus in buses.values():
            bus.recording = True
        await ours()
        for bus in buses.values():
            bus.recording = False
        spans = {role: list(bus.spans) for role, bus in buses.items()}
        raws = {role: AsyncModbusTcpClient(addresses[role][0], port=addresses[role][1], timeout=2.0)
                for role in ROLES}
        for client in raws.values():
            await client.connect()

        async def raw_device(role: str) -> None:
            client = raws[role]
            for start, count in spans[role]:
                response = await client.read_holding_registers(start, count=count,
                                                               device_id=UNIT)
                if response.isError() or len(response.registers) != count:
                    raise RuntimeError(f"raw read {role} {start}+{count} failed: {response}")

        async def raw() -> None:
            await asyncio.gather(*(raw_device(role) for role in ROLES))

        for _ in range(WARMUP):
            await ours()
            await raw()
        gc.collect()
        rss_warm = rss_mib()
        best_ours = best_raw = (float("inf"), float("inf"))
        rss_ours = rss_raw = 0.0
        for _ in range(ROUNDS):  # interleaved; the best CPU per cycle of each
            best_ours = min(best_ours, await timed(ours, CYCLES))
            rss_ours = max(rss_ours, rss_mib())
            best_raw = min(best_raw, await timed(raw, CYCLES))
            rss_raw = max(rss_raw, rss_mib())
        for client in raws.values():
            client.close()
    finally:
        for bus in buses.values():
            await bus.__aexit__(None, None, None)
    requests = ", ".join(f"{role} {'+'.join(f'{s}:{c}' for s, c in spans[role])}"
                         for role in ROLES)
    print(f"poll cycle = meter + battery + pv poll_once() concurrently; requests ({requests})")
    print(line("gateway CPU per poll cycle", best_ours[0] * 1e6, "µs",
               "raw pymodbus reads of the same registers", best_raw[0] * 1e6,
               lower_is_better=True))
    print(line("gateway wall time per poll cycle", best_ours[1] * 1e6, "µs",
               "raw pymodbus reads of the same registers", best_raw[1] * 1e6,
               lower_is_better=True))
    total = ROUNDS * CYCLES + WARMUP + 1
    print(f"gateway-only resident memory (psutil RSS): {rss_start:.1f} MiB at start (imports), "
          f"{rss_warm:.1f} MiB after discovery + {WARMUP + 1} cycles, "
          f"{rss_ours:.1f} MiB peak after our cycles (total {total:,}), {rss_raw:.1f} MiB peak "
          f"after raw cycles; ru_maxrss "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MiB "
          "(devices served by another process)")


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()
