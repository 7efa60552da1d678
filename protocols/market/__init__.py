"""The peer market as a protocol: the rules of an interval, membership, the flood cut,
settlements and topic names, with no I/O and no clock (docs/architecture.md, "Peer protocol").
``gateway/market`` carries it out on a broker."""

from protocols.market.session import (
    Abstained,
    Action,
    Agreed,
    Cleared,
    Evidence,
    Fetch,
    Outcome,
    Publish,
    SessionError,
    State,
    Timing,
    agreed_hash,
    quorum_size,
)
from protocols.market.settlement import MeterKey, MeterReading

__all__ = [
    "Abstained",
    "Action",
    "Agreed",
    "Cleared",
    "Evidence",
    "Fetch",
    "MeterKey",
    "MeterReading",
    "Outcome",
    "Publish",
    "SessionError",
    "State",
    "Timing",
    "agreed_hash",
    "quorum_size",
]
