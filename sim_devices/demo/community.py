"""Run a simulated community: one real gateway per simulated home, over real sockets and a broker.

This is what ``gridpeer demo``, the simulated-day tests and the no-market baseline share. A
scenario (``sim_devices/scenario.py``) says who lives on the street and how their market runs; the
community is provisioned the way an installer would do it (authority key, a key and a signed
certificate per home carrying its feeder bus, a TOML config per gateway with the scenario's
tariffs and market rules, read back through the same validation as ``gridpeer run``); devices are
served over Modbus TCP; bids and commitments travel signed over MQTT, on the embedded broker or an
external one (``broker_url``). Only the clock is shared, so a simulated quarter hour can pass in a
fraction of a second.

A run covers a fixed *window* of intervals, the first starting at least ``warmup_s`` after the
world does: gateways need a moment of real time to discover their devices and join the broker,
and at a high ``speed`` that moment is many simulated minutes. A fixed window lets two runs of the
same scenario (the market and its no-market baseline) be compared interval by interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import shutil
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from gateway.clock import Clock
from gateway.config import load_config
from gateway.home import BidMade, GatewayNode, HomeEvent, IntervalClosed, IntervalEnded, running
from gateway.identity import create_key_file, load_certificate, load_key_file, save_envelope
from gateway.installer.flash import save_key
from gateway.plan.planner import MAX_TIME_LIMIT_S
from protocols.messages import MembershipCertificate
from protocols.signing import public_key_hex, sign
from sim_devices.dcbus import DcBusSpec
from sim_devices.demo.broker import EmbeddedBroker
from sim_devices.demo.history import HISTORY_DAYS, learned_forecast
from sim_devices.home import HomeSpec
from sim_devices.physics import MJ_PER_WH
from sim_devices.scenario import FeederModel, Scenario
from sim_devices.world import LOADS, World

DEVICE_ROLES = ("meter", "battery", "pv", "dcdc", *LOADS)
"""Every device a gateway can be given, by its name in the world (the controllable loads "ev" and
"flex" are of kind "load"); a home gets those the world serves for it."""
DEFAULT_BUS = "bus-1"
"""The feeder bus of a home whose scenario has no feeder: one bus for the whole street."""
_MIN_WARMUP_S = 1800.0
_STALL_INTERVALS = 10
"""A run in which no interval completes for this many intervals' real time (and 30 s) has
fallen behind its clock for good: it stops with an error instead of hanging."""


@dataclass(frozen=True, slots=True)
class RunTiming:
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
    warmup_s: float = _MIN_WARMUP_S
    """Simulated seconds between the world's start and the run's first interval (at least)."""

    @classmethod
    def of(cls, scenario: Scenario, *, speed: float, physics_step_ms: int, poll_s: float = 60,
           warmup_real_s: float = 3.0) -> RunTiming:
        """The scenario's market timing, run at ``speed`` with ``warmup_real_s`` to start up."""
        market = scenario.market
        return cls(interval_s=market.interval_s, gate_s=market.gate_s, grace_s=market.grace_s,
                   poll_s=poll_s, speed=speed, physics_step_ms=physics_step_ms,
                   warmup_s=max(_MIN_WARMUP_S, warmup_real_s * speed))


