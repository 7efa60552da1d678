"""Time from gate closure to agreement for N real ``MarketAgent``s on one broker.

Every agent is the production ``gateway.market.agent.MarketAgent`` with a membership certificate
signed by one community authority; they talk through a real MQTT broker (the embedded amqtt, and
Mosquitto started by this script when ``/usr/sbin/mosquitto`` exists). Every agent bids once in
interval 1; the gate closes at the same wall-clock instant for all of them (they share one
machine clock), each clears the bids it holds ``grace`` later, signs and publishes its commitment,
and counts peers' commitments until a 2/3 quorum matches its own. Per agent we take the instant its
``outcome(1)`` resolves and report the median and max over agents of

* **gate → agreed**: from gate closure, so it *includes* the fixed grace wait, and
* **clear → agreed**: from gate + grace, the protocol's own work (clearing, one signature,
  the commitment round, N verifications per agent),

and the fraction of agents that reached ``Agreed`` (the rest abstain at interval start, reason
given). The interval is long (one hour) so nothing else runs: only interval 1 ever clears.

The agents run in ``--procs`` worker processes (the broker's process is separate: amqtt in the
parent, or the Mosquitto binary), because on one machine every agent's verification work is
serialised on the cores a real community would spread over N gateways. ``cpu s`` is the worker
processes' CPU time from the bids to the last outcome: on a shared machine it says more than
wall time.

Baseline, same run, same broker, same worker processes: N raw aiomqtt clients push the same
traffic without our protocol: each publishes one payload the size of a signed bid (QoS 1,
retained, as ours), and when it holds all N bids one payload the size of a signed commitment over
N bid digests; a client is done when it holds a quorum of commitments. That is the transport cost
of bids + commitments with no signing, verification, validation or clearing; it is compared with
our *clear → agreed*, which does not even include the bid round (ours distributes bids before the
gate). The baseline is a floor for any protocol that needs every gateway to see every bid and a
quorum of commitments.

``--real K`` runs only K real agents; the other N - K gateways are emulated peers
(:func:`run_peers`): their genuine certificates, presence, signed bids and, at the clearing
instant, signed commitments to the result of the protocol's own clearing code. A real agent then
does all the work of a gateway in an N-node community on its own share of the machine; what is
left out is the broker fanning every message out to N subscribers. One machine cannot run 1,000
real agents (see docs/benchmarks.md).

Usage: ``python -m bench.bench_agreement [--sizes 10,100] [--brokers amqtt,mosquitto]
[--procs 1] [--real K] [--tick 0.05] [--commit-window 60]``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing as mp
import os
import random
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from bench._report import line, machine
from gateway.market.agent import MarketAgent
from gateway.market.peerlink import PeerLinkError
from protocols.clearing import ClearingParams, Tariffs, clear, orders_from_bids
from protocols.market import Agreed, Timing, agreed_hash, quorum_size, topics
from protocols.messages import (
    MAX_INLINE_BIDS,
    Bid,
    BidSet,
    Commitment,
    MembershipCertificate,
    Presence,
    bid_set_digest,
    message_digest,
)
from protocols.signing import (
    Rejected,
    generate_key,
    open_envelope,
    private_key_from_raw,
    private_key_to_raw,
    public_key_hex,
    sign,
)
from sim_devices.demo.broker import EmbeddedBroker

COMMUNITY = "bench-street"
PARAMS = ClearingParams(tariffs=Tariffs(retail_price=300, feed_in_price=80))
LENGTH_MS = 3_600_000  # one interval in the run; see the module docstring
HOUR_MS = 3_600_000
SEED = 20261121


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Plan:
    """Everything a worker needs, picklable: the same for every worker of a run."""

    url: str
    authority: bytes
    timing: Timing
    bid_at_ms: int  # when every agent publishes its bid (after setup and presence settle)
    end_ms: int  # give up waiting for outcomes after this
    tick_s: float
    n: int


@dataclass
class WorkerReport:
    outcomes: dict[str, tuple[str, int]] = field(default_factory=dict)  # node -> (kind, at_ms)
    cpu_s: float = 0.0
    setup_s: float = 0.0
    late_setup: bool = False
    retries: int = 0
    bids_done_ms: int = 0
    rejections: Counter[str] = field(default_factory=Counter)
    error: str = ""


def node_name(i: int) -> str:
    return f"g{i:04d}"


def bid_of(i: int) -> tuple[str, int, int]:
    rng = random.Random(SEED + i)
    side = "buy" if rng.random() < 0.5 else "sell"
    return side, rng.randint(100, 5_000), rng.randint(80, 300)


def certificate(authority: Any, node: str, key: Any) -> Any:
    cert = MembershipCertificate(
        community=COMMUNITY, node=node, public_key=public_key_hex(key), bus="b1",
        import_limit_w=10_000, export_limit_w=10_000, valid_from_ms=now_ms() - HOUR_MS,
        valid_until_ms=now_ms() + 4 * HOUR_MS,
    )
    return sign("cert", cert, authority)


# --- ours: real agents ---------------------------------------------------------------------------


def make_agent(plan: Plan, authority: Any, i: int) -> MarketAgent:
    node, key = node_name(i), generate_key()
    return MarketAgent(
        broker_url=plan.url, community=COMMUNITY, node=node, identity=key,
        certificate=certificate(authority, node, key),
        authority_key_hex=public_key_hex(authority), timing=plan.timing, params=PARAMS,
        clock=now_ms, tick_s=plan.tick_s,
    )


async def run_agents(plan: Plan, indices: Sequence[int]) -> WorkerReport:
    report = WorkerReport()
    authority = private_key_from_raw(plan.authority)
    t0 = time.perf_counter()
    async with AsyncExitStack() as stack:
        agents: list[MarketAgent] = []
        for i in indices:
            try:
                agents.append(await stack.enter_async_context(make_agent(plan, authority, i)))
            except PeerLinkError:  # a busy machine: one more try, counted
                report.retries += 1
                agents.append(await stack.enter_async_context(make_agent(plan, authority, i)))
        report.setup_s = time.perf_counter() - t0
        wait = plan.bid_at_ms - now_ms()
        report.late_setup = wait < 0
        await asyncio.sleep(max(0, wait) / 1000)
        cpu0 = time.process_time()
        await asyncio.gather(*(agent.submit_bid(1, *bid_of(i))  # type: ignore[arg-type]
                               for agent, i in zip(agents, indices, strict=True)))
        report.bids_done_ms = now_ms()

        async def watch(agent: MarketAgent) -> None:
            try:
                async with asyncio.timeout(max(0.0, (plan.end_ms - now_ms()) / 1000)):
                    outcome = await agent.outcome(1)
            except TimeoutError:
                report.outcomes[agent.node] = ("timeout", now_ms())
                return
            kind = "agreed" if isinstance(outcome, Agreed) else f"abstained:{outcome.reason}"
            report.outcomes[agent.node] = (kind, now_ms())

        await asyncio.gather(*(watch(agent) for agent in agents))
        report.cpu_s = time.process_time() - cpu0
        for agent in agents:
            report.rejections.update(agent.rejections)
    return report


def agents_worker(plan: Plan, indices: Sequence[int], queue: Any) -> None:
    try:
        queue.put(asyncio.run(run_agents(plan, indices)))
    except Exception as exc:  # reported by the parent, with what it was doing
        queue.put(WorkerReport(error=f"{type(exc).__name__}: {exc}"))


async def publish_all(client: aiomqtt.Client, messages: dict[str, bytes]) -> None:
    """Publish retained, QoS 1, all at once (one awaited PUBACK after another would serialise
    N gateways' messages behind one connection's round trips). aiomqtt warns at more than 10
    pending publishes on one client; here that is the point, so its logger is quieted."""
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    await asyncio.gather(*(client.publish(topic, payload, qos=1, retain=True)
                           for topic, payload in messages.items()))


# --- emulated peers: N - K gateways' genuine messages from one process ---------------------------


async def run_peers(plan: Plan, indices: Sequence[int]) -> WorkerReport:
    """Be the gateways ``indices`` without running N agents: publish each one's certificate,
    presence and signed bid, then, at the clearing instant, clear the bids heard (the real agents'
    included) with the protocol's own code and publish each one's signed commitment. What a real
    agent receives is then exactly what it would get from honest peers on their own hardware."""
    report = WorkerReport()
    authority = private_key_from_raw(plan.authority)
    host, port = plan.url.removeprefix("mqtt://").split(":")
    keys = {node_name(i): generate_key() for i in indices}
    async with aiomqtt.Client(host, int(port), identifier=f"peers-{indices[0]}",
                              max_queued_outgoing_messages=0) as client:
        await client.subscribe(topics.bids_of(COMMUNITY, 1), qos=1)
        for node, key in keys.items():
            await client.publish(topics.roster(COMMUNITY, node),
                                 certificate(authority, node, key).to_bytes(), qos=1, retain=True)
            online = Presence(community=COMMUNITY, node=node, session=now_ms(), state="online")
            await client.publish(topics.presence(COMMUNITY, node),
                                 sign("presence", online, key).to_bytes(), qos=1, retain=True)
        await asyncio.sleep(max(0, plan.bid_at_ms - now_ms()) / 1000)
        cpu0 = time.process_time()
        heard: dict[str, Bid] = {}
        signed: dict[str, bytes] = {}
        for i, (node, key) in zip(indices, keys.items(), strict=True):
            side, energy, limit = bid_of(i)
            bid = Bid(community=COMMUNITY, interval=1, node=node, seq=0, side=side,  # type: ignore[arg-type]
                      energy_wh=energy, limit_price=limit, created_ms=now_ms())
            heard[node] = bid
            signed[topics.bid(COMMUNITY, 1, node)] = sign("bid", bid, key).to_bytes()
        await publish_all(client, signed)  # at once, as N gateways would
        report.bids_done_ms = now_ms()
        try:
            async with asyncio.timeout(max(0, plan.timing.clear_ms(1) - now_ms()) / 1000):
                async for message in client.messages:
                    opened = open_envelope(bytes(message.payload), expected_kind="bid")
                    if not isinstance(opened, Rejected):
                        assert isinstance(opened.body, Bid)
                        heard[opened.body.node] = opened.body
        except TimeoutError:
            pass  # the clearing instant: clear what was heard, as every gateway does
        with_digests = [(bid, message_digest(bid)) for bid in heard.values()]
        orders = orders_from_bids(with_digests, buses=dict.fromkeys(heard, "b1"))
        result = clear("uniform", orders, PARAMS)
        digests = tuple(sorted(d for _, d in with_digests))
        inline = len(digests) <= MAX_INLINE_BIDS
        signed = {}
        for node, key in keys.items():  # as a gateway: a long bid set apart, then the commitment
            if not inline:
                signed[topics.bidset(COMMUNITY, 1, node)] = sign("bidset", BidSet(
                    community=COMMUNITY, interval=1, node=node, bid_digests=digests),
                    key).to_bytes()
            signed[topics.commit(COMMUNITY, 1, node)] = sign("commit", Commitment(
                community=COMMUNITY, interval=1, node=node,
                bid_digests=digests if inline else None,
                bid_set_digest=bid_set_digest(digests), result_hash=agreed_hash(result, None),
                mechanism="uniform",
            ), key).to_bytes()
        await publish_all(client, signed)
        report.cpu_s = time.process_time() - cpu0
    return report  # no clean-up: the broker lives for this one measurement


def peers_worker(plan: Plan, indices: Sequence[int], queue: Any) -> None:
    try:
        queue.put(asyncio.run(run_peers(plan, indices)))
    except Exception as exc:
        queue.put(WorkerReport(error=f"peers: {type(exc).__name__}: {exc}"))


# --- baseline: raw aiomqtt, same traffic ---------------------------------------------------------


def payload_sizes(n: int) -> tuple[int, int]:
    """Wire sizes of a signed bid and of a signed commitment over ``n`` bids: the digests inline
    up to ``MAX_INLINE_BIDS``, else the set named by digest (its list is fetched only by a member
    that needs it, so the baseline sends none)."""
    key = generate_key()
    bid = Bid(community=COMMUNITY, interval=1, node=node_name(0), seq=0, side="buy",
              energy_wh=1_000, limit_price=200, created_ms=now_ms())
    digests = tuple(sorted(f"{random.getrandbits(256):064x}" for _ in range(n)))
    commitment = Commitment(community=COMMUNITY, interval=1, node=node_name(0),
                            bid_digests=digests if n <= MAX_INLINE_BIDS else None,
                            bid_set_digest=bid_set_digest(digests), result_hash="0" * 64,
                            mechanism="uniform")
    return len(sign("bid", bid, key).to_bytes()), len(sign("commit", commitment, key).to_bytes())


async def run_raw(
    plan: Plan, indices: Sequence[int], run_id: str, peers: Sequence[int] = ()
) -> WorkerReport:
    """Raw clients for ``indices``; one more client speaks for the emulated ``peers`` (as
    :func:`run_peers` does for ours: their bids up front, their commitments once it holds every
    bid, no subscription to commitments)."""
    report = WorkerReport()
    host, port = plan.url.removeprefix("mqtt://").split(":")
    bid_size, commit_size = payload_sizes(plan.n)
    need = quorum_size(plan.n, 2, 3)
    base = f"rawbench/{run_id}"
    async with AsyncExitStack() as stack:
        clients: list[tuple[Sequence[int], aiomqtt.Client, bool]] = []
        for senders, track in [([i], True) for i in indices] + ([(peers, False)] if peers else []):
            client = aiomqtt.Client(host, int(port), identifier=f"raw-{run_id}-{senders[0]}",
                                    max_queued_outgoing_messages=0)
            await stack.enter_async_context(client)
            await client.subscribe(f"{base}/bids/+", qos=1)
            if track:
                await client.subscribe(f"{base}/commit/+", qos=1)
            clients.append((senders, client, track))
        wait = plan.bid_at_ms - now_ms()
        report.late_setup = wait < 0
        await asyncio.sleep(max(0, wait) / 1000)
        cpu0 = time.process_time()

        async def one(senders: Sequence[int], client: aiomqtt.Client, track: bool) -> None:
            bids: set[str] = set()
            commits: set[str] = set()
            await publish_all(client, {f"{base}/bids/{i}": os.urandom(bid_size)
                                       for i in senders})
            async for message in client.messages:
                kind, sender = str(message.topic).rsplit("/", 2)[-2:]
                if kind == "bids" and sender not in bids:
                    bids.add(sender)
                    if len(bids) == plan.n:
                        await publish_all(client, {f"{base}/commit/{i}": os.urandom(commit_size)
                                                   for i in senders})
                        if not track:
                            return
                elif kind == "commit":
                    commits.add(sender)
                    if len(commits) >= need:
                        report.outcomes[node_name(senders[0])] = ("agreed", now_ms())
                        return

        async def watch(senders: Sequence[int], client: aiomqtt.Client, track: bool) -> None:
            try:
                async with asyncio.timeout(max(0.0, (plan.end_ms - now_ms()) / 1000)):
                    await one(senders, client, track)
            except TimeoutError:
                if track:
                    report.outcomes[node_name(senders[0])] = ("timeout", now_ms())

        await asyncio.gather(*(watch(*c) for c in clients))
        report.cpu_s = time.process_time() - cpu0
    return report  # no clean-up: the broker lives for this one measurement


def raw_worker(
    plan: Plan, indices: Sequence[int], run_id: str, peers: Sequence[int], queue: Any
) -> None:
    try:
        queue.put(asyncio.run(run_raw(plan, indices, run_id, peers)))
    except Exception as exc:
        queue.put(WorkerReport(error=f"{type(exc).__name__}: {exc}"))


# --- the parent: broker, workers, figures --------------------------------------------------------


@asynccontextmanager
async def broker(kind: str) -> AsyncIterator[str]:
    """Yield the URL of a running broker of ``kind`` ("amqtt" or "mosquitto")."""
    if kind == "amqtt":
        async with EmbeddedBroker() as embedded:
            # amqtt logs every PUBACK it waited for in vain, with a traceback, at ERROR; the
            # figures already say it (EmbeddedBroker itself only quiets it to WARNING).
            logging.getLogger("amqtt").setLevel(logging.CRITICAL)
            yield embedded.url
        return
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp, "mosquitto.conf")
        config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                          "max_queued_messages 0\nmax_inflight_messages 0\n")
        log = Path(tmp, "mosquitto.log").open("wb")
        proc = subprocess.Popen([binary, "-c", str(config)], stdout=log, stderr=log)
        try:
            for _ in range(300):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if proc.poll() is not None:
                        raise RuntimeError(f"mosquitto exited {proc.returncode}") from None
                    await asyncio.sleep(0.05)
            yield f"mqtt://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            log.close()


Job = tuple[Callable[..., None], tuple[object, ...]]


async def in_workers(jobs: list[Job]) -> list[WorkerReport]:
    """Run each ``target(*args, queue)`` in its own process; their reports, in finishing order."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    workers = [ctx.Process(target=target, args=(*args, queue)) for target, args in jobs]
    for worker in workers:
        worker.start()
    loop = asyncio.get_running_loop()
    reports = [await loop.run_in_executor(None, queue.get) for _ in workers]
    for worker in workers:
        await loop.run_in_executor(None, worker.join)
    return reports


