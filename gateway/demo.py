"""``gridpeer demo``: a small community on one machine, through every real part.

The demo provisions the community the way an installer would (authority key, a key and a signed
membership certificate per home, a TOML config per gateway, read back through the same validation
as ``gridpeer run``), starts an embedded MQTT broker and simulated homes served over Modbus TCP,
and runs one gateway per home. Nothing is shortcut in-process: bids travel signed over MQTT,
readings and setpoints over Modbus sockets. Only the clock is shared, so that a simulated quarter
hour passes in a few seconds.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from gateway.broker import EmbeddedBroker
from gateway.clock import Clock
from gateway.config import load_config
from gateway.identity import create_key_file, load_certificate, load_key_file, save_envelope
from gateway.market.session import Agreed
from gateway.node import BidMade, Event, GatewayNode, IntervalClosed, running
from protocols.messages import MembershipCertificate
from protocols.signing import public_key_hex, sign
from sim_devices.home import HomeSpec
from sim_devices.world import World

COMMUNITY = "demo-street"
INTERVAL_S = 900
SPEED = 300.0  # a 15-minute interval passes in 3 s

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


@dataclass(slots=True)
class _Table:
    """Events of all gateways, grouped by interval until every gateway has closed it."""

    homes: tuple[str, ...]
    bids: dict[int, dict[str, BidMade]] = field(default_factory=lambda: defaultdict(dict))
    closed: dict[int, dict[str, IntervalClosed]] = field(default_factory=lambda: defaultdict(dict))
    printed: list[int] = field(default_factory=list)

    def add(self, event: Event) -> int | None:
        """Record an event; returns an interval once every home has closed it."""
        if isinstance(event, BidMade):
            self.bids[event.interval][event.node] = event
        elif isinstance(event, IntervalClosed) and event.interval in self.bids:
            self.closed[event.interval][event.node] = event
            if len(self.closed[event.interval]) == len(self.homes):
                return event.interval
        return None


def _hhmm(ms: int) -> str:
    minutes = ms // 60_000 % 1440
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def format_interval(table: _Table, k: int, *, interval_ms: int) -> str:
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


def provision(
    out: Path, homes: Sequence[HomeSpec], served_addresses: dict[tuple[str, str], tuple[str, int]],
    *, broker_url: str, epoch_ms: int, interval_s: float = INTERVAL_S, gate_s: float = 120,
    grace_s: float = 60, poll_s: float = 60, revert_s: int = 600, ramp_w_per_s: float = 50,
) -> list[Path]:
    """Write authority key, node keys, certificates and configs as an installer would."""
    out.mkdir(parents=True, exist_ok=True)
    authority_path = out / "authority.key"
    authority = (load_key_file(authority_path) if authority_path.exists()
                 else create_key_file(authority_path))
    now_ms = time.time_ns() // 1_000_000
    configs = []
    for spec in homes:
        folder = out / spec.name
        key_path = folder / "node.key"
        key = load_key_file(key_path) if key_path.exists() else create_key_file(key_path)
        cert = MembershipCertificate(
            community=COMMUNITY, node=spec.name, public_key=public_key_hex(key), bus="bus-1",
            import_limit_w=20_000, export_limit_w=20_000,
            valid_from_ms=0, valid_until_ms=now_ms + 86_400_000 * 365,
        )
        save_envelope(folder / "node.cert", sign("cert", cert, authority))
        devices = "\n".join(
            f'[[devices]]\nname = "{role}"\nkind = "{role}"\n'
            f'url = "tcp://{host}:{port}"\npoll_s = {poll_s}\n'
            for role in ("meter", "battery", "pv")
            for host, port in [served_addresses[spec.name, role]]
        )
        config = folder / "gridpeer.toml"
        config.write_text(
            f'node = "{spec.name}"\nkey_file = "node.key"\ncertificate_file = "node.cert"\n'
            f'state_dir = "state"\n\n'
            f'[market]\ncommunity = "{COMMUNITY}"\nbroker = "{broker_url}"\n'
            f'authority_key = "{public_key_hex(authority)}"\n'
            f"interval_s = {interval_s}\ngate_s = {gate_s}\ngrace_s = {grace_s}\n"
            f"epoch_ms = {epoch_ms}\n\n"
            f"[envelope]\nrevert_s = {revert_s}\nramp_w_per_s = {ramp_w_per_s}\n\n{devices}"
        )
        configs.append(config)
    return configs


async def run_demo(*, out: Path, intervals: int, seed: int, stream: TextIO = sys.stdout,
                   homes: Sequence[HomeSpec] = DEMO_HOMES, start_s: float = 10 * 3600,
                   observe: Callable[[Event, World], None] | None = None) -> int:
    """Run the demo community for ``intervals`` traded intervals; returns the exit status.

    ``observe`` sees every gateway event together with the simulated world (its ground truth),
    which is how the end-to-end test checks that setpoints really reached the devices.
    """
    out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out / "demo.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    for noisy in ("amqtt", "transitions", "pymodbus"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    world = World(homes=homes, seed=seed, speed=SPEED, start_s=start_s)
    table = _Table(homes=tuple(h.name for h in homes))
    finished = []
    try:
        async with EmbeddedBroker() as broker, world.serve() as served:
            clock = Clock(origin_ms=world.now_ms, speed=SPEED)
            addresses = {(h.name, role): served.address(h.name, role)
                         for h in homes for role in ("meter", "battery", "pv")}
            configs = provision(out, homes, addresses, broker_url=broker.url, epoch_ms=0)
            print(f"gridpeer demo: {len(homes)} homes, broker {broker.url}, "
                  f"{INTERVAL_S // 60}-minute intervals at {SPEED:g}x, output in {out}/",
                  file=stream, flush=True)
            done = _DoneWhen(count=intervals)

            def on_event(event: Event) -> None:
                if observe is not None:
                    observe(event, world)
                k = table.add(event)
                if k is not None:
                    print(format_interval(table, k, interval_ms=INTERVAL_S * 1000), file=stream,
                          flush=True)
                    finished.append(k)
                    done.tick()

            async with contextlib.AsyncExitStack() as stack:
                for path in configs:
                    config = load_config(path)
                    envelope, _ = load_certificate(config.certificate_file)
                    node = GatewayNode(config=config, key=load_key_file(config.key_file),
                                       certificate=envelope, clock=clock, on_event=on_event)
                    await stack.enter_async_context(running(node))
                await done.wait()
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    print(f"done: {len(finished)} intervals; ledgers in {out}/<home>/state/ledger.db "
          f"(check one with `gridpeer ledger verify {out}/home-1/state/ledger.db`)", file=stream)
    return 0


class _DoneWhen:
    def __init__(self, *, count: int) -> None:
        import asyncio

        self._left = count
        self._event = asyncio.Event()

    def tick(self) -> None:
        self._left -= 1
        if self._left <= 0:
            self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
