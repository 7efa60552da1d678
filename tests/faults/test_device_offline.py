"""A device goes silent: its gateway stops offering what it cannot keep and falls to safe mode.

For three simulated minutes home-1's battery and home-2's meter answer nothing (the served
device drops every response, as a dead RS-485 node would). Through the real Modbus sockets:

- home-1 (the seller) plans the intervals it bids while its battery is silent without the
  battery: no offer counts on energy it cannot command; its controller writes no setpoint (the
  battery's own revert timer takes it to idle, checked on the simulated device itself);
- home-2 (a buyer) cannot meter, so it makes no bid at all while the meter is silent;
- the market keeps agreeing (one result per interval), every interval is in every ledger, and
  once the devices answer again both gateways trade normally.
"""

import asyncio

import pytest

from protocols.market import Agreed
from sim_devices.faults import FaultSpec
from tests.street import (
    INTERVAL_MS,
    NAMES,
    TIMING,
    check_consistent,
    check_ledgers,
    street,
)

pytestmark = pytest.mark.realtime(cost_s=100)

START_S = 11 * 3600 + 20
K0 = (START_S + 160) // 60 + 1  # the first interval bid while the devices are silent
OFFLINE = (K0 * 60 - 80.0, (K0 + 2) * 60.0)  # simulated seconds
FAULTS = {("home-1", "battery"): FaultSpec(offline=(OFFLINE,)),
          ("home-2", "meter"): FaultSpec(offline=(OFFLINE,))}
BID_LEAD_S = TIMING.gate_s + TIMING.interval_s / 4


def bid_time_s(k: int) -> float:
    return k * INTERVAL_MS / 1000 - BID_LEAD_S


async def test_a_silent_device_stops_offers_and_sends_its_gateway_to_safe_mode(tmp_path):
    async with street(tmp_path, faults=FAULTS, start_s=START_S) as s:
        assert s.world.now_s < OFFLINE[0], "start-up took longer than the test allows"
        home1, home2 = s.nodes["home-1"], s.nodes["home-2"]
        battery = s.world.home("home-1")
        safe: dict[str, set[str]] = {"home-1": set(), "home-2": set()}
        idle_while_offline = False
        while s.world.now_s < OFFLINE[1]:
            if s.world.now_s >= OFFLINE[0]:
                safe["home-1"].add(home1.state.safe_reason)
                safe["home-2"].add(home2.state.safe_reason)
                if home1.devices["battery"].poller.stale and battery.battery.command_w == 0:
                    idle_while_offline = True
            await asyncio.sleep(0.01)
        recovered = range(K0 + 4, K0 + 5)
        await s.until_closed(recovered[-1], timeout_s=120)
        fresh_again = (not home1.devices["battery"].poller.stale
                       and not home2.devices["meter"].poller.stale)
    silent = [k for k in range(K0 - 1, K0 + 4) if OFFLINE[0] + 20 <= bid_time_s(k) < OFFLINE[1]]
    assert silent, "no bid time fell inside the silent window"
    for k in silent:
        plan = s.bids["home-1"][k].plan
        assert plan.battery_wh == 0, f"home-1 counted on its silent battery for {k}: {plan}"
        assert k not in s.bids["home-2"], f"home-2 bid for {k} without a meter"
    assert any("battery stale" in r for r in safe["home-1"]), safe
    assert any("meter stale" in r for r in safe["home-2"]), safe
    assert idle_while_offline, "the battery never went idle while its gateway could not reach it"
    assert fresh_again
    agreed = check_consistent(s, range(K0, recovered[-1] + 1))
    for k in recovered:
        assert agreed[k] == set(NAMES), agreed
        assert k in s.bids["home-2"], f"home-2 did not bid again for {k}"
    check_ledgers(s)


LEAD_FRACTION = 0.6
"""Bids go out 36 simulated s before the gate here, so a device can go stale in between."""
LATE_LEAD_S = TIMING.gate_s + TIMING.interval_s * LEAD_FRACTION
K1 = (START_S + 160) // 60 + 1  # the interval whose offers the devices fail under


def late_bid_time_s(k: int) -> float:
    return k * INTERVAL_MS / 1000 - LATE_LEAD_S


# Silent from 2 s before the bid: the readings are fresh when the bid is made (stale after 3
# polls of 5 s) and stale well before the last replacement (the grace, 5 s, before the gate).
WITHDRAWN = (late_bid_time_s(K1) - 2.0, K1 * 60.0 + 20.0)
AFTER_BID = {("home-1", "pv"): FaultSpec(offline=(WITHDRAWN,)),
             ("home-2", "meter"): FaultSpec(offline=(WITHDRAWN,))}


async def test_an_offer_out_when_its_device_goes_silent_is_withdrawn_before_the_gate(tmp_path):
    """home-1 sells and its PV inverter, home-2 buys and its meter, fall silent after their bids
    are out: each replaces its bid before the gate, and the agreed result trades neither."""
    async with street(tmp_path, faults=AFTER_BID, start_s=START_S,
                      bid_lead_fraction=LEAD_FRACTION) as s:
        assert s.world.now_s < late_bid_time_s(K1 - 1), "start-up took longer than the test allows"
        await s.until_closed(K1 + 3, timeout_s=180)
    agreed = check_consistent(s, range(K1 - 1, K1 + 4))
    before = s.outcomes(K1 - 1)["home-3"]
    assert agreed[K1 - 1] == set(NAMES) and isinstance(before, Agreed), agreed
    positions = {o.node: o for o in before.result.outcomes}
    assert positions["home-1"].sold_wh > 0 and positions["home-2"].bought_wh > 0, positions

    offers = {n: [e.plan for e in s.offers[n][K1]] for n in ("home-1", "home-2")}
    assert offers["home-1"][0].side == "sell" and offers["home-1"][0].energy_wh > 0, offers
    assert offers["home-2"][0].side == "buy" and offers["home-2"][0].energy_wh > 0, offers
    assert all(plans[-1].side is None for plans in offers.values()), offers

    assert agreed[K1] == set(NAMES), agreed
    result = s.outcomes(K1)["home-3"].result
    # Both withdrew (0 Wh): neither takes part in the clearing, so neither has a position.
    assert not {"home-1", "home-2"} & {o.node for o in result.outcomes}, result.outcomes
    assert not [t for t in result.trades if {"home-1", "home-2"} & {t.buyer, t.seller}], result
    for node in ("home-1", "home-2"):
        assert s.outcomes(K1)[node].position is None  # type: ignore[union-attr]

    assert agreed[K1 + 3] == set(NAMES), agreed
    assert s.offers["home-2"][K1 + 3], "home-2 did not bid again once its meter answered"
    check_ledgers(s)
