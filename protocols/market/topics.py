"""Topic names of the peer protocol: the only place a topic string is built or taken apart.

``gridpeer/<community>/roster/<node>``, ``revoked/<node>``, ``presence/<node>``,
``bids/<slot>/<node>``, ``commit/<slot>/<node>``, ``bidset/<slot>/<node>``,
``settle/<slot>/<node>`` (docs/architecture.md, "Peer protocol topics"). Bid sets are not
subscribed to: a gateway fetches them (:func:`bidsets_of`) only when it needs a peer's list.
``revoked/<node>`` is written by the community authority only (the broker's ACL): a revoked
node's gateway republishes its own certificate on ``roster/<node>`` whenever it reconnects, so a
retained revocation there would not survive it.

A message about interval ``k`` goes on slot ``k mod SLOTS``, never on a topic of its own: the
broker's ACL names each slot literally, so a member can keep at most ``SLOTS`` retained messages
per kind alive (a retained message on every interval number would let one member fill every
reconnecting gateway's queue with junk; Mosquitto cannot expire retained messages it is given).
The topic no longer says which interval a message is for, the signed body does: a receiver takes
the interval from the body and refuses a body whose interval is not one its slot holds
(:meth:`Topic.holds`); a slot still holding an older interval's message is just old news.

Community and node ids are restricted to a topic-safe alphabet so that no id can contain ``/``,
``+`` or ``#`` and smuggle a wildcard or an extra level into a topic; a topic from the broker that
does not parse is a peer's fault and the caller turns :class:`BadTopic` into a counted rejection.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from enum import StrEnum

ROOT = "gridpeer"
# Same alphabet as the ids in protocols.messages, so every valid message names a valid topic.
_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_SLOT = re.compile(r"0|[1-9][0-9]?")

SLOTS = 16
"""Slots per kind and node. A gateway keeps a retained bid from its lookahead (the market's
horizon, 4 intervals past the next gate: up to 6 ahead of the running interval) until it retires
the interval 2 intervals after its end, and a settlement from the end until 4 intervals later: at
most 9 intervals of one kind at once. With 16 slots a new interval never overwrites, and retiring
an old one never clears, a message still in use, with slack for a loop that stalled a while."""


class Kind(StrEnum):
    ROSTER = "roster"
    REVOKED = "revoked"
    PRESENCE = "presence"
    BIDS = "bids"
    COMMIT = "commit"
    BIDSET = "bidset"
    SETTLE = "settle"


PER_INTERVAL = frozenset({Kind.BIDS, Kind.COMMIT, Kind.BIDSET, Kind.SETTLE})
"""The kinds whose topics carry a slot; the others are one topic per node."""
_FETCHED_ONLY = frozenset({Kind.BIDSET})

MAX_TOPIC_BYTES = len(f"{ROOT}/{'c' * 32}/{max(Kind, key=len)}/{SLOTS - 1}/{'n' * 32}")
"""The longest topic this module builds (ids are ASCII), for sizing MQTT packets."""


class BadTopic(ValueError):
    """A topic or id that is not part of the protocol's namespace."""


