"""Tariff files: prices exact in µ/Wh, every mistake refused with its line or key, and the
lookup settlement and the plan call."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.plan import ScheduleError, TariffSchedule, load_schedule, parse_csv, parse_toml
from gateway.plan.tariff_schedule import MAX_ROWS, to_uwh
from protocols.clearing import Tariffs

FIXED = Tariffs(retail_price=300, feed_in_price=80)
T0 = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1000)
HOUR = 3_600_000
QUARTER = 900_000


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


# -- exact prices ----------------------------------------------------------------------------


@given(uwh=st.integers(-1_000_000, 1_000_000))
def test_whole_prices_convert_exactly_in_every_unit(uwh: int) -> None:
    assert to_uwh(str(Decimal(uwh) / 1000), "per_kwh") == uwh
    assert to_uwh(str(uwh), "per_mwh") == uwh
    assert to_uwh(str(uwh), "uwh") == uwh


@given(cents=st.integers(-100_000, 100_000))
def test_day_ahead_cents_round_to_the_nearest_halves_to_even(cents: int) -> None:
    """85.23 per MWh is 85.23 µ/Wh: 85; 85.50 is 86... and 84.50 is 84 (no drift one way)."""
    exact = Decimal(cents) / 100
    assert to_uwh(f"{exact}", "per_mwh") == int(exact.to_integral_value(ROUND_HALF_EVEN))
    assert abs(to_uwh(f"{exact}", "per_mwh") - exact) <= Decimal("0.5")


def test_no_binary_float_on_the_way() -> None:
    """0.0285 per kWh is exactly 28.5 µ/Wh (to even: 28); a float would make it 28.499..."""
    assert to_uwh("0.0285", "per_kwh") == 28
    assert to_uwh("0.0295", "per_kwh") == 30
    assert to_uwh("0,2812", "per_kwh") == 281  # a decimal comma (';'-separated files)


@pytest.mark.parametrize("bad", ["", "abc", "NaN", "inf", "1e9", "0x10"])
def test_prices_that_are_no_price_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        to_uwh(bad, "per_kwh")


# -- CSV -------------------------------------------------------------------------------------

rows = st.lists(st.tuples(st.integers(1, 8), st.integers(-500, 800), st.integers(0, 300),
                          st.booleans()), min_size=1, max_size=40)


@settings(max_examples=200)
@given(rows=rows, unit=st.sampled_from(["per_kwh", "per_mwh", "uwh"]),
       sep=st.sampled_from([",", ";"]))
def test_csv_rows_read_back_exactly(rows: list[tuple[int, int, int, bool]], unit: str,
                                    sep: str) -> None:
    """Random rows (quarter-hour multiples, any sign, export optional) written in any unit and
    separator: each row's prices, at its start and averaged over its span, are the ones
    written; outside the file the fixed tariffs hold."""
    scale = {"per_kwh": Decimal(1000), "per_mwh": Decimal(1), "uwh": Decimal(1)}[unit]
    lines = [f"start{sep}end{sep}import_{unit}{sep}export_{unit}"]
    start, expected = T0, []
    for quarters, imported, spread, has_export in rows:
        end = start + quarters * QUARTER
        if not has_export:
            imported = max(imported, 80)  # the fixed feed-in applies
        exported = imported - spread
        cell = str(Decimal(exported) / scale) if has_export else ""
        text = f"{Decimal(imported) / scale}"
        if sep == ";":
            text, cell = text.replace(".", ","), cell.replace(".", ",")
        when = datetime.fromtimestamp(start / 1000, UTC).isoformat()
        lines.append(f"{when}{sep}{end}{sep}{text}{sep}{cell}")
        expected.append((start, end, imported, exported if has_export else 80))
        start = end
    schedule = parse_csv("\n".join(lines), source="p.csv", fixed=FIXED)
    for begin, end, imported, exported in expected:
        assert schedule.prices_at(begin) == (imported, exported)
        assert schedule.average(begin, end - begin) == (imported, exported)
    assert schedule.prices_at(T0 - 1) == (300, 80) == schedule.prices_at(start)


@settings(max_examples=300)
@given(text=st.text(alphabet=st.sampled_from(list("start,endimpor_xkwhu;0123456789.:-+TZ \n#")),
                    max_size=300))
def test_any_csv_text_parses_or_is_refused_with_a_reason(text: str) -> None:
    try:
        parse_csv(text, source="fuzz.csv", fixed=FIXED)
    except ScheduleError as exc:
        assert str(exc).startswith("fuzz.csv")


@pytest.mark.parametrize(("body", "error"), [
    ("2026-03-01T00:00,0.3", "p.csv:2: '2026-03-01T00:00' has no UTC offset"),
    ("2026-03-01T00:00:30Z,0.3", "p.csv:2: '2026-03-01T00:00:30Z' is not on a whole minute"),
    ("yesterday,0.3", "p.csv:2: 'yesterday' is not an ISO 8601 time"),
    ("2026-03-01T00:00Z,cheap", "p.csv:2: 'cheap' is not a number"),
    ("2026-03-01T00:00Z", "p.csv:2: 1 cells, the header names 2"),
])
def test_csv_mistakes_name_their_line(body: str, error: str) -> None:
    text = f"# prices for March\nstart,import_per_kwh\n{body}\n2026-03-01T02:00Z,0.2"
    text = text.replace("# prices for March\n", "")
    with pytest.raises(ScheduleError) as info:
        parse_csv(text, source="p.csv", fixed=FIXED)
    assert str(info.value).startswith(error)


def test_csv_order_overlap_and_spread_are_refused_with_lines() -> None:
    header = "start,end,import_per_mwh,export_per_mwh\n"
    cases = {
        "2026-03-01T01:00Z,,300,80\n2026-03-01T00:00Z,,300,80": "p.csv:3: starts at or before",
        "2026-03-01T00:00Z,2026-03-01T02:00Z,300,80\n2026-03-01T01:00Z,2026-03-01T03:00Z,300,80":
            "p.csv:3: starts before the row above ends",
        "2026-03-01T00:00Z,2026-03-01T01:00Z,50,80": "p.csv:2: import 50 µ/Wh is below export",
        "2026-03-01T00:00Z,2026-03-01T01:00Z,50,": "p.csv:2: import 50 µ/Wh is below the export",
        "2026-03-01T00:00Z,,300,80": "p.csv:2: one row and no end column",
    }
    for body, error in cases.items():
        with pytest.raises(ScheduleError, match=error.replace("(", r"\(")):
            parse_csv(header + body, source="p.csv", fixed=FIXED)


def test_csv_headers_are_checked_first() -> None:
    for header, error in [("begin,import_per_kwh", "unknown column 'begin'"),
                          ("start,import_per_kwh,import_per_mwh", "given twice"),
                          ("start,export_per_kwh", "no 'import' column"),
                          ("start,import_eur", "unknown column 'import_eur'")]:
        with pytest.raises(ScheduleError, match=f"p.csv:1: .*{error}"):
            parse_csv(header + "\n2026-03-01T00:00Z,1", source="p.csv", fixed=FIXED)
    many = "start,import_uwh\n" + "\n".join(
        f"{T0 + k * 60_000},1" for k in range(MAX_ROWS + 1))
    with pytest.raises(ScheduleError, match="rows, at most"):
        parse_csv(many, source="p.csv", fixed=FIXED)


def test_awattar_epoch_milliseconds_and_last_row_length() -> None:
    """aWATTar's start_timestamp in ms; a row holds until the next, the last as long as the one
    before it."""
    text = (f"start,import_per_mwh,export_per_mwh\n{T0},285.23,80\n{T0 + HOUR},-12.50,-20\n")
    schedule = parse_csv(text, source="a.csv", fixed=FIXED)
    assert schedule.prices_at(T0) == (285, 80)
    assert schedule.prices_at(T0 + 2 * HOUR - 1) == (-12, -20)
    assert schedule.prices_at(T0 + 2 * HOUR) == (300, 80)


def test_bare_spot_prices_under_a_fixed_feed_in_are_refused_with_a_hint() -> None:
    text = f"start,import_per_mwh\n{T0},75.23\n{T0 + HOUR},90\n"
    with pytest.raises(ScheduleError, match="a.csv:2: import 75 µ/Wh is below the export "
                                            "price 80 µ/Wh that applies then .a wholesale"):
        parse_csv(text, source="a.csv", fixed=FIXED)


def test_step_straddling_two_prices_is_weighted_by_time() -> None:
    text = ("start,import_uwh\n2026-03-01T00:00Z,100\n2026-03-01T00:10Z,201\n"
            "2026-03-01T01:00Z,90")
    schedule = parse_csv(text, source="p.csv", fixed=FIXED)
    # 10 min at 100, 5 min at 201: 133.67 -> 134
    assert schedule.average(T0, QUARTER) == (134, 80)
    imports, exports = schedule.steps(T0, QUARTER, 4)
    assert imports == (134, 201, 201, 201) and exports == (80,) * 4


def test_settlement_holds_negative_and_spreadless_prices_inside_the_tariff_band() -> None:
    """The plan keeps -20/-40 and 50/50; clearing and settlement take 1/0 and 51/50."""
    text = ("start,end,import_uwh,export_uwh\n2026-03-01T00:00Z,2026-03-01T01:00Z,-20,-40\n"
            "2026-03-01T01:00Z,2026-03-01T02:00Z,50,50")
    schedule = parse_csv(text, source="p.csv", fixed=FIXED)
    assert schedule.average(T0, QUARTER) == (-20, -40)
    assert schedule.tariffs(T0, QUARTER) == Tariffs(retail_price=1, feed_in_price=0)
    assert schedule.average(T0 + HOUR, QUARTER) == (50, 50)
    assert schedule.tariffs(T0 + HOUR, QUARTER) == Tariffs(retail_price=51, feed_in_price=50)
    assert schedule.tariffs(T0 + 2 * HOUR, QUARTER) == FIXED


def test_load_schedule_reads_the_file_and_refuses_what_is_no_tariff_file(
        tmp_path: Path) -> None:
    good = tmp_path / "prices.csv"
    good.write_text("\ufeffstart,import_per_kwh\n2026-03-01T00:00Z,0.25\n2026-03-01T01:00Z,0.2\n")
    assert load_schedule(good, fixed=FIXED).prices_at(T0) == (250, 80)
    for name, data, error in [("p.json", b"{}", "is .csv or .toml"),
                              ("p.csv", b"\xff\xfe", "not UTF-8"),
                              ("p.toml", b"x" * 2_000_001, "bytes, at most")]:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ScheduleError, match=error):
            load_schedule(path, fixed=FIXED)
    with pytest.raises(ScheduleError, match="missing.csv"):
        load_schedule(tmp_path / "missing.csv", fixed=FIXED)


# -- TOML ------------------------------------------------------------------------------------

TOU = """
unit = "per_kwh"
timezone = "Europe/Berlin"

