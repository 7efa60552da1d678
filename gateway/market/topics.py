"""Topic names of the peer protocol: the only place a topic string is built or taken apart.

``gridpeer/<community>/roster/<node>``, ``revoked/<node>``, ``presence/<node>``,
``bids/<k>/<node>``, ``commit/<k>/<node>``, ``bidset/<k>/<node>``, ``settle/<k>/<node>``
(docs/architecture.md, "Peer protocol topics"). Bid sets are not subscribed to: a gateway fetches
them (:func:`bidsets_of`) only when it needs a peer's list. ``revoked/<node>`` is written by the
community authority only (the broker's ACL): a revoked node's gateway republishes its own
certificate on ``roster/<node>`` whenever it reconnects, so a retained revocation there would not
survive it.

Community and node ids are restricted to a topic-safe alphabet so that no id can contain ``/``,
``+`` or ``#`` and smuggle a wildcard or an extra level into a topic; a topic from the broker that
does not parse is a peer's fault and the caller turns :class:`BadTopic` into a counted rejection.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

ROOT = "gridpeer"
# Same alphabet as the ids in protocols.messages, so every valid message names a valid topic.
_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_INTERVAL = re.compile(r"0|[1-9][0-9]{0,17}")


class Kind(StrEnum):
    ROSTER = "roster"
    REVOKED = "revoked"
    PRESENCE = "presence"
    BIDS = "bids"
    COMMIT = "commit"
    BIDSET = "bidset"
    SETTLE = "settle"


_PER_INTERVAL = frozenset({Kind.BIDS, Kind.COMMIT, Kind.BIDSET, Kind.SETTLE})
_FETCHED_ONLY = frozenset({Kind.BIDSET})


class BadTopic(ValueError):
    """A topic or id that is not part of the protocol's namespace."""


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed topic; ``interval`` is set exactly for bids, commit and settle."""

    community: str
    kind: Kind
    node: str
    interval: int | None = None

    def __str__(self) -> str:
        _check_id("community", self.community)
        _check_id("node", self.node)
        if self.kind in _PER_INTERVAL:
            if self.interval is None or self.interval < 0:
                raise BadTopic(f"{self.kind} topic needs an interval >= 0, got {self.interval!r}")
            return f"{ROOT}/{self.community}/{self.kind}/{self.interval}/{self.node}"
        if self.interval is not None:
            raise BadTopic(f"{self.kind} topic takes no interval, got {self.interval!r}")
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
    return str(Topic(community, Kind.BIDS, node, interval))


def commit(community: str, interval: int, node: str) -> str:
    return str(Topic(community, Kind.COMMIT, node, interval))


def bidset(community: str, interval: int, node: str) -> str:
    return str(Topic(community, Kind.BIDSET, node, interval))


def settle(community: str, interval: int, node: str) -> str:
    return str(Topic(community, Kind.SETTLE, node, interval))


def subscriptions(community: str) -> tuple[str, ...]:
    """One filter per kind, narrower than ``gridpeer/<community>/#``: stray topics never arrive."""
    _check_id("community", community)
    base = f"{ROOT}/{community}"
    return tuple(
        f"{base}/{kind}/+/+" if kind in _PER_INTERVAL else f"{base}/{kind}/+"
        for kind in Kind if kind not in _FETCHED_ONLY
    )


def bids_of(community: str, interval: int) -> str:
    """Filter for every bid of one interval: subscribing to it makes the broker resend the retained
    bids, which is how a gateway in the minority fetches the bids it missed."""
    return _of(Kind.BIDS, community, interval)


def bidsets_of(community: str, interval: int) -> str:
    """Filter for every bid set of one interval, fetched when a peer's list is needed."""
    return _of(Kind.BIDSET, community, interval)


def _of(kind: Kind, community: str, interval: int) -> str:
    _check_id("community", community)
    if interval < 0:
        raise BadTopic(f"interval must be >= 0, got {interval}")
    return f"{ROOT}/{community}/{kind}/{interval}/+"


def parse(topic: str) -> Topic:
    """The :class:`Topic` for a concrete topic string; raises :class:`BadTopic` with the reason."""
    parts = topic.split("/")
    if len(parts) < 4 or parts[0] != ROOT:
        raise BadTopic(f"not a {ROOT} topic: {topic!r}")
    community, kind_text = parts[1], parts[2]
    try:
        kind = Kind(kind_text)
    except ValueError:
        raise BadTopic(f"unknown topic kind {kind_text!r} in {topic!r}") from None
    if kind in _PER_INTERVAL:
        if len(parts) != 5 or not _INTERVAL.fullmatch(parts[3]):
            raise BadTopic(f"expected {ROOT}/<community>/{kind}/<k>/<node>, got {topic!r}")
        parsed = Topic(community, kind, parts[4], int(parts[3]))
    else:
        if len(parts) != 4:
            raise BadTopic(f"expected {ROOT}/<community>/{kind}/<node>, got {topic!r}")
        parsed = Topic(community, kind, parts[3])
    _check_id("community", parsed.community)
    _check_id("node", parsed.node)
    return parsed
