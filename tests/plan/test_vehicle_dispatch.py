"""V2G from the owner's file to the charger's setpoint: the consent is refused without a charger,
the car is planned as a vehicle only on a believable pack, and dispatch feeds the home only as far
as the floor, the charger and the ready-by energy allow on the live reading, whatever the plan
asked or the charger reports."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import ConfigError, parse_config
from gateway.dashboard.preferences import OwnerPreferences
from gateway.devices import LoadKind, LoadReading, PackReading
from gateway.home import v2g

H = 3600.0
CHARGER = {"name": "ev", "kind": "load", "url": "tcp://127.0.0.1:5020"}


def _raw(**tables: object) -> dict[str, object]:
    key = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"node": "home-1", "key_file": "node.key", "certificate_file": "node.cert",
            "state_dir": "state",
            "market": {"community": "elm-street", "authority_key": key.hex()}, **tables}


def test_the_consent_is_taken_with_a_charger_and_reaches_the_plan(tmp_path: Path) -> None:
    config = parse_config(_raw(preferences={"v2g_min_soc_pct": 50}, devices=[CHARGER]),
                          source="gw.toml", base=tmp_path)
    assert config.plan_preferences(config.preferences).v2g_min_soc_pct == 50
    # The dashboard's preferences do not carry it: the file's consent stays.
    owner = OwnerPreferences.from_config(config.preferences)
    assert config.plan_preferences(owner.to_config()).v2g_min_soc_pct == 50


@pytest.mark.parametrize(("tables", "expected"), [
    ({"preferences": {"v2g_min_soc_pct": 50}},
     "gw.toml: (top level): preferences.v2g_min_soc_pct needs a charger that can feed back"),
    ({"preferences": {"v2g_min_soc_pct": 120}, "devices": [CHARGER]},
     "gw.toml: preferences.v2g_min_soc_pct: Input should be less than or equal to 100"),
])
def test_a_consent_that_cannot_hold_is_one_line_naming_the_key(
        tmp_path: Path, tables: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(_raw(**tables), source="gw.toml", base=tmp_path)
    lines = str(err.value).splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), lines


def _reading(*, soc: float = 60.0, need_wh: int = 0, deadline_min: int | None = 450,
             pack: bool = True, max_dis: int = 5_000) -> LoadReading:
    return LoadReading(
        kind=LoadKind.EVSE, connected=True, need_wh=need_wh, deadline_min=deadline_min,
        max_w=7_400, limit_w=7_400, limited=False, power_w=0, energy_wh=0,
        revert_remaining_s=None, max_discharge_w=max_dis,
        pack=PackReading(soc_pct=soc, capacity_wh=40_000, max_discharge_w=max_dis,
                         discharge_w=0) if pack else None)


_EVENING = 19 * H  # 12.5 h before the 07:30 deadline


def _feed(reading: LoadReading, *, planned_wh: int = -1_000, floor: float | None = 30.0,
          hold_s: float = 900.0, time_of_day_s: float = _EVENING,
          ready_by_min: int | None = None) -> v2g.Discharge:
    return v2g.discharge(reading, planned_wh=planned_wh, interval_s=900.0, hold_s=hold_s,
                         floor_pct=floor, ready_by_min=ready_by_min,
                         time_of_day_s=time_of_day_s, margin_s=900.0)


def test_the_car_feeds_the_plans_rate_within_the_chargers_limit() -> None:
    assert _feed(_reading()) == v2g.Discharge(4_000)  # 1,000 Wh in 15 min
    assert _feed(_reading(), planned_wh=-3_000) == v2g.Discharge(5_000)  # WDisMax


def test_no_consent_no_pack_or_no_plan_to_feed_means_no_discharge() -> None:
    assert _feed(_reading(), floor=None) == v2g.Discharge(0, "no-consent")
    assert _feed(_reading(pack=False)) == v2g.Discharge(0, "no-pack")
    assert _feed(_reading(), planned_wh=500) == v2g.Discharge(0)


def test_at_or_below_the_floor_the_car_never_feeds_the_home() -> None:
    assert _feed(_reading(soc=30.0)) == v2g.Discharge(0, "at-floor")
    assert _feed(_reading(soc=12.0)) == v2g.Discharge(0, "at-floor")


def test_near_the_floor_the_setpoint_could_not_cross_it_even_if_the_gateway_fell_silent() -> None:
    """0.5 % above a 30 % floor is 200 Wh of cells; a setpoint held 30 min may take 176 Wh AC."""
    decision = _feed(_reading(soc=30.5), hold_s=1_800)
    assert decision.watts == math.floor(200 * v2g.EFFICIENCY / 0.5)
    assert decision.watts * 0.5 / v2g.EFFICIENCY <= 200


def test_the_ready_by_energy_is_kept_whatever_the_plan_asked() -> None:
    """At 06:00 with 90 min to the 07:30 deadline and 8 kWh owed, the 7.4 kW charger needs
    65 min of it after the margin: nothing is left to feed."""
    late = _reading(need_wh=8_000)
    assert _feed(late, time_of_day_s=6 * H) == v2g.Discharge(0, "ready-by")
    # The owner's ready-by earlier than the charger's deadline counts first.
    assert _feed(_reading(need_wh=8_000), time_of_day_s=4.5 * H,
                 ready_by_min=6 * 60) == v2g.Discharge(0, "ready-by")
    assert _feed(_reading(need_wh=8_000), time_of_day_s=4.5 * H).watts > 0


@settings(max_examples=300, deadline=None)
@given(soc=st.floats(0, 100), floor=st.none() | st.floats(0, 100), need=st.integers(0, 60_000),
       planned=st.integers(-20_000, 2_000), hold=st.floats(1, 3_600),
       tod=st.floats(0, 86_399), ready=st.none() | st.integers(0, 1_439))
def test_a_setpoint_never_takes_the_car_below_its_floor_or_past_its_ready_by(
        soc: float, floor: float | None, need: int, planned: int, hold: float, tod: float,
        ready: int | None) -> None:
    reading = _reading(soc=soc, need_wh=need)
    decision = _feed(reading, planned_wh=planned, floor=floor, hold_s=hold, time_of_day_s=tod,
                     ready_by_min=ready)
    if decision.watts == 0:
        return
    assert floor is not None and planned < 0
    assert 0 < decision.watts <= 5_000
    cells_wh = decision.watts * max(1.0, hold) / H / v2g.EFFICIENCY  # held the whole revert time
    assert soc / 100 * 40_000 - cells_wh >= floor / 100 * 40_000 - 1e-6
    due = v2g.due_s(reading, ready_by_min=ready, time_of_day_s=tod)
    assert due is not None
    owed_after = need + cells_wh / v2g.EFFICIENCY
    assert owed_after <= 7_400 * (due - 900 - max(1.0, hold)) / H + 1e-6


def test_the_car_is_planned_as_a_vehicle_only_on_a_pack_and_discharges_only_with_consent() -> None:
    assert v2g.vehicle("ev", _reading(pack=False), floor_pct=30, ready_by_min=None,
                       time_of_day_s=_EVENING, margin_s=900) is None
    car = v2g.vehicle("ev", _reading(need_wh=5_000), floor_pct=30, ready_by_min=None,
                      time_of_day_s=_EVENING, margin_s=900)
    assert car is not None and car.v2g and car.v2g_min_soc_pct == 30
    assert car.target_soc_pct == pytest.approx(60 + 5_000 * v2g.EFFICIENCY / 400)
    assert car.ready_by_s == pytest.approx(12.5 * H - 900)
    assert car.departs_s == pytest.approx(12.5 * H)
    refused = v2g.vehicle("ev", _reading(), floor_pct=None, ready_by_min=None,
                          time_of_day_s=_EVENING, margin_s=900)
    assert refused is not None and not refused.v2g
    below = v2g.vehicle("ev", _reading(soc=20), floor_pct=30, ready_by_min=None,
                        time_of_day_s=_EVENING, margin_s=900)
    assert below is not None and not below.v2g
