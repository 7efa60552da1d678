"""The bid curve prices each chunk of the interval's energy at what it is worth to the home's day:
it sells what it would export cheaply and keeps what its evening needs."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, example, given, settings

from gateway.ems import BatteryState, Preferences
from gateway.flex_plan import FlexJob
from gateway.plan import MAX_STEPS, BidCurve, GridCaps, Planner, Problem, Solver, bid_curve, build
from gateway.plan.values import DELIVERY_RISK, at_risk
from protocols.messages import MAX_PRICE, Step
from tests.plan.homes import problems

OPEN = Preferences(min_sell_price=0, max_buy_price=MAX_PRICE, reserve_pct=20, soc_max_pct=95)
"""Owner limits that never bind: the curve shows the plan's own values."""
PLANNER = Planner(time_limit_s=30.0, curve_time_limit_s=30.0)


def _midday() -> Problem:
    """1 kWh of surplus now; the battery (92 %, top 95 %) has room for 300 Wh of cells; ten
    evening steps need 10 kWh, more than it holds: each Wh stored saves retail later."""
    steps = 12
    load = (200,) + (1_000,) * 10 + (200,)
    battery = BatteryState(capacity_wh=10_000, soc_pct=92, max_charge_w=5_000,
                           max_discharge_w=5_000)
    return Problem(step_s=900.0, pv_wh=(1_200,) + (0,) * (steps - 1), load_wh=load,
                   import_price=(300,) * steps, export_price=(80,) * steps, prefs=OPEN,
                   battery=battery)


def test_sells_what_it_would_export_cheaply_and_keeps_what_the_evening_needs() -> None:
    """Of the 1,000 Wh surplus, 684.2 Wh would be exported (worth feed-in, 80); the next 315.8
    Wh would be stored for the evening (worth retail after the round trip, less the wear of
    discharging: (300 x 0.95 − 1) x 0.95 = 269.8), and the cells would give them up for the
    sale, so a quarter of them may go undelivered and be bought back at retail: offered at
    269.8 + 0.25 x (300 − 269.8) = 277.4. Selling beyond the surplus costs retail: not offered.
    Buying only adds export."""
    curve = PLANNER.plan(_midday(), max_buy_wh=5_000, max_sell_wh=5_000).curve
    assert len(curve.sell) == 2
    (cheap, kept) = curve.sell
    assert cheap.wh in (684, 685) and cheap.price == 80
    assert cheap.wh + kept.wh == 1_000 and kept.price == 278
    assert curve.buy == ()


def test_owner_limits_bound_the_curve() -> None:
    problem = _midday()
    owner = Preferences(min_sell_price=150, max_buy_price=250, reserve_pct=20, soc_max_pct=95)
    curve = PLANNER.plan(Problem(**{**{f: getattr(problem, f) for f in
                                       Problem.__dataclass_fields__}, "prefs": owner}),
                         max_buy_wh=5_000, max_sell_wh=5_000).curve
    assert [s.price for s in curve.sell] == [150, 278]


def test_member_limits_bound_each_side() -> None:
    curve = PLANNER.plan(_midday(), max_buy_wh=5_000, max_sell_wh=500).curve
    assert sum(s.wh for s in curve.sell) == 500


def _first_loads_planned(problem: Problem) -> dict[int, float]:
    """The first step's load columns (jobs, the car's charge and feed) at the day's plan."""
    model = build(problem)
    solver = Solver()
    solver.load(model)
    solver.run(time_limit_s=30.0)
    values = solver.values()
    cols = model.columns
    loads = [cols.ev_charge[0], cols.ev_discharge[0], *(idx[0] for idx in cols.jobs.values())]
    return {int(c): float(values[c]) for c in loads if c >= 0}


