"""The same seeded day three ways: every home planning with the optimiser, with the heuristic, and
without the market (self-consumption only), side by side.

``python -m sim_devices.demo.compare [SCENARIO ...] [--speed 720] [--intervals N]`` runs each
scenario's day once per way, one after the other in this process (each run has the machine to
itself), through every real part as ``gridpeer demo`` does, and prints per scenario the community
bill, self-sufficiency and each home's bill, and for each home under an export limit the most it
exported in one interval, read off the simulated meter (ground truth, not the gateway's report):
its net energy over the interval, as the plan, the bids and settlement count the limit (a
control period of the demo is two simulated minutes, so a passing cloud still shows as a
moment's export the next period takes back).

A home's bill is what it pays its neighbours and its grid supplier: the settled trades, and the
grid energy of each interval at the home's own tariff, the scenario's tariff file where it has
one (settlement itself balances the grid at the community's fixed tariffs, alike for every
member; a dynamic tariff is the home's own contract with its supplier).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gateway.plan import TariffSchedule, load_schedule
from protocols.clearing import Tariffs
from sim_devices.demo.community import CommunityLog, run_community
from sim_devices.demo.run import day_intervals, timing
from sim_devices.demo.summary import CommunitySummary, summarise
from sim_devices.scenario import Scenario, load_scenario
from sim_devices.world import World

Way = Literal["optimiser", "heuristic", "no market"]
WAYS: tuple[Way, ...] = ("optimiser", "heuristic", "no market")
SCENARIOS = ("sunny-street", "dc-bus-cluster", "dynamic-street")
DEFAULT_SPEED = 720.0
"""One run at a time: a day in two minutes keeps every gateway's deadlines on a busy 2-core host."""


@dataclass(frozen=True, slots=True)
class Run:
    """One way of running the day: its summary, each home's bill at its own tariff (µ, + paid)
    and, per home under an export limit, (most exported net in one interval, allowed), Wh."""

    way: Way
    summary: CommunitySummary
    bills: dict[str, int]
    exports: dict[str, tuple[float, float]]

    @property
    def community_bill(self) -> int:
        return sum(self.bills.values())


async def run_day(scenario: Scenario, *, way: Way, out: Path, intervals: int,
                  speed: float) -> Run:
    """One run of the scenario's day, the meters sampled off the world as it runs."""
    samples: list[tuple[int, dict[str, int]]] = []
    sampler: list[asyncio.Task[None]] = []

    async def sample(world: World) -> None:
        while True:
            samples.append((world.now_ms, {h.name: h.meter.export_wh - h.meter.import_wh
                                           for h in world.homes}))
            await asyncio.sleep(0.01)

    def on_start(_url: str, world: World) -> None:
        sampler.append(asyncio.create_task(sample(world)))

    pace = timing(scenario, speed=speed)
    try:
        log, _ = await run_community(
            out=out, scenario=scenario, intervals=intervals, timing=pace,
            trade=way != "no market", planner="heuristic" if way == "heuristic" else "optimiser",
            on_start=on_start)
    finally:
        for task in sampler:
            task.cancel()
    length_ms = round(pace.interval_s * 1000)
    fixed = Tariffs(retail_price=scenario.tariffs.retail_price,
                    feed_in_price=scenario.tariffs.feed_in_price)
    schedule = load_schedule(None if scenario.tariffs.schedule is None
                             else Path(scenario.tariffs.schedule), fixed=fixed)
    return Run(way=way, summary=summarise(log), bills=bills(log, schedule, length_ms=length_ms),
               exports=worst_exports(samples, log.complete, scenario.export_limits(),
                                     length_ms=length_ms))


def bills(log: CommunityLog, schedule: TariffSchedule, *, length_ms: int) -> dict[str, int]:
    """Each home's settled trades plus its grid energy at ``schedule``'s prices per interval
    (interval ``k`` starts at ``k × length_ms``: the demo's market epoch is 0)."""
    fixed = schedule.fixed
    out = dict.fromkeys(log.homes, 0)
    for k in log.complete:
        retail, feed_in = schedule.average(k * length_ms, length_ms)
        for name in log.homes:
            figures = log.closed[k][name].settlement
            if figures is None:
                continue
            grid_fixed = (figures.grid_import_wh * fixed.retail_price
                          - figures.grid_export_wh * fixed.feed_in_price)
            grid_own = figures.grid_import_wh * retail - figures.grid_export_wh * feed_in
            out[name] += figures.money - grid_fixed + grid_own
    return out


