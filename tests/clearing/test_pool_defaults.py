"""The pool mechanisms at their default wishes: a member of a pool accepts the tariffs (sells at
no less than feed-in, buys at no more than retail), so the pool trades all it can, and each
pool's defining identity holds in every interval.

The identities, with ``D`` and ``S`` the pooled demand and supply, ``r`` retail, ``f`` feed-in:

* ``mmr``: the price is ``floor((r + f) / 2)``; the long side averages it with its tariff (its
  members are paid, or pay, ``price x min(D, S) + tariff x |D - S|``).
* ``sdr``: the price is Liu et al.'s ``r f / ((r - f) S/D + f)`` (``f`` once ``S >= D``); the
  buyers' average is ``price x SDR + r x (1 - SDR)``: they pay ``price x S + r (D - S)``.
* ``bill-sharing``: the members' bills add up to the pooled net bill, ``r (D - S)`` when the
  community is short and ``-f (S - D)`` when it is long.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import parse_config
from protocols.clearing import POOLS, ClearingParams, Order, Result, Tariffs, clear
from protocols.clearing.sdr import sdr_price

AUTHORITY = "0a" * 32


def config(mechanism: str, preferences: dict[str, int] | None = None) -> dict[str, object]:
    raw: dict[str, object] = {
        "node": "home-1", "key_file": "node.key", "certificate_file": "node.cert",
        "state_dir": "state",
        "market": {"community": "street", "authority_key": AUTHORITY, "mechanism": mechanism},
        "tariffs": {"retail_price": 310, "feed_in_price": 70},
    }
    if preferences is not None:
        raw["preferences"] = preferences
    return raw


@pytest.mark.parametrize("mechanism", sorted(POOLS))
def test_a_pool_members_unset_wishes_are_the_tariffs(mechanism: str) -> None:
    prefs = parse_config(config(mechanism), source="t", base=Path()).preferences
    assert (prefs.min_sell_price, prefs.max_buy_price) == (70, 310)
    half = parse_config(config(mechanism, {"max_buy_price": 200}), source="t",
                        base=Path()).preferences
    assert (half.min_sell_price, half.max_buy_price) == (70, 200)  # what the owner set is kept


@pytest.mark.parametrize("mechanism", ["uniform", "trade-reduction", "cda"])
def test_a_bidding_members_unset_wishes_stay_inside_the_tariffs(mechanism: str) -> None:
    prefs = parse_config(config(mechanism), source="t", base=Path()).preferences
    assert (prefs.min_sell_price, prefs.max_buy_price) == (120, 250)


def order(node: str, side: str, energy: int, limit: int) -> Order:
    digest = hashlib.sha256(node.encode()).hexdigest()
    return Order(node, side, energy, limit, digest, "", 0, 0)  # type: ignore[arg-type]


@st.composite
def books(draw: st.DrawFn) -> tuple[Tariffs, list[Order]]:
    """Members each offering what they would otherwise trade with the grid, at its tariff (a
    curve's equal prices merge into one step)."""
    feed_in = draw(st.integers(0, 400))
    tariffs = Tariffs(retail_price=feed_in + draw(st.integers(1, 400)), feed_in_price=feed_in)
    members = draw(st.lists(st.tuples(st.sampled_from(["buy", "sell"]), st.integers(1, 10_000)),
                            min_size=2, max_size=12))
    return tariffs, [order(f"n{i}", side, wh, tariffs.retail_price if side == "buy"
                           else tariffs.feed_in_price) for i, (side, wh) in enumerate(members)]


def pooled(result: Result) -> tuple[int, int, int, int, int]:
    """Demand, supply, P2P energy, what buyers pay and what sellers get (P2P and grid)."""
    out = list(result.outcomes)
    demand = sum(o.bought_wh + o.grid_import_wh for o in out)
    supply = sum(o.sold_wh + o.grid_export_wh for o in out)
    buyers = [o for o in out if o.bought_wh or o.grid_import_wh]
    sellers = [o for o in out if o.sold_wh or o.grid_export_wh]
    return (demand, supply, sum(o.sold_wh for o in out),
            sum(o.paid_p2p + o.paid_grid for o in buyers),
            sum(o.received_p2p + o.received_grid for o in sellers))


@settings(max_examples=300, deadline=None)
@given(book=books(), mechanism=st.sampled_from(sorted(POOLS)))
def test_a_pool_at_its_default_wishes_trades_all_it_can_and_keeps_its_identity(
    book: tuple[Tariffs, list[Order]], mechanism: str
) -> None:
    tariffs, orders = book
    r, f = tariffs.retail_price, tariffs.feed_in_price
    offered_d = sum(o.energy_wh for o in orders if o.side == "buy")
    offered_s = sum(o.energy_wh for o in orders if o.side == "sell")
    result = clear(mechanism, orders, ClearingParams(tariffs=tariffs))
    demand, supply, traded, buyers_pay, sellers_get = pooled(result)
    assert (demand, supply) == (offered_d, offered_s)  # every Wh offered is in the pool
    assert traded == min(demand, supply)  # nobody sits out: the pool trades all it can
    if not demand or not supply:
        return
    price = result.price
    assert price is not None and f <= price <= r
    if mechanism == "mmr":
        assert price == (r + f) // 2
        if demand > supply:
            assert buyers_pay == price * supply + r * (demand - supply)
        else:
            assert sellers_get == price * demand + f * (supply - demand)
    elif mechanism == "sdr":
        assert price == sdr_price(demand, supply, tariffs)
        if demand > supply:
            assert buyers_pay == price * supply + r * (demand - supply)
        else:
            assert price == f
    else:
        assert buyers_pay - sellers_get == r * max(demand - supply, 0) - f * max(supply - demand, 0)
