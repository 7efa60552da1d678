"""Invariants every clearing mechanism must hold, checked on random order books (hypothesis).

Books carry bid curves (several steps per node) and, in the ``fees`` variants, network fees on a
small feeder. Parametrised over the registry, so a mechanism added there is held to all of them
at once: energy and budget balance, individual rationality per Wh with the fee inside the
buyer's limit and the tariffs, determinism under permutation, curtailment within line limits;
and for ``uniform`` the competitive equilibrium at its price.
"""

import hashlib
import random
from collections import Counter, defaultdict
from itertools import accumulate

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
from protocols.messages import MAX_STEPS
from protocols.network import (
    Feeder,
    FeederFees,
    FeeSchedule,
    Line,
    curtail,
    line_flows,
    network_fees,
)

#       sub
#      /    \
#   b0(100)  b2(80)
#    |
#   b1(250)
FEEDER = Feeder(
    root="sub",
    lines=[
        Line(bus="b0", parent="sub", length_m=100, capacity_wh=10**6),
        Line(bus="b1", parent="b0", length_m=250, capacity_wh=10**6),
        Line(bus="b2", parent="sub", length_m=80, capacity_wh=10**6),
    ],
)


@st.composite
def books(draw: st.DrawFn, *, fees: bool = False, flat: bool = False
          ) -> tuple[list[Order], ClearingParams]:
    """Up to 12 nodes, some with curves of up to ``MAX_STEPS`` steps, limits deliberately
    spilling outside [feed-in, retail], with ties; with ``fees`` a fee schedule on ``FEEDER``
    (``flat``: the same fee on every path)."""
    feed_in = draw(st.integers(min_value=0, max_value=150))
    retail = draw(st.integers(min_value=feed_in + 1, max_value=400))
    k_den = draw(st.integers(min_value=1, max_value=4))
    k_num = draw(st.integers(min_value=0, max_value=k_den))
    count = draw(st.integers(min_value=0, max_value=12))
    price_pool = draw(st.lists(st.integers(min_value=0, max_value=500), min_size=1, max_size=4))
    orders = []
    for index in range(count):
        side = draw(st.sampled_from(["buy", "sell"]))
        first = draw(st.sampled_from(price_pool) | st.integers(0, 500))
        moves = draw(st.lists(st.integers(1, 80), max_size=MAX_STEPS - 1))
        sign = 1 if side == "sell" else -1
        prices = [p for p in accumulate([first, *(sign * m for m in moves)]) if p >= 0]
        bus = f"b{draw(st.integers(min_value=0, max_value=2))}"
        created = draw(st.integers(min_value=0, max_value=3))
        for step, price in enumerate(prices):
            orders.append(Order(
                node=f"n{index}", side=side, energy_wh=draw(st.integers(1, 3000)),
                limit_price=price, digest=hashlib.sha256(f"{index}".encode()).hexdigest(),
                bus=bus, created_ms=created, step=step,
            ))
    schedule = None
    if fees:
        schedule = FeeSchedule(base=draw(st.integers(0, 60)),
                               per_km=0 if flat else draw(st.integers(0, 200)))
    params = ClearingParams(
        tariffs=Tariffs(retail_price=retail, feed_in_price=feed_in), k_num=k_num, k_den=k_den,
        fees=None if schedule is None else FeederFees(feeder=FEEDER, schedule=schedule),
    )
    return orders, params


MECHANISM_NAMES = sorted(MECHANISMS)
EXAMPLES = settings(max_examples=100, deadline=None)


def curves_of(orders: list[Order]) -> dict[str, list[Order]]:
    steps: defaultdict[str, list[Order]] = defaultdict(list)
    for order in sorted(orders, key=lambda o: o.step):
        steps[order.node].append(order)
    return steps


def fee_of(params: ClearingParams, by_node: dict[str, list[Order]], buyer: str, seller: str
           ) -> int:
    if params.fees is None:
        return 0
    return params.fees.fee_per_wh(by_node[seller][0].bus, by_node[buyer][0].bus)


