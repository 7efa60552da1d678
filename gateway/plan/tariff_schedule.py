"""Grid prices that change through the day: a time-of-use or day-ahead tariff file.

Two formats, the ones price sources publish:

* **CSV**, rows of a start time and prices, as day-ahead feeds (aWATTar, Tibber, ENTSO-E
  exports) are turned into by a one-line script::

      start,import_per_kwh,export_per_kwh
      2026-03-01T00:00+01:00,0.2812,0.08
      2026-03-01T01:00+01:00,0.2650,0.08

  ``start`` is ISO 8601 with its UTC offset (or ``Z``), or epoch milliseconds as aWATTar's
  ``start_timestamp``; an optional ``end`` column, else a row holds until the next one starts
  (the last for as long as the one before it). Price columns name their unit: ``_per_kwh``
  (currency per kWh), ``_per_mwh`` (per MWh, as day-ahead markets quote) or ``_uwh`` (the
  project's µ/Wh). ``export`` is optional. A ``;``-separated file may use decimal commas.
* **TOML**, for time-of-use windows (local time, optionally by weekday) and for day-ahead lists
  in ENTSO-E's shape (a period's start, its resolution, one price per position), with a
  ``[spot]`` rule turning wholesale prices into what the home pays (``spot × factor + add``:
  fees, levies, VAT); see ``docs/homeowner-guide.md``.

Prices become whole µ/Wh exactly: decimal arithmetic, never binary floats, then the nearest
integer, halves to even (1 €/MWh is exactly 1 µ/Wh, so day-ahead prices with cents round by
at most half a µ/Wh, and as often up as down). Prices may be negative (day-ahead markets go
below zero); in every instant the import price must be at least the export price, or a plan
would buy to sell back (and a file of bare spot prices under a fixed feed-in is caught).

Where the file says nothing (before its first row, after its last, outside every window) the
config's fixed tariffs apply; a day-ahead row outranks a window, which outranks the file's
``[default]``. A row without an export price takes the export price that applies otherwise.

Every problem is refused with the line (CSV) or key path (TOML) and what is wrong.
``TariffSchedule.tariffs`` is the lookup settlement calls: the time-weighted prices of an
interval as ``Tariffs``.
"""

from __future__ import annotations

import bisect
import csv
import io
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from fractions import Fraction
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from gateway.flex_plan import parse_hhmm
from protocols.clearing import ClearingError, Tariffs
from protocols.messages import MAX_PRICE

Unit = Literal["per_kwh", "per_mwh", "uwh"]
UNITS: dict[str, Decimal] = {"per_kwh": Decimal(1000), "per_mwh": Decimal(1), "uwh": Decimal(1)}
"""µ/Wh per unit: 1 per kWh is 1000 µ/Wh, 1 per MWh is 1 µ/Wh."""
MAX_ROWS = 20_000
"""Rows (or list entries) a file may hold: half a year of quarter hours."""
MAX_BYTES = 2_000_000
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_MINUTE_MS = 60_000
_DAY_MIN = 1440
_MAX_ERRORS = 20


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
        """The interval's prices as settlement's ``Tariffs``; ``ScheduleError`` when they are
        not a band settlement can use yet (a negative price, or no spread)."""
        retail, feed_in = self.average(start_ms, length_ms)
        try:
            return Tariffs(retail_price=retail, feed_in_price=feed_in)
        except ClearingError as exc:
            when = datetime.fromtimestamp(start_ms / 1000, UTC).isoformat()
            raise ScheduleError(f"prices from {when}: {exc}") from exc

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
                for minute in (window.start_min, window.end_min % _DAY_MIN):
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


