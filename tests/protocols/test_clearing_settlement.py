"""Settlement after clearing: deviations to the grid, delivery ratio, reputation and offer cap."""

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.clearing import ClearingParams, NodeOutcome, Order, Tariffs, clear
from protocols.messages import Settlement
from protocols.settlement import (
    FULL_TRUST,
    ReputationRule,
    SettlementError,
    delivery_ratio,
    offer_cap_wh,
    settle,
    update_reputation,
)

TARIFFS = Tariffs(retail_price=300, feed_in_price=80)
RULE = ReputationRule()


def seller(sold: int, received: int) -> NodeOutcome:
    return NodeOutcome("s", 0, sold, 0, 0, 0, received, 0, 0)


def buyer(bought: int, paid: int) -> NodeOutcome:
    return NodeOutcome("b", bought, 0, 0, 0, paid, 0, 0, 0)


def test_seller_shortfall_is_bought_from_the_grid_at_retail() -> None:
    figures = settle(seller(100, 20_000), delivered_wh=-60, tariffs=TARIFFS)
    assert figures == (-100, -60, 40, 0, -20_000 + 40 * 300)


def test_seller_excess_is_exported_at_feed_in() -> None:
    figures = settle(seller(100, 20_000), delivered_wh=-130, tariffs=TARIFFS)
    assert figures == (-100, -130, 0, 30, -20_000 - 30 * 80)


def test_buyer_that_takes_less_exports_the_rest() -> None:
    assert settle(buyer(100, 20_000), delivered_wh=70, tariffs=TARIFFS) == (
        100, 70, 0, 30, 20_000 - 30 * 80
    )


def test_figures_fit_the_signed_settlement_message() -> None:
    figures = settle(buyer(100, 20_000), delivered_wh=120, tariffs=TARIFFS)
    message = Settlement(
        community="c", interval=4, node="b", meter_import_wh=5_000, meter_export_wh=0,
        meter_seq=17, meter_tag="ab" * 16, **figures._asdict(),
    )
    assert message.grid_import_wh == 20 and message.money == 20_000 + 20 * 300


@settings(max_examples=100, deadline=None)
@given(
    book=st.lists(
        st.tuples(st.sampled_from(["buy", "sell"]), st.integers(1, 500), st.integers(0, 400)),
        max_size=10,
    ),
    meter=st.lists(st.integers(-700, 700), min_size=10, max_size=10),
)
def test_settlement_balances_energy_and_keeps_p2p_money_balanced(
    book: list[tuple[str, int, int]], meter: list[int]
) -> None:
    orders = [
        Order(f"n{i}", side, wh, limit, hashlib.sha256(bytes([i])).hexdigest())  # type: ignore[arg-type]
        for i, (side, wh, limit) in enumerate(book)
    ]
    result = clear("uniform", orders, ClearingParams(tariffs=TARIFFS))
    settled = [
        settle(o, delivered_wh=meter[i], tariffs=TARIFFS) for i, o in enumerate(result.outcomes)
    ]
    p2p = sum(o.paid_p2p - o.received_p2p for o in result.outcomes)
    assert p2p == 0
    for figures in settled:
        assert figures.delivered_wh == (
            figures.cleared_wh + figures.grid_import_wh - figures.grid_export_wh
        )
        assert min(figures.grid_import_wh, figures.grid_export_wh) == 0
    grid_money = sum(f.grid_import_wh * 300 - f.grid_export_wh * 80 for f in settled)
    assert sum(f.money for f in settled) == p2p + grid_money


@pytest.mark.parametrize(
    ("cleared", "delivered", "ratio"),
    [(-100, -100, 1000), (-100, -60, 600), (-100, 20, 0), (-100, -150, 1000),
     (100, 70, 700), (100, -5, 0), (0, 40, None), (-3, -1, 333)],
)
def test_delivery_ratio(cleared: int, delivered: int, ratio: int | None) -> None:
    assert delivery_ratio(cleared_wh=cleared, delivered_wh=delivered) == ratio


@settings(max_examples=200)
@given(previous=st.integers(0, FULL_TRUST), ratio=st.integers(0, FULL_TRUST),
       num=st.integers(1, 5), extra=st.integers(0, 5))
def test_reputation_moves_towards_the_ratio_without_overshoot(
    previous: int, ratio: int, num: int, extra: int
) -> None:
    rule = ReputationRule(alpha_num=num, alpha_den=num + extra)
    new = update_reputation(previous, ratio, rule=rule)
    assert min(previous, ratio) <= new <= max(previous, ratio)
    assert (new != previous) or (previous == ratio)


def test_reputation_reaches_a_steady_ratio_exactly_and_ignores_idle_intervals() -> None:
    score = FULL_TRUST
    for _ in range(60):
        score = update_reputation(score, 0, rule=RULE)
    assert score == 0
    for _ in range(60):
        score = update_reputation(score, 1000, rule=RULE)
    assert score == FULL_TRUST
    assert update_reputation(412, None, rule=RULE) == 412


def test_offer_cap_scales_with_reputation_above_a_floor() -> None:
    assert offer_cap_wh(reputation=1000, limit_wh=2_750, rule=RULE) == 2_750
    assert offer_cap_wh(reputation=500, limit_wh=2_750, rule=RULE) == 1_375
    assert offer_cap_wh(reputation=0, limit_wh=2_750, rule=RULE) == 275


def test_bad_settlement_input() -> None:
    with pytest.raises(SettlementError, match="within 0..1000"):
        update_reputation(1001, 5, rule=RULE)
    with pytest.raises(SettlementError, match="delivered_wh"):
        settle(buyer(1, 1), delivered_wh=1.5, tariffs=TARIFFS)  # type: ignore[arg-type]
    with pytest.raises(SettlementError, match="alpha"):
        ReputationRule(alpha_num=2, alpha_den=1)
    with pytest.raises(SettlementError, match="limit_wh"):
        offer_cap_wh(reputation=5, limit_wh=-1, rule=RULE)
