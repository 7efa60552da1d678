"""One gateway loses its uplink to the broker for two intervals; the others agree without it.

home-3 reaches the broker through a TCP proxy that the test severs (every connection reset, new
ones refused) and later restores. While it is cut off, the broker fires its last will, so the
others count two members present and reach the quorum of two; home-3 hears no quorum and runs
those intervals in safe mode (abstained: no market setpoint). Each interval it hears the
others' result of before its market retires it (the one it is restored in, and the one before,
which ended meanwhile) it adopts from the retained commitments and settles against it, where it
has no position: with the grid, as abstaining would. Once restored it reconnects by itself and
agrees with the others again.
"""

import pytest

from protocols.market import Abstained, Agreed
from tests.street import INTERVAL_MS, NAMES, TIMING, check_consistent, check_ledgers, street

pytestmark = pytest.mark.realtime(cost_s=45)

CUT = "home-3"
OTHERS = tuple(n for n in NAMES if n != CUT)


async def test_a_cut_off_gateway_is_left_out_and_rejoins(tmp_path):
    async with street(tmp_path, proxied=(CUT,)) as s:
        proxy = s.proxies[CUT]
        k0 = s.now_k() + 2
        # cut before k0's bids go out, restore after k0 + 1 has started
        await s.until_sim_s(k0 * INTERVAL_MS / 1000 - TIMING.gate_s - 20)
        proxy.sever()
        cut = range(k0, k0 + 2)
        await s.until_sim_s(cut[-1] * INTERVAL_MS / 1000 + 5)
        proxy.restore()
        rejoined = range(cut[-1] + 2, cut[-1] + 4)
        await s.until_closed(rejoined[-1], timeout_s=120)
    assert proxy.refused > 0, "the cut-off gateway never tried to reconnect"
    agreed = check_consistent(s, range(cut[0], rejoined[-1] + 1))
    for k in cut:
        outcome = s.closed[CUT][k].outcome
        assert agreed[k] == set(OTHERS) | ({CUT} if isinstance(outcome, Agreed) else set()), (
            k, agreed[k])
        assert isinstance(outcome, Abstained) or (
            isinstance(outcome, Agreed) and outcome.late and outcome.position is None), outcome
        # the others' result does not count on the absent gateway
        result = s.closed["home-1"][k].outcome.result
        assert all(CUT not in (t.buyer, t.seller) for t in result.trades), result.trades
    for k in rejoined:
        assert agreed[k] == set(NAMES), (k, agreed[k])
    check_ledgers(s)
