"""How many distinct signed messages a member may send on one of its topics: the flood cut.

A certified member can sign as many commitments, bid sets or settlements as it likes, and each
costs a receiver an Ed25519 check before it can be refused. So a receiver counts, per topic (kind,
slot, node), the distinct messages it has *verified* there, and once the count reaches the kind's
limit it drops further live messages on that topic unread, as "flood". Only verified messages
count (:meth:`Quota.admit` is called after the signature and membership checks): a forger cannot
fill a member's quota to silence it. A message already counted (a broker redelivery, a retained
copy after a reconnect) is never cut. A topic's count lasts for its slot's tenure: the receiver
calls :meth:`Quota.forget` when the interval the slot carries is closed, and the slot starts
afresh for the next interval on it.

Sans-I/O and clock-free; messages are identified by the SHA-256 of their bytes (the wire form is
canonical, so one message has one byte form). A topic's digests are a tuple, not a set: most
topics hold one message and never more than the kind's limit (a dozen), and a receiver keeps one
such record per member, kind and open slot, so the record's size is what counts.
"""

from __future__ import annotations

import hashlib

from protocols.market.topics import Kind, Topic


class Quota:
    """Distinct verified messages per topic, with a limit per kind."""

    def __init__(self, limits: dict[Kind, int]) -> None:
        self._limits = dict(limits)
        # (kind, slot) -> node -> digests of the verified messages counted on that topic.
        self._heard: dict[tuple[Kind, int], dict[str, tuple[bytes, ...]]] = {}
        # The last payload digested and its digest: full() and admit() ask about the same one.
        self._digested: tuple[bytes, bytes] = (b"", _key(b""))

    def covers(self, topic: Topic) -> bool:
        return topic.kind in self._limits

    def full(self, topic: Topic, payload: bytes) -> bool:
        """``payload`` is new on ``topic`` and the topic's quota is used up: drop it unread."""
        heard = self._counted(topic)
        return (heard is not None and len(heard) >= self._limits[topic.kind]
                and self._digest(payload) not in heard)

    def admit(self, topic: Topic, payload: bytes) -> bool:
        """Count a verified ``payload``; False if it is a new one past the topic's limit."""
        assert topic.slot is not None  # only per-interval kinds have quotas
        by_node = self._heard.setdefault((topic.kind, topic.slot), {})
        heard = by_node.get(topic.node, ())
        key = self._digest(payload)
        if key in heard:
            return True
        if len(heard) >= self._limits[topic.kind]:
            return False
        by_node[topic.node] = (*heard, key)
        return True

    def forget(self, kind: Kind, slot: int) -> None:
        """The interval on ``slot`` is closed: every node's count for that topic starts afresh."""
        self._heard.pop((kind, slot), None)

    def _counted(self, topic: Topic) -> tuple[bytes, ...] | None:
        if topic.slot is None:
            return None
        by_node = self._heard.get((topic.kind, topic.slot))
        return None if by_node is None else by_node.get(topic.node)

    def _digest(self, payload: bytes) -> bytes:
        last, key = self._digested
        if payload != last:
            key = _key(payload)
            self._digested = (payload, key)
        return key


def _key(payload: bytes) -> bytes:
    return hashlib.sha256(payload).digest()
