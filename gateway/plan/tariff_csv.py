"""A tariff file in CSV: rows of a start time and prices, as day-ahead feeds (aWATTar, Tibber,
ENTSO-E exports) are turned into by a one-line script::

    start,import_per_kwh,export_per_kwh
    2026-03-01T00:00+01:00,0.2812,0.08
    2026-03-01T01:00+01:00,0.2650,0.08

``start`` is ISO 8601 with its UTC offset (or ``Z``), or epoch milliseconds as aWATTar's
``start_timestamp``; an optional ``end`` column, else a row holds until the next one starts (the
last for as long as the one before it). Price columns name their unit: ``_per_kwh`` (currency
per kWh), ``_per_mwh`` (per MWh, as day-ahead markets quote) or ``_uwh`` (the project's µ/Wh).
``export`` is optional. A ``;``-separated file may use decimal commas. Every problem is refused
with its line and what is wrong.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from gateway.plan.tariff_schedule import (
    MAX_ERRORS,
    MAX_ROWS,
    MINUTE_MS,
    UNITS,
    ScheduleError,
    Segment,
    TariffSchedule,
    check_order,
    to_uwh,
)
from protocols.clearing import Tariffs


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
            if len(errors) >= MAX_ERRORS:
                break
    if not errors and not rows:
        errors.append(f"{source}: no price rows after the header")
    if errors:
        raise ScheduleError("\n".join(errors))
    segments = _segments(rows, source)
    schedule = TariffSchedule(fixed=fixed, zone=ZoneInfo("UTC"), segments=segments)
    check_order(schedule)
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
    if ms % MINUTE_MS:
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
        raise ScheduleError("\n".join(errors[:MAX_ERRORS]))
    return tuple(segments)
