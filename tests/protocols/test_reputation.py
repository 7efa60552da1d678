"""Reputation as every gateway computes it (protocols.reputation): a function of the settlements
held, whatever order they came in, counting only the window the rule names."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from protocols.clearing import Limits
from protocols.messages import Settlement
from protocols.reputation import UNLIMITED, ReputationHistory, counted_intervals, reputation_for
from protocols.settlement import FULL_TRUST, ReputationRule, offer_cap_wh

NODES = ("alice", "bob", "carol")
RULE = ReputationRule(lag=2, window=6)


def settlement(node: str, interval: int, cleared_wh: int, delivered_wh: int) -> Settlement:
    """The figures that matter to reputation; the rest is what a settlement must carry."""
    return Settlement(community="oak-street", interval=interval, node=node, cleared_wh=cleared_wh,
                      delivered_wh=delivered_wh, grid_import_wh=0, grid_export_wh=0, money=0,
                      meter_import_wh=0, meter_export_wh=0, meter_seq=interval, meter_tag="ab" * 8)


settlements = st.lists(st.builds(
    settlement, st.sampled_from(NODES), st.integers(0, 20),
    st.integers(-3_000, 3_000), st.integers(-3_000, 3_000)), max_size=40)


@given(held=settlements, data=st.data())
def test_every_gateway_computes_the_same_cap_from_the_same_settlements_in_any_order(
    held: list[Settlement], data: st.DataObject,
) -> None:
    """Three gateways hear the same settlements in three orders (one of them twice over, as a
    broker redelivers): every reputation and cap they clear any interval with is the same, and
    is the pure function's."""
    gateways = [ReputationHistory(RULE) for _ in range(3)]
    orders = [held, data.draw(st.permutations(held)), data.draw(st.permutations(held + held))]
    for history, order in zip(gateways, orders, strict=True):
        for s in order:
            history.add(s)
    for node in NODES:
        for k in range(0, 30):
            expected = reputation_for(held, node, interval=k, rule=RULE)
            assert [h.reputation(node, k) for h in gateways] == [expected] * 3
            cap = offer_cap_wh(reputation=expected, limit_wh=2_750, rule=RULE)
            assert [h.offer_cap_wh(node, k, 2_750) for h in gateways] == [cap] * 3
            # the clip clearing applies: every node below full trust, its export scaled
            clip = gateways[0].capped(k, {node: Limits(5_000, 2_750)})
            assert all(h.capped(k, {node: Limits(5_000, 2_750)}) == clip for h in gateways)
            assert clip.get(node, Limits(5_000, 2_750)) == Limits(
                5_000, 2_750 if expected == FULL_TRUST else cap)
            unlimited = gateways[0].capped(k, {}).get(node, UNLIMITED)
            assert unlimited.export_wh == offer_cap_wh(reputation=expected,
                                                       limit_wh=UNLIMITED.export_wh, rule=RULE)


@given(held=settlements, k=st.integers(0, 30))
def test_only_the_window_lag_intervals_back_counts(held: list[Settlement], k: int) -> None:
    window = counted_intervals(k, RULE)
    assert len(window) == RULE.window and window[-1] == k - RULE.lag
    inside = [s for s in held if s.interval in window]
    for node in NODES:
        assert (reputation_for(held, node, interval=k, rule=RULE)
                == reputation_for(inside, node, interval=k, rule=RULE))


@given(held=settlements, bound=st.integers(0, 30), k=st.integers(0, 40))
def test_forgetting_what_no_longer_counts_changes_no_later_reputation(
    held: list[Settlement], bound: int, k: int,
) -> None:
    history = ReputationHistory(RULE)
    for s in held:
        history.add(s)
    before = {node: history.reputation(node, max(k, bound)) for node in NODES}
    history.forget_before(bound)
    assert {node: history.reputation(node, max(k, bound)) for node in NODES} == before


def test_a_short_delivery_caps_offers_from_lag_intervals_on_and_wears_off_after_the_window(
) -> None:
    history = ReputationHistory(RULE)
    history.add(settlement("alice", 10, -2_000, -1_000))  # sold 2,000 Wh, delivered 1,000
    assert history.reputation("alice", 10 + RULE.lag - 1) == FULL_TRUST
    assert history.reputation("alice", 10 + RULE.lag) == 875  # a quarter of the way to 500
    assert history.offer_cap_wh("alice", 10 + RULE.lag, 10_000) == 8_750
    assert history.reputation("alice", 10 + RULE.lag + RULE.window - 1) == 875
    assert history.reputation("alice", 10 + RULE.lag + RULE.window) == FULL_TRUST
    assert history.reputation("bob", 10 + RULE.lag) == FULL_TRUST


def test_of_two_settlements_of_one_interval_the_lower_delivery_counts_whichever_came_first(
) -> None:
    short, full = settlement("alice", 3, -2_000, 0), settlement("alice", 3, -2_000, -2_000)
    for order in ([short, full], [full, short]):
        assert reputation_for(order, "alice", interval=3 + RULE.lag, rule=RULE) == 750
    no_position = settlement("alice", 3, 0, 500)
    for order in ([no_position, short], [short, no_position]):
        assert reputation_for(order, "alice", interval=3 + RULE.lag, rule=RULE) == 750
