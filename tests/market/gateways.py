"""Three real gateways (simulated homes over Modbus TCP, the embedded broker, signed messages,
ledgers) that a test can stop and start one by one, on a mechanism and owner preferences of its
choice; the homes are those of :mod:`tests.street`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

from gateway.clock import Clock
from gateway.config import load_config
from gateway.home import GatewayNode, HomeEvent, IntervalClosed, running
from gateway.identity import load_certificate, load_key_file
from sim_devices.demo.broker import EmbeddedBroker
from sim_devices.demo.community import Rules, RunTiming, provision
from sim_devices.world import World
from tests.street import HOMES, NAMES, ROLES, TIMING


class Gateways:
    """The gateways of one world and broker, started and stopped by name."""

    def __init__(self, out: Path, world: World, configs: list[Path], broker_url: str,
                 timing: RunTiming) -> None:
        self.out, self.world, self.broker_url = out, world, broker_url
        self.configs = {path.parent.name: path for path in configs}
        self.interval_ms = int(timing.interval_s * 1000)
        self.clock = Clock(origin_ms=world.now_ms, speed=timing.speed)
        self.nodes: dict[str, GatewayNode] = {}
        self.closed: dict[str, dict[int, IntervalClosed]] = {n: {} for n in NAMES}
        self._running: dict[str, contextlib.AbstractAsyncContextManager[object]] = {}

    def record(self, event: HomeEvent) -> None:
        if isinstance(event, IntervalClosed):
            self.closed[event.node][event.interval] = event

    async def start(self, name: str) -> None:
        config = load_config(self.configs[name])
        envelope, _ = load_certificate(config.certificate_file)
        node = GatewayNode(config=config, key=load_key_file(config.key_file),
                           certificate=envelope, clock=self.clock, on_event=self.record)
        self._running[name] = running(node)
        await self._running[name].__aenter__()
        self.nodes[name] = node

    async def stop(self, name: str) -> None:
        await self._running.pop(name).__aexit__(None, None, None)

    def now_k(self) -> int:
        return self.world.now_ms // self.interval_ms

    async def until(self, condition: Callable[[], bool], *, timeout_s: float = 60.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not condition():
                await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def gateways(
    out: Path, *, rules: Rules | None = None, timing: RunTiming = TIMING,
    preferences: Mapping[str, int] | None = None,
    before_start: Callable[[Path], None] = lambda _out: None,
) -> AsyncIterator[Gateways]:
    """Serve the homes and run a gateway for each; ``preferences`` (``min_sell_price``,
    ``max_buy_price``) go into every home's config; ``before_start`` may amend what was
    provisioned (a certificate re-issued) before any gateway reads it."""
    world = World(homes=HOMES, seed=5, speed=timing.speed, start_s=11 * 3600)
    async with EmbeddedBroker() as broker, world.serve() as served:
        addresses = {(h, r): served.address(h, r) for h in NAMES for r in ROLES}
        configs = provision(out, HOMES, addresses, broker_url=broker.url, timing=timing,
                            rules=rules or Rules())
        if preferences:
            table = "".join(f"{name} = {value}\n" for name, value in preferences.items())
            for path in configs:
                path.write_text(f"{path.read_text()}\n[preferences]\n{table}")
        before_start(out)
        running_ = Gateways(out, world, configs, broker.url, timing)
        try:
            for name in NAMES:
                await running_.start(name)
            yield running_
        finally:
            for name in list(running_._running):
                await running_.stop(name)
