"""The settlement book without a broker: figures checked against the agreed result, meter tags,
conflicts, and reputation moving with the delivery ratio."""

from __future__ import annotations

from protocols.clearing import Order, clear
from protocols.market import Agreed, MeterKey, TaggedMeterReading, agreed_hash
from protocols.market.settlement import SettlementBook, expected_settlement
from protocols.messages import Settlement
from protocols.metering import reading_tag
from protocols.network import TradeFee
from protocols.settlement import FULL_TRUST, ReputationRule
from protocols.signing import Rejected
from tests.market.community import COMMUNITY, PARAMS

KEY = MeterKey(device_id="meter-alice", key=b"k" * 32)
ORDERS = (Order("alice", "sell", 2000, 100, "a" * 64), Order("bob", "buy", 2000, 250, "b" * 64))


LAG = ReputationRule().lag  # interval k's settlements cap offers from k + LAG on


def agreed(k: int, fees: tuple[TradeFee, ...] = ()) -> Agreed:
    result = clear("uniform", ORDERS, PARAMS)
    return Agreed(k, result, agreed_hash(result, fees or None), "d" * 64, frozenset(), None, fees)


def reading(seq: int, import_wh: int, export_wh: int, key: MeterKey = KEY) -> TaggedMeterReading:
    tag = reading_tag(key.key, key.device_id, seq, import_wh, export_wh).hex()
    return TaggedMeterReading(seq=seq, import_wh=import_wh, export_wh=export_wh, tag=tag)


def alice(k: int, delivered_wh: int, meter: TaggedMeterReading, fees: tuple[TradeFee, ...] = (),
          bus_wh: int = 0) -> Settlement:
    return expected_settlement(agreed(k, fees), community=COMMUNITY, node="alice",
                               delivered_wh=delivered_wh, reading=meter, tariffs=PARAMS.tariffs,
                               bus_wh=bus_wh)


def book(**kwargs: object) -> SettlementBook:
    return SettlementBook(community=COMMUNITY, tariffs=PARAMS.tariffs, **kwargs)  # type: ignore[arg-type]


def test_a_short_delivery_is_balanced_by_the_grid_and_lowers_reputation() -> None:
    settlement = alice(3, -1000, reading(1, 0, 1000))
    price = agreed(3).result.price
    assert price is not None
    # Sold 2000 Wh, exported 1000: the grid made up 1000 Wh at retail (300 µ/Wh).
    assert (settlement.cleared_wh, settlement.grid_import_wh, settlement.grid_export_wh) == (
        -2000, 1000, 0)
    assert settlement.money == -2000 * price + 1000 * 300
    b = book(meter_keys={"alice": KEY})
    b.on_agreed(agreed(3))
    assert b.on_settlement(settlement) == [settlement]
    assert b.settlements(3) == {"alice": settlement}
    # Ratio 500 per-mille, a quarter of the way from 1000: 875.
    assert b.reputation("alice", 3 + LAG) == 875 and b.reputation("bob", 3 + LAG) == FULL_TRUST


def test_a_settlement_is_held_until_the_interval_is_agreed_here() -> None:
    b = book()
    settlement = alice(3, -2000, reading(1, 0, 2000))
    assert b.on_settlement(settlement) == []
    assert b.settlements(3) == {}
    assert b.on_agreed(agreed(3)) == [settlement]
    assert b.reputation("alice", 3 + LAG) == FULL_TRUST


def test_figures_that_do_not_follow_from_the_agreed_position_are_rejected() -> None:
    b = book()
    b.on_agreed(agreed(3))
    honest = alice(3, -1000, reading(1, 0, 1000))
    claims_less_sold = honest.model_copy(update={"cleared_wh": -1000, "grid_import_wh": 0})
    cheaper = honest.model_copy(update={"money": honest.money - 1})
    for forged in (claims_less_sold, cheaper):
        assert b.on_settlement(forged) == [Rejected("settle-mismatch")]
    assert b.settlements(3) == {} and b.reputation("alice", 3 + LAG) == FULL_TRUST


