"""``gridpeer sim compare``: the same seeded day under every clearing mechanism, with the
optimiser planner and without the market, side by side.

Each scenario's day runs once per *way*, one after the other in this process, through every real
part as ``gridpeer demo`` does, on virtual time (:mod:`sim_devices.virtual_time`): the clock moves
only when every task waits, so a busy host makes the comparison slower, never a gateway late, and
the differences between the ways are the mechanisms' and planners', not the machine's:

* under each mechanism asked for (all of ``protocols.clearing.MECHANISMS`` by default), every
  home planning with the heuristic, the default planner;
* under the scenario's own mechanism with every home planning with the optimiser;
* without the market: self-consumption only, the baseline every bill is held against.

One table (printed, and ``DIR/<scenario>/compare.txt``) and one self-contained page
(``compare.html``: the table and each home's saving as bars) per scenario:

* energy traded, the price range, the community's self-sufficiency, intervals agreed by all;
* **welfare as a share of the efficient maximum** (:mod:`protocols.clearing.welfare`): in each
  interval, the agreed result's gains from trade valued at the bids the homes made, and the most
  any matching of those bids could realise; each summed over the day, then divided;
* the community bill, how many homes paid more than without the market, the spread of the
  savings (the best-off home's saving less the worst-off's) and each home's saving, with the
  energy each way left in the cells counted (:attr:`Run.cells`);
* for each home under an export limit, the most its meter exported (net) in one interval, read
  off the simulated meter: ground truth, not the gateway's report (a control period of the demo
  is two simulated minutes, so a passing cloud still shows as a moment's export);
* the intervals whose settlements do not balance (energy or money created or lost): 0.

A home's bill is what it pays its neighbours and its grid supplier: the settled trades, and the
grid energy of each interval at the home's own tariff, the scenario's tariff file where it has one.
Settlement prices each interval at the same file, alike for every member, held inside the band
clearing can use (:meth:`gateway.plan.TariffSchedule.tariffs`); the bill takes the file's own
prices where the band moved them (a negative price).
The owners' wishes are the scenario's, else the defaults of the mechanism
(:meth:`gateway.config.PreferencesConfig.under`: the tariffs under a pool).
"""

from __future__ import annotations

import asyncio
import html
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gateway.home import BidMade
from gateway.plan import TariffSchedule, load_schedule
from protocols.clearing import MECHANISMS, Order, Tariffs
from protocols.clearing.welfare import efficient_welfare, welfare
from sim_devices import virtual_time
from sim_devices.demo.community import CommunityLog, run_community
from sim_devices.demo.run import day_intervals, timing
from sim_devices.demo.summary import CommunitySummary, agreed_result, summarise, unbalanced
from sim_devices.scenario import Scenario
from sim_devices.world import World

Planner = Literal["optimiser", "heuristic"]
SPEED = 720.0
"""Simulated seconds per second of the virtual clock: the gateways' pace against the physics
step, as the demo's at that speed (it does not set how long a run takes)."""
NO_MARKET = "no market"
OPTIMISER = "optimiser"


@dataclass(frozen=True, slots=True)
class Way:
    """One way of running the day: its column's ``label``, the ``mechanism`` every gateway
    clears by (None: without the market) and how every home plans."""

    label: str
    mechanism: str | None
    planner: Planner = "heuristic"


def ways(scenario: Scenario, mechanisms: Sequence[str], *, optimiser: bool) -> list[Way]:
    """The columns: each of ``mechanisms``, the optimiser under the scenario's own mechanism
    (``optimiser``), and no market, last."""
    columns = [Way(m, m) for m in mechanisms]
    if optimiser:
        columns.append(Way(OPTIMISER, scenario.market.mechanism, "optimiser"))
    return [*columns, Way(NO_MARKET, None)]


