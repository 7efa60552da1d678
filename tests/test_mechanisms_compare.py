"""The mechanisms' comparison (sim_devices.demo.mechanisms): its table and page from the runs of
one day, each home's saving against the day without the market."""

from __future__ import annotations

from sim_devices.demo.compare import Run
from sim_devices.demo.mechanisms import Day, format_table, page, rows, under
from sim_devices.demo.summary import CommunitySummary, HomeSummary
from sim_devices.scenario import load_scenario

SCENARIO = load_scenario("sunny-street")


def run(bills: dict[str, int], *, traded_wh: int, prices: tuple[int, int] | None) -> Run:
    homes = tuple(HomeSummary(name=n, bill=b, bought_wh=0, sold_wh=0, imported_wh=0,
                              exported_wh=0, grid_import_wh=500, consumed_wh=1000)
                  for n, b in bills.items())
    low, high = prices if prices is not None else (None, None)
    summary = CommunitySummary(homes=homes, intervals=96, agreed=90, abstained=6,
                               traded_wh=traded_wh, min_price=low, max_price=high)
    return Run(way="optimiser", summary=summary, bills=bills, exports={})


def test_the_table_shows_each_mechanisms_figures_and_each_homes_saving() -> None:
    without = run({"a": 1_000_000, "b": -500_000}, traded_wh=0, prices=None)
    day = Day(scenario=SCENARIO, without=without, runs={
        "uniform": run({"a": 600_000, "b": -550_000}, traded_wh=4_000, prices=(100, 270)),
        "bill-sharing": run({"a": 1_100_000, "b": -500_000}, traded_wh=0, prices=None),
    })
    table = {row[0]: row[1:] for row in rows(day)}
    assert table[""] == ("uniform", "bill-sharing", "no market")
    assert table["traded kWh"] == ("4.0", "0.0", "0.0")
    assert table["price µ/Wh"] == ("100-270", "-", "-")
    assert table["a saves"] == ("0.40", "-0.10", "bill 1.00")
    assert table["homes paying more"] == ("0", "1", "-")
    assert table["spread of savings"] == ("0.35", "0.10", "-")
    assert "sunny-street" in format_table(day)
    html = page(day)
    assert html.count("<rect") == 4 and "bill-sharing" in html and "#c33" in html


def test_a_run_under_a_mechanism_changes_the_mechanism_only() -> None:
    changed = under(SCENARIO, "sdr")
    assert changed.market.mechanism == "sdr" and SCENARIO.market.mechanism == "uniform"
    assert changed.homes == SCENARIO.homes and changed.seed == SCENARIO.seed
