"""Gateways configured with the community's feeder (``[market.network]``) clear on it.

The demo street, with its two lines rated at 1 kW, its buyer moved to the far line and a network
fee; six gateways over Modbus, the broker and real signatures. No agreed result moves more over a
line than its rating (and some are curtailed right at it), every trade pays the fee its distance
sets, and each home's signed settlement in its ledger includes the fees it owes as a buyer."""

import io
import tomllib
from pathlib import Path

import pytest

import sim_devices
from gateway.config import load_config
from gateway.home import HomeEvent, IntervalClosed
from gateway.ledger import Ledger
from protocols.market import Agreed
from protocols.network import FeeSchedule, line_flows
from sim_devices.demo.run import DEFAULT_SCENARIO, run_demo
from sim_devices.scenario import Scenario, parse_scenario
from sim_devices.world import World

pytestmark = pytest.mark.realtime

LINE_W = 1000
FEES = FeeSchedule(base=2, per_km=40)


def thin_street() -> Scenario:
    shipped = Path(sim_devices.__file__).parent / "scenarios" / f"{DEFAULT_SCENARIO}.toml"
    raw = tomllib.loads(shipped.read_text())
    for line in raw["feeder"]["lines"]:
        line["capacity_w"] = LINE_W
    raw["market"].update(fee_base=FEES.base, fee_per_km=FEES.per_km)
    for home in raw["homes"]:  # the heat-pump family, who buys the big roof's surplus, moves
        if home["name"] == "home-2":  # across the substation: its energy crosses both lines
            home["bus"] = "west"
    return parse_scenario(raw, source="thin street")


async def test_gateways_keep_the_lines_within_rating_and_charge_the_fee(tmp_path: Path) -> None:
    scenario = thin_street()
    agreed: dict[int, list[Agreed]] = {}

    def observe(event: HomeEvent, world: World) -> None:
        if isinstance(event, IntervalClosed) and isinstance(event.outcome, Agreed):
            agreed.setdefault(event.interval, []).append(event.outcome)

    out = io.StringIO()
    status = await run_demo(scenario=scenario, out=tmp_path, intervals=5, speed=360,
                            baseline=False, stream=out, observe=observe)
    assert status == 0, out.getvalue()

    network = load_config(tmp_path / "home-1" / "gridpeer.toml").market.network
    assert network is not None and network.fees() == FEES
    feeder = network.feeder(interval_s=scenario.market.interval_s)
    rating = {line.bus: line.capacity_wh for line in feeder.lines}
    assert rating == {"east": LINE_W // 4, "west": LINE_W // 4}  # 1 kW for 15 minutes
    bus_of = scenario.bus_of()
    fees_paid: dict[str, int] = {}
    traded = at_rating = 0
    for outcomes in agreed.values():
        assert len({o.result_hash for o in outcomes}) == 1
        result, fees = outcomes[0].result, outcomes[0].fees
        for bus, wh in line_flows(result.trades, feeder=feeder, bus_of=bus_of).items():
            assert abs(wh) <= rating[bus], (bus, wh)
            at_rating += abs(wh) == rating[bus]
        assert len(fees) == len(result.trades)
        for trade, fee in zip(result.trades, fees, strict=True):
            distance = feeder.distance_m(bus_of[trade.buyer], bus_of[trade.seller])
            assert (fee.buyer, fee.seller, fee.distance_m) == (trade.buyer, trade.seller, distance)
            assert fee.fee == trade.energy_wh * FEES.fee_per_wh(distance)
            fees_paid[fee.buyer] = fees_paid.get(fee.buyer, 0) + fee.fee
        traded += len(result.trades)
    assert traded > 0 and sum(fees_paid.values()) > 0, out.getvalue()
    assert at_rating, "no clearing was curtailed at a line: the test did not test the feeder"

    for home in bus_of:  # the buyer's signed settlement carries its fees on top of its energy
        with Ledger.open(tmp_path / home / "state" / "ledger.db") as ledger:
            assert ledger.verify() == []
            for block, _ in ledger.blocks():
                signed = block.content.get("settlement")
                if signed is None or block.interval not in agreed:
                    continue
                outcome = agreed[block.interval][0]
                owed = sum(f.fee for f in outcome.fees if f.buyer == home)
                own = block.content["outcome"]
                assert signed["body"]["money"] == own["money"]
                position = outcome.result.outcomes.of(home)
                energy = 0 if position is None else position.paid_p2p - position.received_p2p
                grid = (own["grid_import_wh"] * scenario.tariffs.retail_price
                        - own["grid_export_wh"] * scenario.tariffs.feed_in_price)
                assert own["money"] == energy + grid + owed
