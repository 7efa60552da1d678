"""The gateway's side of the plan: the day's problem from the trader's forecasts, the tariff
file and the operator's limits; the plan's curve bid on the side the plan trades on."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.ems import BatteryState, Plan
from gateway.flex_plan import FlexJob
from gateway.plan import BidCurve, GridLimits, Outcome, Planner, parse_toml
from gateway.plan.bidding import bid_plan, day_problem, horizon_steps
from gateway.plan.tariff_file import load_schedule
from protocols.clearing import Tariffs
from protocols.messages import MAX_STEPS, Step
from tests.plan.homes import PREFS

FIXED = Tariffs(retail_price=300, feed_in_price=80)
START = int(datetime.fromisoformat("2026-06-01T00:00+00:00").timestamp() * 1000)
TOU = parse_toml("""
unit = "uwh"
[[window]]
from = "17:00"
to = "21:00"
import = 450
export = 60
""", source="tou.toml", fixed=FIXED)
BATTERY = BatteryState(capacity_wh=10_000, soc_pct=60, max_charge_w=4_000, max_discharge_w=4_000)


def _plan(residual: int) -> Plan:
    return Plan(pv_wh=0, load_wh=0, battery_wh=-residual, residual_wh=residual, side=None,
                energy_wh=0, limit_price=0)


def test_the_horizon_is_a_day_at_the_interval_and_at_most_96_steps() -> None:
    assert horizon_steps(900) == 96 and horizon_steps(3600) == 24
    assert horizon_steps(1) == 96 and horizon_steps(86_400) == 1


def test_the_day_is_priced_by_the_tariff_file_and_bounded_by_the_operator() -> None:
    """From 16:00: four hours at the fixed prices, then the evening window's; a 3 kW export
    limit is 750 Wh per quarter hour."""
    start = START + 16 * 3_600_000
    ahead = [(100, 300)] * 31
    problem = day_problem(start_ms=start, step_s=900, first=(500, 300), ahead=ahead,
                          battery=BATTERY, prefs=PREFS, jobs=(), schedule=TOU,
                          limits=GridLimits(export_w=3_000))
    assert problem.steps == 32
    assert problem.import_price == (300,) * 4 + (450,) * 16 + (300,) * 12
    assert problem.export_price == (80,) * 4 + (60,) * 16 + (80,) * 12
    assert problem.grid is not None and problem.grid.export_wh == (750,) * 32
    assert problem.pv_wh[0] == 500 and problem.load_wh[1:] == (300,) * 31


def test_no_tariff_file_prices_the_day_at_the_fixed_tariffs() -> None:
    schedule = load_schedule(None, fixed=FIXED)
    problem = day_problem(start_ms=START, step_s=900, first=(0, 0), ahead=[(0, 0)] * 3,
                          battery=None, prefs=PREFS, jobs=(), schedule=schedule, limits=None)
    assert problem.import_price == (300,) * 4 and problem.export_price == (80,) * 4
    assert problem.grid is None


def _outcome(plan: Plan, curve: BidCurve) -> Outcome:
    return Outcome(interval=plan, curve=curve, day=None, source="optimiser")


CURVE = BidCurve(sell=(Step(400, 120), Step(600, 200)), buy=(Step(300, 250), Step(200, 100)))


def test_a_surplus_is_offered_on_the_curve_best_first() -> None:
    bid = bid_plan(_outcome(_plan(400), CURVE), min_bid_wh=1)
    assert (bid.side, bid.energy_wh, bid.limit_price) == ("sell", 1_000, 120)
    assert bid.curve() == ((400, 120), (600, 200))


def test_a_deficit_is_bid_for_on_the_curve_best_first() -> None:
    bid = bid_plan(_outcome(_plan(-300), CURVE), min_bid_wh=1)
    assert (bid.side, bid.energy_wh, bid.limit_price) == ("buy", 500, 250)
    assert bid.curve() == ((300, 250), (200, 100))


def test_nothing_at_the_meter_offers_what_the_battery_would_sell_at_a_price() -> None:
    assert bid_plan(_outcome(_plan(0), CURVE), min_bid_wh=1).side == "sell"
    assert bid_plan(_outcome(_plan(0), BidCurve(buy=CURVE.buy)), min_bid_wh=1).side == "buy"
    none = bid_plan(_outcome(_plan(0), BidCurve()), min_bid_wh=1)
    assert (none.side, none.energy_wh, none.steps) == (None, 0, ())


def test_a_side_the_curve_does_not_offer_is_no_bid() -> None:
    """A surplus the home will not sell below what the grid pays is exported, not bid."""
    bid = bid_plan(_outcome(_plan(400), BidCurve(buy=CURVE.buy)), min_bid_wh=1)
    assert bid.side is None and bid.energy_wh == 0


def test_a_bid_below_the_owners_minimum_energy_is_not_made() -> None:
    bid = bid_plan(_outcome(_plan(5), BidCurve(sell=(Step(5, 120),))), min_bid_wh=10)
    assert bid.side is None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pv=st.lists(st.integers(0, 3_000), min_size=8, max_size=8),
       load=st.lists(st.integers(0, 2_000), min_size=8, max_size=8),
       soc=st.floats(0, 100), export_w=st.none() | st.integers(0, 8_000))
def test_the_planned_bid_is_a_valid_curve_within_the_export_limit(
        pv: list[int], load: list[int], soc: float, export_w: int | None) -> None:
    """Whatever the day, the bid the trader signs is one side, at most eight steps, prices
    monotone the side's way, and never sells more than the export limit lets through the
    meter in the interval."""
    problem = day_problem(start_ms=START + 15 * 3_600_000, step_s=900,
                          first=(pv[0], load[0]), ahead=list(zip(pv[1:], load[1:], strict=True)),
                          battery=BatteryState(capacity_wh=10_000, soc_pct=soc,
                                               max_charge_w=4_000, max_discharge_w=4_000),
                          prefs=PREFS, jobs=(), schedule=TOU,
                          limits=GridLimits(export_w=export_w))
    bid = bid_plan(PLANNER.plan(problem, max_buy_wh=10_000, max_sell_wh=10_000), min_bid_wh=1)
    steps = bid.curve()
    assert len(steps) <= MAX_STEPS and sum(s.wh for s in steps) == bid.energy_wh
    prices = [s.price for s in steps]
    assert prices == (sorted(prices) if bid.side == "sell" else sorted(prices, reverse=True))
    if bid.side == "sell" and export_w is not None:
        assert bid.energy_wh <= export_w * 900 // 3600


PLANNER = Planner(time_limit_s=5.0, curve_time_limit_s=5.0)


def test_a_load_with_nothing_to_gain_early_runs_as_late_as_it_can() -> None:
    """Flat prices, no sun: a 2 kWh job due in two hours at 4 kW runs in the last two quarter
    hours before it is due, as the heuristic would (out of the evening peak, the choice left
    open for the next interval's plan)."""
    problem = day_problem(start_ms=START + 18 * 3_600_000, step_s=900, first=(0, 300),
                          ahead=[(0, 300)] * 11, battery=None, prefs=PREFS,
                          jobs=(FlexJob(name="ev", need_wh=2_000, max_w=4_000, due_s=7_200),),
                          schedule=load_schedule(None, fixed=FIXED), limits=None)
    day = PLANNER.plan(problem, max_buy_wh=0, max_sell_wh=0).day
    assert day is not None
    runs = dict(day.jobs)["ev"]
    assert [round(r) for r in runs[:8]] == [0] * 6 + [1_000, 1_000]


def test_a_home_that_has_not_learned_its_day_does_not_sell_what_its_battery_holds() -> None:
    """The forecaster has seen nothing after this interval (a gateway's first day): the cells'
    energy is kept at what buying it back would cost, not offered at the owner's minimum to be
    bought back at retail in the evening; what the plan cannot keep, a surplus, is still offered."""
    schedule = load_schedule(None, fixed=FIXED)
    short = day_problem(start_ms=START + 12 * 3_600_000, step_s=900, first=(0, 100), ahead=(),
                        battery=BATTERY, prefs=PREFS, jobs=(), schedule=schedule, limits=None)
    assert short.end_value == 300 * BATTERY.discharge_efficiency
    kept = bid_plan(PLANNER.plan(short, max_buy_wh=5_000, max_sell_wh=5_000), min_bid_wh=1)
    assert kept.side != "sell"
    sunny = day_problem(start_ms=START + 12 * 3_600_000, step_s=900, first=(3_000, 100),
                        ahead=(), battery=replace(BATTERY, soc_pct=95), prefs=PREFS, jobs=(),
                        schedule=schedule, limits=None)
    surplus = bid_plan(PLANNER.plan(sunny, max_buy_wh=5_000, max_sell_wh=5_000), min_bid_wh=1)
    assert surplus.side == "sell" and surplus.energy_wh >= 2_800
    full = day_problem(start_ms=START, step_s=900, first=(0, 100), ahead=[(0, 100)] * 95,
                       battery=BATTERY, prefs=PREFS, jobs=(), schedule=schedule, limits=None)
    assert full.end_value is None  # a whole day seen: the programme's own default


def test_a_home_that_cannot_see_its_day_does_not_buy_energy_to_store() -> None:
    """The horizon cut short (a day not learned yet, or an inverter gone silent, which zeroes
    this interval's sun): energy bought into the cells now has no use the plan has seen, so it
    is worth only what the grid would pay for it later, and the bid buys no more than the
    interval's own deficit. Valued at retail, the plan bid for a full battery at up to retail x
    the round trip, and a home whose inverter came back exported it at feed-in."""
    schedule = load_schedule(None, fixed=FIXED)
    blind = day_problem(start_ms=START + 12 * 3_600_000, step_s=900, first=(0, 400), ahead=(),
                        battery=replace(BATTERY, soc_pct=30), prefs=PREFS, jobs=(),
                        schedule=schedule, limits=None)
    assert blind.end_value_above == 80 * BATTERY.discharge_efficiency
    plan = bid_plan(PLANNER.plan(blind, max_buy_wh=5_000, max_sell_wh=5_000), min_bid_wh=1)
    assert plan.side != "buy" or plan.energy_wh <= 400, plan
    assert plan.battery_wh <= 0, plan  # nothing charged for a later it cannot see


def test_the_curve_prices_only_what_the_battery_can_do_with_energy_the_loads_hold_to_the_plan(
        ) -> None:
    """The loads follow the plan, and a step cleared beyond the residual goes into or out of the
    battery, so the curve must not price energy by what a load could do with it. A silent
    inverter (no sun this interval, the horizon cut short) and a 3 kWh heater owed later: the
    plan does not run the heater now (nothing to run it on), so the bid is the interval's own
    load. Priced with the heater free, the curve bid 750 Wh more at the owner's top price, the
    heater's value past the cut horizon; the battery took it (and, once full, the grid at
    feed-in): home-6 on sunny-street with the optimiser bought 8.8 kWh in a day."""
    heater = FlexJob(name="heater", need_wh=3_000, max_w=3_000, due_s=6 * 3_600)
    problem = day_problem(start_ms=START + 9 * 3_600_000, step_s=900, first=(0, 118),
                          ahead=(), battery=replace(BATTERY, soc_pct=95), prefs=PREFS,
                          jobs=(heater,), schedule=load_schedule(None, fixed=FIXED),
                          limits=None)
    outcome = PLANNER.plan(problem, max_buy_wh=5_000, max_sell_wh=5_000)
    plan = bid_plan(outcome, min_bid_wh=1)
    assert dict(plan.flex).get("heater", 0) == 0  # nothing to run it on now
    assert plan.side == "buy" and plan.energy_wh == 118, plan


def test_a_home_that_has_not_learned_its_day_runs_its_loads_on_a_surplus_now() -> None:
    """Nothing seen after this interval, 2 kW of sun to spare and a 3 kWh water heater due in
    six hours: it runs now on the surplus (as the heuristic runs it), not at its latest start,
    which on a day the plan cannot see may well be an evening bought at retail."""
    heater = FlexJob(name="heater", need_wh=3_000, max_w=3_000, due_s=6 * 3_600)
    problem = day_problem(start_ms=START + 12 * 3_600_000, step_s=900, first=(600, 100),
                          ahead=(), battery=None, prefs=PREFS, jobs=(heater,),
                          schedule=load_schedule(None, fixed=FIXED), limits=None)
    assert problem.later_price == 300
    day = PLANNER.plan(problem, max_buy_wh=0, max_sell_wh=0).day
    assert day is not None and round(dict(day.jobs)["heater"][0]) == 500


def test_a_load_runs_on_the_forecast_surplus_in_hand_not_on_the_last_surplus_before_its_due(
        ) -> None:
    """A full battery, the sun to spare for four more hours, then the evening, and a 3 kWh
    heater due at night: every surplus step costs the heater the same (the export price it
    forgoes), and the plan runs it on the first of them. Put off to the last ones, it ran at
    its due on whatever was there then: on sunny-street, a cloud or an inverter gone silent in
    the afternoon left home-6's heater to the evening, from the battery the night then missed
    (bought back at retail in the morning)."""
    heater = FlexJob(name="heater", need_wh=3_000, max_w=3_000, due_s=10 * 3_600)
    sunny, evening = (1_400, 150), (0, 300)
    problem = day_problem(start_ms=START + 12 * 3_600_000, step_s=900, first=sunny,
                          ahead=(sunny,) * 15 + (evening,) * 80,
                          battery=replace(BATTERY, soc_pct=95), prefs=PREFS, jobs=(heater,),
                          schedule=load_schedule(None, fixed=FIXED), limits=None)
    day = PLANNER.plan(problem, max_buy_wh=0, max_sell_wh=0).day
    assert day is not None
    runs = [round(wh) for wh in dict(day.jobs)["heater"]]
    assert runs[:4] == [750] * 4 and sum(runs) == 3_000, runs
