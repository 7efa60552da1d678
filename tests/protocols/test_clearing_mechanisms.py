"""Each mechanism's rule on small books worked out by hand, and the clearing API's error paths."""

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.clearing import (
    ClearingError,
    ClearingParams,
    Order,
    Tariffs,
    Trade,
    clear,
    orders_from_bids,
    result_hash,
)
from protocols.clearing.sdr import sdr_price
from protocols.messages import Bid, message_digest

TARIFFS = Tariffs(retail_price=300, feed_in_price=100)
PARAMS = ClearingParams(tariffs=TARIFFS)


def order(node: str, side: str, energy: int, limit: int, created_ms: int = 0) -> Order:
    digest = hashlib.sha256(node.encode()).hexdigest()
    return Order(node, side, energy, limit, digest, "", created_ms)  # type: ignore[arg-type]


def buy(node: str, energy: int, limit: int, created_ms: int = 0) -> Order:
    return order(node, "buy", energy, limit, created_ms)


def sell(node: str, energy: int, limit: int, created_ms: int = 0) -> Order:
    return order(node, "sell", energy, limit, created_ms)


def outcome(result: object, node: str) -> tuple[int, ...]:
    found = [o for o in result.outcomes if o.node == node]  # type: ignore[attr-defined]
    assert len(found) == 1
    return tuple(found[0][1:5])  # bought, sold, grid import, grid export


def test_uniform_prices_between_the_marginal_bid_and_ask() -> None:
    book = [buy("b1", 100, 250), buy("b2", 50, 200), sell("s1", 80, 120), sell("s2", 100, 220)]
    result = clear("uniform", book, PARAMS)
    assert result.price == 220 + (250 - 220) // 2
    assert result.trades == (
        Trade("b1", "s1", 80, 235, 80 * 235),
        Trade("b1", "s2", 20, 235, 20 * 235),
    )
    assert outcome(result, "b2") == (0, 0, 50, 0)
    assert outcome(result, "s2") == (0, 20, 0, 80)
    assert (result.grid_import_wh, result.grid_export_wh) == (50, 80)


@pytest.mark.parametrize(("k_num", "k_den", "price"), [(0, 1, 220), (1, 1, 250), (1, 3, 230)])
def test_uniform_k_moves_the_price_across_the_gap(k_num: int, k_den: int, price: int) -> None:
    book = [buy("b1", 100, 250), sell("s1", 80, 120), sell("s2", 100, 220)]
    params = ClearingParams(tariffs=TARIFFS, k_num=k_num, k_den=k_den)
    assert clear("uniform", book, params).price == price


def test_uniform_rations_the_marginal_level_pro_rata() -> None:
    book = [buy("b1", 60, 250), buy("b2", 40, 250), buy("b3", 90, 290), sell("s1", 140, 100)]
    result = clear("uniform", book, PARAMS)
    assert outcome(result, "b3") == (90, 0, 0, 0)  # better level filled whole
    assert outcome(result, "b1")[0] == 30 and outcome(result, "b2")[0] == 20


def test_uniform_breaks_an_exact_remainder_tie_by_digest() -> None:
    book = [buy("b1", 1, 250), buy("b2", 1, 250), sell("s1", 1, 100)]
    winner = min(["b1", "b2"], key=lambda n: hashlib.sha256(n.encode()).hexdigest())
    result = clear("uniform", book, PARAMS)
    assert [t.buyer for t in result.trades] == [winner]


def test_limits_outside_the_tariff_band_only_narrow_trading() -> None:
    # A buyer "willing" to pay 1000 never pays above retail, so a seller asking 900 finds nobody.
    assert clear("uniform", [buy("b", 10, 1000), sell("s", 10, 900)], PARAMS).trades == ()
    # A seller asking 0 is matched as if at feed-in: the price is the midpoint of 100 and 300.
    assert clear("uniform", [buy("b", 10, 1000), sell("s", 10, 0)], PARAMS).price == 200


def test_trade_reduction_drops_the_marginal_pair() -> None:
    book = [buy("b1", 100, 250), buy("b2", 100, 200), sell("s1", 100, 120), sell("s2", 100, 180)]
    result = clear("trade-reduction", book, PARAMS)
    assert result.trades == (Trade("b1", "s1", 100, 190, 19_000),)
    assert outcome(result, "b2") == (0, 0, 100, 0) and outcome(result, "s2") == (0, 0, 0, 100)


def test_trade_reduction_keeps_everyone_when_the_next_pair_prices_inside_the_gap() -> None:
    book = [
        buy("b1", 100, 250), buy("b2", 100, 200), buy("b3", 100, 170),
        sell("s1", 100, 120), sell("s2", 100, 180), sell("s3", 100, 190),
    ]
    result = clear("trade-reduction", book, PARAMS)
    assert result.price == 180
    assert sum(t.energy_wh for t in result.trades) == 200


def test_mmr_serves_the_short_side_at_the_midpoint() -> None:
    book = [buy("b1", 100, 300), buy("b2", 100, 250), buy("cheap", 100, 150), sell("s1", 50, 100)]
    result = clear("mmr", book, PARAMS)
    assert result.price == 200
    assert outcome(result, "b1") == (25, 0, 75, 0) and outcome(result, "b2") == (25, 0, 75, 0)
    assert outcome(result, "cheap") == (0, 0, 100, 0)  # refuses 200: sits out
    assert outcome(result, "s1") == (0, 50, 0, 0)