def test_meter_tags_replays_and_counter_jumps_are_caught_with_the_key() -> None:
    b = book(meter_keys={"alice": KEY})
    for k in (3, 4, 5):
        b.on_agreed(agreed(k))
    first = alice(3, -2000, reading(7, 0, 2000))
    assert b.on_settlement(first) == [first]
    other_key = MeterKey(device_id="meter-alice", key=b"x" * 32)
    assert b.on_settlement(alice(4, -2000, reading(8, 0, 4000, other_key))) == [
        Rejected("meter-bad-tag")]
    # Yesterday's genuine reading again, for a new interval.
    assert b.on_settlement(alice(4, -2000, reading(7, 0, 2000))) == [Rejected("meter-replayed")]
    # Counters say 500 Wh were exported since interval 3, the settlement claims 2000.
    assert b.on_settlement(alice(4, -2000, reading(8, 0, 2500))) == [Rejected("meter-mismatch")]
    good = alice(4, -2000, reading(8, 0, 4000))
    assert b.on_settlement(good) == [good]
    # Without the key only the figures can be checked: a neighbour cannot tell this tag is bad.
    blind = book()
    blind.on_agreed(agreed(4))
    wrong_tag = alice(4, -2000, reading(8, 0, 4000, other_key))
    assert blind.on_settlement(wrong_tag) == [wrong_tag]


def test_energy_over_the_dc_bus_counts_beside_the_meter() -> None:
    """A home on the DC bus sells over its converter: the meter sees only the home's own
    residual, and only that part must match the meter's counters."""
    b = book(meter_keys={"alice": KEY})
    for k in (3, 4):
        b.on_agreed(agreed(k))
    first = alice(3, -2000, reading(7, 0, 100), bus_wh=-1900)
    assert b.on_settlement(first) == [first]
    assert (first.grid_import_wh, first.grid_export_wh) == (0, 0)  # delivered what it sold
    # interval 4: 1,800 Wh over the bus and 150 Wh through the meter, all of it honest
    over_bus = alice(4, -1950, reading(8, 0, 250), bus_wh=-1800)
    assert over_bus.grid_import_wh == 50
    claims_more_over_the_bus = alice(4, -2000, reading(8, 0, 250), bus_wh=-1800)
    assert b.on_settlement(claims_more_over_the_bus) == [Rejected("meter-mismatch")]
    assert b.on_settlement(over_bus) == [over_bus]
    assert b.reputation("alice", 4 + LAG) == 993  # 975 per-mille delivered: 7 of the 25 down


def test_a_second_different_settlement_is_a_conflict_and_the_same_one_is_idempotent() -> None:
    b = book()
    b.on_agreed(agreed(3))
    settlement = alice(3, -2000, reading(1, 0, 2000))
    assert b.on_settlement(settlement) == [settlement]
    assert b.on_settlement(settlement) == [settlement]
    assert b.on_settlement(alice(3, -1500, reading(2, 0, 1500))) == [Rejected("settle-conflict")]
    assert b.reputation("alice", 3 + LAG) == FULL_TRUST  # moved once, by the first


def test_settlements_never_checkable_are_counted_when_the_interval_is_forgotten() -> None:
    b = book()
    b.on_settlement(alice(3, -2000, reading(1, 0, 2000)))
    assert b.forget(3) == [Rejected("settle-unverifiable")]
    assert b.on_settlement(alice(3, -2000, reading(1, 0, 2000))) == [Rejected("stale")]


def test_the_buyer_pays_the_network_fees_of_its_trades() -> None:
    fees = (TradeFee("bob", "alice", 250, 12, 2000 * 12),)
    bob = expected_settlement(agreed(3, fees), community=COMMUNITY, node="bob",
                              delivered_wh=2000, reading=reading(1, 2000, 0),
                              tariffs=PARAMS.tariffs)
    price = agreed(3).result.price
    assert price is not None
    assert bob.money == 2000 * price + 24_000
    b = book()
    b.on_agreed(agreed(3, fees))
    assert b.on_settlement(bob.model_copy(update={"money": 2000 * price})) == [
        Rejected("settle-mismatch")]
    assert b.on_settlement(bob) == [bob]


def test_a_held_settlement_counts_on_its_signers_word_until_the_agreed_result_refutes_it() -> None:
    b = book()
    short = alice(3, -1000, reading(1, 0, 1000))
    lie = short.model_copy(update={"money": 0})  # not what the agreed position makes it
    assert b.on_settlement(lie) == []  # held: no agreed result here yet
    assert b.reputation("alice", 3 + LAG) == 875
    assert b.on_agreed(agreed(3)) == [Rejected("settle-mismatch")]
    assert b.reputation("alice", 3 + LAG) == FULL_TRUST
