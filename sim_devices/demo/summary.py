"""What a community's run amounted to: bills, local energy, prices, self-sufficiency, and the
per-interval series the report plots.

Pure: the closed intervals of every gateway in, figures out. The comparison that matters is a
**real baseline run** (``trade=False`` in :func:`.community.run_community`): the same homes,
weather and day with every gateway in self-consumption only, settled the same way. Comparing two
summaries shows what the market did for each home's bill, and also catches a market dispatch that
is worse than plain self-consumption (pricing the market run's own meter flows at grid tariffs
would not: it assumes the batteries would have done the same without the market).

Self-sufficiency is the share of the homes' consumption not bought from the retail grid. Energy
bought from a neighbour is local, so only the settled grid import counts; in a baseline run
nothing is traded and the settled grid import is everything the meters imported.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from gateway.home import IntervalClosed
from protocols.clearing import Result, Tariffs
from protocols.market import Agreed
from sim_devices.demo.community import CommunityLog


@dataclass(frozen=True, slots=True)
class HomeSummary:
    name: str
    bill: int
    """µ, + = paid: P2P trades as settled plus every deviation at the grid tariffs."""
    bought_wh: int
    sold_wh: int
    imported_wh: int
    exported_wh: int
    grid_import_wh: int
    """What the grid supplied after the trades (settled)."""
    consumed_wh: int
    """The home's load over the run (ground truth from the simulated world)."""
    stored_wh: int = 0
    """How much the energy in its battery's cells changed over the run (ground truth)."""


@dataclass(frozen=True, slots=True)
class CommunitySummary:
    homes: tuple[HomeSummary, ...]
    intervals: int
    agreed: int
    """Intervals every gateway agreed on."""
    abstained: int
    """Intervals some or all gateways ran in safe mode (no quorum heard, or a minority)."""
    traded_wh: int
    min_price: int | None
    max_price: int | None

    @property
    def self_sufficiency(self) -> float:
        """Share of the community's consumption not bought from the retail grid."""
        consumed = sum(h.consumed_wh for h in self.homes)
        if consumed <= 0:
            return 0.0
        return max(0.0, 1.0 - sum(h.grid_import_wh for h in self.homes) / consumed)

    def home(self, name: str) -> HomeSummary:
        return next(h for h in self.homes if h.name == name)


@dataclass(frozen=True, slots=True)
class Series:
    """Per complete interval, what the report plots: when it started (s since midnight of day
    0), the clearing price (None: no agreement or no trade), the energy traded, and per home the
    average grid power over the interval (W, + import) and the battery SoC at its end."""

    start_s: tuple[int, ...]
    price: tuple[int | None, ...]
    traded_wh: tuple[int, ...]
    grid_w: Mapping[str, tuple[int, ...]]
    soc_pct: Mapping[str, tuple[float | None, ...]]
    """None where the battery's reading was stale when the interval closed."""


def agreed_result(log: CommunityLog, k: int) -> Result | None:
    """The result a quorum agreed for interval ``k``, if any gateway heard one (those that did
    agree on it: that is what the commitments are for); None if the interval ran in safe mode."""
    for closed in log.closed[k].values():
        if isinstance(closed.outcome, Agreed):
            return closed.outcome.result
    return None


def agreed_everywhere(log: CommunityLog, k: int) -> bool:
    """Whether every gateway agreed on interval ``k`` (none abstained as a minority)."""
    return all(isinstance(c.outcome, Agreed) for c in log.closed[k].values())


@dataclass(frozen=True, slots=True)
class Balance:
    """What one interval's settlements add up to across the homes that closed it; both are 0.

    ``traded_wh``: the settled P2P positions summed (+ bought, - sold), since every Wh one
    neighbour bought another sold. ``money`` (µ): the bills summed, less what the homes paid the
    grid for their imports and were paid for their exports, less the network fees their trades
    owe, since every µ one neighbour paid for a trade another received. Anything else is energy
    or money created or lost: homes that settled against different results, or one that settled
    none while its peers settled a trade against its bid.
    """

    traded_wh: int
    money: int


def balance(closed: Iterable[IntervalClosed], tariffs: Tariffs) -> Balance:
    """The :class:`Balance` of one interval from every home's closing of it."""
    traded = money = 0
    for event in closed:
        figures = event.settlement
        if figures is None:
            continue
        outcome = event.outcome
        fees = (sum(fee.fee for fee in outcome.fees if fee.buyer == event.node)
                if isinstance(outcome, Agreed) else 0)
        traded += figures.cleared_wh
        money += (figures.money - fees - figures.grid_import_wh * tariffs.retail_price
                  + figures.grid_export_wh * tariffs.feed_in_price)
    return Balance(traded, money)


