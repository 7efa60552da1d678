"""Settlement end to end: a simulated community of real gateways settles every agreed interval over
MQTT with its meter's tagged readings, and every ledger holds its own signed settlement and every
honest peer's, each one re-verifiable by an auditor (signatures, and with the meter keys the
tags and the deliveries the counters imply).

Two things go wrong on purpose: home-4's meter tags its readings with a key other than the one its
gateway was provisioned with (a swapped or tampered meter), so its gateway refuses every reading
and settles with the grid as undelivered; and home-4's key holder then publishes a settlement
claiming a sale it never made, which every honest gateway rejects.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from firmware.metering import TaggedCounter
from gateway.home import HomeEvent, IntervalClosed
from gateway.identity import load_certificate, load_key_file
from gateway.ledger import Ledger
from gateway.market.peerlink import PeerLink
from protocols.market import Agreed, topics
from protocols.messages import Settlement, SignedEnvelope
from protocols.metering import VerifiedReading, verify_reading
from protocols.signing import Rejected, sign, verify
from sim_devices.demo.community import CommunityLog, RunTiming, run_community
from sim_devices.demo.summary import Balance, balance
from sim_devices.scenario import parse_scenario
from sim_devices.world import World, sim_meter_key
from tests.street import INTERVAL_MS, NAMES, TIMING, Street, check_ledgers, street

pytestmark = pytest.mark.realtime(cost_s=80)

HONEST = ("home-1", "home-2", "home-3")
TAMPERED = "home-4"
SCENARIO = parse_scenario({
    "name": "settle-street", "seed": 23, "start": "11:00:00",
    "market": {"community": "settle-street", "interval_s": 900, "gate_s": 120, "grace_s": 60},
    "homes": [
        {"name": "home-1", "pv_peak_w": 7000, "base_load_w": 300, "soc_start_pct": 80},
        {"name": "home-2", "pv_peak_w": 0, "base_load_w": 2500, "soc_start_pct": 20},
        {"name": "home-3", "pv_peak_w": 6000, "base_load_w": 400, "soc_start_pct": 70},
        {"name": "home-4", "pv_peak_w": 0, "base_load_w": 2000, "soc_start_pct": 20},
    ],
}, source="test")
INTERVALS = 4


def opened(data: dict[str, Any]) -> tuple[Settlement, str]:
    """A ledgered envelope checked as an auditor would: the body and who signed it."""
    envelope = SignedEnvelope.model_validate(data)
    verified = verify(envelope, expected_kind="settle")
    assert not isinstance(verified, Rejected), verified
    assert isinstance(verified.body, Settlement)
    return verified.body, verified.public_key_hex


def ledger_of(out: Path, home: str) -> dict[int, dict[str, Any]]:
    with Ledger.open(out / home / "state" / "ledger.db") as ledger:
        assert ledger.verify() == []
        return {block.interval: {"status": block.status, **block.content}
                for block, _ in ledger.blocks()}


async def test_every_ledger_holds_every_verified_settlement_and_tampering_is_refused(
    tmp_path: Path,
) -> None:
    forged: list[asyncio.Task[None]] = []

    def tamper(_url: str, world: World) -> None:
        # The meter keeps counting but signs with a key its gateway was never given.
        role = world.home(TAMPERED).meter_role
        assert role.tagger is not None
        role.tagger = TaggedCounter(b"not the provisioned key!", f"{TAMPERED}-meter",
                                    seq=role.tagger.seq)

    async def forge(url: str, k: int) -> None:
        """home-4's key holder claims it sold 500 Wh in interval ``k`` and was paid for it."""
        key = load_key_file(tmp_path / TAMPERED / "node.key")
        lie = Settlement(community=SCENARIO.market.community, interval=k, node=TAMPERED,
                         cleared_wh=-500, delivered_wh=-500, grid_import_wh=0, grid_export_wh=0,
                         money=-75_000, meter_import_wh=0, meter_export_wh=500, meter_seq=10**6,
                         meter_tag="ab" * 32)
        async with PeerLink(broker_url=url, community=SCENARIO.market.community,
                            node="auditor") as link:
            await link.publish(topics.settle(SCENARIO.market.community, k, TAMPERED),
                               sign("settle", lie, key).to_bytes())

    broker: list[str] = []

    def started(url: str, world: World) -> None:
        broker.append(url)
        tamper(url, world)

    def observe(event: HomeEvent, _world: World, log: CommunityLog) -> None:
        if (isinstance(event, IntervalClosed) and event.node == "home-1" and not forged
                and event.interval == log.window[0]):
            forged.append(asyncio.create_task(forge(broker[0], event.interval)))

    log, _ = await run_community(
        out=tmp_path, scenario=SCENARIO, intervals=INTERVALS, on_start=started, on_event=observe,
        timing=RunTiming(interval_s=900, gate_s=120, grace_s=60, poll_s=60, speed=300,
                         revert_s=600, ramp_w_per_s=50),
    )
    await asyncio.gather(*forged)
    window = list(log.window)
    assert log.complete == window

    keys = {home: load_certificate(tmp_path / home / "node.cert")[1].public_key
            for home in (*HONEST, TAMPERED)}
    ledgers = {home: ledger_of(tmp_path, home) for home in (*HONEST, TAMPERED)}
    statuses = {home: json.loads((tmp_path / home / "state" / "status.json").read_text())
                for home in (*HONEST, TAMPERED)}
    agreed = [k for k in window if all(ledgers[h][k]["status"] == "agreed" for h in HONEST)]
    assert len(agreed) >= INTERVALS - 1, {h: [ledgers[h][k]["status"] for k in window]
                                          for h in HONEST}

    own: dict[tuple[int, str], dict[str, Any]] = {}
    for home in HONEST:
        meter_id = f"{home}-meter"
        meter_key = sim_meter_key(SCENARIO.seed, meter_id)
        previous: Settlement | None = None
        for k in window:
            block = ledgers[home][k]
            if k not in agreed:
                previous = None
                continue
            settlement, signer = opened(block["settlement"])
            assert (signer, settlement.node, settlement.interval) == (keys[home], home, k)
            # What the block bills is what was signed and published.
            assert block["outcome"]["money"] == settlement.money
            assert block["outcome"]["delivered_wh"] == settlement.delivered_wh
            # The auditor holds the meter keys: the reading is the meter's, and the delivery is
            # the counters' change since the reading that closed the interval before.
            assert isinstance(verify_reading(
                meter_key, meter_id, settlement.meter_seq, settlement.meter_import_wh,
                settlement.meter_export_wh, settlement.meter_tag,
                None if previous is None else previous.meter_seq), VerifiedReading)
            if previous is not None:
                assert settlement.delivered_wh == (
                    settlement.meter_import_wh - settlement.meter_export_wh
                    - previous.meter_import_wh + previous.meter_export_wh)
            previous = settlement
            own[k, home] = block["settlement"]

    assert any(s["body"]["cleared_wh"] != 0 for s in own.values()), "nothing was traded"
    for home in HONEST:
        peers = [opened(data) + (data,) for block in ledgers[home].values()
                 for data in block.get("peer_settlements", [])]
        held = [(s.interval, s.node) for s, _, _ in peers]
        assert len(held) == len(set(held)), f"{home} ledgered a peer's settlement twice"
        for settlement, signer, data in peers:
            assert signer == keys[settlement.node] and settlement.node != TAMPERED
            if settlement.interval in window:
                # exactly the envelope the peer signed and ledgered itself
                assert data == own[settlement.interval, settlement.node]
        # A peer settles an interval when it closes it, so its settlement lands in the next
        # block: every peer's settlement of every agreed interval but the run's last is there.
        expected = {(k, peer) for k in agreed if k != window[-1] for peer in HONEST
                    if peer != home}
        assert expected <= set(held), (home, sorted(expected - set(held)))
        status = statuses[home]
        assert status["rejections"].get("settle-mismatch", 0) == 1, status["rejections"]
        assert status["meter_rejections"] == {}
        assert 0 <= status["reputation"] <= 1000

    # home-4 refused every reading of its meter: settled with the grid as undelivered, nothing
    # published, and it is counted.
    tampered = statuses[TAMPERED]
    assert tampered["meter_rejections"].get("meter-bad-tag", 0) >= INTERVALS
    for k in window:
        block = ledgers[TAMPERED][k]
        assert "settlement" not in block and block["meter"] == "meter reading not verified"
        assert block["outcome"]["delivered_wh"] == 0


