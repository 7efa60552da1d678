"""Plausibility of device readings (gateway/devices/plausibility.py), on SunSpec register images.

Samples are built the way a device serves them (``role_registers``: the protocol's layout, every
point encoded by ``protocols.sunspec``) and decoded by the gateway's own model reader. The
properties: a device that behaves physically is never refused; a byte corrupted anywhere in a
reply is refused or leaves the values a driver uses plausible; what is refused is refused with a
``BadDeviceData`` naming the point, never another exception.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from functools import cache

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.devices import Battery, CommonInfo, DiscoveredDevice, ModbusTcpBus
from gateway.devices.errors import BadDeviceData
from gateway.devices.model_reader import ModelData, ModelLocation, decode_model, model_definition
from gateway.devices.plausibility import (
    MARGIN,
    REFRESH_S,
    TRANSIENT_W,
    ImplausibleReading,
    PlausibilityGuard,
    Sample,
    Uses,
    absolute_problems,
)
from protocols.sunspec import DeviceMap
from tests.gateway.test_devices_helpers import (
    BATTERY,
    METER,
    ROLE_VALUES,
    PointValues,
    role_registers,
)

CAPACITY_WH = 10_000
RATING_W = 3000


def sample_of(role: str, values: PointValues, *, flip: tuple[int, int] | None = None,
              registers: Mapping[tuple[int, str], int] | None = None) -> Sample:
    """The models a driver reads from a ``role`` device holding ``values``; ``flip`` XORs one
    byte of the reply image, (byte index from the first model after the common one, mask);
    ``registers`` sets a point's register to what no encoder would write."""
    regs = role_registers(role, values)
    dmap = DeviceMap.for_role(role)
    for (model_id, name), register in (registers or {}).items():
        regs[dmap.address(model_id, name)] = register
    blocks = [b for b in dmap.blocks if b.model_id != 1]
    if flip is not None:
        index, mask = flip
        first = blocks[0].address
        address = first + index // 2 % (blocks[-1].end - first)
        regs[address] ^= mask << 8 if index % 2 == 0 else mask
    out: dict[int, ModelData] = {}
    for block in blocks:
        loc = ModelLocation(model_id=block.model_id, address=block.address, length=block.length)
        image = tuple(regs[a] for a in range(block.address, block.end))
        out[block.model_id] = decode_model(loc, model_definition(loc), image)
    return out


def battery(soc_pct: float, power_w: int) -> PointValues:
    return {**BATTERY, (802, "SoC_SF"): -2, (802, "SoC"): round(soc_pct * 100),
            (713, "SoC"): round(soc_pct * 10), (802, "W"): power_w,
            (802, "WChaRteMax"): RATING_W, (802, "WDisChaRteMax"): RATING_W,
            (124, "WChaMax"): RATING_W, (802, "WHRtg"): CAPACITY_WH, (713, "WHRtg"): CAPACITY_WH}


def meter(power_w: int, import_wh: int, export_wh: int) -> PointValues:
    return {**METER, (203, "W"): power_w, (203, "WphA"): power_w,
            (203, "TotWhImp"): import_wh, (203, "TotWhExp"): export_wh}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_every_role_as_served_is_plausible():
    for role, values in ROLE_VALUES.items():
        assert absolute_problems(sample_of(role, values)) == [], role
        guard = PlausibilityGuard(now_s=FakeClock())
        for _ in range(2):
            guard.check(sample_of(role, values), started_s=guard.begin())


steps = st.lists(st.tuples(st.floats(0.2, 120), st.integers(-RATING_W, RATING_W)),
                 min_size=1, max_size=30)


@given(start=st.floats(0, 100), steps=steps)
def test_a_battery_within_its_rating_is_never_refused(start, steps):
    clock = FakeClock()
    guard = PlausibilityGuard(now_s=clock)
    soc = start
    guard.check(sample_of("battery", battery(soc, 0)), started_s=guard.begin())
    for dt_s, power_w in steps:
        started = guard.begin()
        clock.now += dt_s
        soc = min(100.0, max(0.0, soc + 100 * power_w * dt_s / 3600 / CAPACITY_WH))
        guard.check(sample_of("battery", battery(soc, power_w)), started_s=started)


@given(refresh_s=st.floats(0.2, REFRESH_S), start=st.floats(0, 100),
       reads=st.lists(st.tuples(st.floats(0.1, 30), st.integers(-RATING_W, RATING_W)),
                      min_size=1, max_size=30))