@dataclass(frozen=True, slots=True)
class Run:
    """One way's day: its summary, each home's bill at its own tariff (µ, + paid), per home under
    an export limit (most exported net in one interval, allowed) in Wh, the day's welfare and
    its efficient maximum (µ), and how many intervals did not balance."""

    way: Way
    summary: CommunitySummary
    bills: dict[str, int]
    exports: dict[str, tuple[float, float]]
    welfare: int = 0
    efficient: int = 0
    unbalanced: int = 0
    cells: dict[str, int] = field(default_factory=dict)
    """What each home's cells gained over the window is worth (µ). Two ways of running the day
    enter the window (the gateways plan from before it) and leave it with different energy in
    the cells, which their bills do not show; a Wh in them displaces, when the sun refills
    them, the export it would have been (the feed-in price after the window / charge
    efficiency), as ``tests/test_day_sunny.py`` counts it."""

    @property
    def community_bill(self) -> int:
        return sum(self.bills.values())

    @property
    def welfare_share(self) -> float | None:
        """Welfare as a share of the efficient maximum; None when the bids allowed no gain."""
        return self.welfare / self.efficient if self.efficient > 0 else None


def under(scenario: Scenario, mechanism: str) -> Scenario:
    """``scenario`` with every gateway clearing by ``mechanism``."""
    market = scenario.market.model_copy(update={"mechanism": mechanism})
    return scenario.model_copy(update={"market": market})


def fixed_tariffs(scenario: Scenario) -> Tariffs:
    return Tariffs(retail_price=scenario.tariffs.retail_price,
                   feed_in_price=scenario.tariffs.feed_in_price)


async def run_day(scenario: Scenario, way: Way, *, out: Path, intervals: int,
                  speed: float) -> Run:
    """One run of the scenario's day, the meters sampled off the world as it runs."""
    samples: list[tuple[int, dict[str, int]]] = []
    sampler: list[asyncio.Task[None]] = []

    async def sample(world: World) -> None:
        while True:
            samples.append((world.now_ms, {h.name: h.meter.export_wh - h.meter.import_wh
                                           for h in world.homes}))
            await asyncio.sleep(0.01)

    worlds: list[World] = []

    def on_start(_url: str, world: World) -> None:
        worlds.append(world)
        sampler.append(asyncio.create_task(sample(world)))

    pace = timing(scenario, speed=speed)
    clearing = scenario if way.mechanism is None else under(scenario, way.mechanism)
    try:
        log, _ = await run_community(
            out=out, scenario=clearing, intervals=intervals, timing=pace,
            trade=way.mechanism is not None, planner=way.planner, on_start=on_start)
    finally:
        for task in sampler:
            task.cancel()
    length_ms = round(pace.interval_s * 1000)
    schedule = load_schedule(None if scenario.tariffs.schedule is None
                             else Path(scenario.tariffs.schedule), fixed=fixed_tariffs(scenario))

    def settled_at(k: int) -> Tariffs:
        return schedule.tariffs(k * length_ms, length_ms)

    realised, most = (0, 0) if way.mechanism is None else day_welfare(log, settled_at)
    _, feed_in = schedule.average(log.window.stop * length_ms, length_ms)
    efficiency = {h.name: h.spec.battery_spec().charge_efficiency for h in worlds[0].homes}
    return Run(way=way, summary=summarise(log), bills=bills(log, schedule, length_ms=length_ms),
               exports=worst_exports(samples, log.complete, scenario.export_limits(),
                                     length_ms=length_ms),
               welfare=realised, efficient=most, unbalanced=len(unbalanced(log, settled_at)),
               cells={name: round(stored * max(0, feed_in) / efficiency[name])
                      for name, stored in log.stored_wh.items()})


def bid_orders(bids: dict[str, BidMade]) -> list[Order]:
    """The bids the homes made for one interval, as the clearing's orders (one per step)."""
    return [Order(node, made.plan.side, step.wh, step.price, "", "", 0, i)
            for node, made in sorted(bids.items()) if made.plan.side is not None
            for i, step in enumerate(made.plan.curve())]


def day_welfare(log: CommunityLog, tariffs: Callable[[int], Tariffs]) -> tuple[int, int]:
    """The day's welfare and its efficient maximum, summed over the complete intervals: each
    interval's agreed result (none: nothing gained) valued at the bids the homes made, at the
    tariffs interval k was cleared at, ``tariffs(k)``."""
    realised = most = 0
    for k in log.complete:
        orders = bid_orders(log.bids.get(k, {}))
        most += efficient_welfare(orders, tariffs(k))
        result = agreed_result(log, k)
        if result is not None:
            realised += welfare(orders, result.outcomes, tariffs(k))
    return realised, most