[default]
import = 0.30
export = 0.08

[[window]]          # evening peak, working days
from = "17:00"
to = "21:00"
days = ["mon", "tue", "wed", "thu", "fri"]
import = 0.42

[[window]]          # cheap nights, every day
from = "23:00"
to = "06:00"
import = 0.21
"""


def test_time_of_use_windows_in_local_time_by_weekday() -> None:
    schedule = parse_toml(TOU, source="t.toml", fixed=FIXED)
    monday = _ms("2026-03-02T17:30+01:00")
    assert schedule.prices_at(monday) == (420, 80)
    assert schedule.prices_at(monday - HOUR) == (300, 80)
    assert schedule.prices_at(_ms("2026-03-01T17:30+01:00")) == (300, 80)  # Sunday
    assert schedule.prices_at(_ms("2026-03-03T05:59+01:00")) == (210, 80)  # past midnight
    assert schedule.prices_at(_ms("2026-03-03T06:00+01:00")) == (300, 80)


def test_windows_follow_local_time_across_daylight_saving() -> None:
    """On 29 March 2026 Berlin moves from +01:00 to +02:00: 17:00 local is 15:00 UTC; the
    step 00:30–01:30 UTC spans the change (local 01:30–03:30): the night window ends at 06:00
    local either way."""
    schedule = parse_toml(TOU, source="t.toml", fixed=FIXED)
    assert schedule.prices_at(_ms("2026-03-30T15:00Z")) == (420, 80)  # Monday 17:00 local
    assert schedule.prices_at(_ms("2026-03-30T14:59Z")) == (300, 80)
    assert schedule.average(_ms("2026-03-29T00:30Z"), HOUR) == (210, 80)
    assert schedule.prices_at(_ms("2026-03-29T04:00Z")) == (300, 80)  # 06:00 CEST


def test_step_across_a_window_edge_is_weighted_by_time() -> None:
    schedule = parse_toml(TOU, source="t.toml", fixed=FIXED)
    # Monday 16:30-17:30 local: half at 300, half at 420
    assert schedule.average(_ms("2026-03-02T16:30+01:00"), HOUR) == (360, 80)


DAY_AHEAD = """
unit = "per_mwh"