def slot(interval: int) -> int:
    """The slot that carries messages about ``interval``."""
    if interval < 0:
        raise BadTopic(f"interval must be >= 0, got {interval}")
    return interval % SLOTS


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed topic; ``slot`` is set exactly for bids, commit, bid set and settle."""

    community: str
    kind: Kind
    node: str
    slot: int | None = None

    def holds(self, interval: int) -> bool:
        """Whether a message about ``interval`` belongs on this topic: the check a receiver
        makes against the interval in the signed body."""
        return self.slot is not None and interval >= 0 and self.slot == interval % SLOTS

    def __str__(self) -> str:
        _check_id("community", self.community)
        _check_id("node", self.node)
        if self.kind in PER_INTERVAL:
            if self.slot is None or not 0 <= self.slot < SLOTS:
                raise BadTopic(f"{self.kind} topic needs a slot 0-{SLOTS - 1}, got {self.slot!r}")
            return f"{ROOT}/{self.community}/{self.kind}/{self.slot}/{self.node}"
        if self.slot is not None:
            raise BadTopic(f"{self.kind} topic takes no slot, got {self.slot!r}")
        return f"{ROOT}/{self.community}/{self.kind}/{self.node}"


def _check_id(what: str, value: str) -> None:
    if not _ID.fullmatch(value):
        raise BadTopic(f"{what} id {value!r} must match {_ID.pattern}")


def check_id(what: str, value: str) -> str:
    """``value`` if it is a valid community/node id; raises :class:`BadTopic` otherwise."""
    _check_id(what, value)
    return value


def roster(community: str, node: str) -> str:
    return str(Topic(community, Kind.ROSTER, node))


def revoked(community: str, node: str) -> str:
    return str(Topic(community, Kind.REVOKED, node))


def presence(community: str, node: str) -> str:
    return str(Topic(community, Kind.PRESENCE, node))


def bid(community: str, interval: int, node: str) -> str:
    return str(Topic(community, Kind.BIDS, node, slot(interval)))


def commit(community: str, interval: int, node: str) -> str:
    return str(Topic(community, Kind.COMMIT, node, slot(interval)))


def bidset(community: str, interval: int, node: str) -> str:
    return str(Topic(community, Kind.BIDSET, node, slot(interval)))


def settle(community: str, interval: int, node: str) -> str:
    return str(Topic(community, Kind.SETTLE, node, slot(interval)))


def subscriptions(community: str) -> tuple[str, ...]:
    """One filter per kind, narrower than ``gridpeer/<community>/#``: stray topics never arrive."""
    _check_id("community", community)
    base = f"{ROOT}/{community}"
    return tuple(
        f"{base}/{kind}/+/+" if kind in PER_INTERVAL else f"{base}/{kind}/+"
        for kind in Kind if kind not in _FETCHED_ONLY
    )


def bids_of(community: str, interval: int) -> str:
    """Filter for every bid of one interval's slot: subscribing to it makes the broker resend the
    retained bids, which is how a gateway in the minority fetches the bids it missed (a node's
    slot may still hold an older interval's bid: the body says which)."""
    return _of(Kind.BIDS, community, interval)


def bidsets_of(community: str, interval: int) -> str:
    """Filter for every bid set of one interval's slot, fetched when a peer's list is needed."""
    return _of(Kind.BIDSET, community, interval)


def membership_of(community: str, node: str) -> str:
    """Filter for what the broker retains about one node's membership: its certificate or
    revocation (``roster/<node>``, ``revoked/<node>``) and its presence; the per-interval kinds
    have a level more and do not match. Fetched when a verified message names a node whose
    certificate this gateway lacks (:mod:`protocols.market.lookup`)."""
    _check_id("community", community)
    _check_id("node", node)
    return f"{ROOT}/{community}/+/{node}"


def _of(kind: Kind, community: str, interval: int) -> str:
    _check_id("community", community)
    return f"{ROOT}/{community}/{kind}/{slot(interval)}/+"


PARSED_KEPT = 1 << 14
"""Parsed topics remembered (:func:`parse`): a gateway hears the same topics every interval
(each member's few kinds on 16 slots), so it splits and checks each once; a topic that does not
parse is not remembered, and the oldest go first, so junk topics cannot grow it."""


@functools.lru_cache(maxsize=PARSED_KEPT)
def parse(topic: str) -> Topic:
    """The :class:`Topic` for a concrete topic string; raises :class:`BadTopic` with the reason.
    Remembered (:data:`PARSED_KEPT`): a :class:`Topic` is immutable."""
    parts = topic.split("/")
    if len(parts) < 4 or parts[0] != ROOT:
        raise BadTopic(f"not a {ROOT} topic: {topic!r}")
    community, kind_text = parts[1], parts[2]
    try:
        kind = Kind(kind_text)
    except ValueError:
        raise BadTopic(f"unknown topic kind {kind_text!r} in {topic!r}") from None
    if kind in PER_INTERVAL:
        if len(parts) != 5 or not _SLOT.fullmatch(parts[3]) or int(parts[3]) >= SLOTS:
            raise BadTopic(f"expected {ROOT}/<community>/{kind}/<slot 0-{SLOTS - 1}>/<node>, "
                           f"got {topic!r}")
        parsed = Topic(community, kind, parts[4], int(parts[3]))
    else:
        if len(parts) != 4:
            raise BadTopic(f"expected {ROOT}/<community>/{kind}/<node>, got {topic!r}")
        parsed = Topic(community, kind, parts[3])
    _check_id("community", parsed.community)
    _check_id("node", parsed.node)
    return parsed
