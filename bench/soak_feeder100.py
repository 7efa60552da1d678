"""Soak: 24 simulated hours of the feeder-100 community's market, checked every interval.

    python bench/soak_feeder100.py [--hours 24] [--speed 100] [--broker embedded]

What runs: the 100 homes of ``feeder-100`` simulated by ``sim_devices.world`` (PV, load, idle
battery, meter counters), and one real :class:`MarketAgent` per home, each with its own key, a
certificate signed by the community authority, and its own MQTT connection to a real broker
(Mosquitto when installed, else the embedded amqtt one). Every bid and commitment is signed,
sent through the broker and verified by all 100 receivers; every agent clears on its own.

Why agents and not full gateways: 100 gateways poll 300 Modbus devices and the world steps 100
homes in real time; on the 2-core machine this was written on that cannot keep a 15-minute
interval to a few real seconds, so a day would take hours. The agents are the part a day of
trading stresses (signatures, broker fan-out, clearing, session memory); the gateway's device
side has its own fault tests (tests/faults). What agents do not do: dispatch. Each home bids
what its meter measured over the last finished interval (a persistence forecast); the homes on
the south bus also ask for a fifth of their battery from 10:00 to 15:00, as they would to charge
it from their neighbours' midday surplus (their batteries stay idle here, so that energy is never
drawn: a real deviation). Each home is settled on what its meter measures over the traded
interval, against the result it agreed, in time or adopted late, so every deviation is real.

Checked every interval, and the run fails loudly at the first violation:

* consistency: every agent ends the interval agreed on one result hash (in time or adopted
  after abstaining), or abstained;
* energy: P2P sold == bought == Σ trades, to the Wh; every home's metered energy == its cleared
  position + grid import − grid export (``protocols.settlement.settle``); community metered net ==
  grid import − grid export;
* money: Σ P2P paid == Σ received == Σ trade money, to the micro-unit; Σ every home's bill ==
  retail × grid import − feed-in × grid export.

Printed per simulated hour: intervals agreed/abstained, energy traded, the balance residuals
(always 0, or the run would have stopped) and the process's resident memory (RSS), which must stay
flat once the agents hold their few intervals of history.

The agents' clock is simulated time at ``--speed``; the market's gate and grace are widened from
the scenario's 60 s / 10 s to ``--gate-s``/``--grace-s`` simulated seconds so that 100 agents on
one Python process get enough real time to verify 200 signed messages each per interval. For the
same reason each agent's MQTT keep-alive and publish timeout are 30 s, not 5 s: one event loop
serving a hundred nodes answers a ping or a PUBACK a hundred times later than a gateway's own,
and with 5 s the broker dropped agents that were only busy, whose reconnects (each replaying
every retained message) kept the loop busier still.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

from gateway.broker import EmbeddedBroker
from gateway.clock import Clock
from gateway.market.agent import MarketAgent, MarketError
from gateway.market.peerlink import PeerLinkError
from gateway.market.session import Abstained, Agreed, Timing
from protocols.clearing import ClearingParams, NodeOutcome, Tariffs
from protocols.messages import MembershipCertificate
from protocols.settlement import settle
from protocols.signing import generate_key, public_key_hex, sign
from sim_devices.scenario import load_scenario

_NO_POSITION = NodeOutcome("", 0, 0, 0, 0, 0, 0, 0, 0)
_HOUR_MS = 3_600_000
_YEAR_MS = 365 * 86_400_000
_CONNECT_TRIES = 5
_TICK_S = 0.2
_LINK_TIMEOUT_S = 30
_CHARGING_BUS = "south"
_CHARGING_HOURS = (10, 15)
"""Real seconds between session ticks: 100 agents ticking at the default 20 ms cost a core."""


class SoakFailure(AssertionError):
    """A consistency or balance check failed: the interval and what did not add up."""


def rss_mb() -> float:
    """Resident memory of this process, from /proc (Linux)."""
    with open("/proc/self/status") as status:
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


def settled_outcomes(agents: dict[str, MarketAgent], k: int,
                     outcomes: dict[str, Agreed | Abstained | BaseException]
                     ) -> dict[str, Agreed | Abstained | BaseException]:
    """What each agent settles interval ``k`` against once it ended: the result it adopted after
    abstaining, if it did, else its outcome."""
    return {n: agents[n].agreed(k) or o for n, o in outcomes.items()}


def check_interval(k: int, outcomes: dict[str, Agreed | Abstained | BaseException],
                   delivered: dict[str, int], tariffs: Tariffs) -> dict[str, int]:
    """Every check of one interval; returns its totals. Raises :class:`SoakFailure`."""
    agreed = {n: o for n, o in outcomes.items() if isinstance(o, Agreed)}
    failed = {n: repr(o) for n, o in outcomes.items() if isinstance(o, BaseException)}
    if failed:
        raise SoakFailure(f"interval {k}: no outcome at {failed}")
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
    grid_import = grid_export = bill = 0
    for node, metered in delivered.items():
        outcome = outcomes[node]
        position = outcome.position if isinstance(outcome, Agreed) else None
        figures = settle(position or _NO_POSITION, delivered_wh=metered, tariffs=tariffs)
        if figures.delivered_wh != (figures.cleared_wh + figures.grid_import_wh
                                    - figures.grid_export_wh):
            raise SoakFailure(f"interval {k}: {node} settles {figures} off its meter")
        grid_import += figures.grid_import_wh
        grid_export += figures.grid_export_wh
        bill += figures.money
    net = sum(delivered.values())
    if net != grid_import - grid_export:
        raise SoakFailure(f"interval {k}: community metered {net} Wh but the grid balanced "
                          f"{grid_import - grid_export} Wh")
    expected_bill = grid_import * tariffs.retail_price - grid_export * tariffs.feed_in_price
    if bill != expected_bill:
        raise SoakFailure(f"interval {k}: bills sum to {bill} µ, the grid to {expected_bill} µ")
    totals.update(metered_net_wh=net, grid_import_wh=grid_import, grid_export_wh=grid_export,
                  bills=bill)
    return dict(totals)


async def soak(*, hours: float, speed: float, gate_s: int, grace_s: int, broker_kind: str,
               dt_ms: int) -> int:
    scenario = load_scenario("feeder-100")
    world = scenario.world(speed=speed, dt_ms=dt_ms)
    homes = [h.name for h in world.homes]
    tariffs = Tariffs(retail_price=scenario.tariffs.retail_price,
                      feed_in_price=scenario.tariffs.feed_in_price)
    length_ms = scenario.market.interval_s * 1000
    timing = Timing(epoch_ms=0, length_ms=length_ms, gate_ms=gate_s * 1000,
                    grace_ms=grace_s * 1000)
    authority = generate_key()
    clock = Clock(origin_ms=world.now_ms, speed=speed)
    print(f"soak: {len(homes)} homes of {scenario.name}, {hours:g} simulated h at {speed:g}x "
          f"(interval {length_ms // 1000} s = {length_ms / 1000 / speed:.1f} s real), gate "
          f"{gate_s} s, grace {grace_s} s, broker {broker_kind}", flush=True)

    async with broker(broker_kind) as url, contextlib.AsyncExitStack() as stack:
        keys = {name: generate_key() for name in homes}

        def agent(name: str) -> MarketAgent:
            cert = MembershipCertificate(
                community=scenario.market.community, node=name,
                public_key=public_key_hex(keys[name]), bus="bus-1", import_limit_w=50_000,
                export_limit_w=50_000, valid_from_ms=0, valid_until_ms=world.now_ms + _YEAR_MS)
            return MarketAgent(
                broker_url=url, community=scenario.market.community, node=name,
                identity=keys[name], certificate=sign("cert", cert, authority),
                authority_key_hex=public_key_hex(authority), timing=timing,
                params=ClearingParams(tariffs=tariffs), clock=clock.now_ms,
                mechanism=scenario.market.mechanism, energy_interval_ms=length_ms,
                tick_s=_TICK_S, keepalive_s=_LINK_TIMEOUT_S, connect_timeout_s=_LINK_TIMEOUT_S)

        agents: dict[str, MarketAgent] = {}
        for _ in range(_CONNECT_TRIES):
            # all at once: joining one by one, the later ones wait on a loop busy checking the
            # certificates and commitments of the earlier ones
            missing = [n for n in homes if n not in agents]
            if not missing:
                break
            tried = {n: agent(n) for n in missing}
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
        first = timing.open_interval(clock.now_ms()) + 1
        last = first + int(hours * _HOUR_MS // length_ms)
        world.advance((timing.start_ms(first - 1) - world.now_ms) / 1000)
        marks = {n: _net(world, n) for n in homes}
        forecast = {n: 0 for n in homes}  # Wh, + import; persistence of the last interval
        bus_of = scenario.bus_of()
        charge_wh = {spec.name: spec.battery_wh // 5 for spec in scenario.home_specs()
                     if bus_of.get(spec.name) == _CHARGING_BUS}
        hour: Counter[str] = Counter()
        started = time.monotonic()
        rss0 = rss_mb()
        for k in range(first - 1, last):
            # bid for k + 1 from what interval k - 1 metered, ahead of k + 1's gate
            nxt = k + 1
            if nxt < last:
                bid_at = timing.gate_close_ms(nxt) - length_ms // 4
                await clock.sleep_until(bid_at)
                hour_of_day = timing.start_ms(nxt) // _HOUR_MS % 24
                charging = _CHARGING_HOURS[0] <= hour_of_day < _CHARGING_HOURS[1]
                bids = await asyncio.gather(*(
                    _bid(agents[n], nxt, forecast[n] + (charge_wh.get(n, 0) if charging else 0))
                    for n in homes))
                hour["late_bids"] += bids.count(False)
            if k < first:
                world.advance((timing.end_ms(k) - world.now_ms) / 1000)
                marks = {n: _net(world, n) for n in homes}
                continue
            await clock.sleep_until(timing.end_ms(k))
            world.advance((timing.end_ms(k) - world.now_ms) / 1000)
            now = {n: _net(world, n) for n in homes}
            delivered = {n: now[n] - marks[n] for n in homes}
            marks, forecast = now, delivered
            outcomes = await asyncio.gather(
                *(asyncio.wait_for(agents[n].outcome(k), timeout=30) for n in homes),
                return_exceptions=True)
            settled = settled_outcomes(agents, k, dict(zip(homes, outcomes, strict=True)))
            hour.update(check_interval(k, settled, delivered, tariffs))
            hour["intervals"] += 1
            if (k + 1 - first) % (_HOUR_MS // length_ms) == 0:
                rejected = sum((a.rejections for a in agents.values()), Counter())
                sim_h = (k + 1 - first) * length_ms / _HOUR_MS
                print(f"hour {sim_h:4.1f} (t={world.now_s / 3600 % 24:05.2f}h): "
                      f"{hour['intervals']} intervals, agent outcomes {hour['agreed']} agreed "
                      f"({hour['adopted']} adopted late) / {hour['abstained']} abstained, "
                      f"traded {hour['traded_wh']} Wh for "
                      f"{hour['p2p_money']} µ, metered net {hour['metered_net_wh']} Wh = grid "
                      f"{hour['grid_import_wh']} - {hour['grid_export_wh']} Wh, bills "
                      f"{hour['bills']} µ, residuals 0 Wh / 0 µ, late bids {hour['late_bids']}, "
                      f"rejected {dict(rejected.most_common(4))}, abstained for "
                      f"{ {r[10:]: n for r, n in hour.items() if r.startswith('abstained-')} }, "
                      f"RSS {rss_mb():.1f} MB", flush=True)
                hour = Counter()
        print(f"soak passed: {last - first} intervals in {time.monotonic() - started:.0f} s "
              f"real, RSS {rss0:.1f} -> {rss_mb():.1f} MB", flush=True)
    return 0


def _net(world, name: str) -> int:  # type: ignore[no-untyped-def]
    meter = world.home(name).meter
    return int(meter.import_wh - meter.export_wh)


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
    parser.add_argument("--speed", type=float, default=30.0,
                        help="simulated seconds per real second (default 30: 30 s intervals)")
    parser.add_argument("--gate-s", type=int, default=600)
    parser.add_argument("--grace-s", type=int, default=200)
    parser.add_argument("--dt-ms", type=int, default=10_000, help="physics step")
    parser.add_argument("--broker", choices=("mosquitto", "embedded"), default="mosquitto")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(soak(hours=args.hours, speed=args.speed, gate_s=args.gate_s,
                                grace_s=args.grace_s, broker_kind=args.broker,
                                dt_ms=args.dt_ms))
    except SoakFailure as exc:
        print(f"soak FAILED: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