# --- money and energy balance whatever the timing ------------------------------------------------

LATE = "home-3"
"""The gateway that hears its peers late: a buyer, so the seller's result gives it a position."""


def _commitments(topic: str) -> bool:
    return topic.split("/")[2] == "commit"


def _balanced(s: Street, k: int) -> None:
    """Interval ``k`` balances to the Wh and the µ across the gateways' settlements."""
    closed = [s.closed[node][k] for node in NAMES]
    assert balance(closed, s.nodes[NAMES[0]].tariffs) == Balance(0, 0), (
        k, [(c.node, c.outcome, c.settlement) for c in closed])


@pytest.mark.parametrize("held", ["commitments", "everything"])
async def test_a_gateway_that_hears_the_quorum_only_after_the_interval_ended_settles_against_it(
    tmp_path: Path, held: str,
) -> None:
    """home-3's bid and commitment reach its peers in time, and they agree a result that sells it
    energy; what the broker sends home-3 reaches it only after the interval has ended: the
    peers' commitments (its link holds them back), or everything (its link stalls from before
    its commitment goes out, so its market waits for the broker's acknowledgement, as on a
    starved host). home-3 runs the interval in safe mode and still settles against the agreed
    result, as its peers settled their side of its trade: nothing is created or lost."""
    async with street(tmp_path, proxied=(LATE,)) as s:
        proxy = s.proxies[LATE]
        k = s.now_k() + 2
        start_s = k * INTERVAL_MS / 1000
        if held == "commitments":
            await s.until_sim_s(start_s - TIMING.gate_s - 5)  # its bid for k is out
            proxy.hold(_commitments)
            await s.until_sim_s(start_s + TIMING.interval_s + 2 * TIMING.poll_s)
        else:
            # From just before it clears until k has ended: about 8 real seconds, under the
            # MQTT keep-alive's limit (twice 5 s without a byte from the broker).
            await s.until_sim_s(start_s - TIMING.gate_s + TIMING.grace_s - 1)
            proxy.hold()
            await s.until_sim_s(start_s + TIMING.interval_s + TIMING.poll_s + 2)
        assert proxy.held > 0, "nothing was held back"
        proxy.release()
        await s.until_closed(k + 2, timeout_s=120)
    peers = [s.closed[n][k].outcome for n in NAMES if n != LATE]
    assert all(isinstance(o, Agreed) and not o.late for o in peers), peers
    agreed = peers[0]
    assert isinstance(agreed, Agreed) and agreed.result.outcomes.of(LATE) is not None, (
        "the peers' result gave home-3 no position: nothing to test", agreed)
    for j in range(k, k + 3):
        _balanced(s, j)
    late = s.closed[LATE][k].outcome
    assert isinstance(late, Agreed) and late.late, late  # safe mode, settled against the quorum
    assert late.result_hash == agreed.result_hash
    ledgers = check_ledgers(s)
    assert all(ledgers[n][k] == "agreed" for n in NAMES), {n: ledgers[n][k] for n in NAMES}
