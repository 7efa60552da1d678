"""A community on a tariff schedule, end to end over a real broker: market agents agree each
interval at that interval's prices, each home's :class:`IntervalCloser` settles its deviation
at them with tagged meter readings, and every peer checks the others' settlements at them too.

The schedule's prices change from one interval to the next (a day-ahead file in miniature,
a segment per interval). A fourth member, dave, holds a file 10 µ/Wh dearer:
its commitments are refused as "tariff-mismatch" and never help agree a result, and a
settlement it prices at its own file is refused as "settle-mismatch" where the same figures at
the community's prices are accepted.

The street runs until two intervals at different prices are settled by everyone (bounded); the
test asserts what was agreed and settled, nothing about timing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.home.closing import IntervalCloser
from gateway.ledger import Ledger, LedgerOwner
from gateway.market.agent import MarketAgent
from gateway.market.peerlink import PeerLink
from gateway.plan.tariff_schedule import Segment, TariffSchedule
from protocols.clearing import Tariffs
from protocols.market import Abstained, Agreed, MeterKey, Timing, topics
from protocols.market.settlement import no_position
from protocols.messages import Settlement
from protocols.settlement import settle
from protocols.signing import generate_key, sign
from tests.gateway.ledger_street import TaggingMeter
from tests.market.community import COMMUNITY, PARAMS, Community, now_ms

HONEST = ("alice", "bob", "carol")
OUTSIDER = "dave"
METER_KEYS = {node: MeterKey(device_id=f"meter-{node}", key=node.encode() * 8) for node in HONEST}
HOUR_MS = 3_600_000
MAX_INTERVALS = 30
BIDS = {"alice": ("sell", 3_000, 100), "bob": ("buy", 1_500, 250), "carol": ("buy", 1_000, 200)}
DEVIATION = {"alice": 200, "bob": 200, "carol": -200}
"""Metered minus cleared, Wh: alice delivers 200 Wh short and bob takes 200 Wh more (both
imported at retail), carol takes 200 Wh less (exported at feed-in)."""


def prices(k: int) -> tuple[int, int]:
    """Interval k's (retail, feed-in) µ/Wh: no two intervals in a row alike."""
    return 300 + 40 * (k % 5), 80 + 10 * (k % 3)


def schedule(timing: Timing, first: int, *, dearer: int = 0) -> TariffSchedule:
    """Interval k's prices as a day-ahead segment of its own, from ``first`` on."""
    segments = tuple(
        Segment(start_ms=timing.start_ms(k), end_ms=timing.end_ms(k),
                import_price=prices(k)[0] + dearer, export_price=prices(k)[1], where=f"k={k}")
        for k in range(first, first + MAX_INTERVALS + 8))
    return TariffSchedule(fixed=PARAMS.tariffs, zone=ZoneInfo("UTC"), segments=segments)


async def until(check: Callable[[], bool], timeout_s: float = 10) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.05)


def all_hold(agents: dict[str, MarketAgent], k: int, count: int) -> bool:
    """Every honest home holds ``count`` accepted settlements of ``k``."""
    return all(len(agents[n].settlements(k)) == count for n in HONEST)


def all_refused(agents: dict[str, MarketAgent], reason: str) -> bool:
    return all(agents[n].rejections[reason] == 1 for n in HONEST)


