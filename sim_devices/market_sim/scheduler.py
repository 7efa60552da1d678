"""Simulated time: one heap of events, run in time order, ties in the order they were scheduled.

Nothing here reads a clock or sleeps: ``now`` is whatever the last event said, so a run is the
same on every machine and under any load, and a seed replays bit for bit.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable


class Scheduler:
    """``at(t, fn)`` runs ``fn`` when simulated time reaches ``t`` ms (never in the past)."""

    def __init__(self) -> None:
        self.now = 0
        self.steps = 0
        """Events run so far: the simulator's unit of work."""
        self._heap: list[tuple[int, int, Callable[[], None]]] = []
        self._seq = 0

    def at(self, t_ms: int, fn: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (max(t_ms, self.now), self._seq, fn))

    def run_until(self, t_ms: int, after: Callable[[], None]) -> None:
        """Run every event due by ``t_ms``, calling ``after`` once each has run (the
        invariants' hook); time then stands at ``t_ms``."""
        heap = self._heap
        while heap and heap[0][0] <= t_ms:
            when, _, fn = heapq.heappop(heap)
            self.now = when
            self.steps += 1
            fn()
            after()
        self.now = max(self.now, t_ms)
