"""The dashboard's ``GET /api/status`` under a storm of clients, and what it costs the event loop.

The ledger is one home's month in a 100-home community: a block every 15 minutes for 31 days
(2,975 blocks: every interval ended by 23:59 on the 31st), each with the quorum's names and the
99 peers' signed settlements, as ``gateway.home.closing`` writes them (the settlements are signed
once per peer and reused, which keeps their size and shape). The node is a stand-in that reads the
ledger as ``GatewayNode.status`` does (the last block, the height). The dashboard is the real
one, on a real socket; the clients run in another process, each on its own keep-alive connection.

Figures, per storm of N clients (each from an address of its own, asking back to back; a
client's requests beyond its budget of 10 a second wait their turn) while the owner's page asks
every 100 ms from another address:

* the owner's status request latency (p50, p99), against 6266989's status path under the same
  storm (the month of blocks re-read and parsed on the event loop at every request);
* the market tick's lag: a task sleeping 20 ms in a loop, as the market's tick does, and how late
  it wakes (max, p99), against the same loop idle and against 6266989's status path;
* the one read of the month that ``StatusView.open`` makes in a worker thread, and how late the
  tick woke meanwhile, against the same read on the event loop.

Command: ``python -m bench.bench_dashboard`` (about a minute, most of it building the ledger;
``--ledger PATH`` keeps it for the next run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench._report import line, machine
from gateway.config import GatewayConfig, PreferencesConfig, parse_config
from gateway.dashboard import Dashboard, HttpLimits
from gateway.dashboard.status import (
    DashboardNode,
    PageStatus,
    StatusDocument,
    StatusView,
    flows,
    month_start_ms,
)
from gateway.home.status import BatteryStatus, ClearingStatus, MeterStatus, Status
from gateway.ledger import Ledger, LedgerOwner
from protocols.market import Timing
from protocols.messages import MembershipCertificate, Settlement
from protocols.signing import generate_key, public_key_hex, sign

HOMES = 100
TICK_S = 0.02
TIMING = Timing(epoch_ms=0, length_ms=900_000, gate_ms=60_000, grace_ms=10_000)
NOW_MS = int(datetime(2024, 1, 31, 23, 59, tzinfo=UTC).timestamp() * 1000)
DAY_MS = 86_400_000


def build_ledger(path: Path) -> None:
    """One home's January: a block per interval with 99 peers' signed settlements."""
    envelopes = []
    for i in range(HOMES):
        settlement = Settlement(
            community="bench", interval=1, node=f"home-{i}", cleared_wh=-300, delivered_wh=-290,
            grid_import_wh=10, grid_export_wh=0, money=-12_345, meter_import_wh=123_456,
            meter_export_wh=234_567, meter_seq=99_999, meter_tag="ab" * 16)
        envelopes.append(sign("settle", settlement, generate_key()).model_dump())
    names = sorted(f"home-{i}" for i in range(HOMES))
    first = month_start_ms(NOW_MS) // TIMING.length_ms
    key = generate_key()
    certificate = MembershipCertificate(
        community="bench", node="home-1", public_key=public_key_hex(key), bus="b1",
        import_limit_w=10_000, export_limit_w=10_000, valid_from_ms=0, valid_until_ms=10**13)
    owner = LedgerOwner(key=key, certificate=sign("cert", certificate, generate_key()))
    with Ledger.open(path, owner=owner) as ledger:
        for k in range(first, NOW_MS // TIMING.length_ms):
            money = (k * 7919) % 40_000 - 20_000
            ledger.append(interval=k, status="agreed", content={
                "result_hash": "a" * 64, "bid_set_digest": "b" * 64, "price": 150,
                "committed_by": names,
                "outcome": {"cleared_wh": -300, "delivered_wh": -290, "bought_wh": 0,
                            "sold_wh": 300, "grid_import_wh": 10, "grid_export_wh": 0,
                            "money": money},
                "settlement": envelopes[0], "peer_settlements": envelopes[1:],
            })


class BenchNode:
    """The node parts the dashboard reads; its status reads the ledger as the real one does."""

    def __init__(self, *, config: GatewayConfig, ledger: Ledger) -> None:
        self.config, self.ledger, self.timing = config, ledger, TIMING
        self._money: tuple[int, int] | None = None  # (height, money today), as the node memoizes

    def status(self) -> Status:
        last, height = self.ledger.last(), self.ledger.height()
        if self._money is None or self._money[0] != height:
            day = (NOW_MS - NOW_MS % DAY_MS) // TIMING.length_ms
            self._money = (height, sum(int(b.content["outcome"]["money"])
                                       for b, _ in self.ledger.blocks(from_interval=day)))
        assert last is not None
        return Status(
            node="home-1", now_ms=NOW_MS, interval=NOW_MS // TIMING.length_ms,
            mode="market", safe_reason="", devices={},
            battery=BatteryStatus(soc_pct=55.0, power_w=-800, setpoint_w=-800),
            meter=MeterStatus(power_w=-1500, import_wh=10_000, export_wh=20_000), pv=None,
            bid=None, money_today=self._money[1], rejections={},
            last_clearing=ClearingStatus(interval=last.interval, status=last.status,
                                         price=last.content.get("price"),
                                         outcome=last.content.get("outcome")),
            reputation=None, meter_rejections={}, control_faults={}, device_holds={},
            converter=None,
        )

    def update_preferences(self, prefs: PreferencesConfig) -> None:
        pass


def full_read_earnings(node: DashboardNode, *, now_ms: int) -> dict[str, int]:
    """6266989's ``earnings``: today's and this month's money, from every block of the month."""
    assert node.ledger is not None
    day = (now_ms - now_ms % DAY_MS) // TIMING.length_ms
    month = month_start_ms(now_ms) // TIMING.length_ms
    today = total = 0
    for block, _ in node.ledger.blocks(from_interval=min(day, month)):
        earned = -int((block.content.get("outcome") or {}).get("money", 0))
        total += earned if block.interval >= month else 0
        today += earned if block.interval >= day else 0
    return {"today": today, "month": total}


