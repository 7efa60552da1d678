"""The simulator's dynamic-tariff street: its tariff file is found beside the scenario and is a
schedule the gateways accept, and its export limits reach the homes that have them."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.plan import load_schedule
from protocols.clearing import Tariffs
from sim_devices.scenario import ScenarioError, load_scenario

FIXED = Tariffs(retail_price=300, feed_in_price=80)


def test_dynamic_street_plans_on_its_tariff_file_under_three_export_limits() -> None:
    scenario = load_scenario("dynamic-street")
    assert scenario.export_limits() == {"home-1": 5_600, "home-4": 4_000, "home-6": 0}
    assert scenario.tariffs.schedule is not None
    schedule = load_schedule(Path(scenario.tariffs.schedule), fixed=FIXED)
    hour = 3_600_000
    assert schedule.average(12 * hour, hour) == (140, 30)  # the midday glut
    assert schedule.average(18 * hour, hour) == (460, 110)  # the evening peak
    assert schedule.average(36 * hour, hour) == (140, 30)  # and again the next day


def _scenario(folder: Path, schedule: str) -> Path:
    text = (Path(__file__).parents[2] / "sim_devices/scenarios/dynamic-street.toml").read_text()
    path = folder / "street.toml"
    path.write_text(text.replace('schedule = "tariffs/dynamic-street.toml"',
                                 f'schedule = "{schedule}"'))
    return path


def test_a_tariff_file_is_taken_from_the_scenarios_folder(tmp_path: Path) -> None:
    (tmp_path / "prices.csv").write_text("start,import_uwh\n1970-01-01T00:00Z,250\n"
                                         "1970-01-01T01:00Z,300\n")
    assert load_scenario(_scenario(tmp_path, "prices.csv")).tariffs.schedule == str(
        tmp_path / "prices.csv")


@pytest.mark.parametrize(("schedule", "error"), [
    ("missing.csv", "tariffs.schedule: no file 'missing.csv' in the scenario's folder"),
    ("../../etc/prices.csv", "tariffs.schedule: '../../etc/prices.csv' must be a .csv or .toml "
                             "file in the scenario's folder or one folder below it"),
    ("prices.txt", "tariffs.schedule: 'prices.txt' must be a .csv or .toml file"),
])
def test_a_tariff_file_that_is_not_there_is_one_line(tmp_path: Path, schedule: str,
                                                      error: str) -> None:
    with pytest.raises(ScenarioError) as err:
        load_scenario(_scenario(tmp_path, schedule))
    lines = str(err.value).splitlines()
    assert len(lines) == 1 and error in lines[0], lines
