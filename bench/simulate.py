"""Whole communities in deterministic simulation (``sim_devices.market_sim``): many seeds, one
seed replayed, or the scale table.

    python -m bench.simulate --seeds 1000 --members 5          # a search: any failure's seed
    python -m bench.simulate --seed 26 --members 5             # replay it, with its trace
    python -m bench.simulate --scale 10,100,1000 --intervals 2 # messages and agreement time

A search prints every failing seed with the rule it broke, then seeds per second and
community-intervals per second (intervals the homes traded in, summed over seeds); a replay
prints the run's fingerprint (the same on every machine) and, when it failed, the message trace
that led there. The scale table runs without adversaries or faults: messages delivered per
interval (every delivery to every member, retained replays and duplicates included) and the
time from gate closure to the last member's agreement, in simulated time.

Baseline, measured in the same run: one ``protocols.signing.verify`` of a signed bid, what a
gateway spends on each message it receives. A search prints a simulated step's cost in those
verifies and the scale table a delivery's: what simulating a community costs beside what its
members' own checks would.
"""

from __future__ import annotations

import argparse
import resource
import signal
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

from bench._report import machine
from bench.bench_signing import make_bids
from protocols.signing import generate_key, sign, verify
from sim_devices.market_sim import Config, Report, run
from sim_devices.market_sim.adversaries import BY_KIND, KINDS
from sim_devices.market_sim.network import Network
from sim_devices.market_sim.scheduler import Scheduler


def verify_us() -> float:
    """The baseline: µs of CPU per ``verify`` of a signed bid (best of 3 rounds of 256)."""
    key = generate_key()
    envelopes = [sign("bid", bid, key) for bid in make_bids()]
    best = float("inf")
    for _ in range(3):
        began = time.process_time()
        for envelope in envelopes:
            verify(envelope, expected_kind="bid")
        best = min(best, (time.process_time() - began) / len(envelopes))
    return best * 1e6


@dataclass
class Totals:
    seeds: int = 0
    failed: int = 0
    intervals: int = 0  # community-intervals: intervals traded, summed over seeds
    steps: int = 0
    calm: int = 0
    safe_mode: int = 0

    def add(self, report: Report) -> None:
        self.seeds += 1
        self.failed += not report.ok
        self.intervals += report.config.intervals
        self.steps += report.steps
        self.calm += report.calm
        self.safe_mode += report.safe_mode


def search(first: int, seeds: int, config: Config, *, stop: bool) -> int:
    """Run ``seeds`` seeds from ``first``; returns how many failed. Stopped early (Ctrl-C,
    SIGTERM), it still prints what it reached."""
    totals = Totals()
    began = time.perf_counter()
    try:
        for seed in range(first, first + seeds):
            report = run(seed, config)
            totals.add(report)
            if not report.ok:
                print(f"seed {seed}: {report.violation.rule if report.violation else ''} after "
                      f"{report.steps} steps: {str(report.violation).splitlines()[0]}  "
                      f"(replay: python -m bench.simulate --seed {seed} --members "
                      f"{config.members} --intervals {config.intervals}"
                      + ("" if config.kinds == KINDS else f" --kinds {','.join(config.kinds)}")
                      + ")", flush=True)
                if stop:
                    break
            if totals.seeds % 500 == 0:
                print(f"... {totals.seeds} seeds, {totals.intervals:,} community-intervals, "
                      f"{totals.failed} failed, "
                      f"{totals.seeds / (time.perf_counter() - began):.2f} seeds/s", flush=True)
    except KeyboardInterrupt:
        pass  # the seed interrupted is not counted
    elapsed = time.perf_counter() - began
    t = totals
    baseline = verify_us()
    step_us = elapsed / max(t.steps, 1) * 1e6
    print(f"{t.seeds} seeds (from {first}) x {config.members} members x {config.intervals} "
          f"intervals: {t.failed} failed; {t.seeds / elapsed:.2f} seeds/s, "
          f"{t.intervals / elapsed:.1f} community-intervals/s, {t.steps / elapsed:,.0f} steps/s "
          f"= {step_us:,.0f} µs a step, {step_us / baseline:.2f}x one verify of a signed bid "
          f"({baseline:,.0f} µs, same run) "
          f"({t.intervals:,} community-intervals, {t.calm:,} calm ones checked for liveness, "
          f"{t.safe_mode:,} of them in safe mode under an adversary, {t.steps:,} steps, "
          f"{elapsed:.0f} s); {machine()}")
    return t.failed


def replay(seed: int, config: Config) -> bool:
    report = run(seed, config)
    _describe(report)
    if not report.ok:
        print(f"\nthe last {report.trace.count(chr(10)) + 1} events before it:\n{report.trace}")
        print(f"\n{report.violation}")
    return report.ok


def _describe(report: Report) -> None:
    print(f"seed {report.seed}: {'ok' if report.ok else 'FAILED'}, {report.steps} steps, "
          f"{report.delivered} delivered, {report.lost} lost, {report.agreed} intervals agreed, "
          f"{report.calm} calm ones checked ({report.safe_mode} in safe mode); adversaries "
          f"{report.adversaries or 'none'}; "
          f"faults {report.faults or 'none'}; fingerprint {report.fingerprint}")


