"""A budget per client address: a few at once, then one more every ``refill_s`` (token buckets).

The dashboard keeps two:

* failed logins (5, then one every 12 s). The token has 128 random bits, so no rate makes
  guessing it feasible; the limit keeps a hostile host on the LAN from turning the login into a
  CPU and log load, and makes a real attempt visible (counted, logged) rather than lost in a
  flood. Only failures spend: an owner who logs in from several devices is never slowed down.
  While a client's attempts are spent every login from it is refused, the right token included.
* requests (20, then 10 a second). The page asks once a second; a client asking faster waits
  for its turn instead of being refused, so however hard one host hammers, it gets no more of
  the event loop (which the market's ticks share) than its budget.

Sans-I/O: time is a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    left: float
    at_s: float


class ClientBudget:
    """``burst`` per client, refilled one per ``refill_s``; at most ``max_clients`` tracked."""

    def __init__(self, *, burst: int, refill_s: float, max_clients: int = 1024) -> None:
        self._burst = burst
        self._refill_s = refill_s
        self._max_clients = max_clients
        self._buckets: dict[str, _Bucket] = {}

    def _level(self, client: str, now_s: float) -> float:
        bucket = self._buckets.get(client)
        if bucket is None:
            return float(self._burst)
        return min(self._burst, bucket.left + max(0.0, now_s - bucket.at_s) / self._refill_s)

    def wait_s(self, client: str, *, now_s: float) -> float:
        """0 when ``client`` has budget now; otherwise the seconds until it has."""
        level = self._level(client, now_s)
        return 0.0 if level >= 1 else (1 - level) * self._refill_s

    def spend(self, client: str, *, now_s: float) -> None:
        """Spend one of ``client``'s budget."""
        level = self._level(client, now_s) - 1
        if client not in self._buckets and len(self._buckets) >= self._max_clients:
            self._forget(now_s)
        self._buckets[client] = _Bucket(left=max(0.0, level), at_s=now_s)

    def _forget(self, now_s: float) -> None:
        """Drop the clients whose budget is whole again; if the table is still full, the one
        with the most left (the least suspect), so a flood of new addresses cannot free a
        limited client."""
        for client in [c for c in self._buckets if self._level(c, now_s) >= self._burst]:
            del self._buckets[client]
        while len(self._buckets) >= self._max_clients:
            del self._buckets[max(self._buckets, key=lambda c: self._level(c, now_s))]


def login_budget() -> ClientBudget:
    """Failed logins: five at once, then one every 12 s."""
    return ClientBudget(burst=5, refill_s=12.0)