def load_schedule(path: Path | None, *, fixed: Tariffs) -> TariffSchedule:
    """Read a ``.csv`` or ``.toml`` tariff file; ``ScheduleError`` names what is wrong. No file
    (None): the ``fixed`` tariffs all day."""
    if path is None:
        return TariffSchedule(fixed=fixed, zone=ZoneInfo("UTC"))
    if path.suffix not in (".csv", ".toml"):
        raise ScheduleError(f"{path}: a tariff file is .csv or .toml, not {path.suffix!r}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ScheduleError(f"{path}: {exc.strerror or exc}") from exc
    if len(raw) > MAX_BYTES:
        raise ScheduleError(f"{path}: {len(raw)} bytes, at most {MAX_BYTES}")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ScheduleError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    parse = parse_csv if path.suffix == ".csv" else parse_toml
    return parse(text, source=str(path), fixed=fixed)


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


# -- CSV -------------------------------------------------------------------------------------


def parse_csv(text: str, *, source: str, fixed: Tariffs) -> TariffSchedule:
    """A CSV tariff file (see the module docstring)."""
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise ScheduleError(f"{source}: no header row (start, import_per_kwh, ...)")
    header_no, header = lines[0]
    delimiter = ";" if header.count(";") > header.count(",") else ","
    columns = _columns(header, delimiter, f"{source}:{header_no}")
    if len(lines) - 1 > MAX_ROWS:
        raise ScheduleError(f"{source}: {len(lines) - 1} rows, at most {MAX_ROWS}")
    errors: list[str] = []
    rows: list[tuple[int, int, int | None, int, int | None]] = []
    reader = csv.reader(io.StringIO("\n".join(line for _, line in lines[1:])),
                        delimiter=delimiter)
    for (number, _), cells in zip(lines[1:], reader, strict=True):
        try:
            rows.append((number, *_row(cells, columns)))
        except ValueError as exc:
            errors.append(f"{source}:{number}: {exc}")
            if len(errors) >= _MAX_ERRORS:
                break
    if not errors and not rows:
        errors.append(f"{source}: no price rows after the header")
    if errors:
        raise ScheduleError("\n".join(errors))
    segments = _segments(rows, source)
    schedule = TariffSchedule(fixed=fixed, zone=ZoneInfo("UTC"), segments=segments)
    _check_order(schedule)
    return schedule


@dataclass(frozen=True, slots=True)
class _Columns:
    start: int
    end: int | None
    import_col: int
    import_unit: str
    export_col: int | None
    export_unit: str


def _columns(header: str, delimiter: str, where: str) -> _Columns:
    names = [c.strip().lower() for c in next(csv.reader([header], delimiter=delimiter))]
    found: dict[str, tuple[int, str]] = {}
    for i, name in enumerate(names):
        key, unit = name, ""
        for side in ("import", "export"):
            if name.startswith(side + "_") and name[len(side) + 1:] in UNITS:
                key, unit = side, name[len(side) + 1:]
        if key not in ("start", "end", "import", "export"):
            raise ScheduleError(f"{where}: unknown column {name!r}: use start, end, "
                                f"import_<unit>, export_<unit> with unit one of "
                                f"{', '.join(UNITS)}")
        if key in found:
            raise ScheduleError(f"{where}: column {key!r} given twice")
        found[key] = (i, unit)
    for needed in ("start", "import"):
        if needed not in found:
            hint = " (import_per_kwh, import_per_mwh or import_uwh)" if needed == "import" else ""
            raise ScheduleError(f"{where}: no {needed!r} column{hint}")
    export = found.get("export")
    end = found.get("end")
    return _Columns(start=found["start"][0], end=end[0] if end else None,
                    import_col=found["import"][0], import_unit=found["import"][1],
                    export_col=export[0] if export else None,
                    export_unit=export[1] if export else "")


def _row(cells: list[str], cols: _Columns) -> tuple[int, int | None, int, int | None]:
    width = 1 + max(c for c in (cols.start, cols.end, cols.import_col, cols.export_col)
                    if c is not None)
    if len(cells) < width:
        raise ValueError(f"{len(cells)} cells, the header names {width}")
    start = _instant(cells[cols.start])
    end = None
    if cols.end is not None and cells[cols.end].strip():
        end = _instant(cells[cols.end])
    import_price = to_uwh(cells[cols.import_col], cols.import_unit)
    export_price = None
    if cols.export_col is not None and cells[cols.export_col].strip():
        export_price = to_uwh(cells[cols.export_col], cols.export_unit)
    if export_price is not None and import_price < export_price:
        raise ValueError(f"import {import_price} µ/Wh is below export {export_price} µ/Wh")
    return start, end, import_price, export_price


def _instant(text: str) -> int:
    """ISO 8601 with a UTC offset, or epoch milliseconds; on a whole minute."""
    text = text.strip()
    if text.isdigit():
        ms = int(text)
    else:
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{text!r} is not an ISO 8601 time or epoch milliseconds") from None
        if when.tzinfo is None:
            raise ValueError(f"{text!r} has no UTC offset: write it as {text}+01:00 or {text}Z")
        ms = round(when.timestamp() * 1000)
    if ms % _MINUTE_MS:
        raise ValueError(f"{text!r} is not on a whole minute")
    return ms


def _segments(rows: list[tuple[int, int, int | None, int, int | None]],
              source: str) -> tuple[Segment, ...]:
    """Rows in time order, each until its end or the next start; overlaps refused."""
    segments: list[Segment] = []
    errors: list[str] = []
    for i, (line, start, end, import_price, export_price) in enumerate(rows):
        if end is None:
            if i + 1 < len(rows):
                end = rows[i + 1][1]
            elif i > 0:
                end = start + (start - rows[i - 1][1])
            else:
                errors.append(f"{source}:{line}: one row and no end column: say when the "
                              "price ends")
                continue
        if i > 0 and start <= rows[i - 1][1]:
            errors.append(f"{source}:{line}: starts at or before the row above: rows must be "
                          "in time order")
        elif end <= start:
            errors.append(f"{source}:{line}: ends at or before it starts")
        elif segments and start < segments[-1].end_ms:
            errors.append(f"{source}:{line}: starts before the row above ends")
        else:
            segments.append(Segment(start, end, import_price, export_price, f"{source}:{line}"))
    if errors:
        raise ScheduleError("\n".join(errors[:_MAX_ERRORS]))
    return tuple(segments)


_SPOT = (" (a wholesale spot price? the file needs what you pay: spot plus fees and taxes, "
         "or in TOML a [spot] rule)")


def _check_order(schedule: TariffSchedule) -> None:
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


# -- TOML ------------------------------------------------------------------------------------

_PriceFn = Callable[[Decimal | None, str], int | None]
"""``price(value, where)`` of ``parse_toml``: whole µ/Wh, or None with the error recorded."""
_HHMM = r"^([01]\d|2[0-3]):[0-5]\d$"
Price = Annotated[Decimal, Field(allow_inf_nan=False)]


class _Toml(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class _Prices(_Toml):
    import_: Price | None = Field(default=None, alias="import")
    export: Price | None = None


class _Window(_Prices):
    start: str = Field(alias="from", pattern=_HHMM)
    end: str = Field(alias="to", pattern=r"^(([01]\d|2[0-3]):[0-5]\d|24:00)$")
    days: tuple[Day, ...] = DAYS


class _DayAhead(_Toml):
    start: AwareDatetime
    resolution_min: int = Field(ge=1, le=_DAY_MIN)
    import_: tuple[Price, ...] = Field(alias="import", min_length=1, max_length=MAX_ROWS)
    export: tuple[Price, ...] | None = Field(default=None, max_length=MAX_ROWS)


class _Spot(_Toml):
    factor: Price = Decimal(1)
    add: Price = Decimal(0)


class _File(_Toml):
    unit: Unit
    timezone: str = "UTC"
    spot: _Spot | None = None
    """Day-ahead lists are wholesale prices: the import price is ``spot × factor + add``."""
    default: _Prices | None = None
    window: tuple[_Window, ...] = Field(default=(), max_length=100)
    day_ahead: tuple[_DayAhead, ...] = Field(default=(), max_length=400)


def parse_toml(text: str, *, source: str, fixed: Tariffs) -> TariffSchedule:
    """A TOML tariff file (see ``docs/homeowner-guide.md``)."""
    try:
        raw = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        raise ScheduleError(f"{source}: {exc}") from exc
    try:
        spec = _File.model_validate(raw)
    except ValidationError as exc:
        raise ScheduleError("\n".join(
            f"{source}: {_path(err['loc'])}: {err['msg']}" for err in exc.errors()
        )) from None
    try:
        zone = ZoneInfo(spec.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"{source}: timezone: unknown zone {spec.timezone!r} (e.g. "
                            "\"Europe/Berlin\")") from None
    errors: list[str] = []

    def price(value: Decimal | None, where: str) -> int | None:
        if value is None:
            return None
        try:
            return to_uwh(value, spec.unit)
        except ValueError as exc:
            errors.append(f"{source}: {where}: {exc}")
            return None

    default = spec.default or _Prices()
    windows = tuple(_window(w, i, price, errors, source) for i, w in enumerate(spec.window))
    _no_overlap(windows, source, errors)
    segments: list[Segment] = []
    for i, block in enumerate(spec.day_ahead):
        segments += _block(block, i, price, spec.spot or _Spot(), errors, source)
    segments.sort(key=lambda s: s.start_ms)
    for a, b in pairwise(segments):
        if b.start_ms < a.end_ms:
            errors.append(f"{source}: {b.where} overlaps {a.where}")
            break
    schedule = TariffSchedule(
        fixed=fixed, zone=zone, segments=tuple(segments), windows=windows,
        default_import=price(default.import_, "default.import"),
        default_export=price(default.export, "default.export"))
    if errors:
        raise ScheduleError("\n".join(errors[:_MAX_ERRORS]))
    try:
        _check_order(schedule)
    except ScheduleError as exc:
        raise ScheduleError(f"{source}: {exc}") from None
    return schedule


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


def _window(spec: _Window, i: int, price: _PriceFn, errors: list[str], source: str) -> Window:
    name = f"window[{i}]"
    start, end = parse_hhmm(spec.start), parse_hhmm(spec.end)
    if start == end % _DAY_MIN and end != _DAY_MIN:
        errors.append(f"{source}: {name}: from and to are the same time")
    if spec.import_ is None and spec.export is None:
        errors.append(f"{source}: {name}: sets no price (import, export or both)")
    return Window(start_min=start, end_min=end, days=frozenset(DAYS.index(d) for d in spec.days),
                  import_price=price(spec.import_, f"{name}.import"),
                  export_price=price(spec.export, f"{name}.export"), name=name)


def _no_overlap(windows: tuple[Window, ...], source: str, errors: list[str]) -> None:
    """Two windows never cover the same minute of the week: which one's price applies would
    depend on their order in the file."""
    owner: dict[int, str] = {}
    for window in windows:
        for weekday in range(7):
            for minute in range(_DAY_MIN):
                if window.covers(minute, weekday):
                    slot = weekday * _DAY_MIN + minute
                    if slot in owner:
                        errors.append(f"{source}: {window.name} overlaps {owner[slot]} "
                                      f"({DAYS[weekday]} {minute // 60:02d}:{minute % 60:02d})")
                        return
                    owner[slot] = window.name


def _block(spec: _DayAhead, i: int, price: _PriceFn, spot: _Spot, errors: list[str],
           source: str) -> list[Segment]:
    name = f"day_ahead[{i}]"
    start = round(spec.start.timestamp() * 1000)
    if start % _MINUTE_MS:
        errors.append(f"{source}: {name}.start: not on a whole minute")
    if spec.export is not None and len(spec.export) != len(spec.import_):
        errors.append(f"{source}: {name}: {len(spec.export)} export prices for "
                      f"{len(spec.import_)} import prices")
        return []
    step = spec.resolution_min * _MINUTE_MS
    out = []
    for k, value in enumerate(spec.import_):
        imported = price(value * spot.factor + spot.add, f"{name}.import[{k}]")
        exported = price(spec.export[k], f"{name}.export[{k}]") if spec.export else None
        if imported is None:
            continue
        if exported is not None and imported < exported:
            errors.append(f"{source}: {name}[{k}]: import {imported} µ/Wh is below export "
                          f"{exported} µ/Wh")
        out.append(Segment(start + k * step, start + (k + 1) * step, imported, exported,
                           f"{name}.import[{k}]"))
    return out
