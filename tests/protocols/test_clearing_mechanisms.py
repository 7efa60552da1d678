"""Each mechanism's rule on small books worked out by hand, and the clearing API's error paths."""

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.clearing import (
    ClearingError,
    ClearingParams,
    Limits,
    Order,
    Tariffs,
    Trade,
    clear,
    orders_from_bids,
    result_hash,
)
from protocols.clearing.sdr import sdr_price
from protocols.messages import Bid, Step, message_digest
from protocols.network import Feeder, FeederFees, FeeSchedule, Line, network_fees

TARIFFS = Tariffs(retail_price=300, feed_in_price=100)
PARAMS = ClearingParams(tariffs=TARIFFS)


def order(node: str, side: str, energy: int, limit: int, created_ms: int = 0, *, step: int = 0,
          bus: str = "") -> Order:
    digest = hashlib.sha256(node.encode()).hexdigest()
    return Order(node, side, energy, limit, digest, bus, created_ms, step)  # type: ignore[arg-type]


def buy(node: str, energy: int, limit: int, created_ms: int = 0, *, step: int = 0,
        bus: str = "") -> Order:
    return order(node, "buy", energy, limit, created_ms, step=step, bus=bus)


def sell(node: str, energy: int, limit: int, created_ms: int = 0, *, step: int = 0,
         bus: str = "") -> Order:
    return order(node, "sell", energy, limit, created_ms, step=step, bus=bus)


def outcome(result: object, node: str) -> tuple[int, ...]:
    found = [o for o in result.outcomes if o.node == node]  # type: ignore[attr-defined]
    assert len(found) == 1
    return tuple(found[0][1:5])  # bought, sold, grid import, grid export


def test_uniform_prices_at_the_competitive_equilibrium_where_the_marginal_seller_sits() -> None:
    """Issue 16's first book: CE price 220 (the marginal pair's midpoint, 235, left s2 rationed
    at a price it would sell more at)."""
    book = [buy("b1", 100, 250), buy("b2", 50, 200), sell("s1", 80, 120), sell("s2", 100, 220)]
    result = clear("uniform", book, PARAMS)
    assert result.price == 220
    assert result.trades == (
        Trade("b1", "s1", 80, 220, 80 * 220),
        Trade("b1", "s2", 20, 220, 20 * 220),
    )
    assert outcome(result, "b2") == (0, 0, 50, 0)  # bids 200 < 220
    assert outcome(result, "s2") == (0, 20, 0, 80)  # asks 220 = the price: rationed at the margin
    assert (result.grid_import_wh, result.grid_export_wh) == (50, 80)


@pytest.mark.parametrize(("k_num", "k_den", "price"),
                         [(1, 2, 242), (0, 1, 240), (1, 1, 245), (1, 3, 241)])
def test_uniform_k_picks_the_price_inside_the_competitive_equilibrium_interval(
    k_num: int, k_den: int, price: int
) -> None:
    """Issue 16's second book: CE interval [240, 245] (the old rule cleared at 175, with b2
    unserved although it bid 240 > 175)."""
    book = [buy("b1", 100, 250), buy("b2", 100, 240), sell("s1", 100, 100), sell("s2", 100, 245)]
    params = ClearingParams(tariffs=TARIFFS, k_num=k_num, k_den=k_den)
    result = clear("uniform", book, params)
    assert result.price == price
    assert result.trades == (Trade("b1", "s1", 100, price, 100 * price),)
    assert outcome(result, "b2") == (0, 0, 100, 0) and outcome(result, "s2") == (0, 0, 0, 100)


def test_uniform_golden_books_hash() -> None:
    """The two books' results, pinned (a change is a protocol change)."""
    first = [buy("b1", 100, 250), buy("b2", 50, 200), sell("s1", 80, 120), sell("s2", 100, 220)]
    second = [buy("b1", 100, 250), buy("b2", 100, 240), sell("s1", 100, 100),
              sell("s2", 100, 245)]
    assert [result_hash(clear("uniform", book, PARAMS)) for book in (first, second)] == [
        "bf5224b6ae2b6c682ce85dc1ccddfd50b6bda8d12af86794b5426b2d8692334f",
        "a6d3484fdb93130b3146769a7640b7c56889bfe71bdc36128af3b4d23461eb57"]


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


