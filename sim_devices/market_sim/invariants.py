"""The rules every run must keep, checked as each thing happens; the first broken one stops it.

Safety: no two honest members agree on (dispatch, or adopt and settle) different results for an
interval. Balance: in every agreed result energy and money balance exactly, in Wh and µ (bought
= sold = traded energy, paid = received = traded money, each trade's money its energy times its
price, the grid's share priced at the tariffs). Settlement: a member settles an interval once;
an honest member accepts no settlement that does not follow from the agreed result, and never
swaps one it accepted for another. Closure: no honest member publishes a commitment for an
interval it has retired (the retired-interval storm). Boundedness: per member and interval at
most :data:`COMMITS` commitments and :data:`PUBLISHES` publishes, and at most ``horizon`` +
:data:`SESSIONS_OVER` intervals held open.

Liveness (:meth:`Invariants.finish`): in a community without adversaries, or only with ones of
the kinds in :data:`LIVE_UNDER`, an interval calm for everyone
(:meth:`~sim_devices.market_sim.faults.FaultPlan.calm`) is agreed in time by every member. With
another hostile member it is counted, not required: a member that keeps its commitment back
while the others' first votes split, or equivocates (its vote no longer counts, yet a peer that
did not catch it may have counted it), can force every member into safe mode (abstain: the grid
balances the homes). No safe protocol can stop that (the union round may not take a first vote
back while a vote it has not heard could make a quorum), so the simulator measures how often
(:attr:`Invariants.safe_mode`). The same holds, under any adversary, for an interval in which a
hostile member signed more commitments than an honest one can (:data:`COMMITS`) while the
honest members' first votes split: it voted several ways, which is equivocating with votes
(:meth:`Invariants.exempt`). And for an interval every honest member that did not agree
abstained as "split": the first votes split so that no side could move without risking a second
quorum once as many members as may be hostile moved their votes (the union round's rule), which
no honest member can tell apart from a real attack.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable

from protocols.clearing import Result, Tariffs
from protocols.market import Abstained, Agreed, Outcome, TaggedMeterReading, Timing, topics
from protocols.market.settlement import expected_settlement
from protocols.messages import MessageError, Settlement, SignedEnvelope
from sim_devices.market_sim.members import SimGateway

COMMITS = 3
"""Commitments one member may publish for one interval: its first, the union round's, a join."""

PUBLISHES = 40
"""Publishes one member's market may make within one interval's length: a few bids, three
commitments with their bid sets, a settlement and the clears of a retired interval, with room."""

SESSIONS_OVER = 4
"""Intervals a market may hold beyond its horizon: the running one, two waiting to retire, one
whose gate is closing."""


LIVE_UNDER = frozenset({"flooder", "junk", "settle-liar"})
"""Adversary kinds under which calm intervals must still be agreed by every honest member: they
make members refuse messages (a flood past its limit, junk, lying settlements), not split their
votes. A flood of commitments is voting several ways: where the honest first votes split, the
intervals it hits are exempt (:meth:`Invariants.exempt`)."""


