"""One certified member attacks three honest gateways at once, on Mosquitto with the field config
that ``gridpeer community broker-config`` writes (TLS, per-node ACL, packet and queue limits).

The honest gateways are real ``gridpeer run`` processes (the wall clock, 3 s intervals) polling
simulated homes over Modbus; carol's goes through a TCP proxy the test severs. dave, the member,
holds a valid certificate that allows it to export nothing, and at once:

* publishes a 100 MB retained message (issue 13 item 1);
* sends a valid signed commitment for an interval every gateway has retired, retained on its own
  slot, so carol's reconnect replays it (item 2, and item 15's honest trigger: carol's link is cut
  while it clears its own retained messages);
* offers 1 MWh at 1 µ/Wh in every interval, far beyond its certificate (item 4);
* keeps retained junk on every slot of every kind it may write, and tries 3,000 topics beyond
  them (item 8);
* floods 10,000 signed commitments, 5,000 bids and 5,000 settlements (item 14).

Must hold: the honest gateways keep agreeing (one result wherever more than one agreed) and
trading after the attack, dave sells nothing in any agreed result, no gateway commits to a retired
interval again, each process stays under the service's ``MemoryMax``, and every ledger verifies
(also against its neighbours').
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from gateway.identity import load_key_file
from protocols.market import Timing, topics
from protocols.messages import (
    Bid,
    Commitment,
    MembershipCertificate,
    Settlement,
    SignedEnvelope,
    bid_set_digest,
)
from protocols.signing import Rejected, generate_key, public_key_hex, sign, verify
from sim_devices.demo.community import Rules, RunTiming, provision
from sim_devices.home import HomeSpec
from sim_devices.world import World
from tests.deploy.mosquitto import Brokers, free_port
from tests.deploy.site import write_site
from tests.faults.proxy import TcpProxy

pytestmark = pytest.mark.realtime(cores=2, cost_s=75)  # the gateways are processes of their own

COMMUNITY = "oak-street"  # the broker site's community (tests/deploy/site.py)
HOMES = (
    HomeSpec(name="alice", pv_peak_w=6000, base_load_w=300, soc_start_pct=90),
    HomeSpec(name="bob", pv_peak_w=0, base_load_w=3000, soc_start_pct=15),
    HomeSpec(name="carol", pv_peak_w=0, base_load_w=2500, soc_start_pct=15),
)
HONEST = tuple(h.name for h in HOMES)
TIMING = RunTiming(interval_s=3, gate_s=1.2, grace_s=0.4, poll_s=0.25, revert_s=5,
                   ramp_w_per_s=100_000, speed=1.0)
MARKET = Timing(epoch_ms=0, length_ms=3000, gate_ms=1200, grace_ms=400)
ROOT = Path(__file__).resolve().parents[2]
HUGE = 100 * 1024 * 1024
AFTER = 3  # intervals all three must agree with trades after the attack
BOUND_S = 240  # a bound for a loaded machine, not a speed claim


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def memory_max_kb() -> int:
    unit = (ROOT / "deploy" / "gridpeer.service").read_text()
    found = re.search(r"^MemoryMax=(\d+)M$", unit, re.MULTILINE)
    assert found is not None
    return int(found.group(1)) * 1024


def peak_rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^VmHWM:\s+(\d+) kB$", status, re.MULTILINE)
    assert found is not None
    return int(found.group(1))


class Watch:
    """What dave reads of the community (the ACL lets every member read it), on a connection of
    its own: each honest commitment, in the order it arrives."""

    def __init__(self) -> None:
        self.commitments: list[Commitment] = []

    async def run(self, client: aiomqtt.Client) -> None:
        for node in HONEST:
            await client.subscribe(f"{topics.ROOT}/{COMMUNITY}/{topics.Kind.COMMIT}/+/{node}",
                                   qos=1)
        async for message in client.messages:
            payload = message.payload
            if message.retain or not isinstance(payload, bytes) or not payload:
                continue
            checked = verify(SignedEnvelope.from_bytes(payload), expected_kind="commit")
            if isinstance(checked, Rejected):
                continue
            body = checked.body
            if isinstance(body, Commitment):
                self.commitments.append(body)

    def agreed(self, k: int) -> str | None:
        """The result all three honest gateways' latest commitments for ``k`` name, if one."""
        latest = {c.node: (c.bid_set_digest, c.result_hash)
                  for c in self.commitments if c.interval == k}
        claims = set(latest.values())
        return claims.pop()[1] if len(latest) == len(HONEST) and len(claims) == 1 else None