def test_a_curve_trades_its_steps_best_first_and_is_one_outcome() -> None:
    """b1 wants 60 Wh at up to 250 and 40 more at up to 200; s1 sells 50 at 120 and 50 more at
    210. The CE price is 200: b1's second step is at the margin, s1's second step does not sell."""
    book = [buy("b1", 60, 250), buy("b1", 40, 200, step=1), sell("s1", 50, 120),
            sell("s1", 50, 210, step=1), sell("s2", 30, 150)]
    result = clear("uniform", book, PARAMS)
    assert result.price == 200
    assert result.trades == (Trade("b1", "s1", 50, 200, 10_000), Trade("b1", "s2", 30, 200, 6_000))
    assert outcome(result, "b1") == (80, 0, 20, 0)
    assert outcome(result, "s1") == (0, 50, 0, 50)
    assert [o.node for o in result.outcomes] == ["b1", "s1", "s2"]


def test_cda_curves_meet_at_several_prices() -> None:
    """s1's two steps rest; b1's first step takes both (each at its resting price): one trade
    per (buyer, seller, price)."""
    book = [sell("s1", 30, 120, created_ms=0), sell("s1", 20, 150, created_ms=0, step=1),
            buy("b1", 40, 200, created_ms=1), buy("b1", 40, 100, created_ms=1, step=1)]
    result = clear("cda", book, PARAMS)
    assert result.trades == (Trade("b1", "s1", 30, 120, 3_600), Trade("b1", "s1", 10, 150, 1_500))
    assert outcome(result, "b1") == (40, 0, 40, 0) and outcome(result, "s1") == (0, 40, 0, 10)


# b0 and b2 sit 100 m apart under one cabinet 1 km from the substation; b1 is 10 m from it,
# so 1,060 m from either.
FEEDER = Feeder(root="sub", lines=[
    Line(bus="cab", parent="sub", length_m=1_000, capacity_wh=10**6),
    Line(bus="b0", parent="cab", length_m=50, capacity_wh=10**6),
    Line(bus="b2", parent="cab", length_m=50, capacity_wh=10**6),
    Line(bus="b1", parent="sub", length_m=10, capacity_wh=10**6),
])


def fees(base: int, per_km: int) -> ClearingParams:
    return ClearingParams(tariffs=TARIFFS,
                          fees=FeederFees(feeder=FEEDER, schedule=FeeSchedule(base=base,
                                                                              per_km=per_km)))


def test_the_fee_is_inside_the_buyers_limit() -> None:
    """Bid 250, ask 240, fee 20: after the fee the buyer would pay 265 at the old midpoint; it
    bids 230 net of the fee, below the ask, so nothing trades."""
    book = [buy("b", 100, 250, bus="b0"), sell("s", 100, 240, bus="b0")]
    assert clear("uniform", book, PARAMS).price == 245
    assert clear("uniform", book, fees(20, 0)).trades == ()
    # Bid 270, 250 net: the CE interval is [240, 250], and at 245 the buyer pays 265 <= 270.
    result = clear("uniform", [buy("b", 100, 270, bus="b0"), sell("s", 100, 240, bus="b0")],
                   fees(20, 0))
    assert result.price == 245