@dataclass(frozen=True, slots=True)
class Rules:
    """What every member of a community must configure alike, besides the market timing."""

    community: str = "demo-street"
    mechanism: str = "uniform"
    retail_price: int = 300
    feed_in_price: int = 80
    feeder: FeederModel | None = None
    """The radial feeder the market clears on, with the network fee below; None: one free bus."""
    fee_base: int = 0
    fee_per_km: int = 0
    schedule: str | None = None
    """The tariff file every home plans with (``[tariffs] schedule``), None: the fixed ones."""
    export_limits: tuple[tuple[str, int], ...] = ()
    """The grid operator's export limit of each home that has one (``[grid]``), W."""
    planner: Literal["optimiser", "heuristic"] = "heuristic"
    """How every home plans (``[plan] planner``): a comparison runs the day with each."""
    preferences: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = ()
    """Each home's owner preferences the scenario sets (``[preferences]``)."""

    @classmethod
    def of(cls, scenario: Scenario) -> Rules:
        market = scenario.market
        return cls(community=market.community, mechanism=market.mechanism,
                   retail_price=scenario.tariffs.retail_price,
                   feed_in_price=scenario.tariffs.feed_in_price, feeder=scenario.feeder,
                   fee_base=market.fee_base, fee_per_km=market.fee_per_km,
                   schedule=scenario.tariffs.schedule,
                   export_limits=tuple(sorted(scenario.export_limits().items())),
                   preferences=tuple(sorted((home, tuple(sorted(wishes.items())))
                                            for home, wishes in scenario.preferences().items())))

    def home_toml(self, home: str) -> str:
        """How ``home`` plans, the limits at its meter and its owner's wishes: ``[plan]``,
        ``[grid]``, ``[preferences]``."""
        limits = dict(self.export_limits)
        grid = "" if home not in limits else f"\n[grid]\nexport_limit_w = {limits[home]}\n"
        wishes = dict(self.preferences).get(home, ())
        owner = "".join(f"{name} = {value}\n" for name, value in wishes)
        owner = f"\n[preferences]\n{owner}" if owner else ""
        # The solver's limit is wall-clock time: at its default a starved host could send a home
        # to the heuristic in one run and not the next, and on virtual time the clock stands still
        # while it solves, so simulated homes get the most the config allows.
        solver = f"time_limit_s = {MAX_TIME_LIMIT_S}\n" if self.planner == "optimiser" else ""
        return f'\n[plan]\nplanner = "{self.planner}"\n{solver}{grid}{owner}'

    def network_toml(self) -> str:
        """The ``[market.network]`` table of a gateway config ("" without a feeder)."""
        if self.feeder is None:
            return ""
        lines = "".join(
            f'\n[[market.network.lines]]\nbus = "{ln.bus}"\nparent = "{ln.parent}"\n'
            f"length_m = {ln.length_m}\ncapacity_w = {ln.capacity_w}\n"
            for ln in self.feeder.lines)
        return (f'\n[market.network]\nroot = "{self.feeder.root}"\nfee_base = {self.fee_base}\n'
                f"fee_per_km = {self.fee_per_km}\n{lines}")


@dataclass(slots=True)
class CommunityLog:
    """Every gateway's events over the run's window of intervals, grouped by interval.

    An interval is complete once every home closed it. An interval without an outcome at some
    gateway (it never heard a quorum) still completes: the run must not wait for an outcome that
    will not come. ``consumed_wh`` is ground truth from the world: each home's load (base plus
    flexible) over the complete intervals, read when its gateway ended them (took the closing
    meter reading), so it spans the same meter readings as the settlement; ``stored_wh``, read
    alike, is how much the energy in each home's battery cells changed over them (two runs of a
    day end with different amounts in the cells, which their bills alone do not show).
    """

    homes: tuple[str, ...]
    window: range
    bids: dict[int, dict[str, BidMade]] = field(default_factory=lambda: defaultdict(dict))
    closed: dict[int, dict[str, IntervalClosed]] = field(default_factory=lambda: defaultdict(dict))
    complete: list[int] = field(default_factory=list)
    consumed_wh: dict[str, float] = field(default_factory=dict)
    stored_wh: dict[str, float] = field(default_factory=dict)
    _mark_wh: dict[str, tuple[float, float]] = field(default_factory=dict)  # load, cells
    _ended_wh: dict[tuple[str, int], tuple[float, float]] = field(
        default_factory=dict)  # ended, not closed

    def add(self, event: HomeEvent, world: World) -> int | None:
        """Record an event; returns the interval it completed, if any."""
        if isinstance(event, BidMade) and event.interval in self.window:
            self.bids[event.interval][event.node] = event
        elif isinstance(event, IntervalEnded):
            home = world.home(event.node)
            now = home.state.load_mj / MJ_PER_WH, home.battery.stored_wh
            mark = self._mark_wh.get(event.node)
            self._mark_wh[event.node] = now
            if mark is not None and event.interval in self.window:
                self._ended_wh[event.node, event.interval] = (now[0] - mark[0], now[1] - mark[1])
        elif isinstance(event, IntervalClosed):
            if event.interval not in self.window:
                return None
            if not event.in_market:
                raise CommunityError(
                    f"{event.node}'s gateway was not trading yet in interval {event.interval} of "
                    "the run: its start-up took longer than the warm-up (a slow host: try a "
                    "lower --speed)")
            load_wh, stored_wh = self._ended_wh.pop((event.node, event.interval), (0.0, 0.0))
            self.consumed_wh[event.node] = self.consumed_wh.get(event.node, 0.0) + load_wh
            self.stored_wh[event.node] = self.stored_wh.get(event.node, 0.0) + stored_wh
            self.closed[event.interval][event.node] = event
            if len(self.closed[event.interval]) == len(self.homes):
                self.complete.append(event.interval)
                return event.interval
        return None


