"""A member publishes one 100 MB retained message on its own topic: every gateway stays under the
service's memory limit (``MemoryMax`` in deploy/gridpeer.service) and goes on trading, and so does
a gateway that restarts afterwards (the message, if the broker kept it, comes back at every
connect).

Three brokers: the field config from ``gridpeer community broker-config`` (TLS and ACL) and the
embedded broker, which both refuse the packet (the publisher is disconnected, nothing is
retained); and the field config with its limits taken out, as a broker set up by hand would be,
which stores the message and delivers it over TLS to every gateway at every connect: there only
the gateway's own bound stands between the message and its memory. The gateway under test runs
as its own process, so its peak RSS is the kernel's figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from gateway.identity import create_key_file, save_envelope
from gateway.installer.brokerconfig import BrokerFiles
from gateway.market.agent import MarketAgent
from protocols.market import Timing, topics
from sim_devices.demo.broker import EmbeddedBroker
from tests.deploy.mosquitto import Brokers, free_port
from tests.deploy.site import retained, tls_agent, write_site
from tests.market.community import COMMUNITY, Community, now_ms

MEMORY_MAX_KB = 256 * 1024  # deploy/gridpeer.service: MemoryMax=256M
HUGE = 100 * 1024 * 1024
TRIES = 5  # intervals a trade may take on a loaded machine before the test gives up
ROOT = Path(__file__).resolve().parents[2]


def service_memory_max_kb() -> int:
    unit = (ROOT / "deploy" / "gridpeer.service").read_text()
    found = re.search(r"^MemoryMax=(\d+)M$", unit, re.MULTILINE)
    assert found is not None
    return int(found.group(1)) * 1024


class Child:
    """The gateway process (tests/deploy/gateway_child.py), driven over stdin/stdout."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        async with asyncio.timeout(60):
            raw = await self.proc.stdout.readline()
        assert raw, "the gateway process ended"
        result: dict[str, Any] = json.loads(raw)
        return result

    async def bid(self, k: int, side: str, wh: int, price: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"bid {k} {side} {wh} {price}\n".encode())
        await self.proc.stdin.drain()


@asynccontextmanager
async def child(folder: Path, **config: Any) -> AsyncIterator[Child]:
    path = folder / "child.json"
    path.write_text(json.dumps(config))
    with (folder / "child.log").open("ab") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.deploy.gateway_child", str(path), cwd=ROOT,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log)
    running = Child(proc)
    try:
        ready = await running.line()
        assert ready.get("ready") == config["node"], ready
        yield running
    finally:
        if proc.returncode is None:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def trade(community: Community, carol: Child, alice: MarketAgent,
                bob: MarketAgent) -> dict[str, Any]:
    """One interval in which the gateway process buys from alice; retried on the next interval
    if a loaded machine made it abstain. Returns the process's report of the traded interval."""
    report: dict[str, Any] = {}
    for _ in range(TRIES):
        k = community.next_interval(margin_ms=700)
        await carol.bid(k, "buy", 1_000, 250)
        await alice.submit_bid(k, "sell", 2_000, 100)
        await bob.submit_bid(k, "buy", 500, 200)
        report = await carol.line()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                await asyncio.gather(alice.outcome(k), bob.outcome(k))
        if report.get("agreed") and report.get("bought_wh", 0) > 0:
            return report
    raise AssertionError(f"the gateway process did not trade in {TRIES} intervals: {report}")


def slow_timing() -> Timing:
    """2 s intervals: a process that starts, reads a 100 MB message and trades has time."""
    return Timing(epoch_ms=now_ms(), length_ms=2000, gate_ms=1200, grace_ms=300)


async def huge_retained(port: int, tls: Any, identifier: str) -> None:
    """dave, a member, publishes 100 MB retained on his own bid topic; a broker that refuses it
    drops the connection, which is not the test's concern."""
    topic = topics.bid(COMMUNITY, 3, "dave")
    payload = b"\x00" * HUGE
    with contextlib.suppress(aiomqtt.MqttError, TimeoutError, OSError):
        async with asyncio.timeout(60), aiomqtt.Client(
                "127.0.0.1", port, identifier=identifier, tls_context=tls, timeout=10) as dave:
            await dave.publish(topic, payload, qos=1, retain=True)


