"""Every mechanism through real gateways: three homes' gateways, their devices over Modbus TCP,
the embedded broker and signed messages, agree an interval in which energy changes hands under
each mechanism, and every gateway settles it and accepts its peers' settlements.

Every owner keeps the default wishes: under a pool mechanism those are the tariffs (a pool prices
by formula between them; at wishes inside them bill sharing and SDR traded nothing here).

Trade reduction is the exception to "energy changes hands": it gives up the least valuable of the
m efficient trades to stay truthful, so on a street of three homes, where m is often one, no
energy moving is its correct result. For it the test asks for an interval agreed and settled by
all under it; ``tests/test_mechanisms_gateways.py`` trades energy under it from set bids.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from protocols.market import Agreed
from sim_devices.demo.community import Rules, RunTiming
from tests.street import NAMES, Street, street

pytestmark = pytest.mark.realtime(cost_s=45)

MECHANISMS = ("uniform", "trade-reduction", "mmr", "sdr", "bill-sharing", "cda")
TIMING = RunTiming(interval_s=30, gate_s=10, grace_s=2.5, poll_s=2.5, revert_s=30,
                   ramp_w_per_s=100_000, speed=10.0)


def traded_and_settled(g: Street, *, traded: bool = True) -> int | None:
    """An interval every gateway agreed alike, with energy traded (if ``traded``), that every
    gateway settled and in which each accepted every peer's settlement; None while there is
    none."""
    for k in sorted(g.closed[NAMES[0]]):
        closed = [g.closed[n].get(k) for n in NAMES]
        if any(c is None or not isinstance(c.outcome, Agreed) or c.settlement is None
               for c in closed):
            continue
        outcomes = [c.outcome for c in closed if c is not None and isinstance(c.outcome, Agreed)]
        if len({o.result_hash for o in outcomes}) != 1:
            continue
        if traded and not sum(o.sold_wh for o in outcomes[0].result.outcomes):
            continue
        agents = [g.nodes[n].agent for n in NAMES]
        if all(a is not None and set(a.settlements(k)) == set(NAMES) for a in agents):
            return k
    return None


@pytest.mark.parametrize("mechanism", MECHANISMS)
async def test_real_gateways_agree_trade_and_settle_under(mechanism: str, tmp_path: Path) -> None:
    traded = mechanism != "trade-reduction"
    async with street(tmp_path, rules=Rules(mechanism=mechanism), timing=TIMING) as g:
        await g.until(lambda: traded_and_settled(g, traded=traded) is not None, timeout_s=30)
        k = traded_and_settled(g, traded=traded)
        assert k is not None
        result = g.closed[NAMES[0]][k].outcome
        assert isinstance(result, Agreed) and result.result.mechanism == mechanism
        for name in NAMES:
            agent = g.nodes[name].agent
            assert agent is not None
            assert not {r for r in agent.rejections if r.startswith("settle")}, agent.rejections