def chunks(indices: range, procs: int) -> list[list[int]]:
    return [list(indices)[p::procs] for p in range(procs) if p < len(indices)]


@dataclass(frozen=True)
class Figures:
    agreed: int
    n: int
    from_gate_ms: list[int]
    from_clear_ms: list[int]
    kinds: Counter[str]
    cpu_s: float
    rejections: Counter[str]
    errors: list[str]
    late_setup: bool
    setup_s: float
    retries: int
    bids_done_ms: int


def figures(n: int, gate: int, clear_at: int, reports: list[WorkerReport]) -> Figures:
    """Outcome times relative to ``gate`` and ``clear_at`` (ms since the epoch)."""
    outcomes = {node: o for r in reports for node, o in r.outcomes.items()}
    done = [at for kind, at in outcomes.values() if kind == "agreed"]
    return Figures(
        agreed=len(done), n=n,
        from_gate_ms=sorted(at - gate for at in done),
        from_clear_ms=sorted(at - clear_at for at in done),
        kinds=Counter(kind for kind, _ in outcomes.values()),
        cpu_s=sum(r.cpu_s for r in reports),
        rejections=sum((r.rejections for r in reports), Counter()),
        errors=[r.error for r in reports if r.error],
        late_setup=any(r.late_setup for r in reports),
        setup_s=max((r.setup_s for r in reports), default=0.0),
        retries=sum(r.retries for r in reports),
        bids_done_ms=max((r.bids_done_ms for r in reports), default=0),
    )


