"""Invariants every clearing mechanism must hold, checked on random order books (hypothesis).

Parametrised over the registry, so a mechanism added there is held to all of them at once.
"""

import hashlib
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.clearing import (
    MECHANISMS,
    ClearingParams,
    Order,
    Result,
    Tariffs,
    clear,
    result_hash,
)
from protocols.network import Feeder, Line, curtail, line_flows


@st.composite
def books(draw: st.DrawFn) -> tuple[list[Order], ClearingParams]:
    """Up to 14 orders, limits deliberately spilling outside [feed-in, retail], with ties."""
    feed_in = draw(st.integers(min_value=0, max_value=150))
    retail = draw(st.integers(min_value=feed_in + 1, max_value=400))
    k_den = draw(st.integers(min_value=1, max_value=4))
    k_num = draw(st.integers(min_value=0, max_value=k_den))
    count = draw(st.integers(min_value=0, max_value=14))
    price_pool = draw(st.lists(st.integers(min_value=0, max_value=500), min_size=1, max_size=4))
    orders = []
    for index in range(count):
        orders.append(
            Order(
                node=f"n{index}",
                side=draw(st.sampled_from(["buy", "sell"])),
                energy_wh=draw(st.integers(min_value=1, max_value=3000)),
                limit_price=draw(st.sampled_from(price_pool) | st.integers(0, 500)),
                digest=hashlib.sha256(f"{index}".encode()).hexdigest(),
                bus=f"b{draw(st.integers(min_value=0, max_value=2))}",
                created_ms=draw(st.integers(min_value=0, max_value=3)),
            )
        )
    params = ClearingParams(
        tariffs=Tariffs(retail_price=retail, feed_in_price=feed_in), k_num=k_num, k_den=k_den
    )
    return orders, params


MECHANISM_NAMES = sorted(MECHANISMS)
EXAMPLES = settings(max_examples=100, deadline=None)


def check_invariants(result: Result, orders: list[Order], params: ClearingParams) -> None:
    tariffs = params.tariffs
    by_node = {o.node: o for o in orders}
    # One outcome per order, sorted by node; trades sorted by (buyer, seller), one per pair.
    assert [o.node for o in result.outcomes] == sorted(by_node)
    pairs = [(t.buyer, t.seller) for t in result.trades]
    assert pairs == sorted(pairs) and len(set(pairs)) == len(pairs)
    bought: Counter[str] = Counter()
    sold: Counter[str] = Counter()
    paid: Counter[str] = Counter()
    received: Counter[str] = Counter()
    for trade in result.trades:
        buyer, seller = by_node[trade.buyer], by_node[trade.seller]
        assert buyer.side == "buy" and seller.side == "sell"
        assert trade.energy_wh > 0
        assert trade.money == trade.energy_wh * trade.price
        # Individual rationality, per Wh, against the signed limits and the tariffs.
        assert seller.limit_price <= trade.price <= buyer.limit_price
        assert tariffs.feed_in_price <= trade.price <= tariffs.retail_price
        if result.price is not None:
            assert trade.price == result.price
        bought[trade.buyer] += trade.energy_wh
        sold[trade.seller] += trade.energy_wh
        paid[trade.buyer] += trade.money
        received[trade.seller] += trade.money
    for outcome in result.outcomes:
        order = by_node[outcome.node]
        assert outcome.bought_wh == bought[outcome.node]
        assert outcome.sold_wh == sold[outcome.node]
        assert outcome.paid_p2p == paid[outcome.node]
        assert outcome.received_p2p == received[outcome.node]
        # Energy balance per node: what was not traded is balanced by the grid, never negative.
        if order.side == "buy":
            assert outcome.bought_wh + outcome.grid_import_wh == order.energy_wh
            assert outcome.sold_wh == outcome.grid_export_wh == outcome.received_p2p == 0
        else:
            assert outcome.sold_wh + outcome.grid_export_wh == order.energy_wh
            assert outcome.bought_wh == outcome.grid_import_wh == outcome.paid_p2p == 0
        assert all(value >= 0 for value in outcome[1:])
        assert outcome.paid_grid == outcome.grid_import_wh * tariffs.retail_price
        assert outcome.received_grid == outcome.grid_export_wh * tariffs.feed_in_price
    # Energy and budget balance for the community, to the Wh and the micro-unit.
    assert sum(bought.values()) == sum(sold.values())
    assert sum(o.paid_p2p for o in result.outcomes) == sum(o.received_p2p for o in result.outcomes)
    assert result.grid_import_wh == sum(o.grid_import_wh for o in result.outcomes)
    assert result.grid_export_wh == sum(o.grid_export_wh for o in result.outcomes)
    demand = sum(o.energy_wh for o in orders if o.side == "buy")
    supply = sum(o.energy_wh for o in orders if o.side == "sell")
    assert demand - result.grid_import_wh == supply - result.grid_export_wh
    assert (result.price is None) or result.trades


@pytest.mark.parametrize("mechanism", MECHANISM_NAMES)
@EXAMPLES
@given(book=books())
def test_invariants(mechanism: str, book: tuple[list[Order], ClearingParams]) -> None:
    orders, params = book
    result = clear(mechanism, orders, params)
    assert result.mechanism == mechanism
    check_invariants(result, orders, params)


@pytest.mark.parametrize("mechanism", MECHANISM_NAMES)
@EXAMPLES
@given(book=books(), seed=st.integers())
def test_deterministic_under_permutation_and_idempotent(
    mechanism: str, book: tuple[list[Order], ClearingParams], seed: int
) -> None:
    orders, params = book
    first = clear(mechanism, orders, params)
    shuffled = list(orders)
    random.Random(seed).shuffle(shuffled)
    assert clear(mechanism, shuffled, params) == first
    assert clear(mechanism, tuple(orders), params) == first
    assert result_hash(clear(mechanism, orders, params)) == result_hash(first)


@pytest.mark.parametrize("mechanism", MECHANISM_NAMES)
@EXAMPLES
@given(book=books(), capacities=st.lists(st.integers(0, 4000), min_size=3, max_size=3))
def test_curtailed_results_keep_the_invariants_and_the_line_limits(
    mechanism: str, book: tuple[list[Order], ClearingParams], capacities: list[int]
) -> None:
    orders, params = book
    feeder = Feeder(
        root="sub",
        lines=[
            Line(bus="b0", parent="sub", length_m=100, capacity_wh=capacities[0]),
            Line(bus="b1", parent="b0", length_m=250, capacity_wh=capacities[1]),
            Line(bus="b2", parent="sub", length_m=80, capacity_wh=capacities[2]),
        ],
    )
    bus_of = {o.node: o.bus for o in orders}
    full = clear(mechanism, orders, params)
    result = curtail(full, orders=orders, params=params, feeder=feeder, bus_of=bus_of)
    check_invariants(result, orders, params)
    flows = line_flows(result.trades, feeder=feeder, bus_of=bus_of)
    assert all(abs(flows[line.bus]) <= line.capacity_wh for line in feeder.lines)
    assert result.grid_import_wh >= full.grid_import_wh
    assert curtail(result, orders=orders, params=params, feeder=feeder, bus_of=bus_of) == result
