"""The demo community end to end: six gateways, Modbus sockets, the broker, real signatures."""

import io

import pytest

from gateway.home import BidMade, HomeEvent, IntervalClosed
from gateway.ledger import Ledger
from protocols.market import Agreed
from sim_devices.demo.run import DEFAULT_SCENARIO, run_demo
from sim_devices.scenario import load_scenario
from sim_devices.world import World

pytestmark = pytest.mark.realtime

SCENARIO = load_scenario(DEFAULT_SCENARIO)
HOMES = {f"home-{i}" for i in range(1, 7)}


async def test_gateways_agree_trade_and_drive_their_batteries(tmp_path):
    closed: list[tuple[IntervalClosed, int]] = []
    bids: list[BidMade] = []

    def observe(event: HomeEvent, world: World) -> None:
        if isinstance(event, IntervalClosed):
            # what the simulated battery was commanded over Modbus at the moment the interval closed
            closed.append((event, world.home(event.node).battery.command_w))
        elif isinstance(event, BidMade):
            bids.append(event)

    out = io.StringIO()
    status = await run_demo(scenario=SCENARIO, out=tmp_path, intervals=5, speed=360,
                            baseline=False, stream=out, observe=observe)
    assert status == 0
    report = out.getvalue()

    by_interval: dict[int, list[IntervalClosed]] = {}
    for event, _ in closed:
        by_interval.setdefault(event.interval, []).append(event)
    bid_intervals = {b.interval for b in bids}
    closed_by_all = [k for k, events in by_interval.items()
                     if len(events) == len(HOMES) and k in bid_intervals]
    # a gateway that missed the quorum's commitments runs the interval in safe mode; the rest of
    # the run must be agreed by all
    traded = [k for k in closed_by_all
              if all(isinstance(e.outcome, Agreed) for e in by_interval[k])]
    assert len(traded) >= 3, report

    trades = 0
    for k in closed_by_all:  # whoever agreed, agreed on one result
        assert len({e.outcome.result_hash for e in by_interval[k]
                    if isinstance(e.outcome, Agreed)}) <= 1
    for k in traded:
        outcomes = [e.outcome for e in by_interval[k] if isinstance(e.outcome, Agreed)]
        # every gateway computed the identical result from the same signed bids
        assert len({o.result_hash for o in outcomes}) == 1
        assert len({o.bid_set_digest for o in outcomes}) == 1
        trades += len(outcomes[0].result.trades)
        for o in outcomes:  # agreed at the quorum: two thirds of six members
            assert len(o.committed_by) >= 4 and o.committed_by <= HOMES
    assert trades > 0, report
    assert any(b.plan.side == "buy" for b in bids) and any(b.plan.side == "sell" for b in bids)

    # the setpoint each gateway last wrote is what its simulated battery is doing
    for event, command_w in closed:
        if event.interval in traded:
            assert event.setpoint_w == command_w, (event.node, event.interval)
    assert any(command_w != 0 for _, command_w in closed)

    # each ledger holds one verified block per closed interval
    for home in HOMES:
        with Ledger.open(tmp_path / home / "state" / "ledger.db") as ledger:
            assert ledger.verify() == []
            assert {b.interval for b, _ in ledger.blocks()} >= set(traded)
    assert "µ/Wh" in report and "energy traded locally" in report
    assert (tmp_path / "report.html").is_file()