def worst_exports(samples: Sequence[tuple[int, dict[str, int]]], intervals: Sequence[int],
                  limits: dict[str, int], *, length_ms: int) -> dict[str, tuple[float, float]]:
    """Per limited home: the most its meter exported (net) within one of ``intervals``, and what
    its limit allows in one (Wh); ``samples`` hold each meter's export less import so far."""
    worst = dict.fromkeys(limits, 0.0)
    for k in intervals:
        inside = [meters for at, meters in samples if k * length_ms <= at <= (k + 1) * length_ms]
        if len(inside) < 2:
            continue
        for name in limits:
            worst[name] = max(worst[name], float(inside[-1][name] - inside[0][name]))
    return {name: (worst[name], limit * length_ms / 3_600_000) for name, limit in limits.items()}


async def compare(scenario: Scenario, *, out: Path, intervals: int | None = None,
                  speed: float = DEFAULT_SPEED) -> list[Run]:
    """The day each way, one after the other, in ``out/<way>/``."""
    count = intervals if intervals is not None else day_intervals(scenario)
    return [await run_day(scenario, way=way, out=out / way.replace(" ", "_"), intervals=count,
                          speed=speed) for way in WAYS]


def _money(micro: int) -> str:
    return f"{micro / 1e6:.2f}"


def format_comparison(scenario: Scenario, runs: Sequence[Run]) -> str:
    """The scenario's table: rows of figures, a column per way."""
    rows: list[tuple[str, ...]] = [("", *(r.way for r in runs))]
    rows.append(("community bill", *(_money(r.community_bill) for r in runs)))
    rows.append(("self-sufficiency", *(f"{r.summary.self_sufficiency:.1%}" for r in runs)))
    rows.append(("intervals agreed", *(f"{r.summary.agreed}/{r.summary.intervals}"
                                       for r in runs)))
    for name in runs[0].bills:
        rows.append((f"{name} bill", *(_money(r.bills[name]) for r in runs)))
    for name in runs[0].exports:
        allowed = runs[0].exports[name][1]
        rows.append((f"{name} export/interval (max {allowed / 1000:.2f} kWh)",
                     *(f"{r.exports[name][0] / 1000:.2f} kWh" for r in runs)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    tariff = "its tariff file" if scenario.tariffs.schedule else "fixed tariffs"
    return "\n".join([f"{scenario.name} (seed {scenario.seed}, bills at {tariff}):", *lines])


def day_command(prog: str, doc: str | None, scenarios: Sequence[str],
                argv: Sequence[str] | None) -> tuple[list[str], float, int | None, Path]:
    """The comparison commands' arguments: scenarios, ``--speed``, ``--intervals`` (one day by
    default) and ``--out`` (a temporary folder by default)."""
    parser = argparse.ArgumentParser(prog=f"python -m {prog}",
                                     description=doc.splitlines()[0] if doc else None)
    parser.add_argument("scenarios", nargs="*", default=list(scenarios))
    parser.add_argument("--speed", type=float, default=DEFAULT_SPEED)
    parser.add_argument("--intervals", type=int, default=None, help="default: one day")
    parser.add_argument("--out", type=Path, default=None, help="default: a temporary folder")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix=f"gridpeer-{prog.rsplit('.', 1)[-1]}-"))
    return args.scenarios, args.speed, args.intervals, out


def main(argv: Sequence[str] | None = None) -> int:
    names, speed, intervals, out = day_command("sim_devices.demo.compare", __doc__, SCENARIOS,
                                               argv)
    for name in names:
        scenario = load_scenario(name)
        runs = asyncio.run(compare(scenario, out=out / scenario.name, intervals=intervals,
                                   speed=speed))
        print(format_comparison(scenario, runs) + "\n", flush=True)
    print(f"runs: {out}/<scenario>/<way>/")
    return 0

if __name__ == "__main__":
    sys.exit(main())
