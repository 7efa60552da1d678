"""Reputation every gateway computes alike: a pure function of the signed settlements it holds.

A member's reputation caps what it may offer (:func:`protocols.settlement.offer_cap_wh`), and
every gateway clips its orders to that cap in clearing, so the cap must be the same at every
gateway or their results would not agree. It is therefore a function of *which* settlements are
held, never of the order they arrived in or of when this gateway joined:

* interval k is cleared with the node's settlements of the intervals
  ``k - lag - window < j <= k - lag`` (:class:`~protocols.settlement.ReputationRule`), the
  ``window`` intervals that every member has held for a while when it clears k;
* their delivery ratios are folded in interval order, starting from full trust, with
  :func:`~protocols.settlement.update_reputation` (integer arithmetic only);
* a node with no settlement in the window is trusted fully, so a gateway that restarts or joins
  late agrees with the others once it holds the same window, which it rebuilds from its ledger.

Settlements a gateway accepts are ones whose figures follow from the agreed result and whose
signature is the member's (:class:`~protocols.market.settlement.SettlementBook`), so the window
holds at most one per node and interval. Should two ever reach this function (a bug elsewhere),
the lower delivery ratio counts, whichever came first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from protocols.clearing import Limits
from protocols.messages import MAX_ENERGY_WH, Settlement
from protocols.settlement import (
    FULL_TRUST,
    ReputationRule,
    delivery_ratio,
    offer_cap_wh,
    update_reputation,
)

__all__ = ["UNLIMITED", "ReputationHistory", "counted_intervals", "reputation_for"]

UNLIMITED = Limits(MAX_ENERGY_WH, MAX_ENERGY_WH)
"""The limits of a node whose certificate's are not applied: the protocol's bound."""

_NO_POSITION = FULL_TRUST + 1  # ranks above any ratio: a real ratio wins a conflict


def counted_intervals(interval: int, rule: ReputationRule) -> range:
    """The intervals whose settlements count towards clearing ``interval``."""
    last = interval - rule.lag
    return range(last - rule.window + 1, last + 1)


def reputation_for(
    settlements: Iterable[Settlement], node: str, *, interval: int, rule: ReputationRule,
) -> int:
    """``node``'s reputation (per-mille) for clearing ``interval``, from ``settlements``.

    Only ``node``'s settlements of :func:`counted_intervals` count; the result depends on that
    set alone (see the module docstring).
    """
    counted = counted_intervals(interval, rule)
    ratios: dict[int, int] = {}
    for settlement in settlements:
        if settlement.node != node or settlement.interval not in counted:
            continue
        ratio = delivery_ratio(cleared_wh=settlement.cleared_wh,
                               delivered_wh=settlement.delivered_wh)
        ranked = _NO_POSITION if ratio is None else ratio
        ratios[settlement.interval] = min(ranked, ratios.get(settlement.interval, ranked))
    score = FULL_TRUST
    for j in sorted(ratios):
        ranked = ratios[j]
        score = update_reputation(score, None if ranked == _NO_POSITION else ranked, rule=rule)
    return score


class ReputationHistory:
    """The settlements a gateway has accepted, kept for as long as they count
    (:func:`counted_intervals`), and the reputation and offer cap they give."""

    def __init__(self, rule: ReputationRule) -> None:
        self.rule = rule
        self._by_node: dict[str, dict[int, list[Settlement]]] = {}
        # Reputations below full trust by interval, until the next settlement is held.
        self._reduced: dict[int, dict[str, int]] = {}

    def add(self, settlement: Settlement) -> None:
        """Hold an accepted settlement (the same one twice is held once)."""
        held = self._by_node.setdefault(settlement.node, {}).setdefault(settlement.interval, [])
        if settlement not in held:
            held.append(settlement)
            self._reduced.clear()

    def discard(self, settlement: Settlement) -> None:
        """Stop holding ``settlement`` (found false once it could be checked)."""
        held = self._by_node.get(settlement.node, {}).get(settlement.interval, [])
        if settlement in held:
            held.remove(settlement)
            self._reduced.clear()

    def reputation(self, node: str, interval: int) -> int:
        """``node``'s reputation for clearing ``interval`` (:func:`reputation_for`)."""
        by_interval = self._by_node.get(node, {})
        held = [s for j in counted_intervals(interval, self.rule) for s in by_interval.get(j, ())]
        return reputation_for(held, node, interval=interval, rule=self.rule)

    def reduced(self, interval: int) -> dict[str, int]:
        """The nodes whose reputation for ``interval`` is below full trust, with it (computed once
        per interval while no settlement comes in: a gateway clears an interval more than once)."""
        reduced = self._reduced.get(interval)
        if reduced is None:
            reputations = {node: self.reputation(node, interval) for node in self._by_node}
            reduced = self._reduced[interval] = {
                node: r for node, r in reputations.items() if r < FULL_TRUST}
        return reduced

    def capped(self, interval: int, limits: Mapping[str, Limits]) -> dict[str, Limits]:
        """The limits in ``interval`` of the nodes whose reputation caps their offers: their
        certificate's ``limits`` (:data:`UNLIMITED` if not given) with the export scaled."""
        capped = {}
        for node, reputation in self.reduced(interval).items():
            held = limits.get(node, UNLIMITED)
            capped[node] = held._replace(export_wh=offer_cap_wh(
                reputation=reputation, limit_wh=held.export_wh, rule=self.rule))
        return capped

    def offer_cap_wh(self, node: str, interval: int, limit_wh: int) -> int:
        """The most ``node`` may offer in ``interval``: ``limit_wh`` scaled by its reputation."""
        return offer_cap_wh(reputation=self.reputation(node, interval), limit_wh=limit_wh,
                            rule=self.rule)

    def forget_before(self, interval: int) -> None:
        """Drop settlements that can no longer count for ``interval`` or any later one."""
        first = counted_intervals(interval, self.rule).start
        self._reduced.clear()
        for node in list(self._by_node):
            by_interval = self._by_node[node]
            for j in [j for j in by_interval if j < first]:
                del by_interval[j]
            if not by_interval:
                del self._by_node[node]
