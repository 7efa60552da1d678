"""Scenario files: the shipped ones load and build worlds; bad files name the key and problem."""

import tomllib
from datetime import time

import pytest

from sim_devices.dcbus import ConverterSpec, DcBusSpec
from sim_devices.faults import FaultSpec
from sim_devices.scenario import (
    ScenarioError,
    load_scenario,
    parse_scenario,
    shipped_scenarios,
)
from sim_devices.world import ROLES

BASE = """
name = "test-street"
[market]
community = "test-street"
[[homes]]
name = "home-1"
[[homes]]
name = "home-2"
"""


def _with(**edits):
    """BASE with ``key.path = value`` edits (TOML values), as an engineer would edit the file."""
    raw = tomllib.loads(BASE)
    for path, value in edits.items():
        keys = path.split("__")
        table = raw
        for key in keys[:-1]:
            table = table[int(key)] if key.isdigit() else table.setdefault(key, {})
        table[keys[-1]] = tomllib.loads(f"v = {value}")["v"]
    return raw


def test_the_scenarios_are_shipped_as_package_data():
    assert shipped_scenarios() == ["dc-bus-cluster", "dynamic-street", "feeder-100",
                                   "sunny-street", "v2g-evening"]


def test_sunny_street_is_six_homes_on_ac_with_its_feeder_and_faults():
    s = load_scenario("sunny-street")
    assert s.start == time(8, 0) and s.start_s == 8 * 3600
    assert s.dc_bus is None and s.feeder is not None
    specs = s.home_specs()
    assert [h.name for h in specs] == [f"home-{i}" for i in range(1, 7)]
    assert all(h.dcdc is None for h in specs)
    assert specs[0].pv_peak_w == 8000 and specs[1].flex_wh == 4000
    assert specs[4].cloudiness == 0.3  # unset in the file: HomeSpec's default
    assert set(s.bus_of().values()) == {"east", "west"}
    assert s.faults() == {("home-6", "pv"): FaultSpec(drop_p=0.05, delay_s=0.02)}
    world = s.world()
    assert world.now_s == 8 * 3600 and world.speed == 60.0 and world.dt_ms == 1000
    assert world.home("home-6").devices["pv"].faults == FaultSpec(drop_p=0.05, delay_s=0.02)
    assert world.home("home-1").devices["pv"].faults is None
    # The homes with a flexible load also serve it as a controllable load ("flex", model 64220).
    assert {h.name: tuple(h.devices) for h in world.homes} == {
        h.name: ROLES + (("flex",) if h.flex_wh else ()) for h in specs}
    assert world.home("home-2").devices["flex"].role == "load"


def test_dc_bus_cluster_puts_four_converters_on_one_bus():
    s = load_scenario("dc-bus-cluster")
    assert s.dc_bus is not None and s.dc_bus.spec() == DcBusSpec(
        nominal_v=350, v_min=320, v_max=380, capacitance_mf=500)
    specs = s.home_specs()
    assert len(specs) == 4
    assert specs[0].dcdc == ConverterSpec(max_a=20)
    assert specs[1].dcdc == ConverterSpec(max_a=10, efficiency=0.96)
    world = s.world()
    assert world.dc_bus.voltage_v == 350.0 and not world.dc_bus.tripped
    assert all("dcdc" in h.devices for h in world.homes)


def test_feeder_100_expands_groups_into_a_hundred_homes_on_four_buses():
    s = load_scenario("feeder-100")
    names = [h.name for h in s.home_specs()]
    assert len(names) == len(set(names)) == 100
    assert names[:2] == ["trunk-1", "trunk-2"] and names[-1] == "west-25"
    buses = s.bus_of()
    assert {bus: list(buses.values()).count(bus) for bus in set(buses.values())} == {
        "trunk": 25, "north": 25, "south": 25, "west": 25}
    assert {(home, role) for home, role in s.faults()} == {
        (f"west-{i}", "meter") for i in range(1, 26)}
    # Alike homes still get their own weather: seeded from the world seed and their own name.
    world = s.world(dt_ms=60_000)
    world.step()
    assert len({h.pv.available_w for h in world.homes if h.name.startswith("west-")}) > 1