def summary(values: list[int]) -> str:
    if not values:
        return "none"
    return f"median {statistics.median(values):,.0f} ms, max {max(values):,} ms"


async def measure(kind: str, n: int, args: argparse.Namespace) -> None:
    real = min(n, args.real or n)
    procs = max(1, min(args.procs, real))
    grace_ms = max(500, 5 * n)  # late deliveries through a busier broker take longer
    setup_ms = 5_000 + real * args.setup_ms_per_agent // procs + 5 * n  # incl. process start
    settle_ms = 2_000 + 10 * n
    bid_window_ms = 3_000 + args.bid_ms_per_agent * n // procs
    async with broker(kind) as url:
        start = now_ms()
        gate = start + setup_ms + settle_ms + bid_window_ms
        gate_ms = grace_ms + args.commit_window * 1000
        timing = Timing(epoch_ms=gate - LENGTH_MS + gate_ms, length_ms=LENGTH_MS,
                        gate_ms=gate_ms, grace_ms=grace_ms)
        plan = Plan(url=url, authority=private_key_to_raw(generate_key()), timing=timing,
                    bid_at_ms=gate - bid_window_ms, end_ms=timing.start_ms(1) + 2_000,
                    tick_s=args.tick, n=n)
        jobs: list[Job] = [(agents_worker, (plan, chunk)) for chunk in chunks(range(real), procs)]
        if real < n:
            jobs.append((peers_worker, (plan, list(range(real, n)))))
        reports = await in_workers(jobs)
        ours = figures(real, timing.gate_close_ms(1), timing.clear_ms(1), reports)
        # Time for the worker processes to start (imports: ~1-2 s on a busy machine) and
        # connect their clients; a late start is flagged in the output.
        raw_start = now_ms() + 5_000 + n * 50 // procs
        raw_plan = Plan(url=url, authority=b"", timing=timing, bid_at_ms=raw_start,
                        end_ms=raw_start + args.commit_window * 1000, tick_s=0.0, n=n)
        parts = chunks(range(real), procs)
        raw = figures(real, raw_start, raw_start, await in_workers([
            (raw_worker, (raw_plan, chunk, f"{kind}{n}", range(real, n) if p == 0 else ()))
            for p, chunk in enumerate(parts)
        ]))
    raw_ms = raw.from_gate_ms
    label = f"{n} gateways on {kind} ({procs} agent process{'es' if procs > 1 else ''}"
    label += ")" if real == n else f"; {real} real agents, {n - real} emulated peers)"
    print(f"## {label}: grace {grace_ms} ms, commit window {args.commit_window} s, "
          f"tick {args.tick} s, agents connected in {ours.setup_s:.1f} s "
          f"({ours.retries} connect retries)"
          + (f", all bids published {timing.gate_close_ms(1) - ours.bids_done_ms:,} ms before "
             "the gate" if ours.bids_done_ms else "")
          + (" (LATE: setup overran the planned bid instant)" if ours.late_setup else ""))
    print(f"  agreed: {ours.agreed}/{real} agents ({100 * ours.agreed / real:.0f} %); outcomes "
          f"{dict(ours.kinds)}; cpu from bids to last outcome {ours.cpu_s:.1f} s in all "
          f"(= {1000 * ours.cpu_s / real:,.0f} ms per agent)")
    print(f"  gate -> agreed (incl. {grace_ms} ms grace): {summary(ours.from_gate_ms)}")
    print(f"  clear -> agreed: {summary(ours.from_clear_ms)}")
    if ours.rejections:
        print(f"  rejections: {dict(ours.rejections)}")
    for error in ours.errors + raw.errors:
        print(f"  worker error: {error}")
    print(f"  raw aiomqtt bids + commitments to quorum: {summary(raw_ms)}, "
          f"{raw.agreed}/{real} done; worker cpu {raw.cpu_s:.1f} s"
          + (" (LATE: connecting overran the start, figures inflated)" if raw.late_setup else ""))
    if ours.from_clear_ms and raw_ms:
        print("  " + line(
            f"clear -> agreed, median, {n} gateways, {kind}",
            statistics.median(ours.from_clear_ms), "ms",
            "raw aiomqtt bids + commitments, median", statistics.median(raw_ms),
            lower_is_better=True,
        ))
        print("  " + line(
            f"clear -> agreed, max, {n} gateways, {kind}", max(ours.from_clear_ms), "ms",
            "raw aiomqtt bids + commitments, max", max(raw_ms), lower_is_better=True,
        ))


async def run(args: argparse.Namespace) -> None:
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # amqtt's unretrieved PUBACK tasks
    print(f"# bench_agreement — {machine()}")
    brokers = [b for b in args.brokers.split(",")
               if b != "mosquitto" or shutil.which("mosquitto")
               or os.path.exists("/usr/sbin/mosquitto")]
    for n in (int(s) for s in args.sizes.split(",")):
        for kind in brokers:
            await measure(kind, n, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10,100")
    parser.add_argument("--brokers", default="amqtt,mosquitto")
    parser.add_argument("--procs", type=int, default=1, help="agent worker processes")
    parser.add_argument("--real", type=int, default=0,
                        help="run only this many real agents; the other N - K gateways are "
                        "emulated peers (see run_peers); 0 = all real")
    parser.add_argument("--tick", type=float, default=0.05, help="agent tick, s")
    parser.add_argument("--commit-window", type=int, default=60,
                        help="s between clearing and interval start (abstain after that)")
    parser.add_argument("--setup-ms-per-agent", type=int, default=400,
                        help="time budget to connect one agent (they connect one by one)")
    parser.add_argument("--bid-ms-per-agent", type=int, default=60,
                        help="bids go out 3 s + this x N before the gate")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
