"""Soak: 24 simulated hours of the feeder-100 community, from its meters to its ledgers.

    python bench/soak_feeder100.py [--hours 24] [--speed 25] [--broker mosquitto]

Three processes, as in the field:

* the simulator, ``gridpeer sim run feeder-100``: the 100 homes' physics (PV, load, idle battery)
  and their 325 devices, each served over Modbus TCP by the firmware's own register code; every
  meter tags its counters with its key (vendor model 64210), and the west estate's meters drop
  2 % of their replies (the scenario's fault), which the gateway's bus retries;
* the broker: Mosquitto, or the embedded amqtt one (``--broker embedded``);
* this harness, which holds per home what a gateway's market side is: the gateway's meter driver
  on its own Modbus TCP connection to the home's meter, a real :class:`MarketAgent` (its own key,
  a certificate naming its feeder bus, its own MQTT connection, the scenario's radial feeder and a
  network fee schedule), and the gateway's :class:`IntervalCloser` writing a SQLite ledger.

Each interval, each home bids what its meter measured over the last finished interval (a
persistence forecast); the homes on the south bus also ask for a fifth of their battery from
10:00 to 15:00, as they would to charge it from their neighbours' midday surplus (their
batteries stay idle here, so that energy is never drawn: a real deviation, which the reputation
then sees). Every bid and commitment is signed, sent through the broker and verified by all 100
receivers; every agent clears on its own. At the interval's end each meter is read over Modbus,
and each home settles through :class:`IntervalCloser`: a signed ``Settlement`` carrying the meter's
tagged counters, published retained, and a block in the home's ledger with the peers' settlements
it accepted. Every agent holds every meter's key, as an auditor does, so each one checks every
peer's settlement against the agreed result *and* against the meter's tag and counters.

Why agents and not full gateways: what a gateway adds is dispatch (EMS, battery and load control,
a poller per device), and a hundred of those in one process on a 2-core machine cannot keep a
15-minute interval to a few real seconds. Dispatch has its own whole-day tests on the 6-home
streets (tests/test_day_sunny.py, tests/test_day_dcbus.py) and fault tests (tests/faults).

Checked every interval; the run stops at the first violation with what did not add up:

* consistency: every agent ends the interval agreed on one result hash (in time or adopted
  after abstaining), or abstained;
* P2P: energy sold == bought == Σ trades, to the Wh; money paid == received == Σ trade money,
  to the micro-unit;
* settlement: every home's figures are its metered energy against its agreed position
  (delivered == cleared + grid import − grid export); the community's metered net == grid
  import − grid export; Σ bills == retail × import − feed-in × export + Σ network fees, to the
  micro-unit;
* agreement on settlements: by the end of the next interval (or the one after), every agent that
  knows the agreed result has accepted exactly the settlements the homes published, and no
  agent has refused a settlement or a meter reading (``settle-*``, ``meter-*``).

At the end, every home's ledger verifies as a hash chain, holds one block per interval, its
bills sum to what the home was settled, and it holds each settlement its peers published exactly
once (but the last interval's, which arrive after the last block).

Printed per simulated hour: intervals agreed/abstained, energy traded, the balance residuals
(always 0, or the run would have stopped), and the resident memory (RSS) of this harness and of
the simulator, which must stay flat once the agents hold their few intervals of history.

The agents' clock is simulated time at ``--speed`` from the moment the simulator serves; the
market's gate and grace are widened from the scenario's 60 s / 10 s to ``--gate-s``/``--grace-s``
simulated seconds so that 100 agents on one Python process get enough real time to verify 200
signed messages each per interval. For the same reason each agent's MQTT keep-alive and publish
timeout are 30 s, not 5 s: one event loop serving a hundred nodes answers a ping or a PUBACK a
hundred times later than a gateway's own, and with 5 s the broker dropped agents that were only
busy, whose reconnects (each replaying every retained message) kept the loop busier still.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.clock import Clock
from gateway.devices import Meter, MeterReading, ModbusBus, ModbusTcpBus, discover
from gateway.home.closing import Closed, IntervalCloser
from gateway.ledger import Ledger, LedgerOwner
from gateway.market.agent import MarketAgent
from gateway.market.peerlink import PeerLinkError
from protocols.clearing import ClearingParams, Tariffs
from protocols.market import Abstained, Agreed, MarketError, MeterKey, Timing
from protocols.messages import MembershipCertificate, SignedEnvelope
from protocols.signing import generate_key, public_key_hex, sign
from sim_devices.demo.broker import EmbeddedBroker
from sim_devices.scenario import Scenario, load_scenario
from sim_devices.world import sim_meter_key

_HOUR_MS = 3_600_000
_YEAR_MS = 365 * 86_400_000
_CONNECT_TRIES = 5
_TICK_S = 0.2
"""Real seconds between session ticks: 100 agents ticking at the default 20 ms cost a core."""
_LINK_TIMEOUT_S = 30
_MODBUS_TIMEOUT_S = 5.0
"""A meter read waits this long: the harness's loop may be busy verifying for a few seconds."""
_MODBUS_RETRIES = 5
"""The west estate's meters drop 2 % of their replies (a fault of the scenario's): a gateway
polls again a second later; the soak reads once per interval, so it retries more."""
_SCANS_AT_ONCE = 10
"""SunSpec scans in flight: a hundred at once time out on the simulator's one event loop."""
_CHARGING_BUS = "south"
_CHARGING_HOURS = (10, 15)
_SETTLE_GRACE = 2
"""Intervals a published settlement has to reach every agent before the run fails."""
_SIM_LINE = re.compile(r"^(?P<home>[^/\s]+)/(?P<role>[a-z]+) tcp://(?P<host>[\d.]+):(?P<port>\d+)")

