"""Earnings kept from a real ledger file as blocks are written, the shared status, and the
power-flow arithmetic."""

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.dashboard.status import (
    Earnings,
    Flows,
    StatusView,
    flows,
    month_start_ms,
    read_month,
)
from gateway.home.status import BatteryStatus, MeterStatus, PvStatus
from gateway.ledger import Ledger
from protocols.market import Timing
from tests.dashboard.statuses import status as a_status
from tests.ledger_owner import make_owner

TIMING = Timing(epoch_ms=0, length_ms=900_000, gate_ms=60_000, grace_ms=10_000)
DAY_MS = 86_400_000


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def k(when_ms: int) -> int:
    return when_ms // TIMING.length_ms


def append(ledger: Ledger, interval: int, money: int | None) -> None:
    content = ({"reason": "no quorum", "metered_wh": 3} if money is None
               else {"outcome": {"money": money}})
    ledger.append(interval=interval, status="agreed", content=content)


def reread(ledger: Ledger, now_ms: int) -> dict[str, int]:
    """The definition, by reading every block: an interval counts for the day or month its
    start falls in; earned = -money."""
    day, month = k(now_ms - now_ms % DAY_MS), k(month_start_ms(now_ms))
    with Ledger.open(ledger.path) as fresh:  # not through the ledger under test: no read counted
        blocks = [(b.interval, -int((b.content.get("outcome") or {}).get("money", 0)))
                  for b, _ in fresh.blocks()]
    return {"today": sum(m for i, m in blocks if i >= day),
            "month": sum(m for i, m in blocks if i >= month)}


class CountingLedger(Ledger):
    """A real ledger that counts the reads the dashboard makes of it."""

    reads: list[int]

    def blocks(self, *, from_interval: int = 0):
        self.reads.append(from_interval)
        return super().blocks(from_interval=from_interval)


class StandIn:
    """The node parts ``StatusView`` reads, around a real ledger; counts its statuses taken."""

    def __init__(self, ledger: Ledger, now_ms: int) -> None:
        self.ledger, self.timing, self.now_ms = ledger, TIMING, now_ms
        self.snapshots = 0

    def status(self):
        self.snapshots += 1
        return a_status(now_ms=self.now_ms)


def test_earnings_today_and_this_month_from_the_ledger(tmp_path):
    now = ms(2024, 3, 15, 12, 0)
    with Ledger.open(tmp_path / "ledger.db", owner=make_owner()) as ledger:
        for when, money in [
            (ms(2024, 2, 29, 23, 45), -1_000_000),  # last month: not counted
            (ms(2024, 3, 1, 0, 0), -20_000),          # first interval of the month: earned 0.02
            (ms(2024, 3, 14, 23, 45), 5_000),         # yesterday: paid 0.005
            (ms(2024, 3, 15, 0, 0), -300),            # today
            (ms(2024, 3, 15, 6, 0), None),            # today, abstained: no money moved
            (ms(2024, 3, 15, 11, 45), 100),           # today, paid
        ]:
            append(ledger, k(when), money)
    earnings = read_month(tmp_path / "ledger.db", timing=TIMING, now_ms=now)
    assert earnings.at(now) == {"today": 200, "month": 20_000 - 5_000 + 200}
    # the next day and the next month start from zero, without reading anything
    assert earnings.at(ms(2024, 3, 16, 0, 5)) == {"today": 0, "month": 15_200}
    assert earnings.at(ms(2024, 4, 1, 0, 5)) == {"today": 0, "month": 0}