def scale(sizes: list[int], intervals: int, seed: int, *, memory: bool = False,
          drain: int | None = None) -> None:
    """One calm run per size. CPU s per interval is the whole run's process time over its traded
    intervals (joining and the intervals that drain after them included), and µs per delivery
    the same time over every delivery of the run: what a larger community costs to simulate.
    ``memory``: also the run's peak traced Python memory (``tracemalloc``, which slows the run
    about threefold), in all and per member. ``drain``: :attr:`Config.drain`. Progress goes to
    stderr every 100,000 steps; after each row, the steady intervals' messages by kind."""
    baseline = verify_us()
    print(f"baseline: one verify of a signed bid, {baseline:,.0f} µs CPU (same run)")
    print("members | messages delivered per interval | gate -> all agreed (simulated ms, "
          "median / max) | wall s | CPU s per interval | CPU µs per delivery (x verify) | "
          "peak RSS GB")
    for members in sizes:
        if memory:
            tracemalloc.start()
        began, cpu = time.perf_counter(), time.process_time()

        report = run(seed, Config(members=members, intervals=intervals, adversaries=False,
                                  faults=False, drain=drain), _progress(members, cpu))
        wall, cpu = time.perf_counter() - began, time.process_time() - cpu
        held = ""
        if memory:
            peak_mb = tracemalloc.get_traced_memory()[1] / 1e6
            tracemalloc.stop()
            held = f" | peak {peak_mb:,.0f} MB, {peak_mb / members:,.2f} MB a member"
        per = statistics.mean(report.per_interval) if report.per_interval else 0
        agree = report.agree_ms or [0]
        print(f"{members:>7,} | {per:>12,.0f} | {statistics.median(agree):,.0f} / "
              f"{max(agree):,.0f} | {wall:,.0f} | {cpu / intervals:,.1f} | "
              f"{(us := cpu / max(report.delivered, 1) * 1e6):,.0f} ({us / baseline:.2f}x) | "
              f"{_peak_rss_gb():.2f}{held}"
              f"{'' if report.ok else ' FAILED: '}"
              f"{'' if report.ok else report.violation}", flush=True)
        steady = max(len(report.per_interval), 1)
        print("        by kind, per interval (x N²): " + ", ".join(
            f"{kind} {n / steady:,.0f} ({n / steady / members ** 2:.2f})"
            for kind, n in sorted(report.kinds.items())), flush=True)


def _progress(members: int, cpu: float) -> Callable[[Scheduler, Network], None]:
    """A long run's sign of life, on stderr: where it is and what it has cost since ``cpu``."""
    def progress(scheduler: Scheduler, network: Network) -> None:
        used = time.process_time() - cpu
        print(f"  ... {members:,} members: {scheduler.now:,} simulated ms, "
              f"{network.delivered:,} delivered, {used:,.0f} CPU s "
              f"({used / max(network.delivered, 1) * 1e6:,.0f} µs each), "
              f"peak RSS {_peak_rss_gb():.2f} GB", file=sys.stderr, flush=True)
    return progress


def _peak_rss_gb() -> float:
    """This process's peak resident memory so far (Linux: ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.simulate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds to search")
    parser.add_argument("--first", type=int, default=0, help="the first seed of the search")
    parser.add_argument("--seed", type=int, help="replay this one seed, with its trace")
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--intervals", type=int, default=Config().intervals)
    parser.add_argument("--calm", action="store_true", help="no adversaries, no faults")
    parser.add_argument("--stop", action="store_true", help="stop at the first failure")
    parser.add_argument("--scale", help="comma-separated member counts: the scale table "
                        "(needs --intervals 3 or more: the first and last are not steady)")
    parser.add_argument("--memory", action="store_true", help="with --scale: each run's peak "
                        "traced memory (slower)")
    parser.add_argument("--drain", type=int, help="with --scale: intervals run after the last "
                        "traded one (default: until every settlement closes; 0: stop with it)")
    parser.add_argument("--kinds", help="comma-separated adversary kinds a seed draws from "
                        f"(default: {','.join(KINDS)}; also: revoter)")
    args = parser.parse_args(argv)
    kinds = KINDS if args.kinds is None else tuple(args.kinds.split(","))
    unknown = sorted(set(kinds) - set(BY_KIND))
    if unknown:
        parser.error(f"--kinds: no adversary {', '.join(unknown)} (known: {', '.join(BY_KIND)})")
    signal.signal(signal.SIGTERM, _interrupt)
    if args.scale:
        scale([int(n) for n in args.scale.split(",")], args.intervals, args.first,
              memory=args.memory, drain=args.drain)
        return 0
    config = Config(members=args.members, intervals=args.intervals,
                    adversaries=not args.calm, faults=not args.calm, kinds=kinds)
    if args.seed is not None:
        return 0 if replay(args.seed, config) else 1
    return 1 if search(args.first, args.seeds, config, stop=args.stop) else 0


if __name__ == "__main__":
    sys.exit(main())
