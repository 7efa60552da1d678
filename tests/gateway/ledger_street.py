"""Three ledgers written by the real closing path: market agents on the embedded broker agree
intervals, and each home's :class:`IntervalCloser` settles them with tagged meter readings into
its own ledger, as a gateway does.

The street runs until every ledger has agreed, settled blocks and each neighbour holds some of
alice's signed settlements, however many intervals a busy host abstains first (bounded): the
tests then read what was written, and assert nothing about timing.
"""

from __future__ import annotations

import asyncio
import shutil
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.devices import MeterReading
from gateway.home.closing import IntervalCloser
from gateway.ledger import Ledger, LedgerOwner
from gateway.market.agent import MarketAgent
from protocols.market import Agreed, MeterKey, Timing
from protocols.messages import SignedEnvelope
from protocols.metering import reading_tag
from protocols.signing import generate_key, public_key_hex
from sim_devices.demo.broker import EmbeddedBroker
from tests.market.community import COMMUNITY, PARAMS, Community, now_ms

NODES = ("alice", "bob", "carol")
METER_KEYS = {node: MeterKey(device_id=f"meter-{node}", key=node.encode() * 8) for node in NODES}
HOUR_MS = 3_600_000
MAX_INTERVALS = 40


@dataclass(frozen=True)
class LedgerHome:
    node: str
    key: Ed25519PrivateKey
    certificate: SignedEnvelope
    ledger: Path

    @property
    def public_key(self) -> str:
        return public_key_hex(self.key)

    def owner(self) -> LedgerOwner:
        return LedgerOwner(key=self.key, certificate=self.certificate)

    def copy_to(self, folder: Path) -> Path:
        """A copy of the ledger to tamper with (the street's own stays as written)."""
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{self.node}.db"
        shutil.copyfile(self.ledger, target)
        return target


@dataclass(frozen=True)
class LedgerStreet:
    homes: dict[str, LedgerHome]
    authority_hex: str


class TaggingMeter:
    """A tagging meter's counters, advanced by what each interval delivered."""

    def __init__(self, key: MeterKey) -> None:
        self.key, self.seq, self.import_wh, self.export_wh = key, 0, 10_000, 20_000

    def read(self, delivered_wh: int) -> MeterReading:
        self.seq += 1
        self.import_wh += max(delivered_wh, 0)
        self.export_wh += max(-delivered_wh, 0)
        key = self.key
        tag = reading_tag(key.key, key.device_id, self.seq, self.import_wh, self.export_wh).hex()
        return MeterReading(power_w=0, import_wh=self.import_wh, export_wh=self.export_wh,
                            voltage_v=None, current_a=None, frequency_hz=None, seq=self.seq,
                            tag=tag)


def _witnessed(ledger: Path, node: str) -> set[int]:
    """Intervals of ``node``'s signed settlements that ``ledger`` holds."""
    with Ledger.open(ledger) as opened:
        return {peer["body"]["interval"] for block, _ in opened.blocks()
                for peer in block.content.get("peer_settlements", [])
                if peer["body"]["node"] == node}


async def _run(folder: Path, broker_url: str) -> LedgerStreet:
    community = Community(timing=Timing(epoch_ms=now_ms(), length_ms=2000, gate_ms=1200,
                                        grace_ms=250))
    homes = {}
    for node in NODES:
        key = generate_key()
        homes[node] = LedgerHome(node, key, community.certificate(node, key), folder / f"{node}.db")
    meters = {node: TaggingMeter(METER_KEYS[node]) for node in NODES}
    bids = {"alice": ("sell", 3_000, 100), "bob": ("buy", 1_500, 250), "carol": ("buy", 1_000, 200)}
    async with AsyncExitStack() as stack:
        agents: dict[str, MarketAgent] = {}
        closers: dict[str, IntervalCloser] = {}
        for node, home in homes.items():
            agents[node] = await stack.enter_async_context(MarketAgent(
                broker_url=broker_url, community=COMMUNITY, node=node, identity=home.key,
                certificate=home.certificate, authority_key_hex=community.authority_hex,
                timing=community.timing, params=PARAMS, clock=now_ms, meter_keys=METER_KEYS,
                energy_interval_ms=HOUR_MS))
            ledger = stack.enter_context(Ledger.open(home.ledger, owner=home.owner()))
            closers[node] = IntervalCloser(node=node, agent=agents[node], ledger=ledger)
        await asyncio.sleep(0.3)  # certificates and presence reach everyone
        for _ in range(MAX_INTERVALS):
            k = community.next_interval(margin_ms=600)
            for node, (side, energy, price) in bids.items():
                await agents[node].submit_bid(k, side, energy, price)  # type: ignore[arg-type]
            async with asyncio.timeout(30):
                outcomes = {node: await agent.outcome(k) for node, agent in agents.items()}
            await asyncio.sleep(max(0, community.timing.end_ms(k) - now_ms()) / 1000 + 0.05)
            for node, outcome in outcomes.items():
                position = outcome.position if isinstance(outcome, Agreed) else None
                delivered = 0 if position is None else position.bought_wh - position.sold_wh
                closers[node].close(k, outcome, delivered_wh=delivered,
                                    meter=meters[node].read(delivered))
            if all(len(_witnessed(homes[n].ledger, "alice")) >= 2 for n in ("bob", "carol")):
                break
        else:
            raise AssertionError(f"no two settled intervals in {MAX_INTERVALS}")
        # one more interval, without bids, so alice's last settlement reaches her neighbours'
        # ledgers too
        k = community.next_interval(margin_ms=600)
        async with asyncio.timeout(30):
            outcomes = {node: await agent.outcome(k) for node, agent in agents.items()}
        await asyncio.sleep(max(0, community.timing.end_ms(k) - now_ms()) / 1000 + 0.05)
        for node, outcome in outcomes.items():
            closers[node].close(k, outcome, delivered_wh=0, meter=meters[node].read(0))
    return LedgerStreet(homes=homes, authority_hex=community.authority_hex)


async def _on_broker(folder: Path) -> LedgerStreet:
    async with EmbeddedBroker() as broker:
        return await _run(folder, broker.url)


def build_street(folder: Path) -> LedgerStreet:
    """Run the street (a few seconds) and return its homes, their ledgers closed in ``folder``."""
    return asyncio.run(_on_broker(folder))
