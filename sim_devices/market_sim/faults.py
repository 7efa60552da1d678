"""The faults of one seed, drawn up front as time windows, and whether an interval was calm.

A window is a partition of one member (its connection cut until the window ends), a slow link
(``slow_ms`` more on each message), a lossy inbox (a share of deliveries lost) or a broker
restart (down for a while, back with what persistence saved). Persistence saves every
``autosave_ms`` when the seed has it. Clock skew and drift are per member and always on
(:class:`~sim_devices.market_sim.members.SkewedClock`).

:meth:`FaultPlan.calm` is the liveness condition's "messages delivered within the grace": no
window of any kind and no message lost to an honest member from a full interval before the gate
to the interval's start.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

from sim_devices.market_sim.network import Network

Kind = Literal["partition", "slow", "lossy", "restart"]


@dataclass(frozen=True, slots=True)
class FaultWindow:
    kind: Kind
    member: str  # "" for the broker
    start_ms: int
    end_ms: int
    amount: int  # slow: extra ms; lossy: per-mille lost; restart: ms down


@dataclass
class FaultPlan:
    windows: list[FaultWindow] = field(default_factory=list)
    autosave_ms: int = 0  # 0: no persistence

    @classmethod
    def draw(cls, rng: random.Random, members: list[str], *, start_ms: int, end_ms: int,
             length_ms: int, persistence: bool, count: int) -> FaultPlan:
        plan = cls(autosave_ms=rng.choice((500, 2_000, 5_000)) if persistence else 0)
        kinds: tuple[Kind, ...] = ("partition", "slow", "lossy", "restart")
        for _ in range(count):
            kind = rng.choice(kinds)
            begin = rng.randint(start_ms, end_ms)
            span = rng.randint(length_ms // 10, 3 * length_ms)
            member = "" if kind == "restart" else rng.choice(members)
            amount = {"partition": 0, "slow": rng.randint(100, 1_500),
                      "lossy": rng.randint(50, 700), "restart": rng.randint(50, 2_000)}[kind]
            plan.windows.append(FaultWindow(kind, member, begin, begin + span, amount))
        plan.windows.sort(key=lambda w: (w.start_ms, w.kind, w.member))
        return plan

    def apply(self, network: Network, *, until_ms: int) -> None:
        """Schedule every window's start and end (and the autosaves) on ``network``."""
        at = network.scheduler.at
        for w in self.windows:
            at(w.start_ms, partial(_begin, network, w))
            if w.kind != "restart":
                at(w.end_ms, partial(_end, network, w))
        if self.autosave_ms:
            for t in range(self.autosave_ms, until_ms, self.autosave_ms):
                at(t, network.broker.save)

    def calm(self, network: Network, honest: list[str], start_ms: int, end_ms: int) -> bool:
        """No fault window and no loss to an honest member within [start_ms, end_ms]."""
        if any(w.start_ms <= end_ms and start_ms <= max(w.end_ms, w.start_ms + w.amount)
               for w in self.windows):
            return False
        return not any(network.lost_between(m, start_ms, end_ms) for m in honest)


def _begin(network: Network, w: FaultWindow) -> None:
    network.trace.add(network.scheduler.now, f"fault:{w.kind}", w.member, "", w.amount)
    if w.kind == "restart":
        network.restart_broker(w.amount)
        return
    link = network.links[w.member]
    if w.kind == "partition":
        link.partitioned = True
        network.cut(w.member)
    elif w.kind == "slow":
        link.slow_ms = w.amount
    else:
        link.loss = w.amount / 1000


def _end(network: Network, w: FaultWindow) -> None:
    network.trace.add(network.scheduler.now, f"fault-end:{w.kind}", w.member, "", 0)
    link = network.links[w.member]
    if w.kind == "partition":
        link.partitioned = False
    elif w.kind == "slow":
        link.slow_ms = 0
    else:
        link.loss = 0.0
