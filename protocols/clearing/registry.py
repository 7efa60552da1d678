"""Mechanisms by name: the community config names one, every gateway looks it up here.

The names are the ones a :class:`protocols.messages.Commitment` carries in ``mechanism``, so two
gateways configured differently can never agree on a result by accident.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from protocols.clearing.bill_sharing import clear_bill_sharing
from protocols.clearing.cda import clear_cda
from protocols.clearing.collector import collector_paused
from protocols.clearing.mmr import clear_mmr
from protocols.clearing.sdr import clear_sdr
from protocols.clearing.trade_reduction import clear_trade_reduction
from protocols.clearing.types import ClearingError, ClearingParams, Order, Result
from protocols.clearing.uniform import clear_uniform

__all__ = ["MECHANISMS", "POOLS", "Mechanism", "clear"]

Mechanism = Callable[[Sequence[Order], ClearingParams], Result]

MECHANISMS: dict[str, Mechanism] = {
    "uniform": clear_uniform,
    "trade-reduction": clear_trade_reduction,
    "mmr": clear_mmr,
    "sdr": clear_sdr,
    "bill-sharing": clear_bill_sharing,
    "cda": clear_cda,
}

POOLS: frozenset[str] = frozenset({"mmr", "sdr", "bill-sharing"})
"""The pool mechanisms: the price is a formula of the tariffs and the pooled demand and supply,
always within [feed-in, retail], so a member is a price taker whose alternative is the grid. They
are defined on the tariffs (quantities in, no price offers), and a member's defaults to accept are
the tariffs themselves: a pool price never leaves it worse off than the grid would
(:meth:`gateway.config.PreferencesConfig.under`)."""


def clear(mechanism: str, orders: Sequence[Order], params: ClearingParams) -> Result:
    """Clear ``orders`` with the named mechanism; an unknown name is a configuration error."""
    try:
        run = MECHANISMS[mechanism]
    except KeyError:
        known = ", ".join(sorted(MECHANISMS))
        raise ClearingError(f"unknown mechanism {mechanism!r} (known: {known})") from None
    # Paused for the clearing only (see protocols/clearing/collector.py); the result is untouched.
    with collector_paused():
        return run(orders, params)
