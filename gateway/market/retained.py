"""What this node wants the broker to retain under its own topics, kept across disconnects.

MQTT retains the last message per topic, and an empty retained payload removes it. A broker that
restarts without persistence forgets what a node retained, and one that was only out of reach
still holds what the node has since replaced or cleared, so the link replays this store after
every reconnect: the latest payload per topic, and every clear not yet delivered (a clear made
while disconnected and then dropped would leave a stale message on the broker for every gateway
that connects later). Latest per topic wins, so the store is as large as the set of topics the
node writes; it is bounded all the same, dropping the least recently written topic (counted).
"""

from __future__ import annotations

MAX_TOPICS = 1024
"""Far above what a node writes (its roster and presence topics and ``topics.SLOTS`` per kind)."""


class OwnRetained:
    """The latest retained payload per topic; ``b""`` is a clear the broker has not had yet."""

    def __init__(self, *, limit: int = MAX_TOPICS) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self._limit = limit
        self._latest: dict[str, bytes] = {}  # in order of the last write
        self.dropped = 0
        """Topics forgotten because the store was full."""

    def write(self, topic: str, payload: bytes) -> str | None:
        """Remember ``payload`` (``b""``: a clear) for ``topic``; return the topic dropped to make
        room, if any."""
        self._latest.pop(topic, None)
        self._latest[topic] = payload
        if len(self._latest) <= self._limit:
            return None
        oldest = next(iter(self._latest))
        del self._latest[oldest]
        self.dropped += 1
        return oldest

    def delivered(self, topic: str, payload: bytes) -> None:
        """The broker has ``payload`` for ``topic``: a clear is done with (nothing is left to
        replay), unless the topic was written again meanwhile."""
        if not payload and self._latest.get(topic) == b"":
            del self._latest[topic]

    @property
    def limit(self) -> int:
        return self._limit

    def replay(self) -> list[tuple[str, bytes]]:
        """Everything to send after a reconnect, oldest write first (a snapshot)."""
        return list(self._latest.items())

    @property
    def pending_clears(self) -> int:
        return sum(1 for payload in self._latest.values() if not payload)