@example(refresh_s=5.0, start=50.0, reads=[(0.1, RATING_W), (4.8, RATING_W), (0.2, RATING_W)])
def test_a_battery_that_refreshes_its_registers_in_steps_is_never_refused(refresh_s, start, reads):
    """A device copies its measurement into its registers every ``refresh_s``, not continuously:
    a read soon after another may show a whole refresh's charge (a re-read 1 s after a poll, of
    a pack refreshed every 5 s, shows 6 s of charging)."""
    clock = FakeClock()
    guard = PlausibilityGuard(now_s=clock)
    soc, shown, power_w, refreshed = start, start, 0, clock.now
    guard.check(sample_of("battery", battery(shown, 0)), started_s=guard.begin())
    for dt_s, new_power_w in reads:
        clock.now += dt_s
        while refreshed + refresh_s <= clock.now:  # the pack charges; its registers follow
            refreshed += refresh_s
            soc = min(100.0, max(0.0, soc + 100 * power_w * refresh_s / 3600 / CAPACITY_WH))
            shown = soc
        power_w = new_power_w
        guard.check(sample_of("battery", battery(shown, power_w)), started_s=guard.begin())


@given(steps=st.lists(st.tuples(st.floats(0.2, 120), st.integers(-30_000, 30_000)),
                      min_size=1, max_size=30))
def test_a_meter_counting_what_it_measures_is_never_refused(steps):
    """Power is constant between two samples, at what the later one shows; counters are the
    meter's whole Wh (truncated)."""
    clock = FakeClock()
    guard = PlausibilityGuard(now_s=clock)
    imported, exported = 5000.0, 700.0
    guard.check(sample_of("meter", meter(0, int(imported), int(exported))), started_s=guard.begin())
    for dt_s, power_w in steps:
        started = guard.begin()
        clock.now += dt_s
        imported += max(power_w, 0) * dt_s / 3600
        exported += max(-power_w, 0) * dt_s / 3600
        guard.check(sample_of("meter", meter(power_w, int(imported), int(exported))),
                    started_s=started)


@given(back=st.integers(1, 4000), then=st.integers(0, 3))
def test_a_counter_that_goes_back_is_refused_until_the_next_sample_confirms_it(back, then):
    clock = FakeClock()
    guard = PlausibilityGuard(now_s=clock)
    guard.check(sample_of("meter", meter(1000, 5000, 700)), started_s=guard.begin())
    started = guard.begin()
    clock.now += 5
    with pytest.raises(ImplausibleReading, match="203 TotWhImp: counter went back"):
        guard.check(sample_of("meter", meter(1000, 5000 - back, 700)), started_s=started)
    # A meter replaced or reset says it again: the change is confirmed, not refused forever.
    started = guard.begin()
    clock.now += 5
    guard.check(sample_of("meter", meter(1000, 5000 - back + then, 700)), started_s=started)


@given(power_w=st.integers(-30_000, 30_000), dt_s=st.floats(0.5, 60), extra=st.integers(3, 10**6))
def test_a_counter_rising_faster_than_the_power_seen_is_refused(power_w, dt_s, extra):
    clock = FakeClock()
    guard = PlausibilityGuard(now_s=clock)
    guard.check(sample_of("meter", meter(power_w, 5000, 700)), started_s=guard.begin())
    started = guard.begin()
    clock.now += dt_s
    most = (MARGIN * abs(power_w) + TRANSIENT_W) * (dt_s + REFRESH_S) / 3600
    jumped = meter(power_w, 5000 + int(most) + extra, 700)
    with pytest.raises(ImplausibleReading, match="TotWhImp: counter rose"):
        guard.check(sample_of("meter", jumped), started_s=started)


@pytest.mark.parametrize(("point", "register", "why"), [
    ((802, "SoC"), 10_001, "802 SoC: 100.01 % outside 0..100"),
    ((713, "SoC"), 1200, "713 SoC: 120.0 % outside 0..100"),
    ((802, "W"), 0x10000 - 3751, "802 W: -3751 W beyond the rating 3000"),
    ((802, "W_SF"), 11, "802 W_SF: scale factor 11 outside -10..10"),
    ((802, "State"), 42, "802 State: 42 is none of its symbols"),
])
def test_values_no_battery_can_hold_are_refused(point, register, why):
    corrupted = sample_of("battery", battery(55, 0), registers={point: register})
    with pytest.raises(ImplausibleReading, match=why):
        PlausibilityGuard().check(corrupted, started_s=None)