Processes = dict[str, asyncio.subprocess.Process]


@contextlib.asynccontextmanager
async def gateways(configs: dict[str, Path]) -> AsyncIterator[Processes]:
    """``gridpeer run`` for each config, stopped with SIGTERM as the service manager would."""
    procs: Processes = {}
    try:
        for name, config in configs.items():
            procs[name] = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway", "run", "--config", str(config),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=(config.parent / "gateway.log").open("wb"),
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=ROOT)
        yield procs
    finally:
        for proc in procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                await asyncio.wait_for(proc.wait(), timeout=20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def with_tls(config: Path, url: str, files: Any, node: str) -> None:
    """The provisioned config, pointed at the TLS broker with the node's client files (and no
    dashboard: three on one machine would want the same port)."""
    tls = files.node(node)
    text = re.sub(r'broker = "[^"]*"', f'broker = "{url}"', config.read_text())
    text = text.replace("[market]\n", f'[market]\ntls_ca = "{tls.ca}"\ntls_cert = "{tls.cert}"\n'
                                      f'tls_key = "{tls.key}"\n', 1)
    config.write_text(text + "\n[dashboard]\nenabled = false\n")


async def cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, cwd=ROOT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def huge_retained(port: int, tls: Any) -> None:
    """100 MB retained on dave's own bid slot: the field broker disconnects it unread."""
    with contextlib.suppress(aiomqtt.MqttError, TimeoutError, OSError):
        async with asyncio.timeout(60), aiomqtt.Client(
                "127.0.0.1", port, identifier="dave-huge", tls_context=tls, timeout=10) as huge:
            await huge.publish(topics.bid(COMMUNITY, 3, "dave"), b"\x00" * HUGE, qos=1,
                               retain=True)


async def test_one_certified_member_attacking_every_way_at_once_breaks_nothing(
    mosquitto: Brokers, tmp_path: Path,
) -> None:
    port = free_port()
    files = write_site(tmp_path / "site", port)
    mosquitto.start(files.config, port, tmp_path / "mosquitto.log")
    world = World(homes=HOMES, seed=7, speed=1.0, start_s=12 * 3600)
    dave_key = generate_key()
    dave_tls = files.node("dave").client_context()
    async with AsyncExitStack() as stack:
        served = await stack.enter_async_context(world.serve())
        proxy = await stack.enter_async_context(TcpProxy(target=("127.0.0.1", port), packets=False))
        addresses = {(h, r): served.address(h, r) for h in HONEST for r in ("meter", "battery",
                                                                              "pv")}
        paths = provision(tmp_path / "homes", HOMES, addresses,
                          broker_url=f"mqtts://127.0.0.1:{port}", timing=TIMING,
                          rules=Rules(community=COMMUNITY))
        configs = {path.parent.name: path for path in paths}
        for name, path in configs.items():
            broker_port = proxy.port if name == "carol" else port
            with_tls(path, f"mqtts://127.0.0.1:{broker_port}", files, name)
        authority = load_key_file(tmp_path / "homes" / "authority.key")
        dave_cert = sign("cert", MembershipCertificate(
            community=COMMUNITY, node="dave", public_key=public_key_hex(dave_key), bus="main",
            import_limit_w=0, export_limit_w=0, valid_from_ms=0,
            valid_until_ms=now_ms() + 86_400_000), authority)

        watch = Watch()
        reader = await stack.enter_async_context(aiomqtt.Client(
            "127.0.0.1", port, identifier="dave-reads", tls_context=dave_tls))
        watcher = asyncio.create_task(watch.run(reader))
        stack.callback(watcher.cancel)
        dave = await stack.enter_async_context(aiomqtt.Client(
            "127.0.0.1", port, identifier="dave", tls_context=dave_tls,
            max_inflight_messages=100))
        procs = await stack.enter_async_context(gateways(configs))

        async def agreed_run(first: int, count: int) -> list[int]:
            """Wait for ``count`` intervals from ``first`` on that all three agreed."""
            async with asyncio.timeout(BOUND_S):
                while True:
                    done = MARKET.open_interval(now_ms()) - 1
                    agreed = [k for k in range(first, done) if watch.agreed(k)]
                    if len(agreed) >= count:
                        return agreed
                    for name, proc in procs.items():
                        assert proc.returncode is None, f"{name}'s gateway exited"
                    await asyncio.sleep(0.2)

        await agreed_run(MARKET.open_interval(now_ms()), 2)  # warmed up and trading

        # --- the attack --------------------------------------------------------------------
        await dave.publish(topics.roster(COMMUNITY, "dave"), dave_cert.to_bytes(), qos=1,
                           retain=True)
        await huge_retained(port, dave_tls)  # 1

        open_k = MARKET.open_interval(now_ms())
        retired = max(k for c in watch.commitments if (k := c.interval) < open_k - 3)
        agreed_before = next(c for c in watch.commitments if c.interval == retired)
        heard_before = len(watch.commitments)
        stale = Commitment(community=COMMUNITY, interval=retired, node="dave",
                           bid_set_digest=agreed_before.bid_set_digest,
                           result_hash=agreed_before.result_hash, mechanism="uniform")
        await dave.publish(topics.commit(COMMUNITY, retired, "dave"),  # 2, retained
                           sign("commit", stale, dave_key).to_bytes(), qos=1, retain=True)

        async def over_limit(k: int) -> None:  # 4: 1 MWh from a member allowed 0 W
            offer = Bid(community=COMMUNITY, interval=k, node="dave", seq=0, side="sell",
                        energy_wh=1_000_000, limit_price=1, created_ms=now_ms())
            await dave.publish(topics.bid(COMMUNITY, k, "dave"),
                               sign("bid", offer, dave_key).to_bytes(), qos=1, retain=True)

        for k in range(open_k, open_k + 3):
            await over_limit(k)
        junk = [(topics.Topic(COMMUNITY, kind, "dave", slot), kind)  # 8: every slot it may write
                for kind in topics.PER_INTERVAL for slot in range(topics.SLOTS)]
        far = open_k + 10_000
        for topic, _ in junk:
            body = Bid(community=COMMUNITY, interval=far + (topic.slot or 0), node="dave",
                       seq=0, side="sell", energy_wh=1, limit_price=1, created_ms=now_ms())
            await dave.publish(str(topic), sign("bid", body, dave_key).to_bytes(), qos=1,
                               retain=True)
        denied = [f"{topics.ROOT}/{COMMUNITY}/{topics.Kind.BIDS}/{n}/dave"
                  for n in range(topics.SLOTS, topics.SLOTS + 3000)]
        await asyncio.gather(*(dave.publish(t, b"junk", qos=1, retain=True) for t in denied))

        # 14: floods, signed under dave's own key
        target = MARKET.open_interval(now_ms()) + 2
        empty = bid_set_digest(())
        flood = [(topics.commit(COMMUNITY, target, "dave"), sign("commit", Commitment(
            community=COMMUNITY, interval=target, node="dave", bid_digests=(),
            bid_set_digest=empty, result_hash=f"{n:064x}", mechanism="uniform"),
            dave_key).to_bytes()) for n in range(10_000)]
        flood += [(topics.bid(COMMUNITY, target, "dave"), sign("bid", Bid(
            community=COMMUNITY, interval=target, node="dave", seq=n, side="sell",
            energy_wh=1_000_000, limit_price=1, created_ms=now_ms()), dave_key).to_bytes())
            for n in range(1, 5_001)]
        ended = MARKET.open_interval(now_ms()) - 2
        flood += [(topics.settle(COMMUNITY, ended, "dave"), sign("settle", Settlement(
            community=COMMUNITY, interval=ended, node="dave", cleared_wh=0, delivered_wh=0,
            grid_import_wh=0, grid_export_wh=0, money=-n, meter_import_wh=0,
            meter_export_wh=0, meter_seq=n, meter_tag="ab" * 32), dave_key).to_bytes())
            for n in range(5_000)]
        for start in range(0, len(flood), 500):
            await asyncio.gather(*(dave.publish(t, p, qos=1) for t, p in flood[start:start + 500]))

        # 15 (and 2's honest trigger): carol's link is cut across an interval's retirement,
        # so its clears are made while it is away; the reconnect replays dave's stale commitment.
        proxy.sever()
        await asyncio.sleep(2 * MARKET.length_ms / 1000)
        proxy.restore()
        attack_over = MARKET.open_interval(now_ms())
        for k in range(attack_over, attack_over + AFTER + 3):
            await over_limit(k)
        after = await agreed_run(attack_over, AFTER)
        await asyncio.sleep(2 * MARKET.length_ms / 1000)  # they end and reach the ledgers

        peaks = {name: peak_rss_kb(proc.pid) for name, proc in procs.items()}
        statuses = {name: json.loads((path.parent / "state" / "status.json").read_text())
                    for name, path in configs.items()}
        await stack.aclose()  # the gateways stop (SIGTERM) before their ledgers are read

    limit = memory_max_kb()
    for name, peak in peaks.items():
        assert peak < limit, f"{name}: peak RSS {peak} kB over MemoryMax {limit} kB"
    for name, status in statuses.items():
        assert status["rejections"].get("flood", 0) > 0, (name, status["rejections"])
    assert statuses["carol"]["rejections"].get("stale", 0) >= 1, statuses["carol"]["rejections"]

    # No honest gateway committed to the retired interval again.
    revived = [c.node for c in watch.commitments[heard_before:] if c.interval == retired]
    assert not revived, f"commitments for retired interval {retired}: {revived}"

    ledgers = {name: path.parent / "state" / "ledger.db" for name, path in configs.items()}
    blocks: dict[str, dict[int, dict[str, Any]]] = {}
    for name, ledger in ledgers.items():
        others = [arg for n, p in ledgers.items() if n != name for arg in ("--against", str(p))]
        code, out = await cli("ledger", "verify", str(ledger), "--config", str(configs[name]),
                              *others)
        assert code == 0, f"{name}'s ledger:\n{out}"
        code, out = await cli("ledger", "export", str(ledger))
        assert code == 0, out
        blocks[name] = {b["interval"]: b for b in json.loads(out)}
    intervals = sorted(set().union(*blocks.values()))
    traded = []
    for k in intervals:
        held = {n: b[k] for n, b in blocks.items() if k in b and b[k]["status"] == "agreed"}
        hashes = {b["content"]["result_hash"] for b in held.values()}
        assert len(hashes) <= 1, f"interval {k}: different agreed results {hashes}"
        if len(held) == len(HONEST):
            own = {n: b["content"]["outcome"] for n, b in held.items()}
            sold = sum(o["sold_wh"] for o in own.values())
            bought = sum(o["bought_wh"] for o in own.values())
            assert sold == bought, f"interval {k}: someone else sold {bought - sold} Wh"
            if sold and k >= attack_over:
                traded.append(k)
    assert traded, f"no trade after the attack in the ledgers (agreed by all three: {after})"
    print(f"peak RSS kB {peaks}; traded after the attack in {len(traded)} intervals; "
          f"rejections {[s['rejections'] for s in statuses.values()]}")
