"""The interval tariffs the community clears and settles at, from any tariff file: the file is
refused at load with a reason, or every interval's prices are a ``Tariffs`` (whole µ/Wh,
0 <= feed-in < retail <= MAX_PRICE) equal to the plan's time-weighted prices wherever those
already are one."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.plan import ScheduleError, TariffSchedule, parse_csv, parse_toml
from protocols.clearing import Tariffs
from protocols.messages import MAX_PRICE

T0 = int(datetime(2026, 3, 28, tzinfo=UTC).timestamp() * 1000)  # a daylight-saving weekend
MINUTE = 60_000

prices = st.integers(-MAX_PRICE, MAX_PRICE)
fixed = st.tuples(st.integers(1, MAX_PRICE), st.integers(0, MAX_PRICE - 1)).filter(
    lambda pair: pair[0] > pair[1]).map(lambda p: Tariffs(retail_price=p[0], feed_in_price=p[1]))
intervals = st.tuples(st.integers(-600, 3000), st.sampled_from([1, 5, 15, 60, 90, 1440]))


def check(schedule: TariffSchedule, start_ms: int, length_ms: int) -> None:
    got = schedule.tariffs(start_ms, length_ms)
    assert type(got.retail_price) is int and type(got.feed_in_price) is int
    assert 0 <= got.feed_in_price < got.retail_price <= MAX_PRICE
    retail, feed_in = schedule.average(start_ms, length_ms)
    if 0 <= feed_in < retail <= MAX_PRICE:
        assert (got.retail_price, got.feed_in_price) == (retail, feed_in)


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(1, 240), prices, prices | st.none()), min_size=1,
                     max_size=12),
       tariffs=fixed, interval=intervals)
def test_day_ahead_rows_give_settleable_interval_tariffs_or_are_refused(
    rows: list[tuple[int, int, int | None]], tariffs: Tariffs, interval: tuple[int, int],
) -> None:
    lines, start = ["start,end,import_uwh,export_uwh"], T0
    for minutes, imported, exported in rows:
        end = start + minutes * MINUTE
        lines.append(f"{_iso(start)},{_iso(end)},{imported},{'' if exported is None else exported}")
        start = end
    try:
        schedule = parse_csv("\n".join(lines), source="p.csv", fixed=tariffs)
    except ScheduleError as exc:
        assert str(exc).startswith("p.csv:")
        return
    offset, minutes = interval
    check(schedule, T0 + offset * MINUTE, minutes * MINUTE)


windows = st.lists(st.tuples(st.integers(0, 23), st.integers(1, 6), prices, prices | st.none()),
                   max_size=4)


@settings(max_examples=300, deadline=None)
@given(spans=windows, default=st.tuples(prices, prices) | st.none(), tariffs=fixed,
       zone=st.sampled_from(["UTC", "Europe/Berlin", "Australia/Lord_Howe"]),
       interval=intervals)
def test_time_of_use_windows_give_settleable_interval_tariffs_or_are_refused(
    spans: list[tuple[int, int, int, int | None]], default: tuple[int, int] | None,
    tariffs: Tariffs, zone: str, interval: tuple[int, int],
) -> None:
    text = [f'unit = "uwh"\ntimezone = "{zone}"']
    if default is not None:
        text.append(f"[default]\nimport = {default[0]}\nexport = {default[1]}")
    for first, hours, imported, exported in spans:
        text.append(f'[[window]]\nfrom = "{first:02}:00"\nto = "{(first + hours) % 24:02}:00"\n'
                    f"import = {imported}"
                    + ("" if exported is None else f"\nexport = {exported}"))
    try:
        schedule = parse_toml("\n".join(text), source="t.toml", fixed=tariffs)
    except ScheduleError as exc:
        assert str(exc).startswith("t.toml")
        return
    offset, minutes = interval
    check(schedule, T0 + offset * MINUTE, minutes * MINUTE)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%MZ")
