"""The radial feeder: distances, fees, flows, and curtailment on a 100-bus feeder."""

import hashlib
import random

import pytest

from protocols.clearing import ClearingParams, Order, Tariffs, Trade, clear
from protocols.network import (
    Feeder,
    FeeSchedule,
    Line,
    NetworkError,
    TradeFee,
    curtail,
    line_flows,
    network_fees,
)

PARAMS = ClearingParams(tariffs=Tariffs(retail_price=300, feed_in_price=80))

#      sub
#     /    \
#   a(100)  d(80)
#   /   \
# b(50) c(200)
SMALL = Feeder(
    root="sub",
    lines=[
        Line(bus="a", parent="sub", length_m=100, capacity_wh=1000),
        Line(bus="b", parent="a", length_m=50, capacity_wh=1000),
        Line(bus="c", parent="a", length_m=200, capacity_wh=1000),
        Line(bus="d", parent="sub", length_m=80, capacity_wh=1000),
    ],
)


def feeder_100(seed: int = 7) -> Feeder:
    """feeder-100: a seeded radial feeder of 100 buses below a substation, 40-400 m per line."""
    rng = random.Random(seed)
    lines = []
    for index in range(100):
        parent = "sub" if index == 0 else f"bus{rng.randrange(index)}"
        lines.append(
            Line(
                bus=f"bus{index}", parent=parent, length_m=rng.randint(40, 400),
                capacity_wh=rng.randint(500, 3000),
            )
        )
    return Feeder(root="sub", lines=lines)


def test_distances_follow_the_tree() -> None:
    assert SMALL.distance_m("b", "c") == 250  # via a, not via the substation
    assert SMALL.distance_m("b", "d") == 50 + 100 + 80
    assert SMALL.distance_m("c", "c") == 0
    assert SMALL.distance_m("sub", "c") == SMALL.distance_m("c", "sub") == 300


def test_fee_grows_with_distance_and_is_exact() -> None:
    schedule = FeeSchedule(base=2, per_km=40)
    trades = [Trade("b1", "s1", 10, 150, 1500), Trade("b2", "s1", 3, 150, 450)]
    bus_of = {"b1": "c", "b2": "d", "s1": "b"}
    assert network_fees(trades, feeder=SMALL, bus_of=bus_of, schedule=schedule) == (
        TradeFee("b1", "s1", 250, 2 + 10, 120),
        TradeFee("b2", "s1", 230, 2 + 9, 33),
    )


def test_flows_net_out_and_carry_direction() -> None:
    trades = [Trade("x", "y", 30, 100, 3000), Trade("y2", "x2", 10, 100, 1000)]
    bus_of = {"y": "b", "x": "d", "x2": "d", "y2": "c"}
    flows = line_flows(trades, feeder=SMALL, bus_of=bus_of)
    # 30 Wh b -> a -> sub -> d, and 10 Wh d -> sub -> a -> c.
    assert flows == {"a": 30 - 10, "b": 30, "c": -10, "d": -30 + 10}


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        ([Line(bus="a", parent="b", length_m=1, capacity_wh=1),
          Line(bus="b", parent="a", length_m=1, capacity_wh=1)], "loop"),
        ([Line(bus="a", parent="nowhere", length_m=1, capacity_wh=1)], "not connected"),
        ([Line(bus="a", parent="sub", length_m=1, capacity_wh=1),
          Line(bus="a", parent="sub", length_m=2, capacity_wh=1)], "more than one line"),
    ],
)
def test_a_feeder_must_be_a_tree(lines: list[Line], match: str) -> None:
    with pytest.raises(NetworkError, match=match):
        Feeder(root="sub", lines=lines)


def test_bad_lines_and_unknown_buses() -> None:
    with pytest.raises(NetworkError, match=">= 0"):
        Line(bus="a", parent="sub", length_m=-1, capacity_wh=1)
    with pytest.raises(NetworkError, match="unknown bus"):
        SMALL.distance_m("a", "zz")
    with pytest.raises(NetworkError, match="has no bus"):
        line_flows([Trade("x", "y", 1, 1, 1)], feeder=SMALL, bus_of={"x": "a"})


def test_curtailment_cuts_the_least_valuable_trade_first() -> None:
    tight = Feeder(
        root="sub",
        lines=[
            Line(bus="a", parent="sub", length_m=100, capacity_wh=60),
            Line(bus="d", parent="sub", length_m=100, capacity_wh=1000),
        ],
    )

    def order(node: str, side: str, energy: int, limit: int) -> Order:
        digest = hashlib.sha256(node.encode()).hexdigest()
        return Order(node, side, energy, limit, digest, "a" if side == "sell" else "d")  # type: ignore[arg-type]

    book = [order("eager", "buy", 50, 300), order("lukewarm", "buy", 50, 200),
            order("s1", "sell", 100, 100)]
    bus_of = {o.node: o.bus for o in book}
    full = clear("uniform", book, PARAMS)
    assert sum(t.energy_wh for t in full.trades) == 100
    cut = curtail(full, orders=book, params=PARAMS, feeder=tight, bus_of=bus_of)
    bought = {o.node: o.bought_wh for o in cut.outcomes}
    assert bought == {"eager": 50, "lukewarm": 10, "s1": 0}
    assert cut.price == full.price


def test_feeder_100_community_clears_within_every_line_limit() -> None:
    feeder = feeder_100()
    rng = random.Random(3)
    orders = [
        Order(
            f"home-{i}", rng.choice(["buy", "sell"]), rng.randint(100, 4000),
            rng.randint(80, 300), hashlib.sha256(f"home-{i}".encode()).hexdigest(), f"bus{i}",
        )
        for i in range(100)
    ]
    bus_of = {o.node: o.bus for o in orders}
    for mechanism in ("uniform", "mmr", "cda"):
        full = clear(mechanism, orders, PARAMS)
        before = line_flows(full.trades, feeder=feeder, bus_of=bus_of)
        assert any(abs(before[line.bus]) > line.capacity_wh for line in feeder.lines)
        result = curtail(full, orders=orders, params=PARAMS, feeder=feeder, bus_of=bus_of)
        after = line_flows(result.trades, feeder=feeder, bus_of=bus_of)
        assert all(abs(after[line.bus]) <= line.capacity_wh for line in feeder.lines)
        assert 0 < sum(t.energy_wh for t in result.trades) < sum(t.energy_wh for t in full.trades)