Outcome = Agreed | Abstained


class SoakFailure(AssertionError):
    """A consistency or balance check failed: the interval and what did not add up."""


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory of a process, from /proc (Linux)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


@contextlib.asynccontextmanager
async def broker(kind: str) -> AsyncIterator[str]:
    """A broker URL: Mosquitto (a C broker, as in the field) or the embedded amqtt one."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if kind == "mosquitto" and os.path.exists(binary):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        folder = Path(tempfile.mkdtemp(prefix="soak-mosquitto-"))
        conf = folder / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                        "max_queued_messages 100000\npersistence false\n")
        process = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                    break
                await asyncio.sleep(0.05)
            yield f"mqtt://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(timeout=10)
            shutil.rmtree(folder, ignore_errors=True)
        return
    async with EmbeddedBroker() as embedded:
        yield embedded.url


@dataclass(frozen=True, slots=True)
class Simulator:
    """The running ``gridpeer sim run``: its process, each home's meter address, and the
    ``time.monotonic()`` at which it said it serves (its world then at the scenario's start)."""

    pid: int
    meters: Mapping[str, tuple[str, int]]
    serving_since: float


@contextlib.asynccontextmanager
async def simulator(scenario: str, *, speed: float, dt_ms: int) -> AsyncIterator[Simulator]:
    """Run ``gridpeer sim run`` in its own process, as an installer's test rig does; its later
    output (feeder lines overloaded and back) is echoed, prefixed "sim:"."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "sim", "run", scenario, "--speed", f"{speed:g}",
        "--dt-ms", str(dt_ms), stdout=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    echo: asyncio.Task[None] | None = None
    try:
        meters = {}
        async with asyncio.timeout(120):
            while not (line := (await process.stdout.readline()).decode()).startswith("serving"):
                if not line:
                    raise SoakFailure("the simulator exited before serving")
                match = _SIM_LINE.match(line)
                if match and match["role"] == "meter":
                    meters[match["home"]] = (match["host"], int(match["port"]))
        serving_since = time.monotonic()
        print(f"sim: {line.strip()}", flush=True)
        echo = asyncio.create_task(_echo(process.stdout), name="sim-echo")
        yield Simulator(pid=process.pid, meters=meters, serving_since=serving_since)
    finally:
        if echo is not None:
            echo.cancel()
        if process.returncode is None:
            process.terminate()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(30):
                    await process.wait()


async def _echo(stream: asyncio.StreamReader) -> None:
    while line := (await stream.readline()).decode():
        print(f"sim: {line.rstrip()}", flush=True)


@dataclass(frozen=True, slots=True)
class HomeMeter:
    """One home's meter as its gateway reads it, and the key its tags verify with."""

    driver: Meter
    key: MeterKey
    bus: ModbusBus


async def open_meters(stack: contextlib.AsyncExitStack, sim: Simulator, *, seed: int,
                      clock: Clock) -> dict[str, HomeMeter]:
    """Connect the gateway's meter driver to every home's meter: SunSpec discovery, then the
    key ``gridpeer sim run`` provisioned it with (``sim_meter_key``, from its serial number)."""
    def now_s() -> float:
        return clock.now_ms() / 1000

    scans = asyncio.Semaphore(_SCANS_AT_ONCE)

    async def one(host: str, port: int) -> HomeMeter:
        bus = await stack.enter_async_context(
            ModbusTcpBus(host=host, port=port, timeout_s=_MODBUS_TIMEOUT_S,
                         retries=_MODBUS_RETRIES))
        async with scans:
            found = await discover(bus, unit=1)
        serial = found.common.serial
        return HomeMeter(Meter(bus=bus, device=found, now_s=now_s),
                         MeterKey(device_id=serial, key=sim_meter_key(seed, serial)), bus)

    names = sorted(sim.meters)
    found = await asyncio.gather(*(one(*sim.meters[n]) for n in names))
    return dict(zip(names, found, strict=True))


async def read_meters(k: int, meters: Mapping[str, HomeMeter]) -> dict[str, MeterReading]:
    """Every home's meter at the end of interval ``k``, over Modbus; a meter that cannot be read
    (after the bus's retries) fails the run: nothing in this soak is meant to fail."""
    names = list(meters)
    readings = await asyncio.gather(*(meters[n].driver.read() for n in names),
                                    return_exceptions=True)
    failed = {n: repr(r) for n, r in zip(names, readings, strict=True)
              if isinstance(r, BaseException)}
    if failed:
        raise SoakFailure(f"interval {k}: meters unreadable: {failed}")
    return dict(zip(names, readings, strict=True))  # type: ignore[arg-type]


def settled_outcomes(agents: Mapping[str, MarketAgent], k: int,
                     outcomes: Mapping[str, Outcome | BaseException]
                     ) -> dict[str, Outcome]:
    """What each agent settles interval ``k`` against once it ended: the result it adopted after
    abstaining, if it did, else its outcome. Fails the run if an agent has none."""
    failed = {n: repr(o) for n, o in outcomes.items() if isinstance(o, BaseException)}
    if failed:
        raise SoakFailure(f"interval {k}: no outcome at {failed}")
    return {n: agents[n].agreed(k) or o for n, o in outcomes.items()}  # type: ignore[misc]


def check_outcomes(k: int, outcomes: Mapping[str, Outcome]) -> Counter[str]:
    """Consistency and the P2P balance of interval ``k``; returns its totals."""
    agreed = {n: o for n, o in outcomes.items() if isinstance(o, Agreed)}
    hashes = {o.result_hash for o in agreed.values()}
    if len(hashes) > 1:
        raise SoakFailure(f"interval {k}: agents agreed different results {hashes}")
    totals = Counter(agreed=len(agreed), abstained=len(outcomes) - len(agreed),
                     adopted=sum(o.late for o in agreed.values()))
    totals.update(f"abstained-{o.reason}" for o in outcomes.values() if isinstance(o, Abstained))
    if agreed:
        result = next(iter(agreed.values())).result
        sold = sum(o.sold_wh for o in result.outcomes)
        bought = sum(o.bought_wh for o in result.outcomes)
        traded = sum(t.energy_wh for t in result.trades)
        paid = sum(o.paid_p2p for o in result.outcomes)
        received = sum(o.received_p2p for o in result.outcomes)
        money = sum(t.money for t in result.trades)
        if not sold == bought == traded:
            raise SoakFailure(f"interval {k}: P2P energy sold {sold}, bought {bought}, "
                              f"traded {traded} Wh")
        if not paid == received == money:
            raise SoakFailure(f"interval {k}: P2P money paid {paid}, received {received}, "
                              f"trades {money} µ")
        totals.update(traded_wh=traded, p2p_money=money)
    return totals


def check_bills(k: int, outcomes: Mapping[str, Outcome], closed: Mapping[str, Closed],
                delivered: Mapping[str, int], tariffs: Tariffs) -> Counter[str]:
    """Every home settled its metered energy against its agreed position, and the community's
    energy and money balance with the grid and the network operator; returns the totals."""
    grid_import = grid_export = bills = 0
    for node, c in closed.items():
        f = c.figures
        if f.delivered_wh != delivered[node] or (
                f.delivered_wh != f.cleared_wh + f.grid_import_wh - f.grid_export_wh):
            raise SoakFailure(f"interval {k}: {node} metered {delivered[node]} Wh and "
                              f"settled {f}")
        grid_import += f.grid_import_wh
        grid_export += f.grid_export_wh
        bills += f.money
    agreed = next((o for o in outcomes.values() if isinstance(o, Agreed)), None)
    fees = sum(fee.fee for fee in agreed.fees) if agreed is not None else 0
    net = sum(delivered.values())
    if net != grid_import - grid_export:
        raise SoakFailure(f"interval {k}: community metered {net} Wh but the grid balanced "
                          f"{grid_import - grid_export} Wh")
    expected = grid_import * tariffs.retail_price - grid_export * tariffs.feed_in_price + fees
    if bills != expected:
        raise SoakFailure(f"interval {k}: bills sum to {bills} µ; grid and network fees to "
                          f"{expected} µ")
    return Counter(metered_net_wh=net, grid_import_wh=grid_import, grid_export_wh=grid_export,
                   bills=bills, fees=fees,
                   signed=sum(c.settlement is not None for c in closed.values()))


def unaccepted(k: int, agents: Mapping[str, MarketAgent], published: set[str]) -> list[str]:
    """The agents that know interval ``k``'s agreed result but have not (yet) accepted every
    settlement published for it; a *different* settlement accepted fails the run at once."""
    expected = {n: agents[n].settlements(k)[n] for n in published}
    behind = []
    for name, agent in agents.items():
        if agent.agreed(k) is None:
            continue  # cannot judge a settlement without the result: held, not refused
        got = agent.settlements(k)
        wrong = [n for n in expected if n in got and got[n] != expected[n]]
        extra = sorted(set(got) - set(expected))
        if wrong or extra:
            raise SoakFailure(f"interval {k}: {name} accepted settlements that were not "
                              f"published: differing {wrong}, unknown {extra}")
        if len(got) < len(expected):
            behind.append(f"{name} ({len(got)} of {len(expected)})")
    return behind


def refusals(agents: Mapping[str, MarketAgent]) -> Counter[str]:
    """Settlements or meter readings any agent refused: none are wrong in this soak."""
    return Counter({f"{name}:{reason}": count for name, agent in agents.items()
                    for reason, count in agent.rejections.items()
                    if reason.startswith(("settle-", "meter-"))})


def check_ledgers(ledgers: Mapping[str, Ledger], *, intervals: range,
                  bills: Mapping[str, int], published: Mapping[tuple[int, str], str]) -> int:
    """Every ledger verifies, has one block per interval, sums to its home's bills, and holds
    every peer's published settlement exactly once (but the last interval's: they arrive after
    its block, the last one); returns the peer settlements held."""
    last = intervals[-1]
    held = 0
    for name, ledger in ledgers.items():
        problems = ledger.verify()
        if problems:
            raise SoakFailure(f"ledger of {name} does not verify: {problems[:3]}")
        blocks = [block for block, _ in ledger.blocks()]
        if [b.interval for b in blocks] != list(intervals):
            raise SoakFailure(f"ledger of {name} holds intervals "
                              f"{[b.interval for b in blocks]}, not {intervals}")
        money = sum(b.content["outcome"]["money"] for b in blocks)
        if money != bills[name]:
            raise SoakFailure(f"ledger of {name} sums to {money} µ, its bills to {bills[name]} µ")
        peers = Counter((e["body"]["interval"], e["body"]["node"], e["sig"])
                        for b in blocks for e in b.content.get("peer_settlements", []))
        twice = [key[:2] for key, n in peers.items() if n > 1]
        unknown = [key[:2] for key in peers if published.get(key[:2]) != key[2]]
        missing = [key for key in published if key[1] != name and key[0] < last
                   and (*key, published[key]) not in peers]
        if twice or unknown or missing:
            raise SoakFailure(f"ledger of {name}: peer settlements held twice {twice[:3]}, "
                              f"never published {unknown[:3]}, missing {missing[:3]}")
        held += len(peers)
    return held


def certificate_for(scenario: Scenario, *, name: str, clock: Clock,
                    authority_key: Ed25519PrivateKey, key: Ed25519PrivateKey) -> SignedEnvelope:
    """One home's membership certificate, as the installer signs it."""
    cert = MembershipCertificate(
        community=scenario.market.community, node=name, public_key=public_key_hex(key),
        bus=scenario.bus_of()[name], import_limit_w=50_000, export_limit_w=50_000,
        valid_from_ms=0, valid_until_ms=clock.now_ms() + _YEAR_MS)
    return sign("cert", cert, authority_key)


def agent_for(scenario: Scenario, *, name: str, url: str, timing: Timing, tariffs: Tariffs,
              clock: Clock, authority_key: Ed25519PrivateKey, key: Ed25519PrivateKey,
              meter_keys: Mapping[str, MeterKey]) -> MarketAgent:
    """The market side of one home's gateway, on the scenario's feeder, auditing every meter."""
    assert scenario.feeder is not None
    return MarketAgent(
        broker_url=url, community=scenario.market.community, node=name, identity=key,
        certificate=certificate_for(scenario, name=name, clock=clock,
                                    authority_key=authority_key, key=key),
        authority_key_hex=public_key_hex(authority_key), timing=timing,
        params=ClearingParams(tariffs=tariffs), clock=clock.now_ms,
        mechanism=scenario.market.mechanism, energy_interval_ms=timing.length_ms,
        feeder=scenario.feeder.radial().for_market(interval_s=scenario.market.interval_s),
        fees=scenario.market.fees(),
        meter_keys=meter_keys, tick_s=_TICK_S, keepalive_s=_LINK_TIMEOUT_S,
        connect_timeout_s=_LINK_TIMEOUT_S)


async def connect_agents(stack: contextlib.AsyncExitStack, homes: list[str],
                         make: Callable[[str], MarketAgent]) -> dict[str, MarketAgent]:
    """Every home's agent connected to the broker, all at once: joining one by one, the later
    ones wait on a loop busy checking the certificates and commitments of the earlier ones."""
    agents: dict[str, MarketAgent] = {}
    for _ in range(_CONNECT_TRIES):
        missing = [n for n in homes if n not in agents]
        if not missing:
            break
        tried = {n: make(n) for n in missing}
        entered = await asyncio.gather(*(a.__aenter__() for a in tried.values()),
                                       return_exceptions=True)
        for (name, a), result in zip(tried.items(), entered, strict=True):
            if isinstance(result, PeerLinkError):
                continue
            if isinstance(result, BaseException):
                raise result
            agents[name] = a
            stack.push_async_exit(a.__aexit__)
        print(f"  {len(agents)} of {len(homes)} agents connected", flush=True)
    if len(agents) < len(homes):
        raise SoakFailure(f"only {len(agents)} of {len(homes)} agents could connect")
    return agents


async def soak(*, hours: float, speed: float, gate_s: int, grace_s: int, broker_kind: str,
               dt_ms: int, state_dir: Path) -> int:
    scenario = load_scenario("feeder-100")
    tariffs = Tariffs(retail_price=scenario.tariffs.retail_price,
                      feed_in_price=scenario.tariffs.feed_in_price)
    length_ms = scenario.market.interval_s * 1000
    timing = Timing(epoch_ms=0, length_ms=length_ms, gate_ms=gate_s * 1000,
                    grace_ms=grace_s * 1000)
    authority = generate_key()
    print(f"soak: {scenario.name}, {hours:g} simulated h at {speed:g}x (interval "
          f"{length_ms // 1000} s = {length_ms / 1000 / speed:.1f} s real), gate {gate_s} s, "
          f"grace {grace_s} s, physics step {dt_ms} ms, broker {broker_kind}, ledgers in "
          f"{state_dir}", flush=True)

    async with (broker(broker_kind) as url,
                simulator(scenario.name, speed=speed, dt_ms=dt_ms) as sim,
                contextlib.AsyncExitStack() as stack):
        clock = Clock(origin_ms=round(scenario.start_s * 1000), speed=speed,
                      _t0=sim.serving_since)
        meters = await open_meters(stack, sim, seed=scenario.seed, clock=clock)
        homes = sorted(meters)
        print(f"  {len(homes)} meters discovered over Modbus TCP", flush=True)
        meter_keys = {n: m.key for n, m in meters.items()}
        keys = {name: generate_key() for name in homes}
        agents = await connect_agents(stack, homes, lambda name: agent_for(
            scenario, name=name, url=url, timing=timing, tariffs=tariffs, clock=clock,
            authority_key=authority, key=keys[name], meter_keys=meter_keys))
        ledgers = {n: stack.enter_context(Ledger.open(state_dir / f"{n}.db", owner=LedgerOwner(
            key=keys[n], certificate=certificate_for(scenario, name=n, clock=clock,
                                                     authority_key=authority, key=keys[n]))))
                   for n in homes}
        closers = {n: IntervalCloser(node=n, agent=agents[n], ledger=ledgers[n]) for n in homes}
        first = timing.open_interval(clock.now_ms()) + 1
        last = first + int(hours * _HOUR_MS // length_ms)
        marks: dict[str, int] = {}
        forecast = {n: 0 for n in homes}  # Wh, + import; persistence of the last interval
        bus_of = scenario.bus_of()
        charge_wh = {spec.name: spec.battery_wh // 5 for spec in scenario.home_specs()
                     if bus_of.get(spec.name) == _CHARGING_BUS}
        bills = Counter[str]()
        published: dict[tuple[int, str], str] = {}  # (interval, node) -> signature
        unchecked: dict[int, set[str]] = {}  # interval -> nodes whose settlement to look for
        hour: Counter[str] = Counter()
        started = time.monotonic()
        rss0, sim_rss0 = rss_mb(), rss_mb(sim.pid)
        for k in range(first - 1, last):
            # bid for k + 1 from what interval k - 1 metered, ahead of k + 1's gate
            nxt = k + 1
            if nxt < last:
                await clock.sleep_until(timing.gate_close_ms(nxt) - length_ms // 4)
                hour_of_day = timing.start_ms(nxt) // _HOUR_MS % 24
                charging = _CHARGING_HOURS[0] <= hour_of_day < _CHARGING_HOURS[1]
                bids = await asyncio.gather(*(
                    _bid(agents[n], nxt, forecast[n] + (charge_wh.get(n, 0) if charging else 0))
                    for n in homes))
                hour["late_bids"] += bids.count(False)
            await clock.sleep_until(timing.end_ms(k))
            readings = await read_meters(k, meters)
            nets = {n: r.import_wh - r.export_wh for n, r in readings.items()}
            if k < first:
                marks = nets
                continue
            delivered = {n: nets[n] - marks[n] for n in homes}
            marks, forecast = nets, delivered
            outcomes = await asyncio.gather(
                *(asyncio.wait_for(agents[n].outcome(k), timeout=30) for n in homes),
                return_exceptions=True)
            settled = settled_outcomes(agents, k, dict(zip(homes, outcomes, strict=True)))
            hour.update(check_outcomes(k, settled))
            closed = {n: closers[n].close(k, settled[n], delivered_wh=delivered[n],
                                          meter=readings[n]) for n in homes}
            hour.update(check_bills(k, settled, closed, delivered, tariffs))
            for n, c in closed.items():
                bills[n] += c.figures.money
                if c.settlement is not None:
                    published[k, n] = c.settlement.sig
            unchecked[k] = {n for n, c in closed.items() if c.settlement is not None}
            hour.update(_settlements_reached(k, agents, unchecked))
            refused = refusals(agents)
            if refused:
                raise SoakFailure(f"interval {k}: settlements or readings refused: "
                                  f"{dict(refused.most_common(5))}")
            hour["intervals"] += 1
            if (k + 1 - first) % (_HOUR_MS // length_ms) == 0:
                _report(hour, agents, sim_h=(k + 1 - first) * length_ms / _HOUR_MS,
                        clock_h=clock.now_ms() / _HOUR_MS % 24, sim_pid=sim.pid,
                        retried=sum(m.bus.stats.retries for m in meters.values()))
                hour = Counter()
        # the last interval's settlements get the same time to arrive as every other's
        for j in range(last, last + _SETTLE_GRACE + 1):
            await clock.sleep_until(timing.end_ms(j))
            _settlements_reached(j, agents, unchecked)
        held = check_ledgers(ledgers, intervals=range(first, last), bills=bills,
                             published=published)
        print(f"ledgers: {len(ledgers)} verify, {last - first} blocks each, bills as settled, "
              f"{held} peer settlements held, each once", flush=True)
        print(f"soak passed: {last - first} intervals in {time.monotonic() - started:.0f} s "
              f"real, RSS {rss0:.1f} -> {rss_mb():.1f} MB, simulator {sim_rss0:.1f} -> "
              f"{rss_mb(sim.pid):.1f} MB", flush=True)
    return 0


def _settlements_reached(k: int, agents: Mapping[str, MarketAgent],
                         unchecked: dict[int, set[str]]) -> Counter[str]:
    """Look again for the settlements published up to interval ``k``; those every agent has
    accepted are done with, one still missing after ``_SETTLE_GRACE`` intervals fails the run."""
    totals = Counter[str]()
    for j in sorted(unchecked):
        behind = unaccepted(j, agents, unchecked[j])
        if not behind:
            totals["settlements_everywhere"] += len(unchecked.pop(j))
        elif j < k - _SETTLE_GRACE + 1:
            raise SoakFailure(f"interval {j}: settlements still missing at {behind[:5]} "
                              f"{_SETTLE_GRACE} intervals later")
    return totals


def _report(hour: Counter[str], agents: Mapping[str, MarketAgent], *, sim_h: float,
            clock_h: float, sim_pid: int, retried: int) -> None:
    rejected = sum((a.rejections for a in agents.values()), Counter())
    abstained = {r[10:]: n for r, n in hour.items() if r.startswith("abstained-")}
    print(f"hour {sim_h:4.1f} (t={clock_h:05.2f}h): {hour['intervals']} intervals, agent "
          f"outcomes {hour['agreed']} agreed ({hour['adopted']} adopted late) / "
          f"{hour['abstained']} abstained {abstained}, traded {hour['traded_wh']} Wh for "
          f"{hour['p2p_money']} µ; metered net {hour['metered_net_wh']} Wh = grid "
          f"{hour['grid_import_wh']} - {hour['grid_export_wh']} Wh; bills {hour['bills']} µ "
          f"(network fees {hour['fees']} µ); residuals 0 Wh / 0 µ; {hour['signed']} signed "
          f"settlements, {hour['settlements_everywhere']} accepted by every agent; Modbus "
          f"requests retried so far {retried}; late bids "
          f"{hour['late_bids']}; rejected {dict(rejected.most_common(4))}; RSS "
          f"{rss_mb():.1f} MB, simulator {rss_mb(sim_pid):.1f} MB", flush=True)


async def _bid(agent: MarketAgent, k: int, forecast_wh: int) -> bool:
    """Offer last interval's surplus or ask for its deficit (nothing to trade: no bid).

    False when the gate had closed by the time the bid was made: this process fell behind its
    clock (a loaded host); the agent still clears and commits the interval without it.
    """
    if forecast_wh == 0:
        return True
    side: Literal["buy", "sell"] = "buy" if forecast_wh > 0 else "sell"
    limit = 290 if side == "buy" else 90
    try:
        await agent.submit_bid(interval=k, side=side, energy_wh=abs(forecast_wh),
                               limit_price=limit)
    except MarketError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--speed", type=float, default=25.0,
                        help="simulated seconds per real second (default 25: 36 s intervals, "
                        "which a 2-core machine keeps up with)")
    parser.add_argument("--gate-s", type=int, default=600)
    parser.add_argument("--grace-s", type=int, default=200)
    parser.add_argument("--dt-ms", type=int, default=10_000,
                        help="the simulator's physics step (default 10 s: a tenth of its CPU)")
    parser.add_argument("--broker", choices=("mosquitto", "embedded"), default="mosquitto")
    parser.add_argument("--state-dir", type=Path,
                        help="where the 100 ledgers are written (default: a temporary folder, "
                        "removed after the run)")
    args = parser.parse_args(argv)
    # Each meter bus counts and retries its timeouts (printed per hour); pymodbus would also
    # print every one, with a dump of its recent traffic.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    with contextlib.ExitStack() as stack:
        state_dir = args.state_dir or Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="soak-ledgers-")))
        state_dir.mkdir(parents=True, exist_ok=True)
        try:
            return asyncio.run(soak(hours=args.hours, speed=args.speed, gate_s=args.gate_s,
                                    grace_s=args.grace_s, broker_kind=args.broker,
                                    dt_ms=args.dt_ms, state_dir=state_dir))
        except SoakFailure as exc:
            print(f"soak FAILED: {exc}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
