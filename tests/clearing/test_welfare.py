"""Welfare as a share of the efficient maximum: every mechanism's result realises between none
and all of the gains the bids allow; the competitive-equilibrium price realises all of them."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.clearing import MECHANISMS, ClearingParams, Order, Tariffs, clear
from protocols.clearing.welfare import efficient_welfare, welfare

TARIFFS = Tariffs(retail_price=300, feed_in_price=80)
PARAMS = ClearingParams(tariffs=TARIFFS)


def curve(node: str, side: str, steps: list[tuple[int, int]], created_ms: int = 0
          ) -> list[Order]:
    digest = hashlib.sha256(node.encode()).hexdigest()
    return [Order(node, side, wh, price, digest, "", created_ms, i)  # type: ignore[arg-type]
            for i, (wh, price) in enumerate(steps)]


def test_the_efficient_maximum_is_the_area_between_the_curves() -> None:
    book = [*curve("b1", "buy", [(100, 250), (100, 150)]), *curve("b2", "buy", [(50, 200)]),
            *curve("s1", "sell", [(80, 120), (100, 220)])]
    # 80 Wh at 250 - 120, 20 at 250 - 220; 200 - 220 and 150 - 220 do not pay
    assert efficient_welfare(book, TARIFFS) == 80 * 130 + 20 * 30
    result = clear("uniform", book, PARAMS)
    assert welfare(book, result.outcomes, TARIFFS) == 80 * 130 + 20 * 30


def test_limits_past_the_tariffs_are_worth_the_tariffs() -> None:
    book = [*curve("b", "buy", [(10, 900)]), *curve("s", "sell", [(10, 0)])]
    assert efficient_welfare(book, TARIFFS) == 10 * (300 - 80)


@st.composite
def books(draw: st.DrawFn) -> list[Order]:
    orders: list[Order] = []
    for i in range(draw(st.integers(1, 10))):
        side = draw(st.sampled_from(["buy", "sell"]))
        prices = sorted(draw(st.sets(st.integers(0, 400), min_size=1, max_size=4)),
                        reverse=side == "buy")
        steps = [(draw(st.integers(1, 5_000)), price) for price in prices]
        orders += curve(f"n{i}", side, steps, created_ms=draw(st.integers(0, 1_000)))
    return orders


@settings(max_examples=300, deadline=None)
@given(book=books(), mechanism=st.sampled_from(list(MECHANISMS)))
def test_every_mechanism_realises_between_none_and_all_of_the_efficient_welfare(
    book: list[Order], mechanism: str
) -> None:
    result = clear(mechanism, book, PARAMS)
    most = efficient_welfare(book, TARIFFS)
    assert 0 <= welfare(book, result.outcomes, TARIFFS) <= most
    if mechanism == "uniform":  # the competitive equilibrium leaves no gain untraded
        assert welfare(book, result.outcomes, TARIFFS) == most
