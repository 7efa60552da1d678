"""When to ask the broker again for a node's certificate: a verified message came from a signer
this gateway does not know.

A gateway learns the roster from the retained ``roster/<node>`` messages, once per connection. If
one of them is lost on the way (a full inbox while members join), the gateway refuses that node's
every message as "unknown-key" until its link happens to reconnect, which a healthy link never
does. So when a message whose signature holds names a node whose certified key this gateway does
not hold, it fetches what the broker retains about that node (certificate or revocation, and
presence: :func:`protocols.market.topics.membership_of`) and drops the filter once the
certificate is in.

Anyone can sign a message under a made-up name, so asking must stay cheap whatever comes in:
each node is asked for at most once per ``every_ms``, and at most ``at_once`` asks are open at a
time (an ask is closed when its certificate arrives, or ``every_ms`` after it was made); a message
past either limit is refused as before and asks nothing. Every node asked about within the last
``every_ms`` is remembered, which is at most ``at_once`` plus the nodes whose certificates came
in meanwhile (each a real member), so a flood of signers grows neither the requests nor the
memory. Sans-I/O: the caller turns a True into a fetch and each node handed back into dropping it.
"""

from __future__ import annotations


class Lookups:
    """The roster lookups this gateway has open, and when it last asked about each node."""

    def __init__(self, *, every_ms: int, at_once: int) -> None:
        self._every_ms = every_ms
        self._at_once = at_once
        self._asked: dict[str, int] = {}  # node -> when it was last asked about
        self._open: set[str] = set()  # asked about, certificate not in yet

    def ask(self, node: str, now_ms: int) -> bool:
        """Whether to fetch ``node``'s roster entry now (and it is then open)."""
        if node in self._asked or len(self._open) >= self._at_once:
            return False
        self._asked[node] = now_ms
        self._open.add(node)
        return True

    def answered(self, node: str) -> bool:
        """``node``'s certificate came in: whether a lookup for it was open (now closed)."""
        if node not in self._open:
            return False
        self._open.discard(node)
        return True

    def expire(self, now_ms: int) -> list[str]:
        """Forget the asks made ``every_ms`` ago or more; returns the ones still open then,
        closed now (nothing came: a made-up name, or the broker holds no certificate)."""
        done = [node for node, asked in self._asked.items() if now_ms - asked >= self._every_ms]
        closed: list[str] = []
        for node in done:
            del self._asked[node]
            if node in self._open:
                self._open.discard(node)
                closed.append(node)
        return closed

    @property
    def open(self) -> frozenset[str]:
        return frozenset(self._open)
