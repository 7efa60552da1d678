"""``gridpeer sim run SCENARIO``: serve a scenario's devices for external gateways and HIL rigs.

Every device of every home is served over Modbus TCP (and RTU on a pty with ``--rtu``) while the
world runs on its simulated clock. The first lines printed are the devices' addresses, one line
per device in the form a gateway config takes (``tcp://host:port``, ``rtu:///dev/pts/N``), so a
script can read them off stdout; then the world runs until Ctrl-C (or SIGTERM), which stops it
cleanly: servers closed, ptys released, exit status 0. With a feeder in the scenario, a line that
goes above or back below its rating is reported as it happens.

The command's arguments are parsed by the ``gridpeer`` CLI (:mod:`gateway.cli.sim`), the one way
to run it, which imports this module only when the command runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Mapping
from typing import TextIO

from sim_devices.feeder import FeederFlows, RadialFeeder, bus_net_w
from sim_devices.scenario import Scenario, load_scenario
from sim_devices.world import World

__all__ = ["run_scenario", "run_until_stopped", "serve_until_stopped"]

_FEEDER_CHECK_S = 1.0
"""Real seconds between feeder checks: often enough for a person watching, cheap for 100 homes."""


def _hhmm(seconds: float) -> str:
    minutes = int(seconds) // 60 % 1440
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


async def run_scenario(scenario: Scenario, *, host: str = "127.0.0.1", rtu: bool = False,
                       stream: TextIO) -> None:
    """Serve every device of ``scenario`` and print where; runs until cancelled."""
    world = scenario.world()
    async with world.serve(host=host, rtu=rtu) as served:
        count = 0
        for home in world.homes:
            for role in home.devices:
                bound_host, port = served.address(home.name, role)
                line = f"{home.name}/{role} tcp://{bound_host}:{port} (unit 1)"
                if rtu:
                    line += f" rtu://{served.rtu_path(home.name, role)}"
                print(line, file=stream, flush=True)
                count += 1
        print(f"serving {count} devices of {scenario.name} at {world.speed:g}x simulated time "
              f"in {world.dt_ms} ms steps from {_hhmm(world.now_s)}; Ctrl-C stops",
              file=stream, flush=True)
        if scenario.feeder is None:
            await asyncio.Event().wait()
        else:
            await _watch_feeder(world, scenario.feeder.radial(), bus_of=scenario.bus_of(),
                                stream=stream)


async def _watch_feeder(world: World, feeder: RadialFeeder, *, bus_of: Mapping[str, str],
                        stream: TextIO) -> None:
    """Report each line that goes above its rating, and when it is back within it."""
    overloaded: set[str] = set()
    while True:
        await asyncio.sleep(_FEEDER_CHECK_S)
        flows = feeder.flows(bus_net_w({h.name: h.meter.power_w for h in world.homes},
                                       bus_of=bus_of))
        now = {line.bus for line in flows.overloaded}
        for message in _feeder_changes(flows, was=overloaded, now=now):
            print(f"{_hhmm(world.now_s)} feeder: {message}", file=stream, flush=True)
        overloaded = now


def _feeder_changes(flows: FeederFlows, *, was: set[str], now: set[str]) -> list[str]:
    messages = []
    for bus in sorted(now - was):
        line = flows.line(bus)
        messages.append(f"line {bus} overloaded: {line.peak_w} W of {line.capacity_w} W "
                        f"({line.loading_pct:.0f} %), losses {line.loss_w} W")
    for bus in sorted(was - now):
        messages.append(f"line {bus} back within its rating "
                        f"({flows.line(bus).loading_pct:.0f} %)")
    return messages


async def serve_until_stopped(scenario: Scenario, *, host: str, rtu: bool, stream: TextIO
                              ) -> None:
    """``run_scenario`` until SIGINT or SIGTERM, then stop it and let it clean up.

    The signals only set an event: the serving task is cancelled from here, so its ``async with``
    blocks close every server and pty before the process exits (no KeyboardInterrupt traceback
    from the middle of a callback). An error while serving (a port in use) is raised as itself.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    serving = asyncio.create_task(run_scenario(scenario, host=host, rtu=rtu, stream=stream),
                                  name="sim-run")
    stopping = asyncio.create_task(stop.wait(), name="sim-stop")
    try:
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        stopping.cancel()
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
    print("stopped", file=stream, flush=True)


def run_until_stopped(scenario: str, *, speed: float | None = None, dt_ms: int | None = None,
                      host: str = "127.0.0.1", rtu: bool = False) -> int:
    """``gridpeer sim run``: load ``scenario`` (a shipped name or a .toml path), override its
    speed and step when given, serve until SIGINT/SIGTERM; 0 after a clean stop. A bad scenario
    raises ``ScenarioError``."""
    loaded = load_scenario(scenario)
    overrides = {"speed": speed, "dt_ms": dt_ms}
    loaded = loaded.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    asyncio.run(serve_until_stopped(loaded, host=host, rtu=rtu, stream=sys.stdout))
    return 0