def fits(costs: Counter[int], steps: list[tuple[int, int]], *, buying: bool) -> bool:
    """Whether Wh bought (sold) at ``costs`` (cost per Wh -> Wh) can each be given a step of the
    curve (limit, Wh) whose limit covers it: for every cost c, the Wh costing at least c (at
    most c when selling) fit in the steps whose limit is at least c (at most c)."""
    for c in costs:
        if buying:
            need = sum(wh for cost, wh in costs.items() if cost >= c)
            room = sum(wh for limit, wh in steps if limit >= c)
        else:
            need = sum(wh for cost, wh in costs.items() if cost <= c)
            room = sum(wh for limit, wh in steps if limit <= c)
        if need > room:
            return False
    return True


def check_invariants(result: Result, orders: list[Order], params: ClearingParams) -> None:
    tariffs = params.tariffs
    retail, feed_in = tariffs.retail_price, tariffs.feed_in_price
    by_node = curves_of(orders)
    # One outcome per node, sorted; trades sorted by (buyer, seller, price), one per key, and
    # one per pair at a uniform price.
    assert [o.node for o in result.outcomes] == sorted(by_node)
    keys = [(t.buyer, t.seller, t.price) for t in result.trades]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    if result.price is not None:
        assert len({(t.buyer, t.seller) for t in result.trades}) == len(keys)
    bought: Counter[str] = Counter()
    sold: Counter[str] = Counter()
    paid: Counter[str] = Counter()
    received: Counter[str] = Counter()
    costs: defaultdict[str, Counter[int]] = defaultdict(Counter)
    for trade in result.trades:
        buyer, seller = by_node[trade.buyer][0], by_node[trade.seller][0]
        assert buyer.side == "buy" and seller.side == "sell"
        assert trade.energy_wh > 0
        assert trade.money == trade.energy_wh * trade.price
        fee = fee_of(params, by_node, trade.buyer, trade.seller)
        # Nobody pays above retail, fee included, or receives below feed-in.
        assert feed_in <= trade.price and trade.price + fee <= retail
        if result.price is not None:
            assert trade.price == result.price
        bought[trade.buyer] += trade.energy_wh
        sold[trade.seller] += trade.energy_wh
        paid[trade.buyer] += trade.money
        received[trade.seller] += trade.money
        costs[trade.buyer][trade.price + fee] += trade.energy_wh
        costs[trade.seller][trade.price] += trade.energy_wh
    for outcome in result.outcomes:
        steps = by_node[outcome.node]
        total = sum(o.energy_wh for o in steps)
        curve = [(o.limit_price, o.energy_wh) for o in steps]
        assert outcome.bought_wh == bought[outcome.node]
        assert outcome.sold_wh == sold[outcome.node]
        assert outcome.paid_p2p == paid[outcome.node]
        assert outcome.received_p2p == received[outcome.node]
        # Energy balance per node: what was not traded is balanced by the grid, never negative.
        # Individual rationality per Wh: each Wh bought at price + fee (sold at price) is covered
        # by a step of the node's signed curve.
        if steps[0].side == "buy":
            assert outcome.bought_wh + outcome.grid_import_wh == total
            assert outcome.sold_wh == outcome.grid_export_wh == outcome.received_p2p == 0
            assert fits(costs[outcome.node], curve, buying=True)
        else:
            assert outcome.sold_wh + outcome.grid_export_wh == total
            assert outcome.bought_wh == outcome.grid_import_wh == outcome.paid_p2p == 0
            assert fits(costs[outcome.node], curve, buying=False)
        assert all(value >= 0 for value in outcome[1:])
        assert outcome.paid_grid == outcome.grid_import_wh * retail
        assert outcome.received_grid == outcome.grid_export_wh * feed_in
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
@given(book=books(fees=True))
def test_individual_rationality_holds_with_the_fee_inside_every_limit(
    mechanism: str, book: tuple[list[Order], ClearingParams]
) -> None:
    """A buyer never pays price + fee above its signed limit or retail, a seller never receives
    below its limit or feed-in, per Wh of its curve; the fees are those ``network_fees`` charges
    each trade afterwards (what the gateways agree on)."""
    orders, params = book
    assert params.fees is not None
    result = clear(mechanism, orders, params)
    check_invariants(result, orders, params)
    bus_of = {o.node: o.bus for o in orders}
    schedule = params.fees.schedule  # type: ignore[attr-defined]
    charged = network_fees(result.trades, feeder=FEEDER, bus_of=bus_of, schedule=schedule)
    limit = {o.node: min(o.limit_price, params.tariffs.retail_price)
             for o in orders if o.step == 0}
    for trade, fee in zip(result.trades, charged, strict=True):
        assert trade.price + fee.fee_per_wh <= limit[trade.buyer]