class CommunityError(RuntimeError):
    """The simulated community could not run as asked (a gateway stopped, start-up too slow)."""


def provision(
    out: Path, homes: Sequence[HomeSpec],
    served_addresses: Mapping[tuple[str, str], tuple[str, int]],
    *, broker_url: str, timing: RunTiming, rules: Rules = Rules(),
    bus_of: Mapping[str, str] | None = None, epoch_ms: int = 0,
    meter_keys: Mapping[str, bytes] | None = None, dc_bus: DcBusSpec | None = None,
) -> list[Path]:
    """Write authority key, node keys, certificates and configs as an installer would.

    Each home's config lists every device the world serves for it (``served_addresses``), its
    certificate names its feeder bus (``bus_of``, one bus for all by default). Keys already in
    ``out`` are reused, so running the demo twice keeps the same identities. ``meter_keys``
    (home -> its meter's HMAC key) are saved as ``gridpeer flash`` saves them, one file per meter
    named for its device id, and each gateway's config points at its own. Homes with a converter
    on ``dc_bus`` get its window and all name the same master (``dc_bus_master``).
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
            community=rules.community, node=spec.name, public_key=public_key_hex(key),
            bus=(bus_of or {}).get(spec.name, DEFAULT_BUS),
            import_limit_w=20_000, export_limit_w=20_000,
            valid_from_ms=0, valid_until_ms=now_ms + 86_400_000 * 365,
        )
        save_envelope(folder / "node.cert", sign("cert", cert, authority))
        devices = "\n".join(
            f'[[devices]]\nname = "{role}"\nkind = "{"load" if role in LOADS else role}"\n'
            f'url = "tcp://{host}:{port}"\npoll_s = {timing.poll_s}\n'
            for role in DEVICE_ROLES if (spec.name, role) in served_addresses
            for host, port in [served_addresses[spec.name, role]]
        )
        meter_key = ""
        if meter_keys is not None and spec.name in meter_keys:
            meter_id = f"{spec.name}-meter"  # the simulated meter's serial (model 1 SN)
            key_file = save_key(folder, meter_id, meter_keys[spec.name])
            meter_key = f'meter_key_file = "{key_file.name}"\n'
        config = folder / "gridpeer.toml"
        config.write_text(
            f'node = "{spec.name}"\nkey_file = "node.key"\ncertificate_file = "node.cert"\n'
            f'state_dir = "state"\n{meter_key}\n'
            f'[market]\ncommunity = "{rules.community}"\nbroker = "{broker_url}"\n'
            f'authority_key = "{public_key_hex(authority)}"\n'
            f'mechanism = "{rules.mechanism}"\n'
            f"interval_s = {timing.interval_s}\ngate_s = {timing.gate_s}\n"
            f"grace_s = {timing.grace_s}\nepoch_ms = {epoch_ms}\n{rules.network_toml()}\n"
            f"[tariffs]\nretail_price = {rules.retail_price}\n"
            f"feed_in_price = {rules.feed_in_price}\n"
            + ("" if rules.schedule is None else f"schedule = {json.dumps(rules.schedule)}\n")
            + f"{rules.home_toml(spec.name)}\n"
            f"[envelope]\nrevert_s = {timing.revert_s}\nramp_w_per_s = {timing.ramp_w_per_s}\n"
            f"{_dc_bus_config(spec, homes, dc_bus)}\n"
            f"{devices}"
        )
        configs.append(config)
    return configs


def dc_bus_master(homes: Sequence[HomeSpec], bus: DcBusSpec) -> str:
    """The home an installer makes the DC bus's voltage master: the one whose converter and
    battery can carry the most (it absorbs every mismatch on the bus), the first by name on a
    tie. Every member's config names it, so no gateway has to ask."""
    carry = {h.name: min(h.dcdc.max_a * bus.nominal_v, h.battery_max_w)
             for h in homes if h.dcdc is not None}
    return min(carry, key=lambda name: (-carry[name], name))