async def test_each_interval_settles_at_its_own_prices_and_a_member_on_another_file_is_refused(
    any_broker: str, tmp_path: Path,
) -> None:
    community = Community(timing=Timing(epoch_ms=now_ms(), length_ms=2000, gate_ms=1200,
                                        grace_ms=250))
    timing = community.timing
    first = timing.open_interval(now_ms())
    keys = {node: generate_key() for node in (*HONEST, OUTSIDER)}
    settled: dict[int, dict[str, Settlement]] = {}  # by interval: every home's, as all hold
    async with AsyncExitStack() as stack:
        agents: dict[str, MarketAgent] = {}
        for node, key in keys.items():
            agents[node] = await stack.enter_async_context(community.agent(
                any_broker, node, key, meter_keys=METER_KEYS, energy_interval_ms=HOUR_MS,
                schedule=schedule(timing, first, dearer=10 if node == OUTSIDER else 0)))
        closers = {}
        for node in HONEST:
            owner = LedgerOwner(key=keys[node], certificate=community.certificate(node, keys[node]))
            ledger = stack.enter_context(Ledger.open(tmp_path / f"{node}.db", owner=owner))
            closers[node] = IntervalCloser(node=node, agent=agents[node], ledger=ledger)
        meters = {node: TaggingMeter(METER_KEYS[node]) for node in HONEST}
        await asyncio.sleep(0.3)  # certificates and presence reach everyone
        for _ in range(MAX_INTERVALS):
            k = community.next_interval(margin_ms=600)
            for node, (side, energy, price) in BIDS.items():
                await agents[node].submit_bid(k, side, energy, price)  # type: ignore[arg-type]
            async with asyncio.timeout(30):
                outcomes = {node: await agent.outcome(k) for node, agent in agents.items()}
            await asyncio.sleep(max(0, timing.end_ms(k) - now_ms()) / 1000 + 0.05)
            assert isinstance(outcomes[OUTSIDER], Abstained)  # no one counts its commitments
            if not all(isinstance(outcomes[n], Agreed) for n in HONEST):
                for node in HONEST:  # a busy host missed the quorum: settled with the grid
                    closers[node].close(k, outcomes[node], delivered_wh=0,
                                        meter=meters[node].read(0))
                continue
            agreed = outcomes["alice"]
            assert isinstance(agreed, Agreed) and OUTSIDER not in agreed.committed_by
            for node in HONEST:
                outcome = outcomes[node]
                assert isinstance(outcome, Agreed) and outcome.position is not None
                delivered = (outcome.position.bought_wh - outcome.position.sold_wh
                             + DEVIATION[node])
                closers[node].close(k, outcome, delivered_wh=delivered,
                                    meter=meters[node].read(delivered))
            # every home holds every home's settlement of k, its own and the peers' it accepted
            await until(partial(all_hold, agents, k, len(HONEST)))
            held = [agents[n].settlements(k) for n in HONEST]
            assert held[0] == held[1] == held[2]
            settled[k] = held[0]
            if len({prices(j) for j in settled}) >= 2:
                break
        else:
            raise AssertionError(f"no two intervals at different prices in {MAX_INTERVALS}")

        # dave settles the last interval with no position, 300 Wh imported: at its own file's
        # prices it is refused everywhere, at the community's the same figures are accepted
        last = max(settled)
        retail, feed_in = prices(last)
        for dearer, reason in ((10, "settle-mismatch"), (0, None)):
            figures = settle(no_position(OUTSIDER), delivered_wh=300,
                             tariffs=Tariffs(retail_price=retail + dearer, feed_in_price=feed_in))
            claim = Settlement(
                community=COMMUNITY, interval=last, node=OUTSIDER, **figures._asdict(),
                meter_import_wh=300, meter_export_wh=0, meter_seq=1, meter_tag="ab" * 32)
            async with PeerLink(broker_url=any_broker, community=COMMUNITY,
                                node="auditor") as link:
                await link.publish(topics.settle(COMMUNITY, last, OUTSIDER),
                                   sign("settle", claim, keys[OUTSIDER]).to_bytes())
            if reason is not None:
                await until(partial(all_refused, agents, reason))
        await until(partial(all_hold, agents, last, len(HONEST) + 1))
        assert agents["alice"].settlements(last)[OUTSIDER].money == 300 * retail
        for node in HONEST:
            assert agents[node].rejections["tariff-mismatch"] >= 1
        assert agents[OUTSIDER].rejections["tariff-mismatch"] >= 1

    for k, by_node in settled.items():
        retail, feed_in = prices(k)
        assert {n: agents["alice"].tariffs(k) for n in HONEST} == {
            n: Tariffs(retail_price=retail, feed_in_price=feed_in) for n in HONEST}
        for node, s in by_node.items():
            assert s.delivered_wh - s.cleared_wh == DEVIATION[node]
            assert (s.grid_import_wh, s.grid_export_wh) == (max(DEVIATION[node], 0),
                                                            max(-DEVIATION[node], 0))
        # the P2P money nets to zero: what the homes pay in all is the grid's balance, to the µ
        grid_import = sum(s.grid_import_wh for s in by_node.values())
        grid_export = sum(s.grid_export_wh for s in by_node.values())
        assert (grid_import, grid_export) == (400, 200)
        paid = sum(s.money for s in by_node.values())
        assert paid == grid_import * retail - grid_export * feed_in
