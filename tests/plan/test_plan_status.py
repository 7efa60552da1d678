"""What the owner sees of the plan: where it came from, what it could not keep, the PV cap the
export limit holds; a status file written before the plan was in it still reads."""

from __future__ import annotations

import json

from gateway.home.status import PlanStatus, Status
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
