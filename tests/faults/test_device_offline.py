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

from sim_devices.faults import FaultSpec
from tests.faults.street import (
    INTERVAL_MS,
    NAMES,
    TIMING,
    check_consistent,
    check_ledgers,
    street,
)

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
                if home1.battery.stale and battery.battery.command_w == 0:
                    idle_while_offline = True
            await asyncio.sleep(0.01)
        recovered = range(K0 + 4, K0 + 5)
        await s.until_closed(recovered[-1], timeout_s=120)
        fresh_again = not home1.battery.stale and not home2.meter.stale
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
