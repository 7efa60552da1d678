"""The optimiser's whole day on the dynamic-tariff street, against the same seeded day without
the market, through every real part (gateways polling simulated homes over Modbus TCP, signed
bids over the embedded broker, settlements in each home's ledger) on virtual time, which makes
the same day to the µ however busy the host is: no home pays more than without the market, no
export limit is exceeded at the grid point (the simulated meter, not the gateway's reading),
and every interval balances."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim_devices import virtual_time
from sim_devices.demo.compare import NO_MARKET, OPTIMISER, compare_day
from sim_devices.scenario import load_scenario

pytestmark = pytest.mark.xdist_group("day-optimiser")


def test_the_optimisers_dynamic_day_costs_no_home_more_and_keeps_every_export_limit(
        tmp_path: Path) -> None:
    scenario = load_scenario("dynamic-street")
    day = virtual_time.run(compare_day(scenario, out=tmp_path, mechanisms=()))
    [optimised, without] = day.runs
    assert (optimised.way.label, without.way.label) == (OPTIMISER, NO_MARKET)
    assert optimised.summary.agreed == optimised.summary.intervals
    assert optimised.summary.traded_wh > 0
    savings = day.savings(optimised)
    assert all(saved >= 0 for saved in savings.values()), savings
    assert sum(savings.values()) > 0
    assert optimised.exports and all(worst <= allowed for worst, allowed
                                     in optimised.exports.values()), optimised.exports
    assert optimised.unbalanced == 0 and without.unbalanced == 0