def _value(problem: Problem, q: int, held: dict[int, float]) -> float:
    """The day's optimal cost with the first step's market position held at ``q`` and its loads
    at ``held`` (the plan's runs: the dispatch delivers a cleared step beyond the residual from
    or into the battery, never the loads), solved from scratch."""
    model = build(problem)
    solver = Solver()
    solver.load(model)
    col = int(model.columns.market[0])
    solver.set_cost(col, 0.0)
    solver.bound(col, float(q), float(q))
    for load, run in held.items():
        solver.bound(load, run, run)
    solver.run(time_limit_s=30.0)
    return solver.objective()


_AT_IMPORT_PRICE = Problem(
    step_s=300.0, pv_wh=(0,) * 6, load_wh=(7, 7, 0, 0, 0, 0), import_price=(23, 250, 12, 1, 1, 1),
    export_price=(0, 153, 1, 0, 0, 0), prefs=OPEN,
    battery=BatteryState(capacity_wh=269, soc_pct=2.0, max_charge_w=3684, max_discharge_w=12,
                         charge_efficiency=0.859375, discharge_efficiency=1.0),
    jobs=(FlexJob(name="load-0", need_wh=0, max_w=0, due_s=0.0),
          FlexJob(name="load-1", need_wh=0, max_w=0, due_s=0.0)),
    grid=GridCaps(import_wh=(None,) * 6, export_wh=(None,) * 5 + (0,),
                  dimmed_wh=(0,) + (None,) * 5),
    wear_price=0)
"""A fresh-clone run's example: the re-solves price the 7 Wh the grid would fill at
22.999999999998 for an import price of 23, which must count as the grid's price (23), not as
energy the cells move (17 after the delivery risk)."""


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems(max_steps=12, prices=(0, 600)))
@example(problem=_AT_IMPORT_PRICE)
def test_curve_is_monotone_and_each_chunk_is_priced_at_its_value_and_delivery_risk(
        problem: Problem) -> None:
    problem = Problem(**{**{f: getattr(problem, f) for f in Problem.__dataclass_fields__},
                         "prefs": OPEN})
    outcome = PLANNER.plan(problem, max_buy_wh=8_000, max_sell_wh=8_000)
    curve = outcome.curve
    assert len(curve.sell) <= MAX_STEPS and len(curve.buy) <= MAX_STEPS
    assert BidCurve(sell=curve.sell, buy=curve.buy) == curve  # monotone, positive energy
    if curve.sell and curve.buy:
        assert curve.buy[0].price <= curve.sell[0].price
    held = _first_loads_planned(problem)
    base = _value(problem, 0, held)
    done = 0
    grid = {"import_price": problem.import_price[0], "export_price": problem.export_price[0]}
    for step in curve.sell:  # selling the chunk costs the day at most its price, rounded up
        cost = (_value(problem, -(done + step.wh), held) - _value(problem, -done, held)) / step.wh
        assert (step.price == math.ceil(at_risk(cost, "sell", **grid) - 1e-6)
                or step.price == problem.prefs.min_sell_price)
        assert step.price >= cost - 1e-6  # never below what it costs the day
        done += step.wh
    done = 0
    for step in curve.buy:
        saved = (_value(problem, done, held) - _value(problem, done + step.wh, held)) / step.wh
        assert step.price == math.floor(at_risk(saved, "buy", **grid) + 1e-6)
        assert step.price <= saved + 1e-6  # never above what it saves the day
        done += step.wh
    assert base == pytest.approx(_value(problem, 0, held))


def test_energy_the_cells_move_is_priced_with_its_delivery_risk_and_the_grids_own_is_not(
        ) -> None:
    """Evening prices 460/110: a Wh kept in the cells for a night bought at 220 saves 220, but a
    quarter of a bought chunk may not be taken and goes out at 110, so it is worth 192.5; a Wh
    the cells give for 100 of value is worth 100 + 0.25 x (300 − 100) sold at fixed 300/80. A
    deficit the grid fills now, or a surplus it takes now, is the grid's price as it is."""
    evening = {"import_price": 460, "export_price": 110}
    assert at_risk(220, "buy", **evening) == 220 - DELIVERY_RISK * (220 - 110) == 192.5
    assert at_risk(460, "buy", **evening) == 460
    fixed = {"import_price": 300, "export_price": 80}
    assert at_risk(100, "sell", **fixed) == 100 + DELIVERY_RISK * (300 - 100) == 150
    assert at_risk(80, "sell", **fixed) == 80