def _dc_bus_config(spec: HomeSpec, homes: Sequence[HomeSpec], bus: DcBusSpec | None) -> str:
    """The envelope's bus window and the ``[dc_bus]`` table of a home with a converter."""
    if spec.dcdc is None or bus is None:
        return ""
    return (f"bus_v_min = {bus.v_min}\nbus_v_max = {bus.v_max}\n\n"
            f'[dc_bus]\nmaster = "{dc_bus_master(homes, bus)}"\nvoltage_v = {bus.nominal_v}\n')


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


async def _start_all(stack: contextlib.AsyncExitStack,
                     nodes: Sequence[GatewayNode]) -> list[asyncio.Task[None]]:
    """Start every gateway at once: the world's clock is running, so start-up time is sim time.

    A gateway that cannot start (device not found, broker unreachable) stops the others and its
    own error is raised, not a group of them.
    """
    try:
        async with asyncio.TaskGroup() as tg:
            entering = [tg.create_task(stack.enter_async_context(running(node)))
                        for node in nodes]
    except BaseExceptionGroup as group:
        raise _first_leaf(group) from None
    return [task.result() for task in entering]


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


async def _until(finished: asyncio.Event, log: CommunityLog, *, stall_s: float,
                 out: Path) -> None:
    """Wait for the run to finish; raise if ``stall_s`` real seconds pass without progress."""
    seen = -1
    while not finished.is_set():
        if len(log.complete) == seen:
            raise CommunityError(
                f"no interval was closed by every gateway for {stall_s:.0f} s: this host cannot "
                f"keep up with the simulated clock (try a lower --speed; gateway logs in "
                f"{out / 'gateways.log'})")
        seen = len(log.complete)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(stall_s):
                await finished.wait()


def run_window(scenario: Scenario, timing: RunTiming, intervals: int) -> range:
    """The intervals a run of ``scenario`` covers: the first starts ``warmup_s`` after the world."""
    length_s = timing.interval_s
    first = math.ceil((scenario.start_s + timing.warmup_s) / length_s)
    return range(first, first + intervals)



def provisioned_node(path: Path, *, clock: Clock,
                     on_event: Callable[[HomeEvent], None] = lambda _e: None,
                     trade: bool = True) -> GatewayNode:
    """The gateway :func:`provision` configured at ``path``, its config, key and certificate
    read as ``gridpeer run`` reads them, on ``clock``."""
    config = load_config(path)
    envelope, _ = load_certificate(config.certificate_file)
    return GatewayNode(config=config, key=load_key_file(config.key_file), certificate=envelope,
                       clock=clock, on_event=on_event, trade=trade)