@pytest.mark.parametrize(("point", "raw", "why"), [
    ((802, "SoC_SF"), -3, "802 SoC_SF: -2 → -3"),
    ((124, "WChaMax"), 4000, "124 WChaMax: 3000 → 4000"),
    ((802, "V"), None, "802 V: implemented → not implemented"),
])
def test_a_changed_structure_is_refused_once_then_confirmed(point, raw, why):
    guard = PlausibilityGuard()
    guard.check(sample_of("battery", battery(55, 0)), started_s=None)
    changed = {**battery(55, 0), point: raw}
    with pytest.raises(ImplausibleReading, match=why):
        guard.check(sample_of("battery", changed), started_s=None)
    guard.check(sample_of("battery", changed), started_s=None)


@settings(max_examples=500)
@given(index=st.integers(0, 10**6), mask=st.integers(1, 255), dt_s=st.floats(0.5, 30))
@example(index=10816, mask=128, dt_s=1.0)  # WHRtg's scale factor turned "not implemented"
def test_a_corrupted_battery_reply_is_refused_or_still_plausible(index, mask, dt_s):
    """One byte flipped anywhere in the reply, as the simulator's corrupt fault does."""
    clock = FakeClock()
    guard = PlausibilityGuard(now_s=clock)
    genuine = battery(55, 1000)
    guard.check(sample_of("battery", genuine), started_s=guard.begin())
    started = guard.begin()
    clock.now += dt_s
    try:
        corrupted = sample_of("battery", genuine, flip=(index, mask))
        guard.check(corrupted, started_s=started)
    except ImplausibleReading:
        return
    except BadDeviceData as exc:  # the model's ID or L: the reader refuses the map itself
        assert "the device's map changed" in str(exc)
        return
    b, c = corrupted[802], corrupted[124]
    try:
        # a point whose scale factor the flip made "not implemented" is refused when it is read
        # (BadDeviceData, a failed poll), never taken as a number
        soc, w = b.number("SoC"), b.number("W")
        ratings = (b.number("WChaRteMax"), b.number("WDisChaRteMax"), b.number("WHRtg"),
                   c.number("WChaMax"))
    except BadDeviceData as exc:
        assert "not implemented" in str(exc)
        return
    most = (MARGIN * RATING_W + TRANSIENT_W) * (dt_s + REFRESH_S) / 3600 / CAPACITY_WH * 100 + 0.02
    assert abs(soc - 55) <= most
    assert ratings == (RATING_W, RATING_W, CAPACITY_WH, RATING_W)
    assert abs(w) <= MARGIN * RATING_W


@settings(max_examples=500)
@given(index=st.integers(0, 10**6), mask=st.integers(1, 255), dt_s=st.floats(0.5, 30))
def test_a_corrupted_meter_reply_never_moves_a_counter_back_or_past_the_power(index, mask, dt_s):
    clock = FakeClock()
    guard = PlausibilityGuard(now_s=clock)
    guard.check(sample_of("meter", meter(1234, 123456, 6543)), started_s=guard.begin())
    started = guard.begin()
    clock.now += dt_s
    try:
        corrupted = sample_of("meter", meter(1234, 123456, 6543), flip=(index, mask))
        guard.check(corrupted, started_s=started)
    except BadDeviceData:
        return
    m = corrupted[203]
    power = max(1234, abs(m.number("W")))
    most = (MARGIN * power + TRANSIENT_W) * (dt_s + REFRESH_S) / 3600 + 2
    assert 0 <= m.number("TotWhImp") - 123456 <= most
    assert 0 <= m.number("TotWhExp") - 6543 <= most
    assert m.number("W_SF") == 0 and m.number("TotWh_SF") == 0


@cache
def battery_uses() -> Uses:
    """What the battery driver reads of the battery role's map (124, 802, 713)."""
    dmap = DeviceMap.for_role("battery")
    chain = tuple(ModelLocation(model_id=b.model_id, address=b.address, length=b.length)
                  for b in dmap.blocks)
    common = CommonInfo(manufacturer="m", model="m", options=None, version=None, serial="s",
                        device_address=None)
    device = DiscoveredDevice(unit=1, base_address=dmap.base, chain=chain, common=common)

    async def driver() -> Battery:  # a bus is made in a running loop (it is never opened here)
        return Battery(bus=ModbusTcpBus(host="127.0.0.1", port=9), device=device)

    return asyncio.run(driver()).uses