def test_the_dual_lies_between_the_first_buy_and_sell_prices() -> None:
    """The balance row's dual is a subgradient of the day's cost at the plan's position (no
    market: zero): one price, between what the first Wh bought is worth and what the first Wh
    sold costs. A curve needs the re-solves; the dual prices only the first Wh."""
    problem = _midday()
    steps = problem.steps
    evening = Problem(**{**{f: getattr(problem, f) for f in Problem.__dataclass_fields__},
                         "pv_wh": (300,) + (0,) * (steps - 1)})
    outcome = PLANNER.plan(evening, max_buy_wh=5_000, max_sell_wh=5_000)
    assert outcome.day is not None
    assert outcome.curve.buy and outcome.curve.sell
    dual = outcome.day.value[0]
    assert outcome.curve.buy[0].price <= dual + 1e-6
    assert dual <= outcome.curve.sell[0].price + 1e-6


def test_curve_without_time_is_refused_not_guessed() -> None:
    from gateway.plan import SolveFailed

    problem = _midday()
    model = build(problem)
    solver = Solver()
    solver.load(model)
    solver.run(time_limit_s=30.0)
    with pytest.raises(SolveFailed):
        bid_curve(solver, model, problem, max_buy_wh=1_000, max_sell_wh=1_000,
                  time_limit_s=0.0)


def test_curve_steps_refuse_non_monotone_prices() -> None:
    with pytest.raises(ValueError, match="ascending"):
        BidCurve(sell=(Step(100, 200), Step(100, 150)))
    with pytest.raises(ValueError, match="descending"):
        BidCurve(buy=(Step(100, 150), Step(100, 200)))
    with pytest.raises(ValueError, match="at most"):
        BidCurve(sell=tuple(Step(1, p) for p in range(MAX_STEPS + 1)))


def test_full_cells_at_the_evening_peak_trade_the_nights_energy_only_with_a_margin() -> None:
    """A zero-export home (dynamic-street's home-6) at 18:30, cells full, import 460 / export 110
    now, the night at 220: its cells cover the evening but run out in the night, so a Wh kept now
    (bought instead of drawn) saves 220 at night, and a Wh sold from them costs 220 at night.
    Bid or offered at 220 exactly, a trade gains the home nothing and loses whatever the cells
    cannot move when the interval turns out other than forecast: so it pays 220 less a quarter of
    the spread to 110, and sells at 220 plus a quarter of the spread to 460."""
    pv = (246,) + (0,) * 39 + (1_500,) * 56
    load = (409,) + (300,) * 5 + (130,) * 34 + (150,) * 56
    owner = Preferences(min_sell_price=120, max_buy_price=250, reserve_pct=20, soc_max_pct=95)
    problem = Problem(step_s=900.0, pv_wh=pv, load_wh=load,
                      import_price=(460,) * 6 + (220,) * 34 + (140,) * 56,
                      export_price=(110,) * 6 + (60,) * 34 + (30,) * 56, prefs=owner,
                      battery=BatteryState(capacity_wh=6_000, soc_pct=94.5, max_charge_w=3_000,
                                           max_discharge_w=3_000))
    outcome = PLANNER.plan(problem, max_buy_wh=5_000, max_sell_wh=5_000)
    assert outcome.interval.battery_wh == -163 and outcome.interval.residual_wh == 0
    kept, sold = outcome.curve.buy[0], outcome.curve.sell[0]
    assert kept.wh == 163 and kept.price == math.floor(220 - DELIVERY_RISK * (220 - 110))
    assert sold.price == math.ceil(220 + DELIVERY_RISK * (460 - 220))
