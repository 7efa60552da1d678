"""``gridpeer sim compare`` on the dynamic-tariff street: every gateway clears and settles each
interval at the street's tariff file, so each home's ledgered settlement prices its grid
balance at that interval's prices from the file, and the day still balances to the Wh and the µ.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.ledger import Ledger
from gateway.plan import load_schedule
from protocols.clearing import Tariffs
from sim_devices.demo.run import timing
from sim_devices.scenario import load_scenario

SCENARIO = load_scenario("dynamic-street")
assert SCENARIO.tariffs.schedule is not None
SCHEDULE = load_schedule(Path(SCENARIO.tariffs.schedule), fixed=Tariffs(
    retail_price=SCENARIO.tariffs.retail_price, feed_in_price=SCENARIO.tariffs.feed_in_price))


def _table(text: str) -> dict[str, list[str]]:
    lines = text.splitlines()[1:]
    return {cells[0]: cells[1:] for cells in (re.split(r"\s{2,}", ln.strip()) for ln in lines)}


def test_the_dynamic_street_settles_each_interval_at_its_tariff_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "cmp"
    assert main(["sim", "compare", "dynamic-street", "--mechanism", "uniform", "--no-optimiser",
                 "--intervals", "3", "--out", str(out)]) == 0
    capsys.readouterr()
    table = _table((out / "dynamic-street" / "compare.txt").read_text(encoding="utf-8"))
    assert table["intervals unbalanced"] == ["0", "0"]
    length_ms = round(timing(SCENARIO, speed=1).interval_s * 1000)
    checked = 0
    for ledger_file in sorted((out / "dynamic-street" / "uniform").glob("*/state/ledger.db")):
        with Ledger.open(ledger_file) as ledger:
            for block, _ in ledger.blocks():
                settlement = block.content.get("settlement")
                if settlement is None:
                    continue
                s = settlement["body"]
                prices = SCHEDULE.tariffs(block.interval * length_ms, length_ms)
                assert prices != SCHEDULE.fixed  # the file, not the fixed tariffs, prices it
                outcome = block.content["outcome"]
                p2p = outcome["money"] - (s["grid_import_wh"] * prices.retail_price
                                          - s["grid_export_wh"] * prices.feed_in_price)
                # what is left is the home's trades: paid at the cleared price, never the grid's
                assert (s["cleared_wh"] == 0) == (p2p == 0), (block.interval, s)
                checked += s["grid_import_wh"] + s["grid_export_wh"] > 0
    assert checked
