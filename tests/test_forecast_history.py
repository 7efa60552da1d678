"""The forecast a simulated community's gateways start with: what a week of their homes taught."""

from __future__ import annotations

import pytest

from gateway.forecast import DAY_S, HomeForecaster
from gateway.lookahead import MAX_BLOCKS
from sim_devices.demo.history import learned_forecast
from sim_devices.home import HomeProfiles
from sim_devices.scenario import load_scenario

SCENARIO = load_scenario("sunny-street")
HOMES = [home.spec for home in SCENARIO.world(speed=1.0, dt_ms=1000).homes]


@pytest.mark.parametrize("spec", HOMES, ids=lambda spec: spec.name)
def test_a_week_teaches_every_time_of_day_so_the_plan_looks_a_whole_day_ahead(spec) -> None:
    forecaster = learned_forecast(spec, world_seed=SCENARIO.seed)
    block_s = DAY_S / MAX_BLOCKS
    ahead = forecaster.learned_ahead(start_s=8 * 3600, block_s=block_s, count=MAX_BLOCKS)
    assert len(ahead) == MAX_BLOCKS
    night = [pv for i, (pv, _) in enumerate(ahead) if not 6 <= (8 + i * block_s / 3600) % 24 <= 20]
    assert night and not any(night)  # no sun before sunrise or after sunset
    assert max(pv for pv, _ in ahead) > 0 and min(load for _, load in ahead) > 0
    # what it learned is the saved profile the gateway loads
    assert HomeForecaster.from_json(forecaster.to_json()).to_json() == forecaster.to_json()


def test_no_history_is_a_first_day_and_the_past_is_the_same_for_two_runs_but_not_today() -> None:
    spec = HOMES[0]
    assert not learned_forecast(spec, world_seed=SCENARIO.seed, days=0).pv.learned(12 * 3600)
    once = learned_forecast(spec, world_seed=SCENARIO.seed, days=2).to_json()
    assert learned_forecast(spec, world_seed=SCENARIO.seed, days=2).to_json() == once
    # the past days' clouds are not the simulated day's: the forecast is not an oracle
    today = HomeProfiles(spec, world_seed=SCENARIO.seed)
    one_day = learned_forecast(spec, world_seed=SCENARIO.seed, days=1)
    noon_ms = 12 * 3_600_000
    assert round(one_day.pv.predict(12 * 3600)) != today.pv_available_w(spec, noon_ms)
    with pytest.raises(ValueError, match="days must be >= 0"):
        learned_forecast(spec, world_seed=SCENARIO.seed, days=-1)