class FullReadView(StatusView):
    """6266989's status path: everything rebuilt, the month re-read, at every request."""

    def __init__(self, *, node: DashboardNode) -> None:
        super().__init__(node=node)
        self._read = node

    def current(self) -> StatusDocument:
        node = self._read
        status = node.status()
        page = PageStatus(home=status, flows=flows(status),
                          earnings=full_read_earnings(node, now_ms=status.now_ms))
        data = page.to_json()
        return StatusDocument(page=page, data=data, body=json.dumps(data).encode())


class Ticker:
    """How late a task that sleeps ``TICK_S`` in a loop wakes up (the market tick's pattern)."""

    def __init__(self) -> None:
        self.lags: list[float] = []

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(TICK_S)
            self.lags.append(loop.time() - start - TICK_S)


@contextlib.asynccontextmanager
async def ticking() -> AsyncIterator[Ticker]:
    ticker = Ticker()
    task = asyncio.create_task(ticker.run())
    try:
        yield ticker
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@dataclass
class Storm:
    """What the clients saw: the owner's request latencies (s) and the storm's answer count."""

    owner: list[float]
    answered: int


OWNER_POLL_S = 0.1
"""The owner's page asks once a second; ten times as often gives enough samples, still within
a client's request budget."""


def storm(port: int, clients: int, duration_s: float, out: Any) -> None:
    """In a process of its own: ``clients`` keep-alive connections, each from its own address
    (as many hosts of a LAN), requesting the status back to back for ``duration_s``, and the
    owner's page, from another address, asking every ``OWNER_POLL_S``; puts a ``Storm`` on
    ``out``."""

    async def client(source: str, deadline: float, pause_s: float) -> list[float]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port,
                                                       local_addr=(source, 0))
        request = f"GET /api/status HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n\r\n".encode()
        latencies = []
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n")
                          if h.lower().startswith(b"content-length"))
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            await asyncio.sleep(pause_s)
        writer.close()
        return latencies

    async def main() -> Storm:
        deadline = time.perf_counter() + duration_s
        owner, *crowd = await asyncio.gather(
            client("127.0.9.1", deadline, OWNER_POLL_S),
            *(client(f"127.0.{1 + i // 250}.{2 + i % 250}", deadline, 0)
              for i in range(clients)))
        return Storm(owner=owner, answered=sum(len(c) for c in crowd))

    out.put(asyncio.run(main()))


async def run_storm(port: int, clients: int, duration_s: float) -> tuple[Storm, Ticker]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=storm, args=(port, clients, duration_s, queue))
    async with ticking() as ticker:
        process.start()
        try:
            result = await asyncio.to_thread(queue.get, timeout=duration_s + 600)
        finally:
            await asyncio.to_thread(process.join)
    if process.exitcode != 0:
        raise RuntimeError(f"the clients' process failed (exit code {process.exitcode})")
    return result, ticker


