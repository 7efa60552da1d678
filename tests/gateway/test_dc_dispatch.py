"""The converter dispatcher carries the cleared energy over the DC bus, never leaves the envelope,
and waits whenever the bus, the readings or the agreement are in doubt."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.devices.dcdc import ConverterState, DcDcReading
from gateway.envelope import BatteryEnvelope, ConverterEnvelope
from gateway.home.dc_dispatch import DcTarget, command_converter, trip_seen

BATTERY = BatteryEnvelope(soc_min_pct=10, soc_max_pct=95, max_charge_w=3000,
                          max_discharge_w=3000, ramp_w_per_s=1000)
ENV = ConverterEnvelope(max_current_a=10, bus_v_min=320, bus_v_max=380)


def reading(*, state=ConverterState.WAIT, trips=(), volts=350.0, amps=0.0, limit_a=20.0,
            v_min=320.0, v_max=380.0) -> DcDcReading:
    return DcDcReading(state=state, trips=frozenset(trips), bus_voltage_v=volts, current_a=amps,
                       power_w=round(volts * amps), current_limit_a=limit_a,
                       bus_voltage_min_v=v_min, bus_voltage_max_v=v_max, revert_remaining_s=0,
                       port_voltage_v=50.0)


def command(**kw):
    args = dict(master=False, target=DcTarget(energy_wh=-350), remaining_s=900.0,
                delivered_wh=0.0, reading=reading(), soc_pct=50.0, envelope=ENV,
                battery=BATTERY, bus_setpoint_v=350.0, dt_s=60.0, length_s=900.0)
    args.update(kw)
    return command_converter(**args)


readings = st.builds(
    reading,
    state=st.sampled_from(list(ConverterState)),
    trips=st.sets(st.sampled_from(["OVER_VOLTAGE", "UNDER_VOLTAGE", "OVER_CURRENT", "REVERTED"])),
    volts=st.floats(0, 600),
    amps=st.floats(-30, 30),
    limit_a=st.floats(0.01, 40),
    v_min=st.floats(200, 360),
    v_max=st.floats(340, 500),
)
targets = st.none() | st.builds(DcTarget, energy_wh=st.integers(-10_000, 10_000))


@given(master=st.booleans(), target=targets, remaining=st.floats(-10, 2000),
       delivered=st.floats(-10_000, 10_000), reading=st.none() | readings,
       soc=st.none() | st.floats(0, 100), latched=st.sampled_from(["", "tripped earlier"]))
def test_every_command_is_inside_the_envelope(master, target, remaining, delivered, reading, soc,
                                              latched):
    c = command(master=master, target=target, remaining_s=remaining, delivered_wh=delivered,
                reading=reading, soc_pct=soc, latched_trip=latched)
    limit = min(ENV.max_current_a, reading.current_limit_a if reading else ENV.max_current_a)
    assert abs(c.current_a) <= limit and c.limit_a <= limit
    if c.mode == "cc":
        assert not master and target is not None and target.energy_wh != 0
        assert c.current_a * target.energy_wh > 0  # a seller never draws, a buyer never injects
        assert reading is not None and max(ENV.bus_v_min, reading.bus_voltage_min_v) \
            <= reading.bus_voltage_v <= min(ENV.bus_v_max, reading.bus_voltage_max_v)
        assert abs(c.current_a * reading.bus_voltage_v) <= BATTERY.max_charge_w + 1e-6
        assert not (c.current_a > 0 and soc >= BATTERY.soc_max_pct)
        assert not (c.current_a < 0 and soc <= BATTERY.soc_min_pct)
    else:
        assert c.current_a == 0
    if c.mode == "cv":
        assert master and c.voltage_v == 350.0 and c.limit_a > 0
    if reading is None or soc is None or latched or (reading and trip_seen(reading)):
        assert c.mode == "wait" and c.safe_reason
    if target is None and not master:
        assert c.mode == "wait"


@given(reading=readings, target=targets)
def test_a_tripped_converter_waits_and_latches(reading, target):
    tripped = trip_seen(reading)
    for master in (False, True):
        c = command(master=master, target=target, reading=reading)
        if tripped:
            assert (c.mode, c.trip) == ("wait", tripped)
            assert c.safe_reason.startswith("dc bus fault")


@given(volts=st.floats(0, 319.99) | st.floats(380.01, 1000), target=targets)
def test_a_member_waits_on_a_bus_outside_its_window(volts, target):
    c = command(reading=reading(volts=volts, state=ConverterState.CC_DISCHARGE), target=target)
    assert c.mode == "wait" and "outside" in c.safe_reason


@given(energy=st.integers(-5000, 5000), reason=st.sampled_from(["", "pending", "no-quorum"]))
def test_no_agreement_means_wait_for_a_member(energy, reason):
    c = command(target=None, safe_reason=reason)
    # the home's AC side knows it has no agreement; the converter only waits
    assert (c.mode, c.reason, c.safe_reason) == ("wait", reason or "no agreement", "")


def test_seller_injects_its_sold_energy_over_the_interval():
    # 350 Wh over 900 s = 1400 W onto the bus at 350 V: 4 A from the port onto the bus
    c = command(target=DcTarget(energy_wh=-350))
    assert (c.mode, c.current_a, c.limits) == ("cc", -4.0, ())
    buyer = command(target=DcTarget(energy_wh=350))
    assert (buyer.mode, buyer.current_a) == ("cc", 4.0)


def test_the_loop_spreads_what_is_left_over_the_time_left():
    target = DcTarget(energy_wh=-350)
    on_track = command(target=target, remaining_s=450, delivered_wh=-175)
    behind = command(target=target, remaining_s=450, delivered_wh=-100)
    ahead = command(target=target, remaining_s=450, delivered_wh=-250)
    assert on_track.current_a == -4.0
    assert behind.current_a < on_track.current_a < ahead.current_a  # more injected when behind
    # ...but never more than half again the even pace: the rest is not squeezed into less time
    squeezed = command(target=target, remaining_s=60, delivered_wh=0)
    assert (squeezed.current_a, squeezed.limits) == (-6.0, ("catch-up",))
    overshot = command(target=target, remaining_s=450, delivered_wh=-400)
    assert overshot.mode == "wait"  # never trades back what it delivered too early
    done = command(target=target, remaining_s=450, delivered_wh=-350)
    assert (done.mode, done.reason, done.safe_reason) == ("wait", "cleared energy delivered", "")
    # less than a control period left: what is missing is spread over one period, not less
    assert command(target=target, remaining_s=1, delivered_wh=-345, dt_s=60).current_a == -0.85


def test_current_limit_battery_power_and_soc_window_bite():
    big = command(target=DcTarget(energy_wh=-3000))  # 12 kW asked
    assert big.current_a == -8.57 and big.limits == ("max-current", "max-discharge")
    device = command(target=DcTarget(energy_wh=-500), reading=reading(limit_a=2.5))
    assert device.current_a == -2.5 and "max-current" in device.limits
    empty = command(target=DcTarget(energy_wh=-350), soc_pct=10.0)
    assert empty.mode == "wait" and not empty.safe_reason and "soc-min" in empty.reason
    full = command(target=DcTarget(energy_wh=350), soc_pct=95.0)
    assert full.mode == "wait" and "soc-max" in full.reason


def test_master_holds_the_bus_whether_or_not_it_traded():
    for target in (None, DcTarget(energy_wh=500)):
        c = command(master=True, target=target, reading=reading(limit_a=20.0))
        # capped by its battery: 3000 W at 350 V
        assert (c.mode, c.voltage_v, c.limit_a, c.limits) == ("cv", 350.0, 8.57,
                                                               ("battery-power",))
    # out of window but not tripped: the master is the one that brings the bus back
    restoring = command(master=True, reading=reading(volts=385.0))
    assert restoring.mode == "cv"
    tripped = command(master=True, reading=reading(volts=385.0, state=ConverterState.TRIPPED,
                                                   trips={"OVER_VOLTAGE"}))
    assert tripped.mode == "wait" and "OVER_VOLTAGE" in tripped.trip
    latched = command(master=True, latched_trip="converter tripped earlier")
    assert latched.mode == "wait"


def test_reverted_alone_is_not_a_fault_and_contradicting_limits_mean_wait():
    assert command(reading=reading(trips={"REVERTED"})).mode == "cc"
    c = command(reading=reading(v_min=390.0, v_max=400.0))
    assert c.mode == "wait" and "limits unusable" in c.safe_reason


def test_envelope_refuses_nonsense():
    with pytest.raises(ValueError):
        ConverterEnvelope(max_current_a=0, bus_v_min=320, bus_v_max=380)
    with pytest.raises(ValueError):
        ConverterEnvelope(max_current_a=10, bus_v_min=380, bus_v_max=320)


@given(port_w=st.integers(-10_000, 10_000), ac_w=st.integers(-10_000, 10_000))
def test_battery_envelope_beside_the_converter_shares_the_cells(port_w, ac_w):
    left = BATTERY.beside(port_w)
    w, _ = left.clamp(requested_w=ac_w, soc_pct=50, previous_w=0, dt_s=1000)
    assert -BATTERY.max_discharge_w <= w <= BATTERY.max_charge_w
    assert w + port_w <= max(BATTERY.max_charge_w, port_w)
    assert w + port_w >= min(-BATTERY.max_discharge_w, port_w)