def test_a_scenario_file_by_path_and_overrides(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('seed = 5\nstart = "13:30"\n' + BASE)
    s = load_scenario(path)
    assert s.name == "test-street" and s.seed == 5 and s.start_s == 13 * 3600 + 30 * 60
    assert load_scenario(str(path)) == s
    world = s.world(speed=500.0, dt_ms=250)
    assert world.speed == 500.0 and world.dt_ms == 250


@pytest.mark.parametrize(("edits", "message"), [
    ({"homes__1__battery_wh": "-5"}, "homes.1.battery_wh: must be > 0"),
    ({"homes__0__pv_peak": "3"}, "homes.0.pv_peak: unknown key (check the spelling)"),
    ({"homes__0__pv_peak_w": "40000"}, "homes.0.pv_peak_w: must be <= 32767"),
    ({"tariffs__feed_in_price": "400"}, "tariffs: feed_in_price must be below retail_price"),
    ({"market__gate_s": "900"}, "market: gate_s + grace_s must be shorter than interval_s"),
    ({"market__mechanism": '"best"'}, "market.mechanism: must be 'uniform', 'trade-reduction'"),
    ({"homes__0__faults__meter__offline": "[[100, 50]]"},
     "homes.0.faults.meter.offline: window 0 [100.0, 50.0] must have start < end"),
    ({"homes__0__faults__meter__drop_p": "1.5"}, "homes.0.faults.meter.drop_p: must be <= 1"),
    ({"homes__0__faults__inverter__drop_p": "0.1"},
     "homes.0.faults.inverter: must be 'meter', 'pv', 'battery', 'dcdc', 'ev' or 'flex'"),
    ({"homes__0__faults__ev__drop_p": "0.1"}, "homes.0: faults.ev given but the home has no ev"),
    ({"homes__0__faults__dcdc__drop_p": "0.1"},
     "homes.0: faults.dcdc given but the home has no dcdc converter"),
    ({"homes__1__name": '"home-1"'}, "homes.1.name: home 'home-1' is also homes.0"),
    ({"homes__0__name": '"Home 1"'}, "homes.0.name: must be lowercase letters, digits and '-'"),
    ({"homes__0__count": "3", "homes__1__name": '"home-1-2"'},
     "homes.1.name: home 'home-1-2' is also homes.0"),
    ({"homes__0__name": '"' + "a" * 30 + '"', "homes__0__count": "100"},
     "homes.0: home names must be at most 32 characters"),
    ({"homes__0__count": "3", "homes__0__seed": "4"},
     "homes.0: give no seed with count > 1"),
    ({"homes__0__soc_min_pct": "90", "homes__0__soc_max_pct": "80"},
     "homes.0: battery SoC window must satisfy 0 <= min < max <= 100"),
    ({"homes__0__flex_wh": "3000"}, "homes.0: flexible load with energy_wh needs power_w > 0"),
    ({"homes__0__ev": "{battery_wh = 40000, max_charge_w = 7000, arrival_h = 8, "
                      "departure_h = 8}"}, "homes.0.ev: ev arrival_h and departure_h must differ"),
    ({"homes__0__ev": "{max_charge_w = 7000}"}, "homes.0.ev.battery_wh: required"),
    ({"homes__0__bus": '"x"'}, "homes.0.bus: 'x' is not a bus of the [feeder]"),
    ({"feeder": '{lines = [{bus = "a", parent = "b", capacity_w = 1, resistance_ohm = 0}]}'},
     "feeder: bus 'b' is not connected to the root 'substation'"),
    ({"feeder": '{lines = [{bus = "a", parent = "substation", capacity_w = 0, '
                'resistance_ohm = 0}]}'}, "feeder.lines.0.capacity_w: must be > 0"),
    ({"feeder": '{lines = [{bus = "a", parent = "substation", capacity_w = 9, '
                'resistance_ohm = 0}]}'}, "homes.0.bus: required when the scenario has a [feeder]"),
    ({"homes__0__dcdc": "{max_a = 10}"}, "homes.0.dcdc: a converter needs a [dc_bus]"),
    ({"dc_bus": "{nominal_v = 350}"}, "dc_bus: no home has a dcdc converter"),
    ({"dc_bus": "{v_min = 360}", "homes__0__dcdc": "{max_a = 10}"},
     "dc_bus: DC bus needs 0 < v_min < nominal_v < v_max"),
    ({"dc_bus": "{}", "homes__0__dcdc": "{max_a = 400}"},
     "homes.0.dcdc: converter max_a must be in 1..327 A"),
    ({"start": '"25:00"'}, "start: Input should be in a valid time format"),
    ({"speed": "0"}, "speed: must be > 0"),
    ({"market": "{}"}, "market.community: required"),
])
def test_bad_scenarios_name_the_key_path_and_the_problem(edits, message):
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(_with(**edits), source="street.toml")
    assert f"street.toml: {message}" in str(caught.value)


def test_every_problem_is_listed_one_per_line():
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(_with(homes__0__battery_wh="0", homes__1__cloudiness="2", speed="-1"),
                       source="s.toml")
    assert str(caught.value).splitlines() == [
        "s.toml: speed: must be > 0.0",
        "s.toml: homes.0.battery_wh: must be > 0",
        "s.toml: homes.1.cloudiness: must be <= 1.0",
    ]


def test_missing_unknown_and_broken_files(tmp_path):
    with pytest.raises(ScenarioError, match="nowhere.toml: no such file"):
        load_scenario(tmp_path / "nowhere.toml")
    with pytest.raises(ScenarioError, match="no scenario 'rainy-street'; shipped scenarios are "
                                            "dc-bus-cluster, dynamic-street, feeder-100, "
                                            "sunny-street"):
        load_scenario("rainy-street")
    broken = tmp_path / "broken.toml"
    broken.write_text('name = "x"\n[market\n')
    with pytest.raises(ScenarioError, match="broken.toml: not valid TOML"):
        load_scenario(broken)


def test_an_ev_becomes_the_homes_car_behind_a_charger_device():
    s = parse_scenario(_with(homes__1__ev="{battery_wh = 40000, max_charge_w = 7400}"),
                       source="s.toml")
    assert s.homes[1].ev is not None and s.homes[1].ev.spec().battery_wh == 40_000
    spec = s.home_specs()[1]
    assert spec.ev == s.homes[1].ev.spec()
    home = s.world().home(spec.name)
    assert home.devices["ev"].role == "load" and home.state.ev is not None
    assert home.load_roles["ev"].state == 0  # DEFAULT: charges on its own until told otherwise


def test_what_the_devices_cannot_serve_is_refused_when_the_world_is_built():
    s = parse_scenario(_with(), source="s.toml")
    with pytest.raises(ScenarioError, match="test-street: speed must be > 0"):
        s.world(speed=0)