[spot]                             # what I pay: spot x 1.19 (VAT) + 180 per MWh of fees
factor = 1.19
add = 180

[[day_ahead]]                      # as ENTSO-E publishes: period start, resolution, points
start = 2026-03-01T00:00:00+01:00
resolution_min = 60
import = [85.23, 80.10, -12.5, 0]
"""


def test_day_ahead_list_in_entsoe_shape_with_a_spot_rule() -> None:
    """85.23 x 1.19 + 180 = 281.4237 -> 281; -12.5 x 1.19 + 180 = 165.125 -> 165."""
    schedule = parse_toml(DAY_AHEAD, source="d.toml", fixed=FIXED)
    start = _ms("2026-03-01T00:00+01:00")
    imports, exports = schedule.steps(start, HOUR, 5)
    assert imports == (281, 275, 165, 180, 300)
    assert exports == (80, 80, 80, 80, 80)


@pytest.mark.parametrize(("text", "error"), [
    ("unit = 'per_kwh'\n[[window]]\nfrom = '17:00'\nto = '21:00'\nimport = 0.4\n"
     "[[window]]\nfrom = '20:00'\nto = '22:00'\nimport = 0.5\n",
     "t.toml: window[1] overlaps window[0] (mon 20:00)"),
    ("unit = 'per_kwh'\n[[window]]\nfrom = '7:00'\nto = '21:00'\nimport = 0.4\n",
     "t.toml: window[0].from: String should match pattern"),
    ("unit = 'per_kwh'\n[[window]]\nfrom = '17:00'\nto = '21:00'\n",
     "t.toml: window[0]: sets no price"),
    ("unit = 'per_kwh'\n[[window]]\nfrom = '17:00'\nto = '17:00'\nimport = 0.4\n",
     "t.toml: window[0]: from and to are the same time"),
    ("unit = 'per_kwh'\ntimezone = 'Mars/Olympus'\n", "t.toml: timezone: unknown zone"),
    ("unit = 'per_gallon'\n", "t.toml: unit: Input should be"),
    ("unit = 'per_kwh'\ncolour = 'red'\n", "t.toml: colour: Extra inputs are not permitted"),
    ("unit = 'per_kwh'\n[default]\nimport = 0.05\n", "t.toml: default: import 50 µ/Wh is below"),
    ("unit = 'per_kwh'\n[[day_ahead]]\nstart = 2026-03-01T00:00:00\nresolution_min = 60\n"
     "import = [0.1]\n", "t.toml: day_ahead[0].start: Input should have timezone info"),
    ("unit = 'per_kwh'\n[[day_ahead]]\nstart = 2026-03-01T00:00:00Z\nresolution_min = 60\n"
     "import = [0.1, 0.2]\nexport = [0.1]\n", "t.toml: day_ahead[0]: 1 export prices for 2"),
    ("unit = 'per_kwh'\n[[day_ahead]]\nstart = 2026-03-01T00:00:00Z\nresolution_min = 60\n"
     "import = [0.1, 1e9]\n", "t.toml: day_ahead[0].import[1]: 1000000000 per_kwh is "
     "1000000000000 µ/Wh, beyond ±1000000"),
    ("unit = 'per_kwh'\n[[day_ahead]]\nstart = 2026-03-01T00:00:00Z\nresolution_min = 60\n"
     "import = [0.1, 0.2]\n[[day_ahead]]\nstart = 2026-03-01T01:00:00Z\nresolution_min = 60\n"
     "import = [0.1]\n", "t.toml: day_ahead[1].import[0] overlaps day_ahead[0].import[1]"),
    ("unit = 'per_kwh'\nimport = [\n", "t.toml: Invalid value"),
])
def test_toml_mistakes_name_their_key(text: str, error: str) -> None:
    with pytest.raises(ScheduleError) as info:
        parse_toml(text, source="t.toml", fixed=FIXED)
    assert error in str(info.value)


def test_toml_syntax_errors_carry_the_line() -> None:
    with pytest.raises(ScheduleError, match=r"line 3"):
        parse_toml("unit = 'per_kwh'\n\nimport = = 1\n", source="t.toml", fixed=FIXED)


@settings(max_examples=300)
@given(text=st.text(max_size=200))
def test_any_toml_text_parses_or_is_refused_with_a_reason(text: str) -> None:
    try:
        parse_toml(text, source="fuzz.toml", fixed=FIXED)
    except ScheduleError as exc:
        assert str(exc).startswith("fuzz.toml")


@settings(max_examples=100)
@given(start_min=st.integers(0, 1439), length=st.integers(1, 1439),
       days=st.sets(st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]),
                    min_size=1), price=st.integers(81, 999), probe=st.integers(0, 14 * 1440))
def test_a_window_covers_exactly_its_minutes(start_min: int, length: int, days: set[str],
                                             price: int, probe: int) -> None:
    end_min = (start_min + length) % 1440
    text = (f"unit = 'uwh'\n[[window]]\nfrom = '{start_min // 60:02d}:{start_min % 60:02d}'\n"
            f"to = '{end_min // 60:02d}:{end_min % 60:02d}'\ndays = {sorted(days)!r}\n"
            f"import = {price}\n")
    schedule = parse_toml(text, source="w.toml", fixed=FIXED)
    when = datetime(2026, 3, 2, tzinfo=UTC) + timedelta(minutes=probe)  # a Monday, UTC zone
    began = when - timedelta(minutes=(when.hour * 60 + when.minute - start_min) % 1440)
    inside = ((when.hour * 60 + when.minute - start_min) % 1440 < length
              and ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][began.weekday()] in days)
    assert schedule.prices_at(int(when.timestamp() * 1000)) == ((price if inside else 300), 80)


def test_schedule_without_file_is_the_fixed_tariff() -> None:
    from zoneinfo import ZoneInfo

    schedule = TariffSchedule(fixed=FIXED, zone=ZoneInfo("UTC"))
    assert schedule.steps(T0, QUARTER, 3) == ((300,) * 3, (80,) * 3)
    assert schedule.tariffs(T0, QUARTER) == FIXED
