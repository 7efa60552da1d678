"""``gridpeer demo``: a small community on one machine, through every real part.

Presentation only: :func:`gateway.community.run_community` provisions the homes, serves their
devices over Modbus TCP, runs the broker and one real gateway per home; this module prints what
happens per interval and the summary at the end.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from gateway.community import CommunityLog, Timing, run_community
from gateway.market.session import Agreed
from gateway.node import Event
from gateway.summary import format_summary, summarise
from protocols.clearing import Tariffs
from sim_devices.home import HomeSpec
from sim_devices.world import World

TIMING = Timing(speed=300.0)  # a 15-minute interval passes in 3 s
TARIFFS = Tariffs(retail_price=300, feed_in_price=80)  # the config defaults

DEMO_HOMES = (
    # a sunny roof with a small battery that fills early: the seller
    HomeSpec(name="home-1", pv_peak_w=7000, base_load_w=400, battery_wh=5000, battery_max_w=2500,
             soc_start_pct=80),
    # a shaded house with a heavy load and its battery down at the reserve: the buyer
    HomeSpec(name="home-2", pv_peak_w=500, base_load_w=3000, battery_wh=10_000,
             battery_max_w=3000, soc_start_pct=20),
    # in between: covers itself with its battery
    HomeSpec(name="home-3", pv_peak_w=3000, base_load_w=900, battery_wh=8000, battery_max_w=3000,
             soc_start_pct=50),
)


def _hhmm(ms: int) -> str:
    minutes = ms // 60_000 % 1440
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def format_interval(table: CommunityLog, k: int, *, interval_ms: int) -> str:
    """The demo's per-interval report: bids, price, trades, setpoints and SoC."""
    lines = [f"interval {k}  ({_hhmm(k * interval_ms)}-{_hhmm((k + 1) * interval_ms)})"]
    for home in table.homes:
        made = table.bids[k].get(home)
        plan = made.plan if made else None
        if plan is None:
            lines.append(f"  bid    {home}: none (devices not ready)")
        elif plan.side is None:
            lines.append(f"  bid    {home}: nothing to trade (pv {plan.pv_wh} Wh, "
                         f"load {plan.load_wh} Wh, battery {plan.battery_wh:+} Wh)")
        else:
            lines.append(
                f"  bid    {home}: {plan.side:4} {plan.energy_wh:5d} Wh  "
                f"limit {plan.limit_price} µ/Wh   (pv {plan.pv_wh} Wh, load {plan.load_wh} Wh, "
                f"battery {plan.battery_wh:+} Wh)"
            )
    closed = table.closed[k]
    agreed = [c.outcome for c in closed.values() if isinstance(c.outcome, Agreed)]
    hashes = {a.result_hash for a in agreed}
    if agreed:
        result = agreed[0].result
        price = "none" if result.price is None else f"{result.price} µ/Wh"
        mismatch = "" if len(hashes) == 1 else " (MISMATCH)"
        lines.append(f"  clear  price {price}; agreed by {len(agreed)}/{len(closed)} gateways, "
                     f"result {sorted(hashes)[0][:12]}{mismatch}")
        for t in result.trades:
            lines.append(f"  trade  {t.seller} -> {t.buyer}: {t.energy_wh} Wh at {t.price} µ/Wh "
                         f"= {t.money / 1e6:.4f}")
        if not result.trades:
            lines.append("  trade  none (no buyer and seller overlap)")
    else:
        reasons = sorted({getattr(c.outcome, "reason", "no outcome") for c in closed.values()})
        lines.append(f"  clear  abstained: {', '.join(reasons)}")
    for home in table.homes:
        c = closed[home]
        lines.append(f"  device {home}: battery setpoint {c.setpoint_w:+6d} W, "
                     f"SoC {c.soc_pct:5.1f} %, meter {c.metered_wh:+.0f} Wh")
    return "\n".join(lines)


async def run_demo(*, out: Path, intervals: int, seed: int, stream: TextIO = sys.stdout,
                   homes: Sequence[HomeSpec] = DEMO_HOMES, start_s: float = 10 * 3600,
                   broker_url: str | None = None,
                   observe: Callable[[Event, World], None] | None = None) -> int:
    """Run the demo community for ``intervals`` traded intervals; returns the exit status.

    ``observe`` sees every gateway event together with the simulated world (its ground truth),
    which is how the end-to-end test checks that setpoints really reached the devices.
    """
    interval_ms = int(TIMING.interval_s * 1000)

    def on_event(event: Event, world: World, log: CommunityLog) -> None:
        if observe is not None:
            observe(event, world)
        if log.complete and log.complete[-1] not in printed and len(printed) < intervals:
            k = log.complete[-1]
            printed.add(k)
            print(format_interval(log, k, interval_ms=interval_ms), file=stream, flush=True)

    def on_start(url: str) -> None:
        print(f"gridpeer demo: {len(homes)} homes, broker {url}, "
              f"{TIMING.interval_s / 60:g}-minute intervals at {TIMING.speed:g}x, "
              f"output in {out}/", file=stream, flush=True)

    printed: set[int] = set()
    log, _ = await run_community(
        out=out, homes=homes, intervals=intervals, seed=seed, start_s=start_s, timing=TIMING,
        broker_url=broker_url, on_event=on_event, on_start=on_start,
    )
    print("\n" + format_summary(summarise(log, tariffs=TARIFFS)), file=stream)
    print(f"\nledgers in {out}/<home>/state/ledger.db "
          f"(check one with `gridpeer ledger verify {out}/home-1/state/ledger.db`)", file=stream)
    return 0