def test_an_unknown_enumeration_value_nobody_reads_is_logged_once_not_refused(
        caplog: pytest.LogCaptureFixture) -> None:
    """802 State is not what the battery driver reads: a value its symbols lack (a newer or a
    draft version of the model) is noted once; the same value in a point it reads refuses."""
    caplog.set_level(logging.WARNING, logger="gateway.devices.plausibility")
    odd = sample_of("battery", battery(55, 0), registers={(802, "State"): 42})
    guard = PlausibilityGuard(uses=battery_uses(), label="bat")
    for _ in range(3):
        guard.check(odd, started_s=None)
    assert [r.getMessage() for r in caplog.records] == [
        "bat: model 802 State: 42 is none of its symbols (a point the driver does not read: "
        "ignored)"]
    assert absolute_problems(odd, uses=battery_uses()) == []
    with pytest.raises(ImplausibleReading, match="802 SoC: 100.01 % outside"):
        PlausibilityGuard(uses=battery_uses()).check(
            sample_of("battery", battery(55, 0), registers={(802, "SoC"): 10_001}),
            started_s=None)


def window(soc: int, low: int, high: int, sf: int) -> PointValues:
    """The battery at 55 % with 802's percentages held raw under scale factor ``sf``."""
    return {**battery(55, 0), (802, "SoC_SF"): sf, (802, "SoC"): soc, (802, "SoCMin"): low,
            (802, "SoCMax"): high}


@pytest.mark.parametrize(("rescaled", "accepted"), [
    (window(551, 100, 950, -1), True),  # the device rescaled (and the charge moved a little)
    (window(5500, 1000, 9500, -3), False),  # the scale factor alone changed: ×1/10, as garbage
])
def test_a_run_time_scale_factor_change_is_taken_when_it_keeps_the_quantity(
        rescaled: PointValues, accepted: bool) -> None:
    """802's scale factors are not static: a device may rescale while it runs."""
    guard = PlausibilityGuard(uses=battery_uses())
    guard.check(sample_of("battery", window(5500, 1000, 9500, -2)), started_s=None)
    if accepted:
        guard.check(sample_of("battery", rescaled), started_s=None)
    else:
        with pytest.raises(ImplausibleReading, match="802 SoC_SF: -2 → -3"):
            guard.check(sample_of("battery", rescaled), started_s=None)


def test_a_static_scale_factor_change_is_refused_once_whatever_it_scales() -> None:
    """713's scale factors are static: a change is a structure change."""
    guard = PlausibilityGuard(uses=battery_uses())
    guard.check(sample_of("battery", battery(55, 0)), started_s=None)
    changed = {**battery(55, 0), (713, "Pct_SF"): -2, (713, "SoC"): 5500}
    with pytest.raises(ImplausibleReading, match="713 Pct_SF: -1 → -2"):
        guard.check(sample_of("battery", changed), started_s=None)
    guard.check(sample_of("battery", changed), started_s=None)


@settings(max_examples=300)
@given(index=st.integers(0, 10**6), mask=st.integers(1, 255), dt_s=st.floats(0.5, 30))
@example(index=2698, mask=128, dt_s=1.0)  # WHRtg's scale factor turned "not implemented"
def test_a_corrupted_reply_checked_on_what_the_driver_reads_leaves_those_values_plausible(
        index: int, mask: int, dt_s: float) -> None:
    clock = FakeClock()
    guard = PlausibilityGuard(now_s=clock, uses=battery_uses())
    genuine = battery(55, 1000)
    guard.check(sample_of("battery", genuine), started_s=guard.begin())
    started = guard.begin()
    clock.now += dt_s
    try:
        corrupted = sample_of("battery", genuine, flip=(index, mask))
        guard.check(corrupted, started_s=started)
        b, c = corrupted[802], corrupted[124]
        # what the driver reads: a point whose scale factor the flip made "not implemented" is
        # refused here (BadDeviceData, a failed poll), never read as a number
        soc, w = b.number("SoC"), b.number("W")
        ratings = (b.number("WDisChaRteMax"), b.number("WHRtg"), c.number("WChaMax"))
    except BadDeviceData:
        return
    most = (MARGIN * RATING_W + TRANSIENT_W) * (dt_s + REFRESH_S) / 3600 / CAPACITY_WH * 100 + 0.02
    assert abs(soc - 55) <= most
    assert ratings == (RATING_W, CAPACITY_WH, RATING_W)
    assert abs(w) <= MARGIN * RATING_W
