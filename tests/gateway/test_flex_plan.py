"""Shifting controllable loads: deadlines met whenever they can be, never above a load's power,
never more than it owes; surplus first, earliest deadline first; and the plan's load in the bid."""

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.ems import BatteryState, Preferences, plan_interval
from gateway.flex_plan import (
    FlexJob,
    due_in_s,
    load_job,
    must_run_wh,
    parse_hhmm,
    plan_flex,
    rest_limit_w,
    slot_wh,
)
from protocols.clearing import Tariffs

TARIFFS = Tariffs(retail_price=300, feed_in_price=80)
PREFS = Preferences(min_sell_price=120, max_buy_price=250, reserve_pct=20)


@st.composite
def feasible_runs(draw):
    """A job, the slots to its deadline, a margin, and a forecast surplus per slot; the job fits
    in the whole slots before ``due − margin`` at full power (``need`` may be anything up to it).
    Times are to the millisecond: the planner's microsecond of slack against float rounding may
    not matter.
    """
    slot_s = draw(st.sampled_from([60.0, 300.0, 900.0, 1800.0]))
    max_w = draw(st.integers(1, 22_000))
    margin_slots = draw(st.integers(0, 3))
    usable = draw(st.integers(0, 48))
    extra = draw(st.integers(0, int(slot_s * 1000) - 1)) / 1000
    due_s = (usable + margin_slots) * slot_s + extra
    need = draw(st.integers(0, usable * slot_wh(max_w, slot_s)))
    surplus = draw(st.lists(st.integers(-5000, 20_000), min_size=usable + margin_slots + 1,
                            max_size=usable + margin_slots + 1))
    return slot_s, max_w, margin_slots * slot_s, due_s, need, usable, surplus


@settings(max_examples=400, deadline=None)
@given(feasible_runs())
@example((1800.0, 2, 0.0, 3599.999, 1, 1, [0, 0]))  # due 1 ms before a 30 min boundary
def test_a_feasible_deadline_is_always_met_never_above_max_power_never_beyond_the_need(case):
    slot_s, max_w, margin_s, due_s, need, usable, surplus = case
    owed, delivered_by_due_minus_margin = need, 0
    for i, surplus_wh in enumerate(surplus):
        job = FlexJob(name="ev", need_wh=owed, max_w=max_w, due_s=max(0.0, due_s - i * slot_s))
        run = plan_flex([job], slot_s=slot_s, surplus_wh=surplus_wh, period_s=slot_s,
                        margin_s=margin_s)["ev"]
        assert 0 <= run <= slot_wh(max_w, slot_s)  # never above the load's power
        assert run <= owed  # never more than it still owes
        owed -= run
        if i < usable:
            delivered_by_due_minus_margin += run
    assert delivered_by_due_minus_margin == need  # done in the whole slots before due − margin


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30_000), st.integers(1, 11_000),
                          st.floats(0, 86_400, allow_nan=False)), min_size=1, max_size=5),
       st.integers(-2000, 30_000))
def test_beyond_what_deadlines_force_the_loads_only_take_the_surplus(specs, surplus):
    jobs = [FlexJob(name=f"j{i}", need_wh=n, max_w=w, due_s=d) for i, (n, w, d) in
            enumerate(specs)]
    runs = plan_flex(jobs, slot_s=900, surplus_wh=surplus, period_s=900, margin_s=900)
    forced = {j.name: must_run_wh(j, slot_s=900, period_s=900, margin_s=900) for j in jobs}
    assert sum(runs[n] - forced[n] for n in runs) <= max(0, surplus)
    for job in jobs:
        assert forced[job.name] <= runs[job.name] <= min(job.need_wh, slot_wh(job.max_w, 900))


def test_without_surplus_a_car_is_deferred_to_its_latest_start_not_charged_at_plug_in():
    # 20 kWh at 7.4 kW (1850 Wh per interval), due in 12 h (48 intervals), one interval of
    # margin: 1500 Wh in interval 36, then 10 full ones, done one interval before it is due.
    slot, owed, runs = 900.0, 20_000, []
    for i in range(48):
        job = FlexJob(name="ev", need_wh=owed, max_w=7400, due_s=12 * 3600 - i * slot)
        run = plan_flex([job], slot_s=slot, surplus_wh=0, period_s=slot, margin_s=slot)["ev"]
        runs.append(run)
        owed -= run
    assert owed == 0
    first = next(i for i, r in enumerate(runs) if r)
    assert first == 36 and runs[36] == 1500 and runs[37:47] == [1850] * 10 and runs[47] == 0


def test_surplus_goes_to_the_earliest_deadline_first():
    late = FlexJob(name="heater", need_wh=4000, max_w=2000, due_s=10 * 3600)
    soon = FlexJob(name="dishwasher", need_wh=1000, max_w=1800, due_s=3 * 3600)
    runs = plan_flex([late, soon], slot_s=900, surplus_wh=600, period_s=900, margin_s=900)
    assert runs == {"dishwasher": 450, "heater": 150}