def unbalanced(log: CommunityLog, tariffs: Tariffs | Callable[[int], Tariffs]
               ) -> dict[int, Balance]:
    """The complete intervals whose settlements do not balance (none, when all is well), at the
    community's tariffs or each interval's (a tariff schedule's)."""
    of = tariffs if callable(tariffs) else lambda _k: tariffs
    balances = {k: balance(log.closed[k].values(), of(k)) for k in log.complete}
    return {k: b for k, b in balances.items() if b != Balance(0, 0)}


def summarise(log: CommunityLog) -> CommunitySummary:
    homes = []
    agreed = sum(agreed_everywhere(log, k) for k in log.complete)
    prices = [trade.price for k in log.complete
              for trade in getattr(agreed_result(log, k), "trades", ())]
    for name in log.homes:
        bill = bought = sold = imported = exported = grid_import = 0
        for k in log.complete:
            closed = log.closed[k][name]
            figures = closed.settlement
            if figures is None:
                continue
            bill += figures.money
            imported += max(figures.delivered_wh, 0)
            exported += max(-figures.delivered_wh, 0)
            grid_import += figures.grid_import_wh
            outcome = closed.outcome
            if isinstance(outcome, Agreed) and outcome.position is not None:
                bought += outcome.position.bought_wh
                sold += outcome.position.sold_wh
        homes.append(HomeSummary(
            name=name, bill=bill, bought_wh=bought, sold_wh=sold, imported_wh=imported,
            exported_wh=exported, grid_import_wh=grid_import,
            consumed_wh=round(log.consumed_wh.get(name, 0.0)),
            stored_wh=round(log.stored_wh.get(name, 0.0)),
        ))
    return CommunitySummary(
        homes=tuple(homes), intervals=len(log.complete), agreed=agreed,
        abstained=len(log.complete) - agreed,
        traded_wh=sum(h.bought_wh for h in homes),
        min_price=min(prices, default=None), max_price=max(prices, default=None),
    )


def series(log: CommunityLog, *, interval_s: float) -> Series:
    ks = sorted(log.complete)
    prices: list[int | None] = []
    traded: list[int] = []
    for k in ks:
        result = agreed_result(log, k)
        prices.append(result.price if result is not None and result.trades else None)
        traded.append(sum(t.energy_wh for t in result.trades) if result is not None else 0)
    per_hour = 3600 / interval_s
    return Series(
        start_s=tuple(round(k * interval_s) for k in ks), price=tuple(prices),
        traded_wh=tuple(traded),
        grid_w={h: tuple(round(log.closed[k][h].metered_wh * per_hour) for k in ks)
                for h in log.homes},
        soc_pct={h: tuple(None if math.isnan(soc := log.closed[k][h].soc_pct) else soc
                          for k in ks) for h in log.homes},
    )


def _kwh(wh: int) -> str:
    return f"{wh / 1000:.2f}"


def _money(micro: int) -> str:
    return f"{micro / 1e6:.2f}"


def summary_rows(market: CommunitySummary, baseline: CommunitySummary | None
                 ) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """The per-home table, as text cells, for the terminal and the report alike."""
    header: tuple[str, ...] = ("home", "bought kWh", "sold kWh", "bill", "no-market bill",
                               "saved")
    rows: list[tuple[str, ...]] = []
    for h in market.homes:
        without = baseline.home(h.name).bill if baseline is not None else None
        rows.append((
            h.name, _kwh(h.bought_wh), _kwh(h.sold_wh), _money(h.bill),
            "-" if without is None else _money(without),
            "-" if without is None else _money(without - h.bill),
        ))
    return header, rows


def headline(market: CommunitySummary, baseline: CommunitySummary | None) -> list[str]:
    """The figures above the table: agreement, local energy, prices, self-sufficiency."""
    lines = [
        f"{market.intervals} intervals: {market.agreed} agreed, {market.abstained} abstained",
        f"energy traded locally: {_kwh(market.traded_wh)} kWh",
        "P2P price range: " + (
            "no trades" if market.min_price is None or market.max_price is None
            else f"{market.min_price}-{market.max_price} µ/Wh "
                 f"({market.min_price / 1000:.3f}-{market.max_price / 1000:.3f} per kWh)"),
        f"community self-sufficiency: {market.self_sufficiency:.1%} with the market"
        + ("" if baseline is None else f", {baseline.self_sufficiency:.1%} without"),
    ]
    if baseline is not None:
        saved = sum(b.bill for b in baseline.homes) - sum(h.bill for h in market.homes)
        lines.append(f"community bill: {_money(sum(h.bill for h in market.homes))} with the "
                     f"market, {_money(sum(b.bill for b in baseline.homes))} without "
                     f"(saved {_money(saved)})")
    return lines


def format_summary(market: CommunitySummary, baseline: CommunitySummary | None = None) -> str:
    header, rows = summary_rows(market, baseline)
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    table = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in (header, *rows)]
    return "\n".join([*headline(market, baseline), "", *table])


__all__ = ["Balance", "CommunitySummary", "HomeSummary", "Series", "agreed_everywhere",
           "agreed_result", "balance", "format_summary", "headline", "series", "summarise",
           "summary_rows", "unbalanced"]
