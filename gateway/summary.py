"""What a community's run amounted to: bills, local energy, prices, self-sufficiency.

Pure: the closed intervals of every gateway in, figures out. Two comparisons are offered:

* **same flows, grid prices** (``no_market_bill``): the energy each meter actually measured,
  priced at the retail and feed-in tariffs as if there were no market. It isolates what the
  market's prices did for each home.
* **a real baseline run** (``trade=False`` in :func:`gateway.community.run_community`): the same
  homes and weather with every gateway in self-consumption only; compare two summaries. It also
  catches a dispatch that is worse than plain self-consumption.

Self-sufficiency is the share of the homes' consumption not bought from the retail grid. Without a
market each home is on its own: everything its meter imports comes from the grid. With the market,
energy bought from a neighbour is local, so only the settled grid import counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gateway.community import CommunityLog
from gateway.market.session import Agreed
from protocols.clearing import Tariffs


@dataclass(frozen=True, slots=True)
class HomeSummary:
    name: str
    bill: int
    """µ, + = paid: P2P trades as settled plus every deviation at the grid tariffs."""
    no_market_bill: int
    """µ: the same metered energy at retail (import) and feed-in (export)."""
    bought_wh: int
    sold_wh: int
    imported_wh: int
    exported_wh: int
    grid_import_wh: int
    """What the grid supplied after the trades (settled)."""


@dataclass(frozen=True, slots=True)
class CommunitySummary:
    homes: tuple[HomeSummary, ...]
    intervals: int
    agreed: int
    abstained: int
    traded_wh: int
    min_price: int | None
    max_price: int | None

    def self_sufficiency(self, consumption_wh: int, *, market: bool = True) -> float:
        """Share of ``consumption_wh`` not bought from the retail grid."""
        if consumption_wh <= 0:
            return 0.0
        grid = sum(h.grid_import_wh if market else h.imported_wh for h in self.homes)
        return max(0.0, 1.0 - grid / consumption_wh)


def summarise(log: CommunityLog, *, tariffs: Tariffs) -> CommunitySummary:
    homes = []
    agreed = abstained = 0
    prices: list[int] = []
    counted: set[int] = set()
    for name in log.homes:
        bill = no_market = bought = sold = imported = exported = grid_import = 0
        for k in log.complete:
            closed = log.closed[k][name]
            figures = closed.settlement
            if figures is None:
                continue
            bill += figures.money
            delivered = figures.delivered_wh
            imported += max(delivered, 0)
            exported += max(-delivered, 0)
            no_market += (max(delivered, 0) * tariffs.retail_price
                          - max(-delivered, 0) * tariffs.feed_in_price)
            grid_import += figures.grid_import_wh
            outcome = closed.outcome
            if isinstance(outcome, Agreed) and outcome.position is not None:
                bought += outcome.position.bought_wh
                sold += outcome.position.sold_wh
            if k not in counted:
                counted.add(k)
                if isinstance(outcome, Agreed):
                    agreed += 1
                    for trade in outcome.result.trades:
                        prices.append(trade.price)
                else:
                    abstained += 1
        homes.append(HomeSummary(
            name=name, bill=bill, no_market_bill=no_market, bought_wh=bought, sold_wh=sold,
            imported_wh=imported, exported_wh=exported, grid_import_wh=grid_import,
        ))
    return CommunitySummary(
        homes=tuple(homes), intervals=len(log.complete), agreed=agreed, abstained=abstained,
        traded_wh=sum(h.bought_wh for h in homes),
        min_price=min(prices, default=None), max_price=max(prices, default=None),
    )


def format_summary(
    summary: CommunitySummary, *, consumption_wh: Mapping[str, int] | None = None
) -> str:
    lines = [
        f"{summary.intervals} intervals: {summary.agreed} agreed, {summary.abstained} abstained",
        f"energy traded locally: {summary.traded_wh / 1000:.2f} kWh",
        "P2P price range: " + (
            "no trades" if summary.min_price is None
            else f"{summary.min_price}-{summary.max_price} µ/Wh "
                 f"({summary.min_price / 1000:.3f}-{summary.max_price / 1000:.3f} per kWh)"
        ),
    ]
    if consumption_wh:
        total = sum(consumption_wh.values())
        lines.append(
            f"community self-sufficiency: {summary.self_sufficiency(total):.1%} with the market, "
            f"{summary.self_sufficiency(total, market=False):.1%} without"
        )
    lines.append(
        f"{'home':10} {'bought':>9} {'sold':>9} {'bill':>10} {'no market':>10} {'saved':>8}"
    )
    for h in summary.homes:
        lines.append(
            f"{h.name:10} {h.bought_wh / 1000:7.2f} kWh {h.sold_wh / 1000:6.2f} kWh "
            f"{h.bill / 1e6:10.3f} {h.no_market_bill / 1e6:10.3f} "
            f"{(h.no_market_bill - h.bill) / 1e6:8.3f}"
        )
    return "\n".join(lines)
