"""Grid prices that change through the day: the schedule a time-of-use or day-ahead tariff file
gives (``gateway/plan/tariff_file.py`` reads one; ``tariff_csv`` and ``tariff_toml`` parse the
two formats price sources publish).

Prices become whole µ/Wh exactly: decimal arithmetic, never binary floats, then the nearest
integer, halves to even (1 €/MWh is exactly 1 µ/Wh, so day-ahead prices with cents round by
at most half a µ/Wh, and as often up as down). Prices may be negative (day-ahead markets go
below zero); in every instant the import price must be at least the export price, or a plan
would buy to sell back (and a file of bare spot prices under a fixed feed-in is caught).

Where the file says nothing (before its first row, after its last, outside every window) the
config's fixed tariffs apply; a day-ahead row outranks a window, which outranks the file's
``[default]``. A row without an export price takes the export price that applies otherwise.

Every problem is refused with the line (CSV) or key path (TOML) and what is wrong.
``TariffSchedule.tariffs`` is the lookup the community's clearing and settlement call: the
time-weighted prices of an interval as ``Tariffs``, held inside the band those can use.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as clock_time
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from fractions import Fraction
from itertools import pairwise
from typing import Literal
from zoneinfo import ZoneInfo

from protocols.clearing import Tariffs
from protocols.messages import MAX_PRICE

Unit = Literal["per_kwh", "per_mwh", "uwh"]
UNITS: dict[str, Decimal] = {"per_kwh": Decimal(1000), "per_mwh": Decimal(1), "uwh": Decimal(1)}
"""µ/Wh per unit: 1 per kWh is 1000 µ/Wh, 1 per MWh is 1 µ/Wh."""
MAX_ROWS = 20_000
"""Rows (or list entries) a file may hold: half a year of quarter hours."""
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTE_MS = 60_000
DAY_MIN = 1440
MAX_ERRORS = 20


class ScheduleError(ValueError):
    """A tariff file that cannot be used: one ``source:line: problem`` (or key path) per line."""


@dataclass(frozen=True, slots=True)
class Segment:
    """Day-ahead prices (µ/Wh) over ``[start_ms, end_ms)``; ``where`` the file said so (its
    line or key path, for messages)."""

    start_ms: int
    end_ms: int
    import_price: int
    export_price: int | None
    where: str


@dataclass(frozen=True, slots=True)
class Window:
    """Time-of-use prices every listed weekday (0 = Monday) from ``start_min`` to ``end_min``
    local time (minutes of the day; an end before the start runs past midnight)."""

    start_min: int
    end_min: int
    days: frozenset[int]
    import_price: int | None
    export_price: int | None
    name: str

    def covers(self, minute: int, weekday: int) -> bool:
        if self.start_min < self.end_min:
            return weekday in self.days and self.start_min <= minute < self.end_min
        return ((weekday in self.days and minute >= self.start_min)
                or ((weekday - 1) % 7 in self.days and minute < self.end_min))


@dataclass(frozen=True, slots=True)
class TariffSchedule:
    """The prices of a tariff file over the config's ``fixed`` tariffs."""

    fixed: Tariffs
    zone: ZoneInfo
    segments: tuple[Segment, ...] = ()
    windows: tuple[Window, ...] = ()
    default_import: int | None = None
    default_export: int | None = None

    def prices_at(self, time_ms: int) -> tuple[int, int]:
        """(import, export) µ/Wh in force at ``time_ms`` (epoch milliseconds)."""
        segment = self._segment(time_ms)
        window = self._window(time_ms) if self.windows else None
        imports = [self.default_import, self.fixed.retail_price]
        exports = [self.default_export, self.fixed.feed_in_price]
        for found in (window, segment):  # the more specific first, at the front
            if found is not None:
                imports.insert(0, found.import_price)
                exports.insert(0, found.export_price)
        return (next(p for p in imports if p is not None),
                next(p for p in exports if p is not None))

    def average(self, start_ms: int, length_ms: int) -> tuple[int, int]:
        """(import, export) over ``[start_ms, start_ms + length_ms)``, weighted by time, whole
        µ/Wh (halves to even)."""
        (imported,), (exported,) = self.steps(start_ms, length_ms, 1)
        return imported, exported

    def steps(self, start_ms: int, step_ms: int, count: int
              ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Time-weighted import and export prices of ``count`` steps of ``step_ms`` from
        ``start_ms`` (the plan's ``Problem.import_price`` and ``export_price``)."""
        if step_ms <= 0 or count < 1:
            raise ValueError(f"need step_ms > 0 and count >= 1, got {step_ms}, {count}")
        end = start_ms + step_ms * count
        edges = [start_ms + k * step_ms for k in range(count + 1)]
        points = sorted({*edges, *self._breaks(start_ms, end)})
        imports: list[int] = []
        exports: list[int] = []
        imported = exported = Fraction(0)
        for a, b in pairwise(points):
            i, e = self.prices_at(a)
            imported += i * (b - a)
            exported += e * (b - a)
            if b == edges[len(imports) + 1]:
                imports.append(round(imported / step_ms))
                exports.append(round(exported / step_ms))
                imported = exported = Fraction(0)
        return tuple(imports), tuple(exports)

    def tariffs(self, start_ms: int, length_ms: int) -> Tariffs:
        """The interval's prices as the community clears and settles them: the time-weighted
        :meth:`average`, held inside the band the protocol's ``Tariffs`` can carry
        (0 <= feed-in < retail <= ``MAX_PRICE``).

        A negative average export price settles as 0 and a retail price at or below the
        feed-in price as feed-in + 1 µ/Wh. Day-ahead prices do go below zero, and the plan
        prices them as they are; the community's clearing and settlement cannot (a bid's price
        is never negative and pool mechanisms divide by the spread), and refusing the file
        would refuse the plan its prices too. Every member holds the same file, so every
        member moves the same interval the same way."""
        retail, feed_in = self.average(start_ms, length_ms)
        feed_in = min(max(feed_in, 0), MAX_PRICE - 1)
        return Tariffs(retail_price=min(max(retail, feed_in + 1), MAX_PRICE),
                       feed_in_price=feed_in)

    def _segment(self, time_ms: int) -> Segment | None:
        i = bisect.bisect_right(self.segments, time_ms, key=lambda s: s.start_ms) - 1
        if i >= 0 and time_ms < self.segments[i].end_ms:
            return self.segments[i]
        return None

    def _window(self, time_ms: int) -> Window | None:
        local = datetime.fromtimestamp(time_ms / 1000, self.zone)
        minute, weekday = local.hour * 60 + local.minute, local.weekday()
        return next((w for w in self.windows if w.covers(minute, weekday)), None)

    def _breaks(self, start_ms: int, end_ms: int) -> list[int]:
        """Every instant in (start, end) where a price may change: segment edges, window edges
        in local time (both readings of a time the clock shows twice) and a change of UTC
        offset."""
        found: set[int] = set()
        lo = bisect.bisect_right(self.segments, start_ms, key=lambda s: s.start_ms) - 1
        for segment in self.segments[max(0, lo):]:
            if segment.start_ms >= end_ms:
                break
            found.update((segment.start_ms, segment.end_ms))
        if self.windows:
            found.update(self._window_edges(start_ms, end_ms))
            found.update(self._offset_changes(start_ms, end_ms))
        return sorted(t for t in found if start_ms < t < end_ms)

    def _window_edges(self, start_ms: int, end_ms: int) -> set[int]:
        first = datetime.fromtimestamp(start_ms / 1000, self.zone).date() - timedelta(days=1)
        last = datetime.fromtimestamp(end_ms / 1000, self.zone).date()
        edges: set[int] = set()
        day = first
        while day <= last:
            for window in self.windows:
                for minute in (window.start_min, window.end_min % DAY_MIN):
                    edges.update(_local_ms(day, minute, self.zone))
            day += timedelta(days=1)
        return edges

    def _offset_changes(self, start_ms: int, end_ms: int) -> set[int]:
        """The minute a daylight-saving change happens in (start, end), found by bisection (a
        step is far shorter than the months between two changes)."""
        def offset(ms: int) -> timedelta | None:
            return datetime.fromtimestamp(ms / 1000, self.zone).utcoffset()

        lo, hi = start_ms, end_ms - 1
        if offset(lo) == offset(hi):
            return set()
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if offset(mid) == offset(lo) else (lo, mid)
        return {hi}


def _local_ms(day: date, minute: int, zone: ZoneInfo) -> set[int]:
    hour, rest = divmod(minute, 60)
    return {round(datetime.combine(day, clock_time(hour, rest), zone).replace(fold=fold)
                  .timestamp() * 1000) for fold in (0, 1)}


def to_uwh(text: str | Decimal | int, unit: str) -> int:
    """A price in ``unit`` as whole µ/Wh: exact decimal arithmetic, nearest, halves to even."""
    try:
        value = Decimal(text.strip().replace(",", ".")) if isinstance(text, str) else Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a number") from None
    if not value.is_finite():
        raise ValueError(f"{text!r} is not a finite number")
    uwh = int((value * UNITS[unit]).to_integral_value(rounding=ROUND_HALF_EVEN))
    if abs(uwh) > MAX_PRICE:
        raise ValueError(f"{text} {unit} is {uwh} µ/Wh, beyond ±{MAX_PRICE}")
    return uwh


_SPOT = (" (a wholesale spot price? the file needs what you pay: spot plus fees and taxes, "
         "or in TOML a [spot] rule)")


def check_order(schedule: TariffSchedule) -> None:
    """Import never below export, also where a row's or window's missing export price is taken
    from what applies otherwise: every stretch between two possible changes is checked."""
    for segment in schedule.segments:
        for t in (segment.start_ms, *schedule._breaks(segment.start_ms, segment.end_ms)):
            imported, exported = schedule.prices_at(t)
            if imported < exported:
                raise ScheduleError(f"{segment.where}: import {imported} µ/Wh is below the "
                                    f"export price {exported} µ/Wh that applies then{_SPOT}")
    otherwise = (
        schedule.default_import if schedule.default_import is not None
        else schedule.fixed.retail_price,
        schedule.default_export if schedule.default_export is not None
        else schedule.fixed.feed_in_price)
    for window in schedule.windows:
        imported = window.import_price if window.import_price is not None else otherwise[0]
        exported = window.export_price if window.export_price is not None else otherwise[1]
        if imported < exported:
            raise ScheduleError(f"{window.name}: import {imported} µ/Wh is below the export "
                                f"price {exported} µ/Wh that applies then")
    if otherwise[0] < otherwise[1]:
        raise ScheduleError(f"default: import {otherwise[0]} µ/Wh is below export "
                            f"{otherwise[1]} µ/Wh (the config's tariffs fill what it leaves out)")
