"""The broker dies mid-interval and comes back on the same port, having forgotten everything.

Two restarts through the real embedded broker: one while the gate is open (bids are out, the
broker loses their retained copies), one after the gate closed, while commitments are in flight.
Every gateway must reconnect (its PeerLink republishes its certificate, presence and bids), every
interval must end agreed on one result or abstained (never two results), the market must agree
again afterwards, and no ledger may lose or repeat an interval.
"""

import asyncio

import pytest

from tests.street import (
    INTERVAL_MS,
    NAMES,
    TIMING,
    check_consistent,
    check_ledgers,
    street,
)

pytestmark = pytest.mark.realtime(cost_s=40)

DOWN_SIM_S = 8.0
"""How long the broker stays away, in simulated seconds (0.8 s real)."""


async def _restart_at(s, at_sim_s: float) -> None:
    await s.until_sim_s(at_sim_s)
    port = s.broker_port
    before = {n: node.agent._link.connects for n, node in s.nodes.items()}
    await s.stop_broker()
    await s.until_sim_s(at_sim_s + DOWN_SIM_S)
    await s.start_broker(port=port)
    async with asyncio.timeout(30):
        while any(node.agent._link.connects <= before[n] for n, node in s.nodes.items()):
            await asyncio.sleep(0.02)


async def test_broker_restarts_lose_no_settled_interval_and_split_no_agreement(tmp_path):
    async with street(tmp_path) as s:
        k_open = s.now_k() + 2  # restart while its gate is open, after the bids went out
        start_s = k_open * INTERVAL_MS / 1000
        await _restart_at(s, start_s - TIMING.gate_s - 10)
        k_commit = k_open + 1  # restart between its clearing and its start
        start_s = k_commit * INTERVAL_MS / 1000
        await _restart_at(s, start_s - TIMING.gate_s + TIMING.grace_s + 1)
        after = range(k_commit + 1, k_commit + 3)
        await s.until_closed(after[-1], timeout_s=120)
    agreed = check_consistent(s, range(k_open, after[-1] + 1))
    # a restart while the gate is open costs nothing: the bids are republished in time
    assert agreed[k_open] == set(NAMES), agreed
    # after the restarts the market agrees again, all three gateways on one result
    assert all(agreed[k] == set(NAMES) for k in after), agreed
    ledgers = check_ledgers(s)
    for node in NAMES:
        assert set(range(k_open, after[-1] + 1)) <= set(ledgers[node]), f"{node} lost intervals"
    print({k: sorted(v) for k, v in agreed.items()})