def test_a_job_that_can_no_longer_make_it_runs_flat_out():
    job = FlexJob(name="ev", need_wh=10_000, max_w=3600, due_s=1800)
    assert plan_flex([job], slot_s=900, surplus_wh=0, period_s=900, margin_s=900) == {"ev": 900}


def test_the_controller_limit_follows_the_plan_and_rises_to_what_the_deadline_forces():
    job = FlexJob(name="ev", need_wh=20_000, max_w=7400, due_s=12 * 3600)
    assert rest_limit_w(job, planned_wh=0, rest_s=600, interval_s=900, margin_s=900) == 0
    assert rest_limit_w(job, planned_wh=500, rest_s=600, interval_s=900, margin_s=900) == 3000
    # a plan made on an old reading said nothing, but the car now owes more than fits later
    late = FlexJob(name="ev", need_wh=20_000, max_w=7400, due_s=2 * 3600 + 600)
    full = rest_limit_w(late, planned_wh=0, rest_s=600, interval_s=900, margin_s=900)
    assert full == 7398  # full power, to the Wh the slot can hold (1233 Wh in 600 s)
    # never above the load's maximum, whatever the plan says
    assert rest_limit_w(job, planned_wh=10**6, rest_s=60, interval_s=900, margin_s=900) == 7400


def test_ready_by_and_the_devices_deadline_whichever_comes_first():
    at_22h = 22 * 3600
    job = load_job("ev", need_wh=5000, max_w=7400, deadline_min=450, ready_by_min=420,
                   time_of_day_s=at_22h)
    assert job is not None and job.due_s == 9 * 3600  # 07:00 tomorrow, before 07:30
    # past the ready-by, the departure still counts
    job = load_job("ev", need_wh=5000, max_w=7400, deadline_min=450, ready_by_min=420,
                   time_of_day_s=7 * 3600 + 600)
    assert job is not None and job.due_s == 1200
    assert load_job("ev", need_wh=0, max_w=7400, deadline_min=450, ready_by_min=None,
                    time_of_day_s=0) is None
    no_deadline = load_job("x", need_wh=1, max_w=1, deadline_min=None, ready_by_min=None,
                           time_of_day_s=0)
    assert no_deadline is not None and no_deadline.due_s == 86_400
    assert parse_hhmm("07:00") == 420 and due_in_s(0, time_of_day_s=86_399) == 1


@pytest.mark.parametrize(("call", "problem"), [
    (lambda: FlexJob(name="x", need_wh=-1, max_w=1, due_s=0), "need_wh and max_w must be >= 0"),
    (lambda: FlexJob(name="x", need_wh=1, max_w=1, due_s=-5), "due_s must be >= 0"),
    (lambda: due_in_s(1440, time_of_day_s=0), "minute of the day 0..1439"),
    (lambda: must_run_wh(FlexJob(name="x", need_wh=1, max_w=1, due_s=1), slot_s=0, period_s=1,
                         margin_s=0), "slot_s and period_s must be > 0"),
    (lambda: plan_flex([FlexJob(name="x", need_wh=1, max_w=1, due_s=1)] * 2, slot_s=1,
                       surplus_wh=0, period_s=1, margin_s=0), "given twice"),
    (lambda: plan_interval(pv_wh=0, load_wh=0, battery=None, prefs=PREFS, tariffs=TARIFFS,
                           interval_s=900, flex={"ev": -1}), "must be non-negative"),
])
def test_bad_input_gets_a_specific_error(call, problem):
    with pytest.raises(ValueError, match=problem):
        call()


BATTERY = BatteryState(capacity_wh=10_000, soc_pct=60, max_charge_w=3000, max_discharge_w=3000)


def test_the_planned_load_enters_the_bid_and_the_battery_does_not_feed_it():
    night = plan_interval(pv_wh=0, load_wh=200, battery=BATTERY, prefs=PREFS, tariffs=TARIFFS,
                          interval_s=900, flex={"ev": 1850})
    # the battery covers the base load's 200 Wh, the car is bought from the market
    assert (night.battery_wh, night.residual_wh, night.side, night.energy_wh) == (
        -200, -1850, "buy", 1850)
    assert night.flex_wh == 1850 and night.flex == (("ev", 1850),)


def test_the_planned_load_takes_the_surplus_before_the_battery():
    noon = plan_interval(pv_wh=1500, load_wh=300, battery=BATTERY, prefs=PREFS, tariffs=TARIFFS,
                         interval_s=900, flex={"heater": 500})
    assert (noon.battery_wh, noon.residual_wh, noon.side) == (700, 0, None)
