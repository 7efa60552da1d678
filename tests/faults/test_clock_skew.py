"""Gateways whose clocks disagree by up to ±2 s still agree every interval.

Each gateway reads its own clock, 2 s ahead of, equal to, or 2 s behind the world's (4 s between
the extremes, more than NTP lets a Pi drift): each closes its gate, clears and commits at a
different moment, and bids travel through the real broker. Every interval after start-up must
still be agreed by all three on one result, and every ledger must hold it once.
"""

import pytest

from tests.street import NAMES, check_consistent, check_ledgers, street

pytestmark = pytest.mark.realtime

SKEW_MS = {"home-1": 2000, "home-2": 0, "home-3": -2000}
INTERVALS = 3


async def test_two_seconds_of_clock_skew_either_way_changes_no_agreement(tmp_path):
    async with street(tmp_path, skew_ms=SKEW_MS) as s:
        clocks = {n: node.clock.now_ms() for n, node in s.nodes.items()}
        assert clocks["home-1"] - clocks["home-3"] >= 3900  # the skew is really there
        window = range(s.now_k() + 2, s.now_k() + 2 + INTERVALS)
        await s.until_closed(window[-1], timeout_s=120)
    agreed = check_consistent(s, window)
    assert all(agreed[k] == set(NAMES) for k in window), agreed
    bidders = {n for n in NAMES for k in window if k in s.bids[n] and s.bids[n][k].plan.side}
    assert bidders == set(NAMES), "every home should have traded in the window"
    check_ledgers(s)
