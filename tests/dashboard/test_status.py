"""Earnings from a real ledger file, and the power-flow arithmetic."""

from datetime import UTC, datetime
from types import SimpleNamespace

from gateway.dashboard.status import earnings, flows, month_start_ms
from gateway.ledger import Ledger
from gateway.market.session import Timing
from tests.ledger_owner import make_owner

TIMING = Timing(epoch_ms=0, length_ms=900_000, gate_ms=60_000, grace_ms=10_000)


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def k(when_ms: int) -> int:
    return when_ms // TIMING.length_ms


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
            content = ({"reason": "no quorum", "metered_wh": 3} if money is None
                       else {"outcome": {"money": money}})
            ledger.append(interval=k(when), status="agreed", content=content)
        node = SimpleNamespace(ledger=ledger, timing=TIMING)
        assert earnings(node, now_ms=now) == {"today": 200, "month": 20_000 - 5_000 + 200}


def test_a_node_without_a_ledger_has_earned_nothing():
    node = SimpleNamespace(ledger=None, timing=TIMING)
    assert earnings(node, now_ms=ms(2024, 3, 15)) == {"today": 0, "month": 0}


def test_month_start_is_midnight_utc_on_the_first():
    assert month_start_ms(ms(2024, 12, 31, 23, 59)) == ms(2024, 12, 1)
    assert month_start_ms(ms(2025, 1, 1)) == ms(2025, 1, 1)


def test_home_load_is_what_grid_pv_and_battery_leave_and_unknown_if_any_is():
    snap = {"meter": {"power_w": -1500}, "battery": {"power_w": 800}}
    assert flows(snap, pv_w=3000) == {"pv_w": 3000, "home_w": 700, "battery_w": 800,
                                      "grid_w": -1500}
    assert flows(snap, pv_w=None)["home_w"] is None
    assert flows({"meter": None, "battery": None}, pv_w=100) == {
        "pv_w": 100, "home_w": None, "battery_w": None, "grid_w": None}
