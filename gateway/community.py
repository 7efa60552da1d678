"""Run a simulated community: one real gateway per simulated home, over real sockets and a broker.

This is what ``gridpeer demo``, the simulated-day tests and the no-market baseline share. The
community is provisioned the way an installer would do it (authority key, a key and a signed
certificate per home, a TOML config per gateway read back through the same validation as
``gridpeer run``); devices are served over Modbus TCP; bids and commitments travel signed over
MQTT, on the embedded broker or an external one (``broker_url``). Only the clock is shared, so a
simulated quarter hour can pass in a fraction of a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gateway.broker import EmbeddedBroker
from gateway.clock import Clock
from gateway.config import load_config
from gateway.identity import create_key_file, load_certificate, load_key_file, save_envelope
from gateway.node import BidMade, Event, GatewayNode, IntervalClosed, running
from protocols.messages import MembershipCertificate
from protocols.signing import public_key_hex, sign
from sim_devices.home import HomeSpec
from sim_devices.world import World

COMMUNITY = "demo-street"
ROLES = ("meter", "battery", "pv")


@dataclass(frozen=True, slots=True)
class Timing:
    """Market timing in simulated seconds, and how much faster than real time the world runs."""

    interval_s: float = 900
    gate_s: float = 120
    grace_s: float = 60
    poll_s: float = 60
    revert_s: int = 600
    ramp_w_per_s: float = 50
    speed: float = 300.0
    physics_step_ms: int = 1000
    """The world's physics step; coarser steps let a fast run keep up with its clock."""


@dataclass(slots=True)
class CommunityLog:
    """Every gateway's events, grouped by interval; an interval is complete once every home closed
    it as a market interval (the one in progress at start-up was not traded and is left out). An
    interval without an outcome at some gateway (it never heard a quorum) still completes: the
    run must not wait for an outcome that will not come."""

    homes: tuple[str, ...]
    bids: dict[int, dict[str, BidMade]] = field(default_factory=lambda: defaultdict(dict))
    closed: dict[int, dict[str, IntervalClosed]] = field(default_factory=lambda: defaultdict(dict))
    complete: list[int] = field(default_factory=list)

    def add(self, event: Event) -> int | None:
        """Record an event; returns the interval it completed, if any."""
        if isinstance(event, BidMade):
            self.bids[event.interval][event.node] = event
        elif isinstance(event, IntervalClosed) and event.in_market:
            self.closed[event.interval][event.node] = event
            if len(self.closed[event.interval]) == len(self.homes):
                self.complete.append(event.interval)
                return event.interval
        return None


def provision(
    out: Path, homes: Sequence[HomeSpec], served_addresses: dict[tuple[str, str], tuple[str, int]],
    *, broker_url: str, timing: Timing, epoch_ms: int = 0,
) -> list[Path]:
    """Write authority key, node keys, certificates and configs as an installer would.

    Keys already in ``out`` are reused, so running the demo twice keeps the same identities.
    """
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
            f'url = "tcp://{host}:{port}"\npoll_s = {timing.poll_s}\n'
            for role in ROLES
            for host, port in [served_addresses[spec.name, role]]
        )
        config = folder / "gridpeer.toml"
        config.write_text(
            f'node = "{spec.name}"\nkey_file = "node.key"\ncertificate_file = "node.cert"\n'
            f'state_dir = "state"\n\n'
            f'[market]\ncommunity = "{COMMUNITY}"\nbroker = "{broker_url}"\n'
            f'authority_key = "{public_key_hex(authority)}"\n'
            f"interval_s = {timing.interval_s}\ngate_s = {timing.gate_s}\n"
            f"grace_s = {timing.grace_s}\nepoch_ms = {epoch_ms}\n\n"
            f"[envelope]\nrevert_s = {timing.revert_s}\nramp_w_per_s = {timing.ramp_w_per_s}\n\n"
            f"{devices}"
        )
        configs.append(config)
    return configs


@contextlib.asynccontextmanager
async def _broker(url: str | None) -> AsyncIterator[str]:
    if url is not None:
        yield url
        return
    async with EmbeddedBroker() as broker:
        yield broker.url


@contextlib.asynccontextmanager
async def _log_to(path: Path) -> AsyncIterator[None]:
    """Gateway logs go to a file: the terminal is for the person watching the community."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for noisy in ("amqtt", "transitions", "pymodbus"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


async def run_community(
    *,
    out: Path,
    homes: Sequence[HomeSpec],
    intervals: int,
    seed: int,
    start_s: float,
    timing: Timing = Timing(),
    trade: bool = True,
    broker_url: str | None = None,
    on_event: Callable[[Event, World, CommunityLog], None] | None = None,
    on_start: Callable[[str], None] | None = None,
) -> tuple[CommunityLog, World]:
    """Run until ``intervals`` traded intervals are closed by every home.

    ``trade=False`` runs the same homes in self-consumption only (the no-market baseline).
    ``on_event`` sees every gateway event with the world (ground truth) and the log so far.
    """
    out.mkdir(parents=True, exist_ok=True)
    world = World(homes=homes, seed=seed, speed=timing.speed, start_s=start_s,
                  dt_ms=timing.physics_step_ms)
    log = CommunityLog(homes=tuple(h.name for h in homes))
    finished = asyncio.Event()

    def collect(event: Event) -> None:
        k = log.add(event)
        if on_event is not None:
            on_event(event, world, log)
        if k is not None and len(log.complete) >= intervals:
            finished.set()

    async with _log_to(out / "gateways.log"), _broker(broker_url) as url, world.serve() as served:
        clock = Clock(origin_ms=world.now_ms, speed=timing.speed)
        addresses = {(h.name, role): served.address(h.name, role) for h in homes for role in ROLES}
        configs = provision(out, homes, addresses, broker_url=url, timing=timing)
        if on_start is not None:
            on_start(url)
        async with contextlib.AsyncExitStack() as stack:
            tasks = []
            for path in configs:
                config = load_config(path)
                envelope, _ = load_certificate(config.certificate_file)
                node = GatewayNode(config=config, key=load_key_file(config.key_file),
                                   certificate=envelope, clock=clock, on_event=collect,
                                   trade=trade)
                tasks.append(await stack.enter_async_context(running(node)))
            done_waiter = asyncio.create_task(finished.wait(), name="community-finished")
            try:
                done, _ = await asyncio.wait({done_waiter, *tasks},
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                done_waiter.cancel()
            for task in done:
                if task is not done_waiter:
                    # a gateway stopped by itself: surface its error instead of waiting forever
                    task.result()
                    raise RuntimeError(f"{task.get_name()} stopped before the run finished")
    return log, world