async def run_community(
    *,
    out: Path,
    scenario: Scenario,
    intervals: int,
    timing: RunTiming,
    seed: int | None = None,
    trade: bool = True,
    planner: Literal["optimiser", "heuristic"] = "heuristic",
    history_days: int = HISTORY_DAYS,
    broker_url: str | None = None,
    on_event: Callable[[HomeEvent, World, CommunityLog], None] | None = None,
    on_start: Callable[[str, World], None] | None = None,
) -> tuple[CommunityLog, World]:
    """Run the scenario's community until every home closed ``intervals`` intervals.

    ``timing`` carries the scenario's market timing (:meth:`RunTiming.of`) and the run's pace;
    ``seed`` replaces the scenario's world seed. ``trade=False`` runs the same homes in
    self-consumption only (the no-market baseline), still settled into every ledger;
    ``planner`` is how every home plans its bids; ``history_days`` how many past days each
    gateway's forecast has learned (:mod:`sim_devices.demo.history`; 0: a first day).
    ``on_start`` sees the broker's URL and the world once the devices are served; ``on_event``
    sees every gateway event with the world (ground truth) and the log so far.
    """
    out.mkdir(parents=True, exist_ok=True)
    if seed is not None:
        scenario = scenario.model_copy(update={"seed": seed})
    world = scenario.world(speed=timing.speed, dt_ms=timing.physics_step_ms)
    homes = [home.spec for home in world.homes]
    for home in homes:  # a run is a fresh start: ledgers and forecasts of an earlier one go
        state = out / home.name / "state"
        shutil.rmtree(state, ignore_errors=True)
        if history_days:  # ... and the forecast the home's past days taught its gateway comes
            state.mkdir(parents=True)
            (state / "forecast.json").write_text(learned_forecast(
                home, world_seed=scenario.seed, days=history_days).to_json())
    log = CommunityLog(homes=tuple(h.name for h in homes),
                       window=run_window(scenario, timing, intervals))
    finished = asyncio.Event()
    failures: list[BaseException] = []

    def collect(event: HomeEvent) -> None:
        try:
            k = log.add(event, world)
        except CommunityError as exc:
            failures.append(exc)
            finished.set()
            return
        if on_event is not None:
            on_event(event, world, log)
        if k is not None and len(log.complete) >= intervals:
            finished.set()

    async with _log_to(out / "gateways.log"), _broker(broker_url) as url, world.serve() as served:
        clock = Clock(origin_ms=world.now_ms, speed=timing.speed)
        addresses = {(home.name, role): served.address(home.name, role)
                     for home in world.homes for role in home.devices}
        configs = provision(out, homes, addresses, broker_url=url, timing=timing,
                            rules=replace(Rules.of(scenario), planner=planner),
                            bus_of=scenario.bus_of(),
                            meter_keys={home.name: home.meter_key for home in world.homes},
                            dc_bus=world.dc_bus_spec)
        if on_start is not None:
            on_start(url, world)
        nodes = [provisioned_node(path, clock=clock, on_event=collect, trade=trade)
                 for path in configs]
        async with contextlib.AsyncExitStack() as stack:
            tasks = await _start_all(stack, nodes)
            stall_s = max(30.0, _STALL_INTERVALS * timing.interval_s / timing.speed)
            done_waiter = asyncio.create_task(_until(finished, log, stall_s=stall_s, out=out),
                                              name="community-finished")
            try:
                done, _ = await asyncio.wait({done_waiter, *tasks},
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                done_waiter.cancel()
            if done_waiter in done:
                done_waiter.result()  # the stall error, if it stalled
            for task in done:
                if task is not done_waiter:
                    # a gateway stopped by itself: surface its error instead of waiting forever
                    task.result()
                    raise CommunityError(f"{task.get_name()} stopped before the run finished")
    if failures:
        raise failures[0]
    return log, world