def bills(log: CommunityLog, schedule: TariffSchedule, *, length_ms: int) -> dict[str, int]:
    """Each home's settled trades plus its grid energy at ``schedule``'s prices per interval
    (interval ``k`` starts at ``k × length_ms``: the demo's market epoch is 0): its settlement,
    with the grid energy repriced from the interval's settled tariffs to the file's own."""
    out = dict.fromkeys(log.homes, 0)
    for k in log.complete:
        settled = schedule.tariffs(k * length_ms, length_ms)
        retail, feed_in = schedule.average(k * length_ms, length_ms)
        for name in log.homes:
            figures = log.closed[k][name].settlement
            if figures is None:
                continue
            grid_settled = (figures.grid_import_wh * settled.retail_price
                            - figures.grid_export_wh * settled.feed_in_price)
            grid_own = figures.grid_import_wh * retail - figures.grid_export_wh * feed_in
            out[name] += figures.money - grid_settled + grid_own
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


@dataclass(frozen=True, slots=True)
class Day:
    """One scenario's day each way; the last run is the one without the market."""

    scenario: Scenario
    runs: tuple[Run, ...]

    @property
    def without(self) -> Run:
        return self.runs[-1]

    @property
    def markets(self) -> tuple[Run, ...]:
        return self.runs[:-1]

    def savings(self, run: Run) -> dict[str, int]:
        """Each home's bill without the market less its bill in ``run``, with what the energy
        its cells gained is worth counted in each (:attr:`Run.cells`), µ."""
        without = self.without
        return {home: without.bills[home] - bill + run.cells.get(home, 0)
                - without.cells.get(home, 0) for home, bill in run.bills.items()}


async def compare_day(scenario: Scenario, *, out: Path, mechanisms: Sequence[str] = (*MECHANISMS,),
                      optimiser: bool = True, intervals: int | None = None,
                      progress: Callable[[str], None] = lambda _: None) -> Day:
    """The day each way (:func:`ways`), one after the other, in ``out/<way>/``."""
    count = intervals if intervals is not None else day_intervals(scenario)
    runs = []
    for way in ways(scenario, mechanisms, optimiser=optimiser):
        started = time.monotonic()
        runs.append(await run_day(scenario, way, out=out / way.label.replace(" ", "_"),
                                  intervals=count, speed=SPEED))
        progress(f"{scenario.name}: {way.label} done in {time.monotonic() - started:.0f} s")
    return Day(scenario=scenario, runs=tuple(runs))


def _money(micro: int) -> str:
    return f"{micro / 1e6:.2f}"


def _price_range(run: Run) -> str:
    low, high = run.summary.min_price, run.summary.max_price
    if low is None or high is None:
        return "-"
    return f"{low}" if low == high else f"{low}-{high}"


def _share(run: Run) -> str:
    share = run.welfare_share
    return "-" if share is None or run.way.mechanism is None else f"{share:.1%}"


def rows(day: Day) -> list[tuple[str, ...]]:
    """The table: a row per figure, a column per way, the one without the market last."""
    runs, markets = day.runs, day.markets
    savings = [day.savings(run) for run in markets]
    table: list[tuple[str, ...]] = [("", *(r.way.label for r in runs))]
    table.append(("traded kWh", *(f"{r.summary.traded_wh / 1000:.1f}" for r in runs)))
    table.append(("price µ/Wh", *(_price_range(r) for r in runs)))
    table.append(("self-sufficiency", *(f"{r.summary.self_sufficiency:.1%}" for r in runs)))
    table.append(("welfare of the efficient max", *(_share(r) for r in runs)))
    table.append(("intervals agreed by all", *(f"{r.summary.agreed}/{r.summary.intervals}"
                                               for r in runs)))
    table.append(("community bill", *(_money(r.community_bill) for r in runs)))
    table.append(("homes paying more", *(str(sum(s < 0 for s in saved.values()))
                                         for saved in savings), "-"))
    table.append(("spread of savings", *(_money(max(saved.values()) - min(saved.values()))
                                         for saved in savings), "-"))
    for home in day.without.bills:
        table.append((f"{home} saves", *(_money(saved[home]) for saved in savings),
                      f"bill {_money(day.without.bills[home])}"))
    for home, (_, allowed) in day.without.exports.items():
        table.append((f"{home} export/interval (max {allowed / 1000:.2f} kWh)",
                      *(f"{r.exports[home][0] / 1000:.2f} kWh" for r in runs)))
    table.append(("intervals unbalanced", *(str(r.unbalanced) for r in runs)))
    return table