@settings(max_examples=40, deadline=None)
@given(
    start=st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2030, 1, 1),
                       timezones=st.just(UTC)),
    steps=st.lists(st.tuples(st.integers(1, 200), st.one_of(st.none(),
                                                            st.integers(-10**9, 10**9))),
                   min_size=1, max_size=60),
    checks=st.integers(1, 5),
)
def test_earnings_kept_block_by_block_equal_a_full_reread(start, steps, checks):
    """Whatever the gaps between intervals (across days and months), the kept tally is what
    reading every block again would give, at every block and at moments before the next one."""
    first = k(int(start.timestamp() * 1000))
    intervals = [first + sum(gap for gap, _ in steps[:i + 1]) for i in range(len(steps))]
    with tempfile.TemporaryDirectory() as folder, \
            Ledger.open(Path(folder) / "ledger.db", owner=make_owner()) as ledger:
        earnings = Earnings(timing=TIMING, from_interval=k(month_start_ms(first * 900_000)))
        for i, (interval, (_, money)) in enumerate(zip(intervals, steps, strict=True)):
            append(ledger, interval, money)
            earnings.catch_up(ledger)
            following = intervals[i + 1] if i + 1 < len(intervals) else interval + 96
            for step in range(checks):  # time only moves on
                now = (interval + (following - interval) * step // checks) * 900_000
                assert earnings.at(now) == reread(ledger, now), (interval, now)


async def test_status_is_built_once_per_max_age_and_reads_only_the_new_blocks(tmp_path):
    """However many requests come, the snapshot is taken and the ledger read at most once per
    ``max_age_s``; a new block costs a read of that block, never the month again."""
    now = ms(2024, 3, 15, 12, 0)
    path = tmp_path / "ledger.db"
    me = make_owner()
    with Ledger.open(path, owner=me) as ledger:
        for when in range(ms(2024, 2, 20), now, 900_000 * 4):  # a busy month and a half
            append(ledger, k(when), -1_000)
    with CountingLedger.open(path, owner=me) as ledger:
        ledger.reads = []
        node = StandIn(ledger, now)
        clock = [100.0]
        view = StatusView(node=node, max_age_s=1.0, monotonic=lambda: clock[0])
        await view.open()
        node.snapshots = 0  # open() asked the node's time
        month = view.current().data["earnings"]["month"]
        assert month == reread(ledger, now)["month"] > 0
        assert ledger.reads == []  # the month came from open()'s own read, off the event loop

        first = view.current()
        for _ in range(500):
            assert view.current() is first
        assert node.snapshots == 1 and ledger.reads == []

        last = ledger.last()
        assert last is not None
        append(ledger, k(now), -7)
        clock[0] += 1.0
        node.now_ms = now + 900_000
        status = view.current()
        assert status.data["earnings"] == reread(ledger, node.now_ms)
        assert status.data["earnings"]["month"] == month + 7
        assert ledger.reads == [last.interval + 1]  # from the block after the last one read
        assert node.snapshots == 2


async def test_a_node_without_a_ledger_has_earned_nothing():
    view = StatusView(node=SimpleNamespace(ledger=None, timing=TIMING,
                                           status=lambda: a_status(now_ms=ms(2024, 3, 15))))
    await view.open()
    assert view.current().data["earnings"] == {"today": 0, "month": 0}


def test_the_status_is_read_only_after_open():
    view = StatusView(node=SimpleNamespace(ledger=None, timing=TIMING))
    with pytest.raises(RuntimeError, match="open"):
        view.current()


def test_month_start_is_midnight_utc_on_the_first():
    assert month_start_ms(ms(2024, 12, 31, 23, 59)) == ms(2024, 12, 1)
    assert month_start_ms(ms(2025, 1, 1)) == ms(2025, 1, 1)


def test_home_load_is_what_grid_pv_and_battery_leave_and_unknown_if_any_is():
    meter = MeterStatus(power_w=-1500, import_wh=0, export_wh=0)
    battery = BatteryStatus(soc_pct=50.0, power_w=800, setpoint_w=800)
    assert flows(a_status(meter=meter, battery=battery, pv=PvStatus(power_w=-3000))) == Flows(
        pv_w=3000, home_w=700, battery_w=800, grid_w=-1500)
    assert flows(a_status(meter=meter, battery=battery, pv=None)).home_w is None
    assert flows(a_status(meter=None, battery=None, pv=PvStatus(power_w=-100))) == Flows(
        pv_w=100, home_w=None, battery_w=None, grid_w=None)
