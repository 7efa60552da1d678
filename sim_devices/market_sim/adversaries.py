"""Certified members that misbehave, drawn per seed: each runs a real market (so it is present,
bids and votes like anyone) and adds one kind of attack on top, signed with its own key.

``equivocator``: a second, different bid under the same ``seq``. ``replayer``: the retired-
interval storm's trigger: commitments and bids of intervals it has retired, put back on the
broker (retained; on peers' topics too where the broker has no ACL). ``withholder``: bids only in
the last tick before the gate. ``liar``: swaps its commitments for ones to a made-up result.
``flooder``: bursts of distinct signed bids and commitments. ``junk``: oversized, malformed and
badly signed payloads, and topics outside the protocol. ``turncoat``: drops its connection now and
then and, on each reconnect, commits to a different result for the intervals it committed to.
``settle-liar``: publishes settlements whose figures the agreed result does not give.
``revoter``: just before the union round, re-votes (a valid higher ``seq``) for another result
its peers committed to, so that members deciding before and after it hear it see different
votes; drawn only when asked for (:data:`KINDS` is what a seed draws from by default, so every
recorded seed keeps its run).
"""

from __future__ import annotations

from typing import TypeVar

from protocols.market import topics
from protocols.messages import (
    DEFAULT_MAX_ENVELOPE_BYTES,
    Bid,
    Commitment,
    Settlement,
    SignedEnvelope,
)
from protocols.signing import Rejected, sign, verify
from sim_devices.market_sim.members import SimGateway

M = TypeVar("M", Bid, Commitment, Settlement)

KINDS = ("equivocator", "replayer", "withholder", "liar", "flooder", "junk", "turncoat",
         "settle-liar")


class Adversary(SimGateway):
    honest = False
    kind = ""

    def _hex(self) -> str:
        return self.stage.rng.randbytes(32).hex()


class Equivocator(Adversary):
    kind = "equivocator"

    def bid(self, k: int, *, withdraw: bool = False) -> None:
        super().bid(k, withdraw=withdraw)
        first = _parsed(self.own_retained[topics.bid(self.stage.community, k, self.name)], Bid)
        other = first.model_copy(update={"energy_wh": first.energy_wh + 1})
        self.send(topics.bid(self.stage.community, k, self.name),
                  sign("bid", other, self.key).to_bytes(), retain=False)


class Replayer(Adversary):
    kind = "replayer"

    heard: list[tuple[int, str, bytes]]  # (interval, topic, payload) of what it overheard

    def start(self) -> None:
        self.heard = []
        super().start()

    def deliver(self, topic: str, payload: bytes, retained: bool) -> None:
        kind = _kind(topic)
        if payload and kind in (topics.Kind.COMMIT, topics.Kind.BIDS) and len(self.heard) < 200:
            interval = SignedEnvelope.from_bytes(payload).body.get("interval")
            if isinstance(interval, int):
                self.heard.append((interval, topic, payload))
        super().deliver(topic, payload, retained)

    def act(self) -> None:
        super().act()
        old = [h for h in self.heard if h[0] <= self.market.retired]
        if old and self.stage.rng.random() < 0.05:
            _, topic, payload = self.stage.rng.choice(old)
            if self.connected:  # raw: not remembered, as the market did not ask for it
                self.stage.network.publish(self.name, topic, payload, retain=True)


class Withholder(Adversary):
    kind = "withholder"

    def act(self) -> None:
        now, timing = self.now, self.stage.timing
        k = timing.open_interval(now)
        if k in self.stage.trading and k not in self.bid_for and \
                timing.gate_close_ms(k) - now <= self.tick_ms + 5:
            self.bid_for.add(k)
            self.bid(k)
        self.settle_decided()


class Liar(Adversary):
    kind = "liar"

    def send(self, topic: str, payload: bytes, *, retain: bool) -> None:
        if payload and _kind(topic) is topics.Kind.COMMIT and self.stage.rng.random() < 0.7:
            mine = _parsed(payload, Commitment)
            payload = sign("commit", mine.model_copy(update={"result_hash": self._hex()}),
                           self.key).to_bytes()
        super().send(topic, payload, retain=retain)


class Flooder(Adversary):
    kind = "flooder"

    def act(self) -> None:
        super().act()
        rng, now = self.stage.rng, self.now
        if rng.random() > 0.02:
            return
        k = self.stage.timing.open_interval(now)
        c = self.stage.community
        for seq in range(100, 130):
            bid = Bid(community=c, interval=k, node=self.name, seq=seq, side="sell",
                      energy_wh=rng.randint(1, 5_000), limit_price=rng.randint(1, 300),
                      created_ms=now)
            self.send(topics.bid(c, k, self.name), sign("bid", bid, self.key).to_bytes(),
                      retain=False)
        for _ in range(15):
            commit = Commitment(community=c, interval=k - 1, node=self.name,
                                bid_set_digest=self._hex(), result_hash=self._hex(),
                                mechanism="uniform")
            self.send(topics.commit(c, k - 1, self.name),
                      sign("commit", commit, self.key).to_bytes(), retain=False)


