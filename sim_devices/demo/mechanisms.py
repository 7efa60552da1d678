"""The same seeded day under every clearing mechanism and without the market, side by side.

``python -m sim_devices.demo.mechanisms [SCENARIO ...] [--speed 720] [--intervals N] [--out DIR]``
runs each scenario's day once per mechanism (``uniform``, ``trade-reduction``, ``mmr``, ``sdr``,
``bill-sharing``, ``cda``) and once without the market, one after the other, through every real
part as ``gridpeer demo`` does (:func:`sim_devices.demo.compare.run_day`, homes planning with the
optimiser), and writes one table (printed, and ``DIR/<scenario>/mechanisms.txt``) and one page
(``DIR/<scenario>/mechanisms.html``): energy traded, the price range, the community's
self-sufficiency, each home's bill against the day without the market, how many homes paid more,
and the spread of the savings across homes (the best-off home's saving less the worst-off's).

The owners' wishes are the scenario's (:mod:`sim_devices.scenario`, ``[preferences]``): a pool
mechanism prices by formula, so owners who want more than feed-in to sell or pay less than
retail sit out whenever its price is outside their wishes (bill sharing prices at retail whenever
the street is short), and the table shows it as intervals without trade.
"""

from __future__ import annotations

import asyncio
import html
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from protocols.clearing import MECHANISMS
from sim_devices.demo.compare import DEFAULT_SPEED, Run, day_command, run_day
from sim_devices.demo.run import day_intervals
from sim_devices.scenario import Scenario, load_scenario

SCENARIOS = ("sunny-street", "dc-bus-cluster")
NO_MARKET: Final = "no market"


@dataclass(frozen=True, slots=True)
class Day:
    """One scenario's day under each mechanism (in ``MECHANISMS`` order) and without the market."""

    scenario: Scenario
    runs: dict[str, Run]
    without: Run

    def savings(self, mechanism: str) -> dict[str, int]:
        """Each home's bill without the market less its bill under ``mechanism`` (µ)."""
        run = self.runs[mechanism]
        return {home: self.without.bills[home] - bill for home, bill in run.bills.items()}


def under(scenario: Scenario, mechanism: str) -> Scenario:
    """``scenario`` with every gateway clearing by ``mechanism``."""
    market = scenario.market.model_copy(update={"mechanism": mechanism})
    return scenario.model_copy(update={"market": market})


async def run_mechanisms(scenario: Scenario, *, out: Path, intervals: int | None = None,
                         speed: float = DEFAULT_SPEED) -> Day:
    """The day under each mechanism, then without the market, in ``out/<mechanism>/``."""
    count = intervals if intervals is not None else day_intervals(scenario)
    runs = {}
    for mechanism in MECHANISMS:
        runs[mechanism] = await run_day(under(scenario, mechanism), way="optimiser",
                                        out=out / mechanism, intervals=count, speed=speed)
    without = await run_day(scenario, way=NO_MARKET, out=out / "no_market", intervals=count,
                            speed=speed)
    return Day(scenario=scenario, runs=runs, without=without)


def _money(micro: int) -> str:
    return f"{micro / 1e6:.2f}"


def _price_range(run: Run) -> str:
    low, high = run.summary.min_price, run.summary.max_price
    if low is None or high is None:
        return "-"
    return f"{low}" if low == high else f"{low}-{high}"


def rows(day: Day) -> list[tuple[str, ...]]:
    """The table: a row per figure, a column per mechanism and one without the market."""
    runs = [*day.runs.values(), day.without]
    table: list[tuple[str, ...]] = [("", *day.runs, NO_MARKET)]
    table.append(("traded kWh", *(f"{r.summary.traded_wh / 1000:.1f}" for r in runs)))
    table.append(("price µ/Wh", *(_price_range(r) for r in runs)))
    table.append(("self-sufficiency", *(f"{r.summary.self_sufficiency:.1%}" for r in runs)))
    table.append(("intervals agreed by all", *(f"{r.summary.agreed}/{r.summary.intervals}"
                                               for r in runs)))
    table.append(("community bill", *(_money(r.community_bill) for r in runs)))
    savings = {m: day.savings(m) for m in day.runs}
    table.append(("homes paying more", *(str(sum(s < 0 for s in savings[m].values()))
                                         for m in day.runs), "-"))
    table.append(("spread of savings", *(_money(max(savings[m].values())
                                                - min(savings[m].values()))
                                         for m in day.runs), "-"))
    for home in day.without.bills:
        table.append((f"{home} saves", *(_money(savings[m][home]) for m in day.runs),
                      f"bill {_money(day.without.bills[home])}"))
    return table


def format_table(day: Day) -> str:
    table = rows(day)
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in table]
    scenario = day.scenario
    return "\n".join([f"{scenario.name} (seed {scenario.seed}), bills in the currency unit, "
                      "savings against the day without the market:", *lines])


def page(day: Day) -> str:
    """One HTML page: the table, and each home's saving per mechanism as bars (SVG)."""
    table = rows(day)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in table[1:])
    homes = list(day.without.bills)
    savings = {m: day.savings(m) for m in day.runs}
    scale = max([abs(s) for m in savings for s in savings[m].values()] + [1])
    bar_w, gap, half = 14, 30, 120
    width = len(day.runs) * (len(homes) * bar_w + gap) + gap
    bars = []
    for i, mechanism in enumerate(day.runs):
        x0 = gap + i * (len(homes) * bar_w + gap)
        bars.append(f'<text x="{x0}" y="{2 * half + 16}" font-size="11">'
                    f"{html.escape(mechanism)}</text>")
        for j, home in enumerate(homes):
            value = savings[mechanism][home]
            height = abs(value) / scale * (half - 10)
            y = half - height if value >= 0 else half
            colour = "#2a7" if value >= 0 else "#c33"
            bars.append(f'<rect x="{x0 + j * bar_w}" y="{y:.1f}" width="{bar_w - 2}" '
                        f'height="{height:.1f}" fill="{colour}"><title>{html.escape(home)}: '
                        f"{_money(value)}</title></rect>")
    svg = (f'<svg width="{width}" height="{2 * half + 24}" xmlns="http://www.w3.org/2000/svg">'
           f'<line x1="0" y1="{half}" x2="{width}" y2="{half}" stroke="#888"/>'
           + "".join(bars) + "</svg>")
    title = html.escape(f"{day.scenario.name}: every mechanism, the same day")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
            "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:right}"
            "td:first-child{text-align:left}</style></head><body>"
            f"<h1>{title}</h1><table><tr>{head}</tr>{body}</table>"
            f"<h2>Each home's saving against no market, per mechanism ({', '.join(homes)}, "
            f"left to right; red: it paid more)</h2>{svg}</body></html>")


def main(argv: Sequence[str] | None = None) -> int:
    names, speed, intervals, out = day_command("sim_devices.demo.mechanisms", __doc__,
                                               SCENARIOS, argv)
    for name in names:
        scenario = load_scenario(name)
        folder = out / scenario.name
        day = asyncio.run(run_mechanisms(scenario, out=folder, intervals=intervals,
                                         speed=speed))
        text = format_table(day)
        (folder / "mechanisms.txt").write_text(text + "\n")
        (folder / "mechanisms.html").write_text(page(day))
        print(text + f"\npage: {folder / 'mechanisms.html'}\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
