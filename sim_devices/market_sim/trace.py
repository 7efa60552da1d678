"""The message trace of one run: its last events kept for a failure report, all of them hashed.

The fingerprint is a BLAKE2b over every event in order: two runs of one seed that differ in a
single delivery (order, time, size) have different fingerprints, which is how a replay is
checked to be bit for bit the same run.
"""

from __future__ import annotations

import hashlib
from collections import deque

Event = tuple[int, str, str, str, int]
"""(simulated ms, what, who, topic or detail, size or number)."""

KEPT = 400


class Trace:
    def __init__(self, kept: int = KEPT) -> None:
        self.events: deque[Event] = deque(maxlen=kept)
        self._hash = hashlib.blake2b(digest_size=16)

    def add(self, t_ms: int, what: str, who: str, detail: str, n: int) -> None:
        event = (t_ms, what, who, detail, n)
        self.events.append(event)
        self._hash.update(f"{t_ms}|{what}|{who}|{detail}|{n}\n".encode())

    @property
    def fingerprint(self) -> str:
        return self._hash.hexdigest()

    def render(self, last: int = KEPT) -> str:
        shown = list(self.events)[-last:]
        return "\n".join(f"{t:>9} ms  {what:<16} {who:<10} {detail} ({n})"
                         for t, what, who, detail, n in shown)