def test_pairing_prefers_the_cheaper_path() -> None:
    """Two buyers, two sellers, one price: each buyer gets the seller under its own cabinet
    (b0 and b2 are 100 m apart, b1 1,060 m from both); the walk in bus order would have sent
    b0's buyer to b1's seller."""
    book = [buy("x", 50, 300, bus="b0"), buy("y", 50, 300, bus="b1"),
            sell("p", 50, 100, bus="b1"), sell("q", 50, 100, bus="b2")]
    free = clear("uniform", book, PARAMS)
    assert {(t.buyer, t.seller) for t in free.trades} == {("x", "p"), ("y", "q")}
    priced = clear("uniform", book, fees(1, 20))
    assert {(t.buyer, t.seller) for t in priced.trades} == {("x", "q"), ("y", "p")}
    bus_of = {o.node: o.bus for o in book}
    schedule = FeeSchedule(base=1, per_km=20)
    charged = [f.fee_per_wh for f in network_fees(priced.trades, feeder=FEEDER, bus_of=bus_of,
                                                   schedule=schedule)]
    assert charged == [1 + 20 * 100 // 1000, 1]  # not 1 + 20 * 1060 // 1000 = 22 each


def test_cda_prefers_the_cheaper_path_between_equal_asks_and_charges_the_resting_buyer_its_limit(
) -> None:
    """An arriving buyer on b0 meets two equal asks: it takes b2's (100 m) before b1's (1,060 m).
    An arriving seller meets a resting buyer bidding 300 across a fee of 22: the price is 278,
    so the buyer pays its limit, fee included."""
    book = [sell("far", 50, 150, 0, bus="b1"), sell("near", 50, 150, 0, bus="b2"),
            buy("b", 60, 300, 1, bus="b0")]
    result = clear("cda", book, fees(1, 20))
    assert result.trades == (Trade("b", "far", 10, 150, 1_500), Trade("b", "near", 50, 150, 7_500))
    late = clear("cda", [buy("b", 60, 300, 0, bus="b0"), sell("far", 50, 150, 1, bus="b1")],
                 fees(1, 20))
    fee = 1 + 20 * FEEDER.distance_m("b1", "b0") // 1000
    assert late.trades == (Trade("b", "far", 50, 300 - fee, 50 * (300 - fee)),)


def test_energy_a_buyer_cannot_afford_to_fetch_goes_to_the_grid() -> None:
    """The far buyer is ranked on its cheapest path (its own bus's seller, who asks too much to
    trade). The seller that trades is 1,060 m away: at 20 per km its fee (21) fits the buyer's
    headroom at the price 130 (30), at 40 per km (42) it does not, and the far buyer's share goes
    to the grid, on both sides."""
    book = [buy("near", 50, 300, bus="b0"), buy("far", 50, 160, bus="b1"),
            sell("s", 100, 100, bus="b0"), sell("dear", 10, 290, bus="b1")]
    assert outcome(clear("uniform", book, fees(0, 20)), "far")[0] == 50
    result = clear("uniform", book, fees(0, 40))
    assert result.price == 130
    assert outcome(result, "far") == (0, 0, 50, 0)
    assert outcome(result, "near") == (50, 0, 0, 0) and outcome(result, "s") == (0, 50, 0, 50)


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


def test_orders_from_bids_make_one_order_per_step_and_clip_the_curve_best_steps_first() -> None:
    bid = Bid(community="c", interval=1, node="n1", seq=0, side="sell", energy_wh=700,
              limit_price=90, created_ms=5, steps=(Step(400, 90), Step(200, 150), Step(100, 240)))
    digest = message_digest(bid)
    assert orders_from_bids([(bid, digest)]) == (
        Order("n1", "sell", 400, 90, digest, "", 5, 0),
        Order("n1", "sell", 200, 150, digest, "", 5, 1),
        Order("n1", "sell", 100, 240, digest, "", 5, 2),
    )
    clipped = orders_from_bids([(bid, digest)], limits={"n1": Limits(import_wh=0, export_wh=500)})
    assert [(o.energy_wh, o.limit_price, o.step) for o in clipped] == [(400, 90, 0), (100, 150, 1)]


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
        ([buy("a", 1, 5), buy("a", 1, 4, step=2)], "gap in its steps"),
        ([buy("a", 1, 5), buy("a", 1, 5, step=1)], "buy steps descend"),
        ([sell("a", 1, 5), sell("a", 1, 4, step=1)], "sell steps must ascend"),
        ([buy("a", 1, 5), buy("a", 1, 4, step=1, bus="b1")], "share side, digest, bus"),
        ([buy("a", 1, 5, step=8)], "step must be an int in 0..7"),
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
