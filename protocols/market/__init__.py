"""The peer market as a protocol: one :class:`Market` per node, fed payloads and the time,
answering with actions (docs/architecture.md, "Peer protocol").

Nothing here does I/O or reads a clock: ``gateway/market`` carries the actions out on a broker,
and the tests in ``tests/market`` join markets through an in-memory one.

``state``: the interval's transition table; ``timing``: when each step happens; ``session``: the
rules of one interval; ``roster``: who is a member; ``quota``: the flood cut; ``settlement``: the
settlement book; ``topics``: every topic name; ``market``: the object that owns them all.
"""

from protocols.market.actions import (
    Abstained,
    Action,
    Agreed,
    Cleared,
    Evidence,
    Fetch,
    Forget,
    Outcome,
    Publish,
)
from protocols.market.errors import MarketError, SessionError
from protocols.market.market import QUOTAS, Market
from protocols.market.session import agreed_hash, quorum_size
from protocols.market.settlement import MeterKey, TaggedMeterReading
from protocols.market.state import State
from protocols.market.timing import Timing

__all__ = [
    "QUOTAS",
    "Abstained",
    "Action",
    "Agreed",
    "Cleared",
    "Evidence",
    "Fetch",
    "Forget",
    "Market",
    "MarketError",
    "MeterKey",
    "TaggedMeterReading",
    "Outcome",
    "Publish",
    "SessionError",
    "State",
    "Timing",
    "agreed_hash",
    "quorum_size",
]