class Junk(Adversary):
    kind = "junk"

    def act(self) -> None:
        super().act()
        rng = self.stage.rng
        if rng.random() > 0.03:
            return
        c, k = self.stage.community, self.stage.timing.open_interval(self.now)
        own = [topics.bid(c, k, self.name), topics.commit(c, k, self.name),
               topics.settle(c, k, self.name), topics.presence(c, self.name)]
        bad = f"{topics.ROOT}/{c}/bids/{topics.SLOTS}/{self.name}"
        oversized = b'{"kind":"bid","body":' + b" " * DEFAULT_MAX_ENVELOPE_BYTES + b"}"
        forged = self.own_retained.get(topics.roster(c, self.name), b"{}").replace(b'"a', b'"b')
        for topic, payload in ((rng.choice(own), rng.randbytes(rng.randint(1, 300))),
                               (rng.choice(own), oversized), (rng.choice(own), forged),
                               (rng.choice(own), b'{"kind":"bid"}'), (bad, b"x")):
            self.send(topic, payload, retain=rng.random() < 0.5)


class Turncoat(Adversary):
    kind = "turncoat"

    def act(self) -> None:
        super().act()
        if self.connected and self.stage.rng.random() < 0.005:
            self.stage.network.cut(self.name)

    def on_connected(self) -> None:
        if self.connections < 2:
            return
        for topic, payload in list(self.own_retained.items()):
            if payload and _kind(topic) is topics.Kind.COMMIT:
                mine = _parsed(payload, Commitment)
                other = mine.model_copy(update={"result_hash": self._hex()})
                self.send(topic, sign("commit", other, self.key).to_bytes(), retain=True)


class SettleLiar(Adversary):
    kind = "settle-liar"

    def send(self, topic: str, payload: bytes, *, retain: bool) -> None:
        if payload and _kind(topic) is topics.Kind.SETTLE:
            true = _parsed(payload, Settlement)
            field = self.stage.rng.choice(("money", "cleared_wh", "grid_export_wh"))
            lie = true.model_copy(update={field: getattr(true, field) - 100})
            payload = sign("settle", lie, self.key).to_bytes()
        super().send(topic, payload, retain=retain)


class Revoter(Adversary):
    kind = "revoter"

    def start(self) -> None:
        self.heard: dict[int, dict[str, Commitment]] = {}  # first votes of the others
        self.revoted: set[int] = set()
        super().start()

    def deliver(self, topic: str, payload: bytes, retained: bool) -> None:
        super().deliver(topic, payload, retained)
        if payload and _kind(topic) is topics.Kind.COMMIT:
            opened = verify(SignedEnvelope.from_bytes(payload))
            if not isinstance(opened, Rejected) and isinstance(opened.body, Commitment):
                vote = opened.body
                if vote.node != self.name and vote.seq == 0:
                    self.heard.setdefault(vote.interval, {})[vote.node] = vote

    def act(self) -> None:
        super().act()
        union_ms = self.stage.timing.union_ms
        for k, heard in self.heard.items():
            own = self.own_retained.get(topics.commit(self.stage.community, k, self.name))
            if k in self.revoted or not own or not union_ms(k) - 40 <= self.now <= union_ms(k):
                continue
            self.revoted.add(k)
            mine = _parsed(own, Commitment)
            other = next((c for c in heard.values() if (c.bid_set_digest, c.result_hash)
                          != (mine.bid_set_digest, mine.result_hash)), None)
            if other is not None:
                turned = mine.model_copy(update={
                    "bid_set_digest": other.bid_set_digest, "result_hash": other.result_hash,
                    "bid_digests": other.bid_digests, "seq": mine.seq + 1})
                self.send(topics.commit(self.stage.community, k, self.name),
                          sign("commit", turned, self.key).to_bytes(), retain=True)


BY_KIND: dict[str, type[Adversary]] = {
    cls.kind: cls for cls in (Equivocator, Replayer, Withholder, Liar, Flooder, Junk, Turncoat,
                              SettleLiar, Revoter)
}


def _parsed(payload: bytes, model: type[M]) -> M:
    """The body of one of this node's own signed messages."""
    verified = verify(SignedEnvelope.from_bytes(payload))
    assert not isinstance(verified, Rejected) and isinstance(verified.body, model)
    return verified.body


def _kind(topic: str) -> topics.Kind | None:
    try:
        return topics.parse(topic).kind
    except topics.BadTopic:
        return None