def carol_config(folder: Path, community: Community, url: str,
                 tls: BrokerFiles | None) -> dict[str, Any]:
    key = create_key_file(folder / "carol.key")
    save_envelope(folder / "carol.cert", community.certificate("carol", key))
    timing = community.timing
    return {
        "broker_url": url, "node": "carol", "key": str(folder / "carol.key"),
        "certificate": str(folder / "carol.cert"), "authority_hex": community.authority_hex,
        "timing": {"epoch_ms": timing.epoch_ms, "length_ms": timing.length_ms,
                   "gate_ms": timing.gate_ms, "grace_ms": timing.grace_ms},
        "tls": None if tls is None else [str(p) for p in (tls.ca_cert, tls.node("carol").cert,
                                                          tls.node("carol").key)],
    }


def unlimited(config: Path) -> None:
    """The field config without its packet and queue limits: a broker set up by hand."""
    keep = [line for line in config.read_text().splitlines()
            if not line.startswith(("max_packet_size", "message_size_limit", "max_queued",
                                    "max_inflight"))]
    config.write_text("\n".join(keep) + "\n")


@pytest.mark.mosquitto
@pytest.mark.parametrize("limits", ["field", "none"])
async def test_a_100_mb_retained_message_leaves_tls_gateways_under_their_memory_limit(
    mosquitto: Brokers, tmp_path: Path, limits: str,
) -> None:
    port = free_port()
    files = write_site(tmp_path / "site", port)
    if limits == "none":
        unlimited(files.config)
    mosquitto.start(files.config, port, tmp_path / "mosquitto.log")
    community = Community(timing=slow_timing())
    config = carol_config(tmp_path, community, f"mqtts://127.0.0.1:{port}", files)
    async with AsyncExitStack() as stack:
        alice, bob = [await stack.enter_async_context(tls_agent(community, files, port, node))
                      for node in ("alice", "bob")]
        async with child(tmp_path, **config) as carol:
            await trade(community, carol, alice, bob)
            await huge_retained(port, files.node("dave").client_context(), "dave")
            during = await trade(community, carol, alice, bob)
        async with child(tmp_path, **config) as carol:  # a restart: the message may come back
            after = await trade(community, carol, alice, bob)
    limit = service_memory_max_kb()
    assert limit == MEMORY_MAX_KB
    for report in (during, after):
        assert report["VmHWM"] < limit, f"peak RSS {report['VmHWM']} kB: {report}"
    if limits == "none":  # the broker delivered it, to the running gateway and at the restart
        assert during["oversized"] >= 1 and after["oversized"] >= 1, (during, after)
    else:  # refused: nothing to come back
        assert await retained(port, files, topics.bid(COMMUNITY, 3, "dave")) == b""


async def test_a_100_mb_retained_message_leaves_gateways_on_the_embedded_broker_trading(
    tmp_path: Path,
) -> None:
    community = Community(timing=slow_timing())
    async with AsyncExitStack() as stack:
        broker = await stack.enter_async_context(EmbeddedBroker())
        config = carol_config(tmp_path, community, broker.url, None)
        alice, bob = [await stack.enter_async_context(community.agent(broker.url, node))
                      for node in ("alice", "bob")]
        async with child(tmp_path, **config) as carol:
            await trade(community, carol, alice, bob)
            await huge_retained(broker.port, None, "dave")
            during = await trade(community, carol, alice, bob)
        async with child(tmp_path, **config) as carol:
            after = await trade(community, carol, alice, bob)
    for report in (during, after):
        assert report["VmHWM"] < MEMORY_MAX_KB, f"peak RSS {report['VmHWM']} kB: {report}"
    assert after["oversized"] == 0, after  # refused: nothing came back at the restart
