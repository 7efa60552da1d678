"""Requests and connections the dashboard refused, counted by reason and logged sparingly.

Every refusal is counted (``/metrics`` exports the counts) and logged with the client's address,
but only the 1st, 2nd, 4th, 8th ... of each reason: a hostile host on the LAN that repeats one bad
request a million times costs the journal twenty lines, and the owner still sees the first one.
"""

from __future__ import annotations

import logging
from collections import Counter

log = logging.getLogger("gateway.dashboard")


class Refusals:
    """``note(reason, client, detail)`` for each refusal; ``counts`` for the metrics."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def note(self, reason: str, *, client: str, detail: str) -> None:
        self.counts[reason] += 1
        count = self.counts[reason]
        if count & (count - 1) == 0:  # a power of two
            log.warning("dashboard refused %s from %s: %s (%d so far)", reason, client or "?",
                        detail, count, extra={"reason": reason, "client": client, "count": count})