def test_sdr_price_follows_the_paper_formula() -> None:
    # S/D = 1/3: 300 * 100 / (200 / 3 + 100) = 180.
    result = clear("sdr", [buy("b", 300, 300), sell("s", 100, 100)], PARAMS)
    assert result.price == 180
    assert clear("sdr", [buy("b", 100, 300), sell("s", 200, 100)], PARAMS).price == 100


@settings(max_examples=200)
@given(
    demand=st.integers(1, 10**6), supply=st.integers(1, 10**6), more=st.integers(0, 10**6),
    feed_in=st.integers(0, 500), spread=st.integers(1, 500),
)
def test_sdr_price_is_bounded_and_falls_as_supply_grows(
    demand: int, supply: int, more: int, feed_in: int, spread: int
) -> None:
    tariffs = Tariffs(retail_price=feed_in + spread, feed_in_price=feed_in)
    price = sdr_price(demand, supply, tariffs)
    assert feed_in <= price <= feed_in + spread
    assert sdr_price(demand, supply + more, tariffs) <= price


@pytest.mark.parametrize(
    ("book", "price"),
    [
        ([buy("b", 100, 300), sell("s", 40, 100)], 300),
        ([buy("b", 40, 300), sell("s", 100, 100)], 100),
        ([buy("b", 50, 300), sell("s", 50, 100)], 200),
    ],
)
def test_bill_sharing_charges_every_member_the_pooled_marginal_price(
    book: list[Order], price: int
) -> None:
    result = clear("bill-sharing", book, PARAMS)
    assert result.price == price
    members = sum(
        o.paid_p2p + o.paid_grid - o.received_p2p - o.received_grid for o in result.outcomes
    )
    community_bill = result.grid_import_wh * 300 - result.grid_export_wh * 100
    assert members == community_bill


def test_cda_replays_in_timestamp_order_at_resting_prices() -> None:
    book = [
        sell("s1", 100, 150, created_ms=0), sell("s2", 100, 120, created_ms=1),
        buy("b1", 150, 200, created_ms=2), buy("b2", 100, 130, created_ms=3),
        sell("s3", 50, 125, created_ms=4),
    ]
    result = clear("cda", book, PARAMS)
    assert result.price is None
    assert result.trades == (
        Trade("b1", "s1", 50, 150, 7_500),
        Trade("b1", "s2", 100, 120, 12_000),
        Trade("b2", "s3", 50, 130, 6_500),
    )
    assert outcome(result, "b2") == (50, 0, 50, 0) and outcome(result, "s1") == (0, 50, 0, 50)


def test_result_hash_changes_with_the_result() -> None:
    book = [buy("b1", 100, 250), sell("s1", 80, 120)]
    one = clear("uniform", book, PARAMS)
    other = clear("uniform", [buy("b1", 100, 250), sell("s1", 81, 120)], PARAMS)
    assert result_hash(one) == result_hash(clear("uniform", book, PARAMS))
    assert result_hash(one) != result_hash(other)
    assert result_hash(one) != result_hash(clear("mmr", book, PARAMS))


def test_orders_from_bids_carry_bus_digest_and_time() -> None:
    bid = Bid(
        community="c", interval=1, node="n1", seq=0, side="sell", energy_wh=5, limit_price=7,
        created_ms=99,
    )
    (made,) = orders_from_bids([(bid, message_digest(bid))], buses={"n1": "b4"})
    assert made == Order("n1", "sell", 5, 7, message_digest(bid), "b4", 99)


@pytest.mark.parametrize(
    ("book", "match"),
    [
        ([buy("a", 1, 1), buy("a", 2, 1)], "more than one order"),
        ([buy("a", 1, 1), buy("b", 2, 1)._replace(digest=buy("a", 1, 1).digest)], "digest"),
        ([buy("a", 0, 1)], "energy_wh"),
        ([buy("a", True, 1)], "energy_wh"),
        ([buy("a", 1, -1)], "limit_price"),
        ([buy("a", 1, 1.5)], "limit_price"),  # type: ignore[arg-type]
        ([order("a", "hold", 1, 1)], "side"),
        ([("a", "buy", 1, 1, "d")], "expected Order"),
    ],
)
def test_bad_orders_are_refused(book: list[Order], match: str) -> None:
    with pytest.raises(ClearingError, match=match):
        clear("uniform", book, PARAMS)


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ClearingError, match="unknown mechanism 'vickrey'"):
        clear("vickrey", [], PARAMS)
    with pytest.raises(ClearingError, match="feed_in_price < retail_price"):
        Tariffs(retail_price=100, feed_in_price=100)
    with pytest.raises(ClearingError, match="k_num <= k_den"):
        ClearingParams(tariffs=TARIFFS, k_num=3, k_den=2)
    with pytest.raises(ClearingError, match="integers"):
        Tariffs(retail_price=300.0, feed_in_price=100)  # type: ignore[arg-type]
