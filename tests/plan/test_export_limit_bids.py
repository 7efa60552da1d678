"""A home under the grid operator's export limit never offers more than the limit lets through
its meter in an interval: it delivers a sale only by exporting, and what it sold and could not
deliver is bought back at retail (a zero-export home on dynamic-street sold 150 Wh an interval
through the morning with the heuristic, and paid more than without the market)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.ems import Plan
from gateway.home.grid_point import meter_floor_w
from gateway.home.trader import within_export_limit
from gateway.plan import GridLimits
from tests.plan.homes import offers

INTERVAL_MS = 900_000


@given(plan=offers(), export_w=st.none() | st.integers(0, 20_000))
def test_a_sale_is_cut_to_what_the_export_limit_lets_through_the_meter_best_steps_kept(
        plan: Plan, export_w: int | None) -> None:
    cut = within_export_limit(plan, limits=GridLimits(export_w=export_w),
                              length_ms=INTERVAL_MS)
    if export_w is None or plan.side == "buy":
        assert cut == plan
        return
    most_wh = max(0, -meter_floor_w(export_w)) * INTERVAL_MS // 3_600_000
    assert cut.energy_wh == min(plan.energy_wh, most_wh)
    if cut.energy_wh == 0:
        assert cut.side is None and cut.curve() == ()
        return
    curve = cut.curve()
    assert sum(step.wh for step in curve) == cut.energy_wh
    assert [s.price for s in curve] == [s.price for s in plan.curve()][:len(curve)]


def test_a_zero_export_home_offers_no_sale_and_still_buys() -> None:
    sale = Plan(pv_wh=0, load_wh=0, battery_wh=0, residual_wh=0, side="sell", energy_wh=700,
                limit_price=150)
    zero = GridLimits(export_w=0)
    assert within_export_limit(sale, limits=zero, length_ms=INTERVAL_MS).side is None
    purchase = Plan(pv_wh=0, load_wh=0, battery_wh=0, residual_wh=0, side="buy", energy_wh=700,
                    limit_price=250)
    assert within_export_limit(purchase, limits=zero, length_ms=INTERVAL_MS) == purchase
    # 4 kW less the 200 W margin over 15 minutes
    assert within_export_limit(sale, limits=GridLimits(export_w=4_000),
                               length_ms=INTERVAL_MS) == sale
    assert within_export_limit(sale, limits=GridLimits(export_w=2_000),
                               length_ms=INTERVAL_MS).energy_wh == 475
