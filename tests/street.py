"""The suite's one street of real gateways, with handles on every part a test needs.

By default three homes (one seller with sun and a full battery, two buyers); any homes, seed and
timing can be given. Each home has a real :class:`GatewayNode` polling simulated devices over
Modbus (TCP, or RTU on a pty for homes named in ``rtu``), provisioned as ``gridpeer demo`` does
it, trading signed bids over the embedded MQTT broker. Unlike ``run_community`` (the demo's, which
runs a whole day) the street lets a test stop and restart the broker on its port, route a gateway
through a :class:`~tests.faults.proxy.TcpProxy` it can sever, give each gateway its own clock and
watch every event, and stop and start any gateway by name (:meth:`Street.stop`,
:meth:`Street.start`) on the same clock, config and ledger. The fault campaign (tests/faults), the
dashboard, settlement, reputation and mechanism tests use it; the market tests' agents-only
community is ``tests/market/community.py``.

Time (the default ``TIMING``): the world and the gateways run ``SPEED`` times faster than real
time on simulated clocks, with the field's proportions (60 s intervals, gate 20 s, grace 5 s), so
a fault lasting a few simulated seconds is a fraction of a real second and a test spans a
handful of intervals.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gateway.clock import Clock
from gateway.config import load_config
from gateway.devices import DeviceError
from gateway.home import BidMade, GatewayNode, HomeEvent, IntervalClosed, running
from gateway.identity import load_certificate, load_key_file
from gateway.ledger import Ledger
from protocols.market import Abstained, Agreed
from sim_devices.demo.broker import EmbeddedBroker
from sim_devices.demo.community import Rules, RunTiming, provision
from sim_devices.faults import FaultSpec
from sim_devices.home import HomeSpec
from sim_devices.world import World
from tests.faults.proxy import TcpProxy

HOMES = (
    HomeSpec(name="home-1", pv_peak_w=6000, base_load_w=300, soc_start_pct=90),
    HomeSpec(name="home-2", pv_peak_w=0, base_load_w=3000, soc_start_pct=15),
    HomeSpec(name="home-3", pv_peak_w=0, base_load_w=2500, soc_start_pct=15),
)
NAMES = tuple(h.name for h in HOMES)
SPEED = 10.0
TIMING = RunTiming(interval_s=60, gate_s=20, grace_s=5, poll_s=5, revert_s=30,
                   ramp_w_per_s=100_000, speed=SPEED)
INTERVAL_MS = int(TIMING.interval_s * 1000)
ROLES = ("meter", "battery", "pv")
RTU_TIMEOUT_S = 0.25
"""A pty answers at once; a short timeout keeps a dropped reply from costing a poll."""
START_ATTEMPTS = 5
RULES = Rules()


@dataclass
class Street:
    """A running street: world, broker, gateways and what each gateway reported."""

    world: World
    out: Path
    timing: RunTiming = TIMING
    on_event: Callable[[HomeEvent], None] | None = None
    """Called with every event of every gateway, after the street recorded it."""
    broker_port: int = 0
    proxies: dict[str, TcpProxy] = field(default_factory=dict)
    nodes: dict[str, GatewayNode] = field(default_factory=dict)
    closed: dict[str, dict[int, IntervalClosed]] = field(
        default_factory=lambda: defaultdict(dict))
    bids: dict[str, dict[int, BidMade]] = field(default_factory=lambda: defaultdict(dict))
    """Each node's last bid per interval; ``offers`` has every one, replacements included."""
    offers: dict[str, dict[int, list[BidMade]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    restarts: Counter[str] = field(default_factory=Counter)
    """Start-ups that failed on a device error and were retried, as the service unit does."""
    configs: dict[str, Path] = field(default_factory=dict)
    clocks: dict[str, Clock] = field(default_factory=dict)
    bid_lead_fraction: float = 0.25
    _broker: EmbeddedBroker | None = None
    _running: dict[str, contextlib.AsyncExitStack] = field(default_factory=dict)

    def record(self, event: HomeEvent) -> None:
        if isinstance(event, IntervalClosed) and event.in_market:
            assert event.interval not in self.closed[event.node], (
                f"{event.node} closed interval {event.interval} twice")
            self.closed[event.node][event.interval] = event
        elif isinstance(event, BidMade):
            self.bids[event.node][event.interval] = event
            self.offers[event.node][event.interval].append(event)
        if self.on_event is not None:
            self.on_event(event)

    async def start_broker(self, *, port: int) -> None:
        """Start the embedded broker (on ``port``, or any free one for 0)."""
        broker = EmbeddedBroker(port=port)
        await broker.__aenter__()
        self._broker = broker
        self.broker_port = broker.port

    async def stop_broker(self) -> None:
        """Stop the broker as a crash would: every client's connection is cut, nothing kept."""
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.__aexit__(None, None, None)

    @property
    def broker_url(self) -> str:
        return f"mqtt://127.0.0.1:{self.broker_port}"

    async def start(self, name: str) -> None:
        """Start ``name``'s gateway from its config, on its clock; a start-up that fails on a
        device error is retried, as the service unit does."""
        config = load_config(self.configs[name])
        envelope, _ = load_certificate(config.certificate_file)
        for attempt in range(START_ATTEMPTS):
            node = GatewayNode(config=config, key=load_key_file(config.key_file),
                               certificate=envelope, clock=self.clocks[name],
                               on_event=self.record, bid_lead_fraction=self.bid_lead_fraction)
            stack = contextlib.AsyncExitStack()
            try:
                await stack.enter_async_context(running(node))
                break
            except DeviceError:
                # `gridpeer run` exits with this error and its service restarts it
                if attempt == START_ATTEMPTS - 1:
                    raise
                self.restarts[name] += 1
        self._running[name] = stack
        self.nodes[name] = node

    async def stop(self, name: str) -> None:
        """Stop ``name``'s gateway as ``gridpeer run`` stops on a signal (its ledger stays)."""
        await self._running.pop(name).aclose()

    async def stop_all(self) -> None:
        """Stop the running gateways, the last started first."""
        for name in reversed(list(self._running)):
            await self.stop(name)

    def ledger(self, node: str) -> Path:
        return self.out / node / "state" / "ledger.db"

    def now_k(self) -> int:
        """The interval the world is in (simulated clock)."""
        return self.world.now_ms // int(self.timing.interval_s * 1000)

    def outcomes(self, k: int) -> dict[str, Agreed | Abstained | None]:
        return {n: self.closed[n][k].outcome for n in self.closed if k in self.closed[n]}

    async def until(self, condition: Callable[[], bool], *, timeout_s: float = 60.0,
                    poll_s: float = 0.02) -> None:
        """Wait (real seconds, generous) until ``condition()`` holds."""
        async with asyncio.timeout(timeout_s):
            while not condition():
                await asyncio.sleep(poll_s)

    async def until_closed(self, k: int, nodes: tuple[str, ...] | None = None,
                           *, timeout_s: float = 60.0) -> None:
        """Wait until every node in ``nodes`` (default: all) closed interval ``k``."""
        await self.until(lambda: all(k in self.closed[n] for n in (nodes or tuple(self.nodes))),
                         timeout_s=timeout_s)

    async def until_sim_s(self, t_s: float, *, timeout_s: float = 60.0) -> None:
        await self.until(lambda: self.world.now_s >= t_s, timeout_s=timeout_s, poll_s=0.005)


def agreed_hash(outcome: Agreed | Abstained | None) -> str | None:
    return outcome.result_hash if isinstance(outcome, Agreed) else None


def check_consistent(street: Street, intervals: range | list[int]) -> dict[int, set[str]]:
    """Every gateway that agreed an interval agreed the same result; returns who agreed what.

    A gateway that closed an interval without agreeing abstained (safe mode): that is the
    protocol's consistent alternative, never a different result.
    """
    agreed: dict[int, set[str]] = {}
    for k in intervals:
        hashes = {n: agreed_hash(o) for n, o in street.outcomes(k).items()}
        distinct = {h for h in hashes.values() if h is not None}
        assert len(distinct) <= 1, f"interval {k}: different agreed results {hashes}"
        agreed[k] = {n for n, h in hashes.items() if h is not None}
    return agreed


def check_ledgers(street: Street) -> dict[str, dict[int, str]]:
    """Every ledger verifies, holds each interval once, and its agreed blocks match the events.

    Returns each node's ledger as interval -> status.
    """
    ledgers = {}
    for node in street.nodes:
        with Ledger.open(street.ledger(node)) as ledger:
            assert ledger.verify() == [], f"{node}: ledger does not verify"
            blocks = [b for b, _ in ledger.blocks()]
        intervals = [b.interval for b in blocks]
        assert len(intervals) == len(set(intervals)), f"{node}: an interval settled twice"
        ledgers[node] = {b.interval: b.status for b in blocks}
        for k, event in street.closed[node].items():
            status = "agreed" if isinstance(event.outcome, Agreed) else "abstained"
            assert ledgers[node].get(k) == status, f"{node}: interval {k} not in its ledger"
    return ledgers


@contextlib.asynccontextmanager
async def street(
    out: Path,
    *,
    homes: Sequence[HomeSpec] = HOMES,
    seed: int = 5,
    timing: RunTiming = TIMING,
    on_event: Callable[[HomeEvent], None] | None = None,
    faults: Mapping[tuple[str, str], FaultSpec] | None = None,
    rtu: tuple[str, ...] = (),
    skew_ms: Mapping[str, int] | None = None,
    proxied: tuple[str, ...] = (),
    start_s: float = 11 * 3600,
    bid_lead_fraction: float = 0.25,
    rules: Rules = RULES,
    before_start: Callable[[Path], None] = lambda _out: None,
) -> AsyncIterator[Street]:
    """Serve the homes, start the broker and one gateway per home (devices of the ``rtu`` homes
    over RTU on ptys, the ``proxied`` gateways' MQTT through a proxy each, each gateway's clock
    ``skew_ms`` ahead of the world's), all on the community's ``rules``; ``before_start`` may
    amend what was provisioned in ``out`` (a certificate re-issued) before any gateway reads it."""
    speed = timing.speed
    names = tuple(h.name for h in homes)
    world = World(homes=homes, seed=seed, speed=speed, start_s=start_s, faults=faults)
    async with contextlib.AsyncExitStack() as stack:
        state = Street(world=world, out=out, timing=timing, on_event=on_event,
                       bid_lead_fraction=bid_lead_fraction)
        await state.start_broker(port=0)
        stack.push_async_callback(state.stop_broker)
        port = state.broker_port
        served = await stack.enter_async_context(world.serve(rtu=bool(rtu)))
        addresses = {(h, r): served.address(h, r) for h in names for r in ROLES}
        configs = provision(out, homes, addresses, broker_url=state.broker_url, timing=timing,
                            rules=rules)
        base = Clock(origin_ms=world.now_ms, speed=speed)
        for path in configs:
            name = path.parent.name
            text = path.read_text()
            if name in rtu:
                for role in ROLES:
                    host, p = addresses[name, role]
                    text = text.replace(f'url = "tcp://{host}:{p}"',
                                        f'url = "rtu://{served.rtu_path(name, role)}'
                                        f'?baud=115200"\ntimeout_s = {RTU_TIMEOUT_S}')
            if name in proxied:
                proxy = await stack.enter_async_context(TcpProxy(target=("127.0.0.1", port)))
                state.proxies[name] = proxy
                text = text.replace(f'broker = "mqtt://127.0.0.1:{port}"',
                                    f'broker = "mqtt://127.0.0.1:{proxy.port}"')
            path.write_text(text)
            state.configs[name] = path
            # one time base for all, so the only difference between the clocks is the skew
            state.clocks[name] = Clock(origin_ms=base.origin_ms + (skew_ms or {}).get(name, 0),
                                       speed=speed, _t0=base._t0)
        before_start(out)
        stack.push_async_callback(state.stop_all)
        for name in names:
            await state.start(name)
        yield state