class Breach(Exception):
    """An invariant broke: ``rule`` names it, the message says where."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(f"{rule}: {detail}")
        self.rule = rule


class Invariants:
    def __init__(self, *, timing: Timing, tariffs: Tariffs, community: str,
                 horizon: int) -> None:
        self.timing = timing
        self.tariffs = tariffs
        self.community = community
        self.horizon = horizon
        self.agreed: dict[int, Agreed] = {}  # the first honest agreement of each interval
        self._balanced: set[str] = set()  # result hashes checked
        self._commits: Counter[tuple[str, int]] = Counter()
        self._publishes: Counter[tuple[str, int]] = Counter()
        self._settled: set[tuple[str, int]] = set()
        self._accepted: dict[tuple[str, int, str], Settlement] = {}
        self._followed: set[tuple[str, int, str]] = set()  # accepted ones checked against agreed
        self.agreed_at: dict[int, int] = {}  # when the last honest member agreed in time
        self.safe_mode = 0
        """Calm intervals (under adversaries) that no honest member agreed in time."""
        self._votes: defaultdict[tuple[str, int], set[bytes]] = defaultdict(set)
        self.equivocated: set[int] = set()
        """Intervals for which a hostile member signed more distinct commitments than an honest
        one can (:data:`COMMITS`)."""
        self._first_votes: dict[int, dict[str, tuple[str, str]]] = defaultdict(dict)
        # interval -> honest member -> its first commitment's (bid set, result)

    # --- as it happens ---------------------------------------------------------------------------

    def on_publish(self, member: SimGateway, topic: str, payload: bytes) -> None:
        if not member.honest:
            self._hostile_vote(member, topic, payload)
            return
        window = member.stage.scheduler.now // self.timing.length_ms
        self._publishes[member.name, window] += 1
        if self._publishes[member.name, window] > PUBLISHES:
            raise Breach("bounded", f"{member.name} published more than {PUBLISHES} "
                            f"messages in one interval's time (window {window})")
        if not payload or topics.parse(topic).kind is not topics.Kind.COMMIT:
            return
        interval, vote = _vote(payload)
        self._first_votes[interval].setdefault(member.name, vote)
        if interval <= member.market.retired:
            raise Breach("closed", f"{member.name} committed to interval {interval} after "
                            f"retiring it (retired up to {member.market.retired})")
        self._commits[member.name, interval] += 1
        if self._commits[member.name, interval] > COMMITS:
            raise Breach("bounded", f"{member.name} published more than {COMMITS} "
                            f"commitments for interval {interval}")

    def _hostile_vote(self, member: SimGateway, topic: str, payload: bytes) -> None:
        """Note a hostile member's commitment; past :data:`COMMITS` distinct ones for an
        interval, the interval is :attr:`equivocated`."""
        try:
            if not payload or topics.parse(topic).kind is not topics.Kind.COMMIT:
                return
            interval = SignedEnvelope.from_bytes(payload).body.get("interval")
        except (topics.BadTopic, MessageError):
            return  # junk: the members refuse it unread
        if not isinstance(interval, int):
            return
        votes = self._votes[member.name, interval]
        votes.add(hashlib.sha256(payload).digest())
        if len(votes) > COMMITS:
            self.equivocated.add(interval)

    def on_outcome(self, member: SimGateway, outcome: Outcome) -> None:
        if not member.honest or not isinstance(outcome, Agreed):
            return
        k = outcome.interval
        if not outcome.late:
            self.agreed_at[k] = member.stage.scheduler.now
        first = self.agreed.setdefault(k, outcome)
        if (first.result_hash, first.bid_set_digest) != (outcome.result_hash,
                                                          outcome.bid_set_digest):
            raise Breach("safety", f"interval {k}: {member.name} agreed {outcome.result_hash}"
                            f" where another honest member agreed {first.result_hash}")
        if outcome.result_hash not in self._balanced:
            self._balanced.add(outcome.result_hash)
            balance(outcome.result, self.tariffs, where=f"interval {k}")

    def on_settled(self, member: SimGateway, settlement: Settlement) -> None:
        key = (member.name, settlement.interval)
        if key in self._settled:
            raise Breach("settled-twice", f"{member.name} settled {settlement.interval} again")
        self._settled.add(key)
        agreed = self.agreed.get(settlement.interval)
        if member.honest and agreed is None:
            raise Breach("safety", f"{member.name} settled {settlement.interval}, which no "
                            "honest member agreed")

    def check_member(self, member: SimGateway) -> None:
        """The periodic checks of one honest member: what it holds open, what it accepted."""
        market, now = member.market, member.now
        k_open = self.timing.open_interval(now)
        low = max(market.first, market.retired - 2 * self.horizon)
        held = [k for k in range(low, k_open + self.horizon + 1)
                if market.session_state(k) is not None]
        if len(held) > self.horizon + SESSIONS_OVER:
            raise Breach("bounded", f"{member.name} holds {len(held)} intervals open: {held}")
        for k in range(max(market.first, market.retired - self.horizon), market.retired + 1):
            agreed = self.agreed.get(k)
            for node, s in market.settlements(k).items():
                key = (member.name, k, node)
                if self._accepted.setdefault(key, s) != s:
                    raise Breach("settled-twice", f"{member.name} swapped {node}'s accepted "
                                    f"settlement of interval {k}")
                if node != member.name and agreed is not None and key not in self._followed:
                    self._followed.add(key)  # it cannot change (checked just above)
                    _follows(agreed, s, self.tariffs, self.community, where=member.name)

    # --- at the end ------------------------------------------------------------------------------

    def exempt(self, k: int) -> bool:
        """Interval ``k`` need not be agreed: a hostile member voted several ways
        (:attr:`equivocated`) while the honest first votes split. No honest member can tell
        which of its votes a peer counted, so the union round may not move anyone (the module
        docstring)."""
        return k in self.equivocated and len(set(self._first_votes[k].values())) > 1

    def finish(self, honest: list[SimGateway], trading: Iterable[int],
               calm: Callable[[int], bool], *, hostile: bool) -> int:
        """Liveness over the run (``hostile``: adversaries outside :data:`LIVE_UNDER` took part;
        :meth:`exempt` intervals too);
        returns how many intervals were calm (checked), and counts in :attr:`safe_mode` the calm
        ones no honest member agreed in time."""
        checked = 0
        for k in trading:
            if not calm(k):
                continue
            checked += 1
            came = {m.name: m.outcomes.get(k) for m in honest}
            in_time = [n for n, o in came.items() if isinstance(o, Agreed) and not o.late]
            if not in_time:
                self.safe_mode += 1
            split = all(isinstance(o, Abstained) and o.reason == "split"
                        for n, o in came.items() if n not in in_time)
            if len(in_time) < len(honest) and not hostile and not self.exempt(k) and not split:
                raise Breach("liveness", f"interval {k} was calm, yet the honest members "
                                f"came to {came}")
        return checked


def balance(result: Result, tariffs: Tariffs, *, where: str) -> None:
    """Energy and money of ``result`` balance exactly."""
    trades, outcomes = list(result.trades), list(result.outcomes)
    sums = {
        "bought": sum(o.bought_wh for o in outcomes), "sold": sum(o.sold_wh for o in outcomes),
        "traded": sum(t.energy_wh for t in trades),
    }
    money = {
        "paid": sum(o.paid_p2p for o in outcomes),
        "received": sum(o.received_p2p for o in outcomes),
        "traded": sum(t.money for t in trades),
    }
    wrong = [t for t in trades if t.money != t.energy_wh * t.price or t.energy_wh <= 0]
    grid = [o.node for o in outcomes
            if o.paid_grid != o.grid_import_wh * tariffs.retail_price
            or o.received_grid != o.grid_export_wh * tariffs.feed_in_price]
    totals = (result.grid_import_wh == sum(o.grid_import_wh for o in outcomes)
              and result.grid_export_wh == sum(o.grid_export_wh for o in outcomes))
    if len(set(sums.values())) != 1 or len(set(money.values())) != 1 or wrong or grid \
            or not totals:
        raise Breach("balance", f"{where}: energy {sums}, money {money}, trades off "
                        f"{wrong[:3]}, grid off {grid[:3]}, grid totals ok: {totals}")


def _follows(agreed: Agreed, s: Settlement, tariffs: Tariffs, community: str,
             *, where: str) -> None:
    reading = TaggedMeterReading(seq=s.meter_seq, import_wh=s.meter_import_wh,
                                 export_wh=s.meter_export_wh, tag=s.meter_tag)
    expected = expected_settlement(agreed, community=community, node=s.node,
                                   delivered_wh=s.delivered_wh, reading=reading,
                                   tariffs=tariffs, bus_wh=s.bus_wh)
    if expected != s:
        raise Breach("settlement", f"{where} accepted {s.node}'s settlement of "
                        f"{s.interval}, which the agreed result does not give: {s} != {expected}")


def _vote(payload: bytes) -> tuple[int, tuple[str, str]]:
    """A commitment's interval and vote (bid set, result)."""
    try:
        body = SignedEnvelope.from_bytes(payload).body
    except MessageError as exc:
        raise Breach("malformed", f"a member published a malformed commitment: {exc}") from None
    interval, bid_set, result = body.get("interval"), body.get("bid_set_digest"), \
        body.get("result_hash")
    assert isinstance(interval, int) and isinstance(bid_set, str) and isinstance(result, str)
    return interval, (bid_set, result)
