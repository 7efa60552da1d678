"""After the interval: what each node owes given what its meter says, and how far to trust it next.

Clearing fixes each node's P2P position; the meter says what actually happened. The P2P position
is financially firm (buyers pay and sellers are paid as cleared, so the P2P budget stays balanced
to the micro-unit), and every deviation between the metered energy and the cleared position is
balanced by the retail grid at the tariffs:

* a seller that delivers less than it sold has the grid make up the shortfall, and pays retail
  for it; one that exports more than it sold is paid feed-in for the excess;
* a buyer that takes less than it bought exports the rest at feed-in; one that takes more imports
  it at retail.

Both cases are one rule: ``deviation = delivered_wh - cleared_wh`` (same sign convention as the
:class:`protocols.messages.Settlement` message, + towards the home), imported at retail when
positive and exported at feed-in when negative.

Reputation is the smoothed delivery ratio in integer per-mille, and caps what a node may offer,
so a node that repeatedly sells energy it does not deliver sells less and less; which settlements
count towards it, so that every gateway computes the same cap, is :mod:`protocols.reputation`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from protocols.clearing.types import NodeOutcome, Tariffs

__all__ = [
    "FULL_TRUST",
    "ReputationRule",
    "SettlementError",
    "SettlementFigures",
    "delivery_ratio",
    "offer_cap_wh",
    "settle",
    "update_reputation",
]

#: Reputation of a node that has always delivered: 1000 per-mille.
FULL_TRUST = 1000


class SettlementError(ValueError):
    """Inconsistent settlement input (a caller's bug, e.g. a reputation outside 0..1000)."""


class SettlementFigures(NamedTuple):
    """One node's settled interval; field names match :class:`protocols.messages.Settlement`.

    ``cleared_wh`` + bought / − sold; ``delivered_wh`` metered net, + imported / − exported;
    ``grid_import_wh`` / ``grid_export_wh`` the deviation balanced by the grid; ``money`` the net
    amount the node pays for the interval, µ (negative: it is paid).
    """

    cleared_wh: int
    delivered_wh: int
    grid_import_wh: int
    grid_export_wh: int
    money: int


def settle(outcome: NodeOutcome, *, delivered_wh: int, tariffs: Tariffs) -> SettlementFigures:
    """Settle one node: its cleared P2P position as agreed, every deviation with the grid.

    ``delivered_wh`` is the node's metered net energy over the interval (+ import, − export).
    """
    if type(delivered_wh) is not int:
        raise SettlementError(f"delivered_wh must be an int (Wh), got {delivered_wh!r}")
    cleared = outcome.bought_wh - outcome.sold_wh
    deviation = delivered_wh - cleared
    grid_import = max(deviation, 0)
    grid_export = max(-deviation, 0)
    money = (
        outcome.paid_p2p
        - outcome.received_p2p
        + grid_import * tariffs.retail_price
        - grid_export * tariffs.feed_in_price
    )
    return SettlementFigures(cleared, delivered_wh, grid_import, grid_export, money)


def delivery_ratio(*, cleared_wh: int, delivered_wh: int) -> int | None:
    """Per-mille of the cleared position that was honoured, or None with no position.

    A seller honours its sale by exporting, a buyer its purchase by importing; doing more than the
    position counts as 1000 (excess is settled with the grid, not rewarded).
    """
    if cleared_wh == 0:
        return None
    honoured = max(-delivered_wh, 0) if cleared_wh < 0 else max(delivered_wh, 0)
    return min(honoured, abs(cleared_wh)) * FULL_TRUST // abs(cleared_wh)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReputationRule:
    """Exponential smoothing with weight ``alpha_num / alpha_den`` on the newest ratio, and a
    ``floor_per_mille`` below which the offer cap does not go (a node must still be able to offer
    something, or it could never earn its reputation back).

    Interval k is cleared with the reputation of the settlements of the ``window`` intervals that
    end ``lag`` intervals before it (k - lag - window < j <= k - lag, :mod:`protocols.reputation`):
    a node settles j once its market is done with it, about two intervals later, so with a lag of
    4 every member has had every settlement of j for more than an interval when it clears k.
    """

    alpha_num: int = 1
    alpha_den: int = 4
    floor_per_mille: int = 100
    lag: int = 4
    window: int = 24

    def __post_init__(self) -> None:
        if not 0 < self.alpha_num <= self.alpha_den:
            raise SettlementError("need 0 < alpha_num <= alpha_den")
        if not 0 <= self.floor_per_mille <= FULL_TRUST:
            raise SettlementError("floor_per_mille must be within 0..1000")
        if self.lag < 1 or self.window < 1:
            raise SettlementError("need lag >= 1 and window >= 1 (intervals)")


def _check_per_mille(name: str, value: int) -> None:
    if type(value) is not int or not 0 <= value <= FULL_TRUST:
        raise SettlementError(f"{name} must be an int within 0..1000, got {value!r}")


def update_reputation(previous: int, ratio: int | None, *, rule: ReputationRule) -> int:
    """The next reputation: ``previous`` moved a fraction alpha of the way towards ``ratio``.

    The step is rounded away from zero, so the score reaches a steady ratio exactly instead of
    stalling a few per-mille short, and never overshoots it (alpha <= 1). No position, no change.
    """
    _check_per_mille("previous", previous)
    if ratio is None:
        return previous
    _check_per_mille("ratio", ratio)
    step = rule.alpha_num * (ratio - previous)
    magnitude = (abs(step) + rule.alpha_den - 1) // rule.alpha_den
    return previous + magnitude if step > 0 else previous - magnitude


def offer_cap_wh(*, reputation: int, limit_wh: int, rule: ReputationRule) -> int:
    """How much a node may offer next: its certificate's limit scaled by its reputation."""
    _check_per_mille("reputation", reputation)
    if limit_wh < 0:
        raise SettlementError(f"limit_wh must be >= 0, got {limit_wh}")
    return limit_wh * max(reputation, rule.floor_per_mille) // FULL_TRUST
