"""The life of one market interval as a table: every legal transition, and nothing else.

Rule 1: whatever moves an interval from one state to the next is listed in :data:`TRANSITIONS`;
:func:`advance` is the only way a state changes, and a pair the table does not hold is our own
bug, raised as :class:`~protocols.market.errors.SessionError`.

Rule 2: this file knows nothing of bids, quorums or clocks. *When* an event fires (the gate time
has come, a quorum matches our commitment) is the session's business
(:mod:`protocols.market.session`); *whether* it may fire in the current state is this table's.

::

    OPEN --gate--> GATE_CLOSED --clear--> CLEARED --commit--> COMMITTED (--recommit--> COMMITTED)
    COMMITTED --quorum--> AGREED --start--> DISPATCHING --settle--> SETTLED
    COMMITTED --abstain--> ABSTAINED --adopt--> ADOPTED --settle--> SETTLED
"""

from __future__ import annotations

from enum import StrEnum

from protocols.market.errors import SessionError


class State(StrEnum):
    OPEN = "open"
    GATE_CLOSED = "gate-closed"
    CLEARED = "cleared"
    COMMITTED = "committed"
    AGREED = "agreed"
    ABSTAINED = "abstained"
    ADOPTED = "adopted"
    DISPATCHING = "dispatching"
    SETTLED = "settled"


class Event(StrEnum):
    GATE = "gate"  # now >= gate closure
    CLEAR = "clear"  # now >= gate closure + grace: the local clearing ran
    COMMIT = "commit"  # our commitment went out
    RECOMMIT = "recommit"  # we recomputed with the majority's bids, or with every bid committed
    QUORUM = "quorum"  # a quorum of commitments matches ours
    ABSTAIN = "abstain"  # interval start came without a quorum we could join
    ADOPT = "adopt"  # after abstaining: we reproduced the quorum's result, and settle against it
    START = "start"  # interval start after agreement
    SETTLE = "settle"  # the settlement layer finished the interval


TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.OPEN, Event.GATE): State.GATE_CLOSED,
    (State.GATE_CLOSED, Event.CLEAR): State.CLEARED,
    (State.CLEARED, Event.COMMIT): State.COMMITTED,
    (State.COMMITTED, Event.RECOMMIT): State.COMMITTED,
    (State.COMMITTED, Event.QUORUM): State.AGREED,
    (State.COMMITTED, Event.ABSTAIN): State.ABSTAINED,
    (State.ABSTAINED, Event.ADOPT): State.ADOPTED,
    (State.AGREED, Event.START): State.DISPATCHING,
    (State.DISPATCHING, Event.SETTLE): State.SETTLED,
    (State.ADOPTED, Event.SETTLE): State.SETTLED,
}
"""The whole life of an interval. Anything not listed is illegal."""


def advance(state: State, event: Event, *, interval: int) -> State:
    """The state ``event`` leads to from ``state``; raises :class:`SessionError` if the table has
    no such transition."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise SessionError(
            f"interval {interval}: event {event!r} is illegal in state {state!r}"
        ) from None