def format_table(day: Day) -> str:
    table = rows(day)
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in table]
    scenario = day.scenario
    tariff = "its tariff file" if scenario.tariffs.schedule else "fixed tariffs"
    return "\n".join([f"{scenario.name} (seed {scenario.seed}, {day.without.summary.intervals} "
                      f"intervals, bills at {tariff}, savings against no market):", *lines])


def _bars(day: Day) -> str:
    """Each home's saving per way as bars (SVG); red where it paid more than without."""
    homes = list(day.without.bills)
    savings = [(run.way.label, day.savings(run)) for run in day.markets]
    scale = max([abs(s) for _, saved in savings for s in saved.values()] + [1])
    bar_w, gap, half = 14, 30, 120
    width = len(savings) * (len(homes) * bar_w + gap) + gap
    bars = []
    for i, (label, saved) in enumerate(savings):
        x0 = gap + i * (len(homes) * bar_w + gap)
        bars.append(f'<text x="{x0}" y="{2 * half + 16}" font-size="11">{html.escape(label)}'
                    "</text>")
        for j, home in enumerate(homes):
            value = saved[home]
            height = abs(value) / scale * (half - 10)
            y = half - height if value >= 0 else half
            colour = "#2a7" if value >= 0 else "#c33"
            bars.append(f'<rect x="{x0 + j * bar_w}" y="{y:.1f}" width="{bar_w - 2}" '
                        f'height="{height:.1f}" fill="{colour}"><title>{html.escape(home)}: '
                        f"{_money(value)}</title></rect>")
    return (f'<svg width="{width}" height="{2 * half + 24}" xmlns="http://www.w3.org/2000/svg">'
            f'<line x1="0" y1="{half}" x2="{width}" y2="{half}" stroke="#888"/>'
            + "".join(bars) + "</svg>")


def page(day: Day) -> str:
    """One self-contained HTML page: the table, and each home's saving per way as bars."""
    table = rows(day)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in table[1:])
    homes = ", ".join(day.without.bills)
    title = html.escape(f"{day.scenario.name}: every mechanism, the same day")
    caption = html.escape(format_table(day).splitlines()[0])
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
            "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:right}"
            "td:first-child{text-align:left}</style></head><body>"
            f"<h1>{title}</h1><p>{caption}</p><table><tr>{head}</tr>{body}</table>"
            f"<h2>Each home's saving against no market, per way ({html.escape(homes)}, "
            f"left to right; red: it paid more)</h2>{_bars(day)}</body></html>")


def write_day(day: Day, folder: Path) -> Path:
    """``compare.txt`` and ``compare.html`` in ``folder``; returns the page's path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "compare.txt").write_text(format_table(day) + "\n", encoding="utf-8")
    path = folder / "compare.html"
    path.write_text(page(day), encoding="utf-8")
    return path


def compare(scenarios: Sequence[Scenario], *, out: Path, mechanisms: Sequence[str],
            optimiser: bool, intervals: int | None) -> list[Day]:
    """Each scenario's comparison in ``out/<scenario>/``: its table on stdout, progress on
    stderr."""
    days = []
    for scenario in scenarios:
        folder = out / scenario.name
        day = virtual_time.run(compare_day(
            scenario, out=folder, mechanisms=mechanisms, optimiser=optimiser,
            intervals=intervals,
            progress=lambda line: print(line, file=sys.stderr, flush=True)))
        path = write_day(day, folder)
        print(format_table(day) + f"\npage: {path}\n", flush=True)
        days.append(day)
    return days
