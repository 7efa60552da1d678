"""The EMS covers the home first and offers only the residual, within the battery's limits."""

from hypothesis import given
from hypothesis import strategies as st

from gateway.ems import BatteryState, Preferences, plan_interval
from gateway.forecast import HomeForecaster, Profile
from protocols.clearing import Tariffs

TARIFFS = Tariffs(retail_price=300, feed_in_price=80)
PREFS = Preferences(min_sell_price=120, max_buy_price=250, reserve_pct=20, soc_max_pct=95)

def battery_states(*, capacity_wh: int, power_w: int) -> st.SearchStrategy[BatteryState]:
    """Any battery up to ``capacity_wh`` and ``power_w`` each way, at any state of charge."""
    return st.builds(
        BatteryState,
        capacity_wh=st.integers(0, capacity_wh),
        soc_pct=st.floats(0, 100),
        max_charge_w=st.integers(0, power_w),
        max_discharge_w=st.integers(0, power_w),
    )


batteries = battery_states(capacity_wh=50_000, power_w=10_000)


@given(
    pv=st.integers(0, 20_000),
    load=st.integers(0, 20_000),
    battery=st.none() | batteries,
    interval_s=st.sampled_from([5.0, 900.0, 3600.0]),
)
def test_plan_balances_and_respects_battery_limits(pv, load, battery, interval_s):
    plan = plan_interval(
        pv_wh=pv, load_wh=load, battery=battery, prefs=PREFS, tariffs=TARIFFS, interval_s=interval_s
    )
    assert pv - load == plan.battery_wh + plan.residual_wh
    if battery is None:
        assert plan.battery_wh == 0
    else:
        hours = interval_s / 3600
        assert -battery.max_discharge_w * hours - 1e-9 <= plan.battery_wh
        assert plan.battery_wh <= battery.max_charge_w * hours + 1e-9
        if plan.battery_wh > 0:
            assert battery.soc_pct < PREFS.soc_max_pct
        if plan.battery_wh < 0:
            assert battery.soc_pct > PREFS.reserve_pct
    # the battery only serves the home: it never charges from the grid or discharges into it
    assert plan.battery_wh * (pv - load) >= 0
    assert abs(plan.battery_wh) <= abs(pv - load)
    if plan.side is not None:
        assert TARIFFS.feed_in_price <= plan.limit_price <= TARIFFS.retail_price
        assert plan.energy_wh == abs(plan.residual_wh) > 0


def test_surplus_is_sold_once_the_battery_is_full():
    full = BatteryState(capacity_wh=10_000, soc_pct=95, max_charge_w=5000, max_discharge_w=5000)
    plan = plan_interval(
        pv_wh=3000, load_wh=1000, battery=full, prefs=PREFS, tariffs=TARIFFS, interval_s=3600
    )
    assert (plan.side, plan.energy_wh, plan.battery_wh, plan.limit_price) == ("sell", 2000, 0, 120)


def test_deficit_is_covered_by_the_battery_down_to_the_reserve():
    battery = BatteryState(
        capacity_wh=10_000, soc_pct=30, max_charge_w=5000, max_discharge_w=5000,
        discharge_efficiency=1.0,
    )
    plan = plan_interval(
        pv_wh=0, load_wh=3000, battery=battery, prefs=PREFS, tariffs=TARIFFS, interval_s=3600
    )
    # 10 % of 10 kWh above the 20 % reserve = 1000 Wh from the battery, the rest is bought
    assert (plan.battery_wh, plan.side, plan.energy_wh) == (-1000, "buy", 2000)


def test_forecaster_learns_the_time_of_day_and_survives_a_restart():
    f = HomeForecaster(pv=Profile(slots=24, alpha=0.5), load=Profile(slots=24, alpha=0.5))
    for _day in range(5):
        f.observe(time_of_day_s=12 * 3600, pv_w=4000, load_w=500)
        f.observe(time_of_day_s=20 * 3600, pv_w=0, load_w=2000)
    restored = HomeForecaster.from_json(f.to_json())
    assert restored.forecast_wh(start_s=12 * 3600, length_s=1800) == (2000, 250)
    assert restored.forecast_wh(start_s=20 * 3600, length_s=3600) == (0, 2000)
    # a slot never seen falls back to the latest observation
    assert restored.forecast_wh(start_s=3 * 3600, length_s=3600) == (0, 2000)


def test_forecaster_rejects_a_corrupt_state_file():
    import pytest

    with pytest.raises(ValueError, match="not a saved profile"):
        HomeForecaster.from_json('{"pv": {}}')
