"""The grid operator's limits as Wh per step, §14a dimming windows in local time, and a plan that
keeps them at the meter."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from gateway.ems import BatteryState
from gateway.plan import GridConfig, GridLimits, Planner, Problem, Vehicle
from tests.plan.homes import PREFS

BERLIN = ZoneInfo("Europe/Berlin")


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def test_limits_become_whole_wh_per_step_rounded_down() -> None:
    caps = GridLimits(export_w=4_999, import_w=0).caps(start_ms=0, step_s=900, steps=3)
    assert caps.export_wh == (1_249,) * 3 and caps.import_wh == (0,) * 3
    assert caps.dimmed_wh == (None,) * 3


def test_dimming_windows_in_local_time_wrapping_midnight() -> None:
    """22:30–00:30 Berlin time; quarter-hour steps from 22:00 local: the steps that meet the
    window, a partly covered one included, are capped."""
    limits = GridConfig(dimmed_import_w=4_200, dimming=("22:30-00:30",),
                        timezone="Europe/Berlin").limits()
    caps = limits.caps(start_ms=_ms("2026-01-15T22:00+01:00"), step_s=900, steps=12)
    assert caps.dimmed_wh == (None, None) + (1_050,) * 8 + (None, None)
    partial = limits.caps(start_ms=_ms("2026-01-15T22:20+01:00"), step_s=900, steps=1)
    assert partial.dimmed_wh == (1_050,)


@pytest.mark.parametrize(("fields", "error"), [
    ({"dimming": ("17:00-20:00",)}, "dimming windows need dimmed_import_w"),
    ({"dimmed_import_w": 4200, "dimming": ("5pm-8pm",)}, "is not a window like"),
    ({"dimmed_import_w": 4200, "dimming": ("17:00-17:00",)}, "starts and ends at the same"),
    ({"timezone": "Europe/Atlantis"}, "unknown zone"),
    ({"export_limit_w": -1}, "greater than or equal to 0"),
    ({"export_limit": 0}, "Extra inputs are not permitted"),
])
def test_grid_config_mistakes_are_refused(fields: dict[str, object], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        GridConfig.model_validate(fields)


def test_dimmed_steps_cap_what_the_home_draws_beyond_its_base_load() -> None:
    """An 11 kW charger under a 4.2 kW dimming cap in the first hour, which is the cheap one:
    the car charges 1,050 Wh a step there (the base load of 300 Wh comes on top and is never
    dimmed) and the rest of its 18 kWh later, at full power."""
    steps = 10
    car = Vehicle(name="ev", battery=BatteryState(
        capacity_wh=60_000, soc_pct=20, max_charge_w=11_000, max_discharge_w=0,
        charge_efficiency=1.0), target_soc_pct=50, ready_by_s=steps * 900)
    limits = GridLimits(dimmed_w=4_200, dimming=((0, 60),), zone=ZoneInfo("UTC"))
    problem = Problem(step_s=900.0, pv_wh=(0,) * steps, load_wh=(300,) * steps,
                      import_price=(200,) * 4 + (300,) * 6, export_price=(80,) * steps,
                      prefs=PREFS, vehicle=car,
                      grid=limits.caps(start_ms=0, step_s=900.0, steps=steps))
    day = Planner().plan(problem, max_buy_wh=0, max_sell_wh=0).day
    assert day is not None and not day.violations
    assert day.ev_charge_wh[:4] == pytest.approx((1_050,) * 4)
    assert all(day.meter_wh(t) <= 1_050 + 300 + 1e-6 for t in range(4))
    assert sum(day.ev_charge_wh) == pytest.approx(18_000)
    assert max(day.ev_charge_wh[4:]) == pytest.approx(2_750)
