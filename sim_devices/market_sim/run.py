"""One seed, one community, start to finish: build it from the seed, run it, check it.

Everything comes from one ``random.Random(seed)`` in a fixed order (keys, certificates, homes,
clocks, links, broker options, adversaries, fault windows, then every draw while running), and
time is the :class:`~sim_devices.market_sim.scheduler.Scheduler`'s, so ``run(seed, config)``
is the same run each time, on any machine; its :attr:`Report.fingerprint` proves it.
"""

from __future__ import annotations

import random
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols.clearing import ClearingParams, Tariffs
from protocols.clearing.collector import collector_paused
from protocols.market import Market, MeterKey, Timing
from protocols.messages import MembershipCertificate
from protocols.signing import public_key_hex, sign
from sim_devices.market_sim.adversaries import BY_KIND, KINDS
from sim_devices.market_sim.broker import Broker
from sim_devices.market_sim.faults import FaultPlan
from sim_devices.market_sim.invariants import LIVE_UNDER, Breach, Invariants
from sim_devices.market_sim.members import (
    BiddingHabits,
    SimGateway,
    SkewedClock,
    Stage,
    TaggingMeter,
)
from sim_devices.market_sim.network import Link, Network
from sim_devices.market_sim.opener import SharedOpener
from sim_devices.market_sim.scheduler import Scheduler
from sim_devices.market_sim.trace import Trace

COMMUNITY = "sim-street"
PARAMS = ClearingParams(tariffs=Tariffs(retail_price=300, feed_in_price=80))
TIMING = Timing(epoch_ms=0, length_ms=1_000, gate_ms=600, grace_ms=150)
"""Intervals of one simulated second, as the real-broker tests run them."""
DAY_MS = 86_400_000
PROGRESS_STEPS = 100_000
JOIN_MS = 1_000  # members join over the next half interval


@dataclass(frozen=True, slots=True)
class Config:
    """``drain``: intervals run after the last traded one ends, None for ``horizon`` + 3 (every
    settlement closes, every retired interval is cleared); 0 ends the run with the last traded
    interval, enough for the scale table (its messages and agreement times are in by then)."""

    members: int = 5
    intervals: int = 12
    adversaries: bool = True
    faults: bool = True
    horizon: int = 4
    drain: int | None = None
    kinds: tuple[str, ...] = KINDS
    """The adversary kinds a seed draws from."""


@dataclass
class Report:
    seed: int
    config: Config
    steps: int = 0
    delivered: int = 0
    lost: int = 0
    calm: int = 0  # intervals whose liveness was checked
    safe_mode: int = 0  # calm ones no honest member agreed in time (only with adversaries)
    agreed: int = 0  # intervals some honest member agreed
    adversaries: list[str] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    agree_ms: list[int] = field(default_factory=list)  # gate to the last honest agreement, by
    # traded interval
    per_interval: list[int] = field(default_factory=list)  # deliveries per steady interval
    kinds: Counter[str] = field(default_factory=Counter)  # the steady intervals' by kind
    rejections: Counter[str] = field(default_factory=Counter)  # the honest members', summed
    violation: Breach | None = None
    trace: str = ""
    fingerprint: str = ""

    @property
    def ok(self) -> bool:
        return self.violation is None


def key_from(rng: random.Random) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))