def p(values: list[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


def ms(seconds: float) -> float:
    return seconds * 1000


async def measure(ledger_path: Path, clients: list[int], duration_s: float) -> None:
    with tempfile.TemporaryDirectory() as state:
        config = parse_config({
            "node": "home-1", "key_file": "node.key", "certificate_file": "node.cert",
            "state_dir": state,
            "market": {"community": "bench", "authority_key": public_key_hex(generate_key())},
        }, source="bench", base=Path(state))
        with Ledger.open(ledger_path) as ledger:
            node = BenchNode(config=config, ledger=ledger)
            blocks = ledger.height() + 1

            async with ticking() as idle:
                await asyncio.sleep(duration_s)
            print(f"ledger: {blocks} blocks, {ledger_path.stat().st_size / 1e6:.0f} MB; "
                  f"idle loop: tick lag max {ms(max(idle.lags)):.2f} ms, "
                  f"p99 {ms(p(idle.lags, 99)):.2f} ms")

            # the month's one read: in open()'s thread, and on the loop as 6266989 did it
            async with ticking() as during_open:
                start = time.perf_counter()
                await StatusView(node=node).open()
                open_s = time.perf_counter() - start
            async with ticking() as during_full:
                await asyncio.sleep(TICK_S)
                start = time.perf_counter()
                full_read_earnings(node, now_ms=NOW_MS)
                full_s = time.perf_counter() - start
                await asyncio.sleep(TICK_S)
            print(line("StatusView.open: the month read in a thread, tick lag max",
                       ms(max(during_open.lags)), "ms",
                       "the same read on the event loop", ms(max(during_full.lags)),
                       lower_is_better=True) + f"; the read took {open_s:.2f} s "
                  f"(on the loop {full_s:.2f} s)")

            for n in clients:
                results = {}
                for name, view in (("ours", None), ("6266989", FullReadView(node=node))):
                    # 6266989's path holds the loop for every queued request: only a deadline
                    # as long as the whole storm lets its clients be answered at all
                    limits = HttpLimits() if view is None else HttpLimits(request_timeout_s=3600)
                    async with Dashboard(node=node, port=0, limits=limits) as dashboard:
                        if view is not None:
                            await view.open()
                            dashboard.app.status = view
                        results[name] = await run_storm(dashboard.port, n, duration_s)
                (ours, ticks), (old, old_ticks) = results["ours"], results["6266989"]
                print(f"# {n} clients asking back to back for {duration_s:g} s, and the "
                      f"owner's page: {ours.answered / duration_s:,.0f} answers/s to the storm "
                      f"(6266989: {old.answered / duration_s:.1f}), {len(ours.owner)} to the "
                      f"owner (6266989: {len(old.owner)})")
                for q in (50, 99):
                    print(line(f"owner's status latency p{q}, {n} clients", ms(p(ours.owner, q)),
                               "ms", "6266989's full read per request", ms(p(old.owner, q)),
                               lower_is_better=True))
                print(line(f"market tick lag max, {n} clients", ms(max(ticks.lags)), "ms",
                           "idle loop", ms(max(idle.lags)), lower_is_better=True))
                print(line(f"market tick lag p99, {n} clients", ms(p(ticks.lags, 99)), "ms",
                           "idle loop", ms(p(idle.lags, 99)), lower_is_better=True))
                print(line(f"market tick lag max, {n} clients", ms(max(ticks.lags)), "ms",
                           "6266989's status path", ms(max(old_ticks.lags)),
                           lower_is_better=True))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", default="8,31",
                        help="storm sizes, comma-separated (default: 8,31: with the owner's "
                             "page, 31 take every connection slot)")
    parser.add_argument("--duration", type=float, default=10.0,
                        help="seconds per storm and for the idle loop (default: 10)")
    parser.add_argument("--ledger", type=Path,
                        help="keep the built ledger here and reuse it next time")
    args = parser.parse_args(argv)
    print(f"# bench_dashboard — {machine()}")
    with tempfile.TemporaryDirectory() as folder:
        path: Path = args.ledger or Path(folder) / "ledger.db"
        if not path.exists():
            start = time.perf_counter()
            build_ledger(path)
            print(f"built {path} in {time.perf_counter() - start:.0f} s")
        asyncio.run(measure(path, [int(n) for n in args.clients.split(",")], args.duration))

if __name__ == "__main__":
    main()
