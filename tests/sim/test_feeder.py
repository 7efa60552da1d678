"""Radial feeder power flow against hand-computed examples, plus its exact substation balance."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim_devices.feeder import FeederLine, NetworkError, RadialFeeder, bus_net_w
from sim_devices.scenario import load_scenario


def _line(bus, parent, *, r, cap=1_000_000, length_m=0):
    return FeederLine(bus=bus, parent=parent, capacity_w=cap, resistance_ohm=r, length_m=length_m)


def test_one_line_importing_hand_computed():
    # 23 kW at 230 V is 100 A; 100² × 0.1 Ω = 1000 W lost, so the substation sends 24 kW.
    feeder = RadialFeeder(root="s", nominal_v=230, lines=[_line("a", "s", r=0.1, cap=23_500)])
    flows = feeder.flows({"a": 23_000})
    a = flows.line("a")
    assert (a.end_w, a.loss_w, a.send_w) == (23_000, 1000, 24_000)
    assert flows.substation_w == 24_000 and flows.loss_w == 1000
    # The rating is checked at the heavier end: 24 kW sent > 23.5 kW rating.
    assert a.peak_w == 24_000 and a.overloaded and flows.overloaded == (a,)
    assert a.loading_pct == pytest.approx(100 * 24_000 / 23_500)


def test_one_line_exporting_loses_on_the_way_up():
    feeder = RadialFeeder(root="s", nominal_v=230, lines=[_line("a", "s", r=0.1, cap=23_000)])
    flows = feeder.flows({"a": -23_000})
    a = flows.line("a")
    # 23 kW injected at the bus end, 1 kW lost, 22 kW arrive at the substation.
    assert (a.end_w, a.loss_w, a.send_w) == (-23_000, 1000, -22_000)
    assert flows.substation_w == -22_000
    assert a.peak_w == 23_000 and not a.overloaded  # at the rating is not over it


def test_tree_carries_downstream_losses_hand_computed():
    #   s ── a (0.1 Ω) ── b (0.2 Ω)        nominal 100 V
    #   └─── c (0 Ω)
    feeder = RadialFeeder(root="s", nominal_v=100, lines=[
        _line("a", "s", r=0.1, cap=3100), _line("b", "a", r=0.2, cap=5000), _line("c", "s", r=0)])
    flows = feeder.flows({"a": 1000, "b": 2000, "c": -500})
    b, a, c = flows.line("b"), flows.line("a"), flows.line("c")
    # b: 2000 W → 20 A → 0.2 × 400 = 80 W; a: 1000 + 2080 = 3080 W → 30.8 A → 94.864 → 95 W.
    assert (b.end_w, b.loss_w, b.send_w) == (2000, 80, 2080)
    assert (a.end_w, a.loss_w, a.send_w) == (3080, 95, 3175)
    assert (c.end_w, c.loss_w, c.send_w) == (-500, 0, -500)
    assert flows.substation_w == 2675 and flows.loss_w == 175
    assert [line.bus for line in flows.overloaded] == ["a"]
    assert [line.bus for line in flows.lines] == ["a", "b", "c"]


def test_power_drawn_at_the_root_needs_no_line():
    feeder = RadialFeeder(root="s", nominal_v=400, lines=[_line("a", "s", r=0.05)])
    flows = feeder.flows({"s": 700})
    assert flows.substation_w == 700 and flows.line("a").end_w == 0 and flows.loss_w == 0


@settings(max_examples=150, deadline=None)
@given(data=st.data(), n=st.integers(1, 12))
def test_substation_balance_is_exact_on_any_tree(data, n):
    parents = [data.draw(st.integers(0, i)) for i in range(n)]  # bus i+1 hangs on an earlier bus
    buses = ["s"] + [f"b{i + 1}" for i in range(n)]
    lines = [_line(buses[i + 1], buses[p], r=data.draw(st.floats(0, 0.5))) for i, p in
             enumerate(parents)]
    feeder = RadialFeeder(root="s", nominal_v=400, lines=lines)
    net = {bus: data.draw(st.integers(-50_000, 50_000)) for bus in buses}
    flows = feeder.flows(net)
    assert flows.substation_w == sum(net.values()) + flows.loss_w
    assert all(line.loss_w >= 0 for line in flows.lines)
    assert flows.loss_w == sum(line.loss_w for line in flows.lines)


def test_lossless_flow_is_the_subtree_sum():
    feeder = RadialFeeder(root="s", nominal_v=400, lines=[
        _line("a", "s", r=0), _line("b", "a", r=0), _line("c", "a", r=0)])
    flows = feeder.flows({"a": 100, "b": -300, "c": 50})
    assert flows.line("a").end_w == -150 and flows.substation_w == -150


def test_bus_net_w_sums_homes_per_bus():
    assert bus_net_w({"h1": 100, "h2": -40, "h3": 5}, bus_of={"h1": "a", "h2": "a", "h3": "b"}) \
        == {"a": 60, "b": 5}
    with pytest.raises(NetworkError, match="'h9' is on no bus"):
        bus_net_w({"h9": 1}, bus_of={})


def test_for_market_turns_ratings_into_energy_per_interval():
    feeder = RadialFeeder(root="s", nominal_v=400, lines=[
        _line("a", "s", r=0.1, cap=40_000, length_m=300), _line("b", "a", r=0.1, length_m=200)])
    market = feeder.for_market(interval_s=900)
    assert {line.bus: line.capacity_wh for line in market.lines} == {"a": 10_000, "b": 250_000}
    assert market.distance_m("b", "s") == 500


@pytest.mark.parametrize(("lines", "net", "match"), [
    ([_line("a", "s", r=0.1)], {"z": 1}, r"unknown buses \['z'\]"),
    ([_line("a", "b", r=0.1), _line("b", "a", r=0.1)], {}, "loop|not connected"),
    ([_line("a", "x", r=0.1)], {}, "not connected to the root"),
    ([_line("a", "s", r=0.1), _line("a", "s", r=0.2)], {}, "more than one line"),
])
def test_bad_feeders_and_inputs_name_the_problem(lines, net, match):
    with pytest.raises(NetworkError, match=match):
        RadialFeeder(root="s", nominal_v=400, lines=lines).flows(net)


def test_bad_line_and_voltage_are_refused():
    with pytest.raises(NetworkError, match="line a: capacity_w must be > 0"):
        _line("a", "s", r=0.1, cap=0)
    with pytest.raises(NetworkError, match="line a: resistance_ohm must be >= 0"):
        _line("a", "s", r=-1)
    with pytest.raises(NetworkError, match="nominal_v must be > 0"):
        RadialFeeder(root="s", nominal_v=0, lines=[])


def test_feeder_100_has_one_congested_line_at_midday_and_none_in_the_evening():
    scenario = load_scenario("feeder-100")
    assert scenario.feeder is not None
    feeder, bus_of = scenario.feeder.radial(), scenario.bus_of()
    world = scenario.world(dt_ms=300_000)  # 5-minute steps: the sun moves slowly

    def flows():
        return feeder.flows(bus_net_w({h.name: h.meter.power_w for h in world.homes},
                                      bus_of=bus_of))

    world.advance(3600)  # 12:00, batteries idle: every roof exports
    midday = flows()
    assert [line.bus for line in midday.overloaded] == ["west"]
    assert midday.substation_w < 0 and midday.loss_w > 0
    assert midday.substation_w == sum(h.meter.power_w for h in world.homes) + midday.loss_w
    world.advance(8 * 3600)  # 20:00, the sun is down
    assert flows().overloaded == ()