def _net_limits(orders: list[Order], params: ClearingParams) -> dict[tuple[str, int], int]:
    """Each order's (net) effective limit: a buyer's less its cheapest fee from any seller."""
    tariffs, fees = params.tariffs, params.fees
    seller_buses = {o.bus for o in orders if o.side == "sell"}
    net = {}
    for o in orders:
        if o.side == "sell":
            net[o.node, o.step] = max(o.limit_price, tariffs.feed_in_price)
        else:
            cheapest = min((fees.fee_per_wh(s, o.bus) for s in seller_buses), default=0) if fees \
                else 0
            net[o.node, o.step] = min(o.limit_price, tariffs.retail_price) - cheapest
    return net


@EXAMPLES
@given(book=books() | books(fees=True, flat=True))
def test_uniform_price_is_a_competitive_equilibrium(
    book: tuple[list[Order], ClearingParams]
) -> None:
    """At the uniform price every node trades what it wants: a buyer all its steps bidding above
    the price and none bidding below (only steps at the price are rationed), a seller likewise;
    so no unmatched buyer bids above the price and no unmatched seller asks below it. With no
    trade, no bid reaches any ask. Bids are net of the fee (one fee for every path here)."""
    orders, params = book
    result = clear("uniform", orders, params)
    net = _net_limits(orders, params)
    if result.price is None:
        bids = [net[o.node, o.step] for o in orders if o.side == "buy"]
        asks = [net[o.node, o.step] for o in orders if o.side == "sell"]
        assert not bids or not asks or max(bids) < min(asks)
        return
    price = result.price
    for node, steps in curves_of(orders).items():
        outcome = result.outcomes.of(node)
        assert outcome is not None
        traded = outcome.bought_wh + outcome.sold_wh
        sign = 1 if steps[0].side == "buy" else -1
        eager = sum(o.energy_wh for o in steps if sign * (net[node, o.step] - price) > 0)
        willing = sum(o.energy_wh for o in steps if sign * (net[node, o.step] - price) >= 0)
        assert eager <= traded <= willing


@pytest.mark.parametrize("mechanism", MECHANISM_NAMES)
@EXAMPLES
@given(book=books() | books(fees=True), seed=st.integers())
def test_deterministic_under_permutation_and_idempotent(
    mechanism: str, book: tuple[list[Order], ClearingParams], seed: int
) -> None:
    orders, params = book
    first = clear(mechanism, orders, params)
    shuffled = list(orders)
    random.Random(seed).shuffle(shuffled)
    assert clear(mechanism, shuffled, params) == first
    assert clear(mechanism, tuple(orders), params) == first
    assert result_hash(clear(mechanism, shuffled, params)) == result_hash(first)


@pytest.mark.parametrize("mechanism", MECHANISM_NAMES)
@EXAMPLES
@given(book=books() | books(fees=True),
       capacities=st.lists(st.integers(0, 4000), min_size=3, max_size=3))
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
