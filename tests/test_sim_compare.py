"""``gridpeer sim compare``: the same seeded day under each mechanism and without the market, one
table and one page; its table from the runs of a day, a short run through real gateways, and bad
input refused before anything runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.cli import main
from sim_devices.demo.compare import Day, Run, Way, format_table, page, rows, under, ways
from sim_devices.demo.summary import CommunitySummary, HomeSummary
from sim_devices.scenario import load_scenario

SCENARIO = load_scenario("sunny-street")


def run(way: Way, bills: dict[str, int], *, traded_wh: int, prices: tuple[int, int] | None,
        welfare: tuple[int, int] = (0, 0)) -> Run:
    homes = tuple(HomeSummary(name=n, bill=b, bought_wh=0, sold_wh=0, imported_wh=0,
                              exported_wh=0, grid_import_wh=500, consumed_wh=1000)
                  for n, b in bills.items())
    low, high = prices if prices is not None else (None, None)
    summary = CommunitySummary(homes=homes, intervals=96, agreed=90, abstained=6,
                               traded_wh=traded_wh, min_price=low, max_price=high)
    return Run(way=way, summary=summary, bills=bills, exports={}, welfare=welfare[0],
               efficient=welfare[1])


def test_the_table_shows_each_ways_figures_and_each_homes_saving() -> None:
    without = run(Way("no market", None), {"a": 1_000_000, "b": -500_000}, traded_wh=0,
                  prices=None)
    day = Day(scenario=SCENARIO, runs=(
        run(Way("uniform", "uniform"), {"a": 600_000, "b": -550_000}, traded_wh=4_000,
            prices=(100, 270), welfare=(880_000, 1_000_000)),
        run(Way("bill-sharing", "bill-sharing"), {"a": 1_100_000, "b": -500_000}, traded_wh=0,
            prices=None, welfare=(0, 1_000_000)),
        without))
    table = {row[0]: row[1:] for row in rows(day)}
    assert table[""] == ("uniform", "bill-sharing", "no market")
    assert table["traded kWh"] == ("4.0", "0.0", "0.0")
    assert table["price µ/Wh"] == ("100-270", "-", "-")
    assert table["welfare of the efficient max"] == ("88.0%", "0.0%", "-")
    assert table["a saves"] == ("0.40", "-0.10", "bill 1.00")
    assert table["homes paying more"] == ("0", "1", "-")
    assert table["spread of savings"] == ("0.35", "0.10", "-")
    assert "sunny-street" in format_table(day)
    html = page(day)
    assert html.count("<rect") == 4 and "bill-sharing" in html and "#c33" in html


def test_the_ways_are_each_mechanism_the_optimiser_and_no_market_last() -> None:
    columns = ways(SCENARIO, ["uniform", "sdr"], optimiser=True)
    assert [(w.label, w.mechanism, w.planner) for w in columns] == [
        ("uniform", "uniform", "heuristic"), ("sdr", "sdr", "heuristic"),
        ("optimiser", "uniform", "optimiser"), ("no market", None, "heuristic")]
    changed = under(SCENARIO, "sdr")
    assert changed.market.mechanism == "sdr" and SCENARIO.market.mechanism == "uniform"
    assert changed.homes == SCENARIO.homes and changed.seed == SCENARIO.seed


def _table(text: str) -> dict[str, list[str]]:
    lines = text.splitlines()[1:]
    return {cells[0]: cells[1:] for cells in (re.split(r"\s{2,}", ln.strip()) for ln in lines)}


def test_compare_runs_a_short_day_each_way_and_its_table_balances(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "cmp"
    assert main(["sim", "compare", "sunny-street", "--mechanism", "uniform", "--mechanism",
                 "sdr", "--no-optimiser", "--intervals", "3",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr()
    text = (out / "sunny-street" / "compare.txt").read_text(encoding="utf-8")
    assert text.strip() in printed.out and "sdr done" in printed.err
    table = _table(text)
    assert table["traded kWh"][-1] == "0.0"  # the baseline trades nothing
    assert table["welfare of the efficient max"][-1] == "-"
    for share in table["welfare of the efficient max"][:-1]:
        assert share == "-" or 0.0 <= float(share.rstrip("%")) <= 100.0
    assert table["intervals unbalanced"] == ["0", "0", "0"]  # money and energy per interval
    assert all(re.fullmatch(r"\d/3", agreed) for agreed in table["intervals agreed by all"])
    html = (out / "sunny-street" / "compare.html").read_text(encoding="utf-8")
    assert "<svg" in html and not re.search(r"""(src|href)=["']?https?:""", html)


@pytest.mark.parametrize(("args", "status", "expected"), [
    (("no-such-street",), 1, "gridpeer: no scenario 'no-such-street'"),
    (("--mechanism", "auction"), 2, "invalid choice: 'auction' (choose from 'uniform'"),
    (("--intervals", "0"), 2, "--intervals: must be at least 1"),
])
def test_compare_refuses_bad_input_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], status: int,
    expected: str,
) -> None:
    try:
        code = main(["sim", "compare", "--out", str(tmp_path / "cmp"), *args])
    except SystemExit as exit_:  # argparse's usage errors
        code = int(exit_.code or 0)
    err = capsys.readouterr().err
    assert code == status and expected in err and "Traceback" not in err
    assert not (tmp_path / "cmp").exists()
