"""The market's two exceptions, both for *our* faults; a peer's fault is a
:class:`~protocols.signing.Rejected` value with a reason, counted and never raised."""

from __future__ import annotations


class SessionError(RuntimeError):
    """Our own misuse of an interval's session: an illegal transition, a bad configuration."""


class MarketError(RuntimeError):
    """We asked the market for something it cannot do (bid after the gate, settle an interval
    with no agreed result, an own certificate that is not usable)."""