def run(seed: int, config: Config = Config(),
        progress: Callable[[Scheduler, Network], None] | None = None, *,
        every: int = PROGRESS_STEPS) -> Report:
    """``progress`` is called every ``every`` steps (a long run's sign of life)."""
    rng = random.Random(seed)
    report = Report(seed=seed, config=config)
    timing = TIMING
    scheduler, trace = Scheduler(), Trace()
    broker = Broker(acl=rng.random() < 0.7, persistence=rng.random() < 0.5,
                    max_queued=rng.choice((100, 1_000)))
    network = Network(scheduler, rng, broker, trace, detect_ms=rng.choice((300, 1_500, 7_500)))
    checker = Invariants(timing=timing, tariffs=PARAMS.tariffs, community=COMMUNITY,
                         horizon=config.horizon)
    first = timing.open_interval(JOIN_MS * 2) + 1
    trading = range(first, first + config.intervals)
    stage = Stage(scheduler=scheduler, network=network, rng=rng, timing=timing, checker=checker,
                  trading=trading, community=COMMUNITY)
    authority = key_from(rng)
    names = [f"m{i:05d}" for i in range(config.members)]
    bad = config.members // 3 if config.adversaries else 0
    hostile = dict(zip(sorted(rng.sample(names, rng.randint(0, bad))),
                       (rng.choice(config.kinds) for _ in range(bad)), strict=False))
    members: list[SimGateway] = []
    opener = SharedOpener()
    for name in names:
        members.append(_member(stage, name, authority, rng, config, hostile.get(name), opener))
        report.adversaries += [f"{name}:{hostile[name]}"] if name in hostile else []
    drain = config.horizon + 3 if config.drain is None else config.drain
    end_ms = timing.end_ms(trading[-1]) + drain * timing.length_ms
    plan = FaultPlan.draw(rng, names, start_ms=JOIN_MS * 2, end_ms=timing.end_ms(trading[-1]),
                          length_ms=timing.length_ms, persistence=broker.persistence,
                          count=rng.randint(0, 4) if config.faults else 0)
    report.faults = [f"{w.kind}:{w.member}@{w.start_ms}-{w.end_ms}/{w.amount}"
                     for w in plan.windows]
    plan.apply(network, until_ms=end_ms)
    honest = [m for m in members if m.honest]
    for m in members:
        scheduler.at(JOIN_MS + rng.randint(0, JOIN_MS // 2), m.start)

    def check_members() -> None:
        for m in honest:
            checker.check_member(m)
    for t in range(timing.start_ms(first), end_ms, timing.length_ms):
        scheduler.at(t, check_members)

    def calm(k: int) -> bool:
        start = timing.gate_close_ms(k) - 3 * timing.length_ms
        return plan.calm(network, [m.name for m in honest], start, timing.start_ms(k) + 50)

    try:
        def after() -> None:
            if progress is not None and scheduler.steps % every == 0:
                progress(scheduler, network)
        # Every message in flight is an event waiting in the scheduler, up to N² of them: they
        # outlive the young generations, so each full collection walked the whole community
        # again (half the CPU of a 1,000-member run). A run makes next to no cyclic garbage and
        # collection has no part in what it does, so its fingerprint is the same either way.
        with collector_paused():
            scheduler.run_until(end_ms, after)
        report.calm = checker.finish(honest, trading, calm, hostile=not LIVE_UNDER.issuperset(
            hostile.values()))
    except Breach as violation:
        report.violation = violation
    except Exception as exc:  # a crash inside a member is a finding too, with its trace
        report.violation = Breach("crash", "".join(traceback.format_exception(exc)))
    report.steps, report.delivered, report.lost = scheduler.steps, network.delivered, network.lost
    report.agreed = len(checker.agreed)
    report.safe_mode = checker.safe_mode
    report.agree_ms = [checker.agreed_at[k] - timing.gate_close_ms(k) for k in trading
                       if k in checker.agreed_at]
    # Each second of simulated time is one interval (TIMING): from the start of k, it carries
    # the commitment round of k + 1 and the bids for k + 2, so it is a whole interval's traffic
    # when both are traded.
    steady = [timing.start_ms(k) // 1_000 for k in trading[:-2]]
    report.per_interval = [network.delivered_at[second] for second in steady]
    report.kinds = Counter({kind: n for (second, kind), n in network.delivered_kinds.items()
                            if second in steady})
    report.rejections = sum((m.rejections for m in honest), Counter())
    report.fingerprint = trace.fingerprint
    if report.violation is not None:
        report.trace = trace.render()
    return report


def _member(stage: Stage, name: str, authority: Ed25519PrivateKey, rng: random.Random,
            config: Config, hostile: str | None, opener: SharedOpener) -> SimGateway:
    key = key_from(rng)
    cert = MembershipCertificate(
        community=COMMUNITY, node=name, public_key=public_key_hex(key), bus="b1",
        import_limit_w=10_000, export_limit_w=10_000, valid_from_ms=0, valid_until_ms=DAY_MS)
    meter = TaggingMeter(device_id=f"meter-{name}", key=rng.randbytes(32))
    market = Market(community=COMMUNITY, node=name, identity=key,
                    certificate=sign("cert", cert, authority),
                    authority_key_hex=public_key_hex(authority), timing=TIMING, params=PARAMS,
                    horizon=config.horizon, opener=opener,
                    meter_keys={name: MeterKey(device_id=meter.device_id, key=meter.key)})
    cls = SimGateway if hostile is None else BY_KIND[hostile]
    member = cls(stage, name=name, key=key, market=market,
                 clock=SkewedClock(skew_ms=rng.randint(-20, 20), drift_ppm=rng.randint(-100, 100)),
                 tick_ms=rng.randint(15, 50), retry_ms=rng.randint(100, 1_000),
                 clean=rng.random() < 0.8,
                 home=BiddingHabits(seller=rng.random() < 0.4, bid_share=rng.uniform(0.6, 1.0),
                           short_share=rng.choice((0.0, 0.1, 0.5))),
                 meter=meter)
    base, jitter = rng.randint(1, 15), rng.randint(0, 25)
    dup, reorder, queue = rng.choice((0.0, 0.01, 0.1)), rng.random() < 0.3, rng.choice((50, 1_000))
    stage.network.attach(name, member, Link(
        base_ms=base, jitter_ms=jitter, dup=dup, reorder=reorder,
        # Without faults, the field broker's limits (docs/brokers.md): nothing is dropped.
        queue_limit=queue if config.faults else 20_100))
    return member
