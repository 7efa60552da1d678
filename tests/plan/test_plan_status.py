"""What the owner sees of the plan: where it came from (and why not the optimiser), what it could
not keep, the PV cap the export limit holds; a status file written before the plan was in it
still reads."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.forecast import DAY_S
from gateway.home.status import PlanStatus, Status
from gateway.home.trader import PV_SILENT
from sim_devices import virtual_time
from sim_devices.demo.community import run_community
from sim_devices.demo.run import timing
from sim_devices.scenario import FaultsModel, load_scenario
from tests.dashboard.statuses import status


def test_the_plan_and_its_violations_survive_the_status_file() -> None:
    plan = PlanStatus(source="optimiser", fallback=None,
                      violations=("battery below-reserve by 1262 Wh", "ev deadline by 3760 Wh"),
                      fallbacks={"time-limit": 2}, pv_cap_w=1_600)
    text = json.dumps(status(plan=plan).to_json())
    assert Status.from_json(text).plan == plan


def test_a_status_file_from_before_the_plan_reads_without_one() -> None:
    data = status().to_json()
    del data["plan"]
    assert Status.from_json(json.dumps(data)).plan is None


def test_a_silent_inverter_shows_the_heuristic_planning_and_why(tmp_path: Path) -> None:
    """The optimiser does not plan while the PV inverter is silent (the trader plans the
    interval as self-consumption with the heuristic): the owner's status says so, with the
    reason counted, instead of the last plan the optimiser made. A neighbour whose inverter
    answers is planned by the optimiser, through the same run: real gateways polling the
    simulated homes over Modbus TCP and trading over the embedded broker, on virtual time."""
    scenario = load_scenario("sunny-street")
    pace = timing(scenario, speed=720.0)
    silent = scenario.homes[0].model_copy(update={"faults": {"pv": FaultsModel(  # once adopted
        offline=((scenario.start_s + pace.warmup_s, 2 * DAY_S),))}})
    scenario = scenario.model_copy(update={"homes": (silent, *scenario.homes[1:])})
    virtual_time.run(run_community(out=tmp_path, scenario=scenario, intervals=3, timing=pace,
                                   planner="optimiser"))
    statuses = {home.name: Status.from_json((tmp_path / home.name / "state" / "status.json")
                                            .read_bytes()).plan
                for home in scenario.homes[:2]}
    blind, seeing = statuses[silent.name], statuses[scenario.homes[1].name]
    assert blind is not None and blind.source == "heuristic"
    assert blind.fallback == PV_SILENT and blind.fallbacks.get(PV_SILENT, 0) >= 1, blind
    assert seeing is not None and seeing.source == "optimiser", seeing
