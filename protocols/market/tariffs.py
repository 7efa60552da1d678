"""The grid tariffs of each market interval: the community's fixed ones, or its tariff
schedule's prices over the interval.

With a schedule (a time-of-use or day-ahead tariff file, ``gateway/plan/tariff_schedule.py``),
interval k is cleared and settled at the schedule's prices over ``[start(k), end(k))``. Those
prices are part of what the members agree on: each commitment carries them
(:class:`protocols.messages.Commitment` ``tariffs``), and a commitment priced otherwise is not
counted (:mod:`protocols.market.session`), so a member with a different file cannot help agree a
result, and the settlements checked against that result are priced alike everywhere. What is
agreed is the interval's two prices, not the file: a day-ahead file is replaced every day, and
members that take tomorrow's prices at different times still agree on today's.

Without a schedule every interval has the fixed tariffs and commitments carry none, bit for bit
the protocol from before schedules.
"""

from __future__ import annotations

from typing import Protocol

from protocols.clearing import Tariffs
from protocols.market.timing import Timing

KEPT = 64
"""Intervals whose tariffs are kept once looked up: more than a market holds open or settles."""


class TariffSource(Protocol):
    """Prices over a stretch of time (``gateway.plan.TariffSchedule`` is one)."""

    def tariffs(self, start_ms: int, length_ms: int) -> Tariffs: ...


class IntervalTariffs:
    """``tariffs(k)``: interval k's tariffs; ``agreed``: whether commitments carry them."""

    def __init__(self, *, fixed: Tariffs, timing: Timing,
                 schedule: TariffSource | None = None) -> None:
        self._fixed = fixed
        self._timing = timing
        self._schedule = schedule
        self._kept: dict[int, Tariffs] = {}

    @property
    def agreed(self) -> bool:
        """The tariffs change with the interval, so every commitment names the ones it used."""
        return self._schedule is not None

    def __call__(self, interval: int) -> Tariffs:
        if self._schedule is None:
            return self._fixed
        found = self._kept.get(interval)
        if found is None:
            if len(self._kept) >= KEPT:
                self._kept.clear()
            found = self._kept[interval] = self._schedule.tariffs(
                self._timing.start_ms(interval), self._timing.length_ms)
        return found


def claim(tariffs: Tariffs) -> tuple[int, int]:
    """The pair a commitment carries: (retail, feed-in) µ/Wh."""
    return tariffs.retail_price, tariffs.feed_in_price
