"""A tariff file in TOML: time-of-use windows (local time, optionally by weekday) and day-ahead
lists in ENTSO-E's shape (a period's start, its resolution, one price per position), with a
``[spot]`` rule turning wholesale prices into what the home pays (``spot × factor + add``: fees,
levies, VAT); see ``docs/homeowner-guide.md``. Every problem is refused with its key path and
what is wrong.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from decimal import Decimal
from itertools import pairwise
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from gateway.flex_plan import parse_hhmm
from gateway.plan.tariff_schedule import (
    DAY_MIN,
    DAYS,
    MAX_ERRORS,
    MAX_ROWS,
    MINUTE_MS,
    Day,
    ScheduleError,
    Segment,
    TariffSchedule,
    Unit,
    Window,
    check_order,
    to_uwh,
)
from protocols.clearing import Tariffs

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
    resolution_min: int = Field(ge=1, le=DAY_MIN)
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
        raise ScheduleError("\n".join(errors[:MAX_ERRORS]))
    try:
        check_order(schedule)
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
    if start == end % DAY_MIN and end != DAY_MIN:
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
            for minute in range(DAY_MIN):
                if window.covers(minute, weekday):
                    slot = weekday * DAY_MIN + minute
                    if slot in owner:
                        errors.append(f"{source}: {window.name} overlaps {owner[slot]} "
                                      f"({DAYS[weekday]} {minute // 60:02d}:{minute % 60:02d})")
                        return
                    owner[slot] = window.name


def _block(spec: _DayAhead, i: int, price: _PriceFn, spot: _Spot, errors: list[str],
           source: str) -> list[Segment]:
    name = f"day_ahead[{i}]"
    start = round(spec.start.timestamp() * 1000)
    if start % MINUTE_MS:
        errors.append(f"{source}: {name}.start: not on a whole minute")
    if spec.export is not None and len(spec.export) != len(spec.import_):
        errors.append(f"{source}: {name}: {len(spec.export)} export prices for "
                      f"{len(spec.import_)} import prices")
        return []
    step = spec.resolution_min * MINUTE_MS
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
